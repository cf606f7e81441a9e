#!/usr/bin/env python3
"""Benchmark: rendering generated routines to files.

Prints, for a routine of 30+ minutes: the cold render time (empty speech cache) as a
ratio to the espeak-ng command line speaking the same cues one by one; the warm render
time as a multiple of real time for WAV (and FLAC, MP3 for comparison); and the peak
memory of `coach render` processes for a 10-minute and a 2-hour session.
Goals (issue 3): cold at most 1.5x the floor, warm at least 1000x real time for WAV,
peak memory under 200 MB for 2 hours.

    .venv/bin/python scripts/bench_render.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_timeline import espeak_floor, make_routine

RATE = 48_000


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    # Each run writes hundreds of MB; start each with the disk done with the last one's,
    # so one measurement does not pay for another's write-back.
    os.sync()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def peak_rss_mb(args: list[str]) -> tuple[float, float]:
    """(seconds, peak resident memory in MB) of a child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"bench: {' '.join(args)} failed")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="coach-bench-"))
    os.environ["XDG_CACHE_HOME"] = str(work / "cache")

    from coach.render import render
    from coach.session import prepare

    half_hour = work / "half-hour.yaml"
    half_hour.write_text(make_routine(40))  # 40 steps of 40 s, a quarter with two sides
    out = work / "out"
    out.mkdir()

    prepared = None
    split: list[float] = []

    def cold() -> None:
        nonlocal prepared
        start = time.perf_counter()
        prepared = prepare(str(half_hour))
        split.append(time.perf_counter() - start)
        render(prepared, out / "cold.wav")

    cold_s = timed(cold)
    (out / "cold.wav").unlink()
    assert prepared is not None
    minutes = prepared.timeline.total / RATE / 60
    texts = sorted({e.text for e in prepared.timeline.events if e.kind == "speech"})
    (work / "cli").mkdir()
    floor = espeak_floor(texts, prepared.voice_id, prepared.rate, work / "cli")
    print(f"routine: {minutes:.1f} min session, {len(texts)} distinct cues")
    print(
        f"cold render (synthesis + mix + WAV): {cold_s:.2f} s ({split[0]:.2f} s preparing "
        f"the speech and timeline, {cold_s - split[0]:.2f} s mixing and writing)"
    )
    print(
        f"espeak-ng command line once per cue: {floor:.2f} s; cold / command line: "
        f"{cold_s / floor:.2f}x (goal: at most 1.5x)"
    )

    for ext in (".wav", ".flac", ".mp3"):

        def warm(ext: str = ext) -> None:
            render(prepare(str(half_hour)), out / f"warm{ext}")

        seconds = timed(warm)
        (out / f"warm{ext}").unlink()
        goal = " (goal: at least 1000x)" if ext == ".wav" else ""
        print(f"warm render {ext}: {seconds:.2f} s, {minutes * 60 / seconds:.0f}x real time{goal}")

    coach = [sys.executable, "-m", "coach", "render"]
    ten = work / "ten-minutes.yaml"
    ten.write_text(make_routine(12))
    two_hours = work / "two-hours.yaml"
    two_hours.write_text(make_routine(160))
    for label, routine in (("10-minute", ten), ("2-hour", two_hours)):
        # The first run fills the speech cache; the second is measured.
        subprocess.run(
            [*coach, str(routine), "-o", str(out / "warmup.wav")],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        os.sync()
        seconds, mb = peak_rss_mb([*coach, str(routine), "-o", str(out / f"{label}.wav")])
        length = prepare(str(routine)).timeline.total / RATE / 60
        goal = " (goal: under 200 MB)" if label == "2-hour" else ""
        print(
            f"peak memory, {label} session ({length:.0f} min) to WAV: {mb:.0f} MB{goal}, "
            f"{seconds:.1f} s"
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
