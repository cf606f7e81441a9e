"""Routine files: finding them, reading them, and refusing what is wrong with them.

A routine is a YAML file of steps (the README's "Writing a routine"). `load_routine` returns frozen
data or raises `RoutineError` naming file, line, column, field and what was expected.
Built-in routines live in coach/routines/ and are addressed by name; anything else is a
path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from coach import yamlfile
from coach.errors import RoutineError, UsageError
from coach.timetext import format_duration
from coach.units import Seconds
from coach.yamlfile import Field

FORMAT_VERSION = 1
SIDES = ("left", "right")
PACES = {"slow": 1.25, "normal": 1.0, "brisk": 0.8}
PACE_RANGE = (0.25, 4.0)
RHYTHM_RANGE = (20.0, 200.0)

BUILTIN_DIR = Path(__file__).parent / "routines"


@dataclass(frozen=True)
class Tip:
    """Spoken during a step: once `after` a time, or `every` so often."""

    say: str
    after: Seconds | None = None
    every: Seconds | None = None


@dataclass(frozen=True)
class Pressure:
    more: str | None = None
    less: str | None = None


@dataclass(frozen=True)
class Step:
    title: str
    say: str
    time: Seconds
    sides: tuple[str, ...] = ()
    tips: tuple[Tip, ...] = ()
    countdown: Seconds | None = None
    rhythm: float | None = None
    pressure: Pressure = Pressure()


@dataclass(frozen=True)
class Where:
    """A place in a file, so later checks (voice pack, language) can point at it."""

    file: str
    line: int
    column: int


@dataclass(frozen=True)
class Routine:
    title: str
    steps: tuple[Step, ...]
    description: str = ""
    language: str | None = None
    voice: str | None = None
    pace: float | None = None
    source: str = "<routine>"
    voice_where: Where | None = None
    language_where: Where | None = None


def pace_name(factor: float, places: int = 6) -> str | None:
    """slow, normal or brisk when the factor is one of theirs (to `places` decimals)."""
    return next(
        (name for name, value in PACES.items() if round(value, places) == round(factor, places)),
        None,
    )


def parse_pace(text: str) -> float | None:
    """slow | normal | brisk | a factor like 1.2 -> the factor; None if it is none of those."""
    text = text.strip().lower()
    if text in PACES:
        return PACES[text]
    try:
        value = float(text.rstrip("x"))
    except ValueError:
        return None
    return value if PACE_RANGE[0] <= value <= PACE_RANGE[1] else None


PACE_HINT = f"slow, normal, brisk or a factor from {PACE_RANGE[0]:g} to {PACE_RANGE[1]:g} like 1.2"


def builtin_routines() -> dict[str, Path]:
    """Built-in routines by name. Translations live in subfolders named by language
    and are addressed as `name-LANG` (e.g. upper-back-basics-es)."""
    found = {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.yaml"))}
    for sub in sorted(p for p in BUILTIN_DIR.iterdir() if p.is_dir()):
        for p in sorted(sub.glob("*.yaml")):
            found[f"{p.stem}-{sub.name}"] = p
    return found


def find_routine(name_or_path: str) -> tuple[Path, str]:
    """A built-in routine's name or a file path -> (path to read, label for messages)."""
    builtins = builtin_routines()
    if name_or_path in builtins:
        return builtins[name_or_path], name_or_path
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists() or "/" in name_or_path:
        return path, name_or_path
    raise UsageError(
        f"no built-in routine named {name_or_path!r} and no such file "
        f"(built-in: {', '.join(builtins)}; see `coach list`)"
    )


def load_routine(name_or_path: str) -> Routine:
    path, label = find_routine(name_or_path)
    root = yamlfile.load(path, label, RoutineError)
    return read_routine(root)


def _where(field: Field) -> Where:
    mark = field.node.start_mark
    return Where(field.src.label, mark.line + 1, mark.column + 1)


def read_routine(root: Field) -> Routine:
    top = root.mapping(
        required=("routine", "title", "steps"),
        optional=("description", "language", "voice", "pace"),
    )
    version = top["routine"]
    if version.integer(low=0, high=10**6) != FORMAT_VERSION:
        version.fail(
            f"format version {version.node.value} is not supported (this coach reads "
            f"version {FORMAT_VERSION}: write `routine: {FORMAT_VERSION}`)"
        )
    pace = None
    if "pace" in top:
        value = top["pace"]
        pace = (
            parse_pace(str(value.node.value))
            if value.node.tag.endswith((":str", ":int", ":float"))
            else None
        )
        if pace is None:
            value.fail(f"{value.raw} is not a pace ({PACE_HINT})")
    language = None
    if "language" in top:
        language = top["language"].text()
        if not language.replace("-", "").isalpha() or len(language) > 12:
            top["language"].fail(f"{top['language'].raw} is not a language code (like en or es)")
    return Routine(
        title=top["title"].template(()),
        description=top["description"].text() if "description" in top else "",
        language=language,
        voice=top["voice"].text() if "voice" in top else None,
        pace=pace,
        steps=tuple(_read_step(f) for f in top["steps"].items(min_len=1)),
        source=root.src.label,
        voice_where=_where(top["voice"]) if "voice" in top else None,
        language_where=_where(top["language"]) if "language" in top else None,
    )


def _read_step(field: Field) -> Step:
    keys = field.mapping(
        required=("title", "say", "time"),
        optional=("sides", "tips", "countdown", "rhythm", "pressure"),
    )
    time = keys["time"].duration()
    sides: tuple[str, ...] = ()
    if "sides" in keys:
        names = []
        for item in keys["sides"].items(min_len=1):
            side = item.text()
            if side not in SIDES:
                item.fail(f"{item.raw} is not a side (expected left or right)")
            if side in names:
                item.fail(f"side {side!r} is listed twice")
            names.append(side)
        sides = tuple(names)
    placeholders = ("side",) if sides else ()

    def spoken(f: Field) -> str:
        if not sides and "{side}" in str(f.node.value):
            f.fail("{side} is only allowed in a step with sides (add sides: [right, left])")
        return f.template(placeholders)

    tips = tuple(_read_tip(f, time, spoken) for f in keys["tips"].items()) if "tips" in keys else ()
    countdown = None
    if "countdown" in keys:
        countdown = keys["countdown"].duration()
        if countdown >= time:
            keys["countdown"].fail(
                f"{keys['countdown'].raw} is not shorter than the step ({format_duration(time)})"
            )
    rhythm = None
    if "rhythm" in keys:
        rhythm = keys["rhythm"].number(
            low=RHYTHM_RANGE[0], high=RHYTHM_RANGE[1], what="a rhythm in beats per minute"
        )
    pressure = Pressure()
    if "pressure" in keys:
        p = keys["pressure"].mapping(optional=("more", "less"))
        pressure = Pressure(
            more=spoken(p["more"]) if "more" in p else None,
            less=spoken(p["less"]) if "less" in p else None,
        )
    return Step(
        title=keys["title"].template(()),
        say=spoken(keys["say"]),
        time=time,
        sides=sides,
        tips=tips,
        countdown=countdown,
        rhythm=rhythm,
        pressure=pressure,
    )


def _read_tip(field: Field, step_time: Seconds, spoken: Callable[[Field], str]) -> Tip:
    keys = field.mapping(required=("say",), optional=("after", "every"))
    if ("after" in keys) == ("every" in keys):
        field.fail("a tip needs exactly one of `after: TIME` or `every: TIME`")
    which = "after" if "after" in keys else "every"
    at = keys[which].duration()
    if at >= step_time:
        keys[which].fail(
            f"{keys[which].raw} falls outside its step (the step lasts "
            f"{format_duration(step_time)}; a tip must come before the end)"
        )
    say = spoken(keys["say"])
    return Tip(
        say=say, after=at if which == "after" else None, every=at if which == "every" else None
    )
