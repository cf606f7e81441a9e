#!/usr/bin/env bash
# Set up everything coach needs on a fresh Debian or Ubuntu machine, idempotently:
# system packages (espeak-ng for speech, PortAudio and PulseAudio for sound, ffmpeg to
# check compressed files) and the package itself in a virtual environment, .venv.
# Usage: scripts/setup.sh [--test]   (--test also installs the test tools)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

PACKAGES=(espeak-ng libportaudio2 libsndfile1 pulseaudio pulseaudio-utils
          libasound2-plugins alsa-utils ffmpeg python3-venv)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
extra=""
if [ "${1:-}" = "--test" ]; then extra="[test]"; fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".${extra}"
echo "setup: ready (.venv/bin/coach)"
