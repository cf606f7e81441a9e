#!/usr/bin/env python3
"""Benchmark: a live session through a real audio server, recorded and measured.

Starts a private PulseAudio server with a null sink (as the tests do), plays a
generated routine with `coach.live.run_live` while a busy loop keeps the other core
occupied, records the sink's monitor, and prints: the error of every cue's onset
(speech, chimes, pulses) against the timeline after removing the constant output
latency (median and 95th percentile), the underruns, and the time from a pause
command to silence. Goals (issue 4): median under 5 ms, p95 under 20 ms, no underruns
with the other core busy, pause to silence under 50 ms.

    .venv/bin/python scripts/bench_live.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from pulse import Recorder, pulse_server

RATE = 48_000
ROUTINE = """\
routine: 1
title: Live benchmark
steps:
""" + "".join(
    f"""  - title: Technique {i}
    say: Press slowly beside the spine, technique {i}, and keep your wrists soft.
    time: 14s
    rhythm: {40 + 5 * i}
    tips:
      - after: 8s
        say: Breathe out, and let your weight sink in.
"""
    for i in range(6)
)


def onset(signal: np.ndarray, template: np.ndarray, around: int, search: int) -> int:
    """Where `template` starts in `signal`, looking +-search samples around `around`."""
    lo = max(0, around - search)
    window = signal[lo : around + search + len(template)]
    corr = np.correlate(window, template, mode="valid")
    return lo + int(np.argmax(corr))


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="coach-bench-live-"))
    os.environ.setdefault("XDG_CACHE_HOME", str(work / "cache"))
    routine = work / "live.yaml"
    routine.write_text(ROUTINE)

    from coach.live import run_live
    from coach.render import render
    from coach.session import prepare
    from coach.timeline import SPEECH

    prepared = prepare(str(routine), live=True)
    render(prepared, work / "reference.wav")
    import soundfile as sf

    reference = sf.read(str(work / "reference.wav"), dtype="float32")[0].mean(axis=1)
    tl = prepared.timeline

    with pulse_server():
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            with Recorder(work / "played.wav") as rec:
                started = time.monotonic()
                result = run_live(prepared)
                time.sleep(0.3)
        finally:
            busy.kill()
        recording = rec.samples.mean(axis=1)

        # The constant latency: where the whole session fits the recording best.
        size = 1 << (len(recording) + len(reference)).bit_length()
        corr = np.fft.irfft(
            np.fft.rfft(recording, size) * np.conj(np.fft.rfft(reference, size)), size
        )
        begin = int(np.argmax(corr[: len(recording) - len(reference) + 1]))
        errors = []
        for e in tl.events:
            if e.start + RATE // 4 > len(reference):
                continue
            template = reference[e.start : e.start + RATE // 4]
            found = onset(recording, template, begin + e.start, RATE // 10) - begin
            error = (found - e.start) / RATE * 1000
            errors.append(abs(error))
            if os.environ.get("BENCH_VERBOSE"):
                print(f"  {e.start / RATE:7.2f} s {e.kind:6} {error:+8.2f} ms")
        errors.sort()
        p95 = errors[min(len(errors) - 1, round(0.95 * (len(errors) - 1)))]
        print(
            f"session: {tl.total / RATE:.1f} s, {len(errors)} onsets "
            f"({sum(e.kind == SPEECH for e in tl.events)} spoken cues, chimes and pulses); "
            f"output started {begin / RATE * 1000:.0f} ms into the recording "
            f"(run_live called {(started - rec.started) * 1000:.0f} ms in)"
        )
        print(
            f"onset error: median {statistics.median(errors):.2f} ms, p95 {p95:.2f} ms, "
            f"max {errors[-1]:.2f} ms (goals: median under 5 ms, p95 under 20 ms)"
        )
        print(f"underruns with the other core busy: {result.underruns} (goal: 0)")

        # Pause to silence: pause in the middle of a cue; the coach says nothing about it.
        cue = next(e for e in tl.events if e.kind == SPEECH and e.end - e.start > RATE)
        pressed: list[float] = []

        def tick(player) -> None:  # type: ignore[no-untyped-def]
            if not pressed and player.position() >= cue.start + (cue.end - cue.start) // 2:
                player.control("pause")
                pressed.append(time.monotonic())
            elif pressed and time.monotonic() - pressed[0] > 1.0:
                player.control("stop")

        with Recorder(work / "paused.wav") as rec:
            run_live(prepared, on_tick=tick, speak_controls=False)
            time.sleep(0.3)
        audio = np.abs(rec.samples).max(axis=1)
        key = rec.frame_at(pressed[0])
        loud = np.flatnonzero(audio[key : key + RATE] > 1e-4)
        silent_after = (loud[-1] + 1) if len(loud) else 0
        print(
            f"pause to silence: {silent_after / RATE * 1000:.1f} ms (goal: under 50 ms; "
            f"sound already sent to the device plays out, then a 12 ms fade)"
        )


if __name__ == "__main__":
    main()
