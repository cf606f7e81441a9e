#!/usr/bin/env python3
"""Benchmark: preview of a generated routine, cold (empty speech cache) and warm.

Prints the cold synthesis time next to the floor it is measured against (the espeak-ng
command line run once per cue, the same texts, voice and rate), their ratio, and the
warm preview time of the whole routine. Goals (issue 2): warm preview of 1,000 steps
under 1 s; cold synthesis within 1.5x of the command line.

    .venv/bin/python scripts/bench_timeline.py [--steps 1000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VERBS = ["Press", "Glide", "Knead", "Circle", "Stroke", "Hold", "Rock", "Pinch", "Sweep"]
PLACES = [
    "beside the spine",
    "across the shoulder",
    "over the shoulder blade",
    "along the neck",
    "down the back",
    "on the upper arm",
    "between the blades",
]


def make_routine(steps: int) -> str:
    """A routine whose every step, tip and side says something different."""
    lines = ["routine: 1", f"title: Benchmark of {steps} steps", "steps:"]
    for i in range(steps):
        verb, place = VERBS[i % len(VERBS)], PLACES[(i // len(VERBS)) % len(PLACES)]
        lines += [
            f"  - title: {verb} {place} {i}",
            f"    say: {verb} slowly {place}, round {i}, and keep your wrists soft.",
            "    time: 40s",
            "    tips:",
            "      - after: 20s",
            f"        say: Tip {i}. Breathe out and let your weight sink in.",
        ]
        if i % 4 == 0:
            lines += ["    sides: [right, left]", "    countdown: 8s"]
    return "\n".join(lines) + "\n"


def espeak_floor(texts: list[str], voice: str, rate: int, out: Path) -> float:
    """The espeak-ng command line speaking every text to a file, one process per cue."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        sys.exit("bench: espeak-ng is not installed (apt install espeak-ng)")
    start = time.perf_counter()
    for i, text in enumerate(texts):
        subprocess.run(
            [exe, "-v", voice, "-s", str(rate), "-w", str(out / f"{i}.wav"), text], check=True
        )
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="coach-bench-"))
    os.environ["XDG_CACHE_HOME"] = str(work / "cache")
    routine_file = work / "bench.yaml"
    routine_file.write_text(make_routine(args.steps))

    from coach import speech
    from coach.cli import format_table
    from coach.routine import load_routine
    from coach.script import write_script
    from coach.session import prepare
    from coach.voicepack import load_pack, resolve_voice

    routine = load_routine(str(routine_file))
    pack = load_pack("calm-en")
    voice, _ = resolve_voice(pack, speech.list_voices())
    texts = sorted(write_script(routine, pack).texts())
    settings = speech.SpeechSettings(voice=voice.id, rate=pack.rate)

    synth = speech.Synthesizer(speech.SpeechCache())
    start = time.perf_counter()
    synth.ensure(texts, settings)
    cold = time.perf_counter() - start

    (work / "cli").mkdir()
    floor = espeak_floor(texts, voice.id, pack.rate, work / "cli")

    start = time.perf_counter()
    prepared = prepare(str(routine_file))
    table = format_table(prepared)
    warm = time.perf_counter() - start

    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "coach", "preview", str(routine_file)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    warm_cli = time.perf_counter() - start

    tl = prepared.timeline
    print(
        f"routine: {args.steps} steps, {len(tl.segments)} runs, {len(texts)} distinct texts, "
        f"{len(tl.events)} events, session {tl.total / 48000 / 60:.1f} min, "
        f"table {len(table.splitlines())} lines"
    )
    print(
        f"cold synthesis: {cold:.2f} s ({cold / len(texts) * 1000:.1f} ms a cue, "
        f"{synth.worker_count(len(texts))} workers on {os.cpu_count()} cores)"
    )
    print(
        f"espeak-ng command line, once per cue: {floor:.2f} s "
        f"({floor / len(texts) * 1000:.1f} ms a cue)"
    )
    print(f"cold / command line: {cold / floor:.2f}x (goal: at most 1.5x)")
    print(f"warm preview, in process: {warm:.3f} s (goal: under 1 s)")
    print(f"warm preview, `python -m coach preview` as a command: {warm_cli:.3f} s")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
