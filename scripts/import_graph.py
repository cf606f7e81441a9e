"""Who imports whom inside the coach package, with each module's line count.

    python scripts/import_graph.py          # the table
    python scripts/import_graph.py --check  # also fail if a rule of the layout is broken

An import at the top of a module is shown plainly; one inside a function (a heavy
library or a later stage, loaded only when used) in parentheses. Type-only imports
(under `if TYPE_CHECKING:`) are left out: they cost nothing at run time.

The layout's rules: the pure stages (routine, script, timeline, mixer) import no sink;
neither `session` nor `render` imports `live`; `cli` imports no private name of a sink.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "coach"
SINKS = {"live", "render", "speakers", "listen", "terminal"}
PURE = {"units", "timetext", "dsp", "routine", "script", "timeline", "mixer", "controls"}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path) -> tuple[dict[str, bool], set[tuple[str, str]]]:
    """coach modules `path` imports -> True at the top, False only inside functions;
    and (module, name) pairs of names it takes from them."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: dict[str, bool] = {}
    names: set[tuple[str, str]] = set()

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            inner = top and not isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            )
            if isinstance(child, ast.ImportFrom) and child.module:
                mods: list[tuple[str, list[str]]] = []
                if child.module == "coach":
                    mods = [(a.name, []) for a in child.names]
                elif child.module.startswith("coach."):
                    mods = [(child.module.split(".")[1], [a.name for a in child.names])]
                for mod, taken in mods:
                    if not (PACKAGE / f"{mod}.py").exists():
                        continue  # a name of the package itself, such as __version__
                    found[mod] = found.get(mod, False) or inner
                    names.update((mod, n) for n in taken)
            elif isinstance(child, ast.Import):
                for a in child.names:
                    if a.name.startswith("coach."):
                        mod = a.name.split(".")[1]
                        found[mod] = found.get(mod, False) or inner
            visit(child, inner)

    visit(tree, True)
    return found, names


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail on a broken layout rule")
    args = parser.parse_args()
    modules = sorted(p for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py",))
    problems = []
    total = 0
    print(f"{'module':<16} {'lines':>5}  imports (lazy ones in parentheses)")
    for path in modules:
        name = path.stem
        lines = len(path.read_text(encoding="utf-8").splitlines())
        total += lines
        found, names = imports(path)
        shown = [m if top else f"({m})" for m, top in sorted(found.items())]
        print(f"{name:<16} {lines:>5}  {' '.join(shown) or '-'}")
        if name in PURE and found.keys() & SINKS:
            problems.append(f"{name} (a pure stage) imports {sorted(found.keys() & SINKS)}")
        if name in ("session", "render") and "live" in found:
            problems.append(f"{name} imports live")
        if name == "cli":
            private = sorted(f"{m}.{n}" for m, n in names if m in SINKS and n.startswith("_"))
            if private:
                problems.append(f"cli takes private names of sinks: {private}")
    print(f"{'total':<16} {total:>5}")
    for p in problems:
        print(f"layout: {p}", file=sys.stderr)
    return 1 if args.check and problems else 0


if __name__ == "__main__":
    sys.exit(main())
