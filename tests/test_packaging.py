"""A non-editable install carries the built-in routines and voice packs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_holds_the_routines_and_the_voice_packs(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("coach-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for routine in (ROOT / "coach" / "routines").rglob("*.yaml"):
        assert routine.relative_to(ROOT).as_posix() in names
    for pack in (ROOT / "voice_packs").rglob("pack.yaml"):
        assert "coach/" + pack.relative_to(ROOT).as_posix() in names
    assert "coach/voice_packs/calm-en/pack.yaml" in names
