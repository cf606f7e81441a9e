#!/usr/bin/env bash
# Set everything up, then start the default routine live on the speakers. On a machine
# with no audio output, write it to a file instead and say where it is.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/coach list
if ! .venv/bin/coach run upper-back-basics; then
  echo "no speakers here: writing the session to upper-back-basics.mp3 instead"
  .venv/bin/coach render upper-back-basics -o upper-back-basics.mp3 --captions --chapters
fi
