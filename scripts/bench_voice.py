#!/usr/bin/env python3
"""Benchmark: the voices. Prints, measured in one run:

- cold synthesis of a 30+ minute routine's distinct cues with gentle-en (Piper, joe),
  against Piper's own Python API speaking the same texts one after the other in one
  process (goal: at most 1.2x);
- the warm preview time of that routine, the whole `coach preview` command (goal: < 1 s);
- the measured words per minute of each pack on its language's built-in routines;
- pocketsphinx's open-transcription word error rate on each English pack's cues, as the
  render plays them (goal for gentle-en: at most 55%; espeak-ng packs are about 90%).

The routine is the two English built-in routines one after the other, at slow pace.
Each timing runs in a fresh process with an empty speech cache.

    .venv/bin/python scripts/bench_voice.py
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

ENGLISH = ("gentle-en", "calm-en", "brisk-en")
ROUTINES = {"en": ("upper-back-basics", "upper-back-fist-rocking"), "es": ()}


def combined_routine(names: tuple[str, ...], out: Path) -> Path:
    """One routine file: the first routine, then every step of the others."""
    from coach.routine import BUILTIN_DIR

    first, *rest = (BUILTIN_DIR / f"{n}.yaml" for n in names)
    text = first.read_text().replace("title: ", "title: Both routines, ", 1)
    text = re.sub(r"(?m)^voice: .*\n", "", text)
    for path in rest:
        text += path.read_text().split("\nsteps:\n", 1)[1]
    out.write_text(text)
    return out


def run_python(code: str, cache: Path) -> str:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        sys.exit(f"bench: {done.stderr.strip()}")
    return done.stdout


COLD = """
import json, sys, time
from coach.session import Options, prepare
if __name__ == "__main__":
    start = time.perf_counter()
    p = prepare({routine!r}, Options(voice="gentle-en", pace=1.25))
    took = time.perf_counter() - start
    texts = sorted({{p.settings.spoken(e.text) for e in p.timeline.events if e.kind == "speech"}})
    print(json.dumps({{"took": took, "texts": texts, "total": p.timeline.total,
                       "model": p.settings.model, "scale": p.settings.length_scale}}))
"""

FLOOR = """
import io, json, sys, time, wave
start = time.perf_counter()
from piper import PiperVoice, SynthesisConfig
texts = json.load(open({texts!r}))
voice = PiperVoice.load({model!r}, config_path={model!r} + ".json")
config = SynthesisConfig(length_scale={scale!r})
for text in texts:
    with wave.open(io.BytesIO(), "wb") as w:
        voice.synthesize_wav(text, w, syn_config=config)
print(time.perf_counter() - start)
"""


def word_error_rate(pack: str, routine: Path, cache: Path) -> tuple[float, int]:
    """Open transcription of every distinct cue as the render plays it (the cached clip,
    padded and given a little noise as audio_checks does), against the written text."""
    import numpy as np
    import soxr
    from audio_checks import spoken_words
    from pocketsphinx import Decoder

    os.environ["XDG_CACHE_HOME"] = str(cache)
    from coach.session import Options, prepare

    p = prepare(str(routine), Options(voice=pack))
    texts = sorted({e.text for e in p.timeline.events if e.kind == "speech"})
    decoder = Decoder(samprate=16000, loglevel="FATAL")
    errors = words = 0
    for text in texts:
        clip = p.clips().load(text)
        y = soxr.resample(clip.astype(np.float64), 48000, 16000)
        y = np.concatenate([np.zeros(4800), y, np.zeros(4800)])
        y = y + np.random.default_rng(0).normal(0, 2 / 32768, len(y))
        pcm = np.clip(np.round(y * 32768), -32768, 32767).astype("<i2").tobytes()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        said = hyp.hypstr.split() if hyp is not None else []
        ref = spoken_words(text).split()
        errors += _edit_distance(ref, said)
        words += len(ref)
    return errors / words, len(texts)


def _edit_distance(a: list[str], b: list[str]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def main() -> None:
    import argparse

    from coach.routine import builtin_routines
    from coach.session import Options, prepare
    from coach.timetext import clock

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cold-only", action="store_true", help="only the cold synthesis figure")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-voice-"))
    routine = combined_routine(ROUTINES["en"], work / "both.yaml")

    # Cold: coach, then Piper's own API on the same (spoken) texts, each in a fresh process.
    cold = json.loads(run_python(COLD.format(routine=str(routine)), work / "cold"))
    texts_file = work / "texts.json"
    texts_file.write_text(json.dumps(cold["texts"]))
    floor = float(
        run_python(
            FLOOR.format(texts=str(texts_file), model=cold["model"], scale=cold["scale"]),
            work / "floor",
        )
    )
    print(
        f"cold synthesis, gentle-en, {len(cold['texts'])} distinct cues of a "
        f"{clock(cold['total'])} routine: {cold['took']:.1f} s; Piper's own API, same texts, "
        f"one process: {floor:.1f} s; ratio {cold['took'] / floor:.2f}x (goal <= 1.2x)"
    )
    if args.cold_only:
        return

    # Warm: the whole command, as a user runs it.
    env = {**os.environ, "XDG_CACHE_HOME": str(work / "cold"), "PYTHONPATH": str(ROOT)}
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "coach", "preview", str(routine), "--voice", "gentle-en"],
            env=env,
            check=True,
            capture_output=True,
        )
        best = min(best, time.perf_counter() - start)
    print(f"warm preview, gentle-en, the whole command: {best:.2f} s (goal < 1 s)")

    # Words a minute of each pack, on its language's built-in routines.
    os.environ["XDG_CACHE_HOME"] = str(work / "cold")
    from coach.voicepack import available_packs, load_pack

    for pack in ("gentle-en", "calm-en", "brisk-en", "calme-es"):
        if pack not in available_packs():
            continue
        language = load_pack(pack).language
        names = [n for n in builtin_routines() if (language == "en") != n.endswith("-es")]
        rates = []
        for name in names:
            p = prepare(name, Options(voice=pack))
            rates.append(p.measured_rate)
        shown = ", ".join(f"{n} {r}" for n, r in zip(names, rates, strict=True))
        print(f"measured rate, {pack}: {round(sum(rates) / len(rates))} words a minute ({shown})")

    for pack in ENGLISH:
        wer, n = word_error_rate(pack, routine, work / "cold")
        goal = " (goal <= 55%)" if pack == "gentle-en" else ""
        print(f"pocketsphinx open transcription, {pack}, {n} cues: {100 * wer:.0f}% WER{goal}")


if __name__ == "__main__":
    main()
