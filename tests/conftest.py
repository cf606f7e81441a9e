"""Shared test setup: a speech cache of the test run's own, so runs start cold and never
touch the user's cache (scripts/test.sh also points XDG_CACHE_HOME at a fresh folder)."""

from __future__ import annotations

import os
import tempfile

import pytest

if "COACH_TEST_KEEP_CACHE" not in os.environ:
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="coach-test-cache-")
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="coach-test-data-")


@pytest.fixture
def run_cli(capsys):
    """Run `coach ARGS...` in-process; returns (exit code, stdout, stderr)."""
    from coach.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse usage errors
            code = exc.code if isinstance(exc.code, int) else 2
        out, err = capsys.readouterr()
        return code, out, err

    return run
