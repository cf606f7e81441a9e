#!/usr/bin/env bash
# Set everything up, then start the default routine live on the speakers. On a machine
# with no audio output, write it to a file instead (in sessions/, which git ignores) and
# say how to play it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/coach list
if ! .venv/bin/coach run upper-back-basics; then
  mkdir -p sessions
  out=sessions/upper-back-basics.mp3
  echo "no speakers here: writing the session to $out instead"
  .venv/bin/coach render upper-back-basics -o "$out" --captions --chapters
  echo "play it on a phone or any music player, or here with: ffplay -nodisp $out"
fi
