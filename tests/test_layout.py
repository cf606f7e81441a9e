"""The package's layout keeps its story: the pure stages import no sink, neither session
nor render imports live, and the command line takes no private name of a sink."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "import_graph.py"


def test_the_import_graph_keeps_the_layouts_rules() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "timeline" in result.stdout and "total" in result.stdout
