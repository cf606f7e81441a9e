#!/usr/bin/env bash
# Set everything up (system packages, venv with test tools), then run the whole suite:
# ruff (lint and format), mypy, then pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
.venv/bin/ruff check coach tests scripts
.venv/bin/ruff format --check coach tests scripts
.venv/bin/mypy coach
# Tests get their own speech cache, so a run starts cold and leaves the user's alone.
export XDG_CACHE_HOME="${XDG_CACHE_HOME_FOR_TESTS:-$(mktemp -d)}"
# The ten slowest tests are listed at the end: where the suite's time goes.
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=10 "$@"
