#!/usr/bin/env bash
# Set everything up, then show the default routine's session.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/coach list
.venv/bin/coach preview upper-back-basics
