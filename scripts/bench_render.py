#!/usr/bin/env python3
"""Benchmark: rendering a 36-minute session to files, against the tools it is judged by.

Prints, in one run, each figure next to its reference measured in the same run:
- warm MP3 (`coach render ... -o x.mp3`, the whole command) and its size, against
  `ffmpeg -i x.wav -c:a libmp3lame -q:a 4` encoding the same session already mixed
  (goal: at most 0.6x ffmpeg's encode alone; at most 20 MB);
- warm WAV as a multiple of real time (goal: at least 3000x; the median of 3 runs),
  M4B and Opus times;
- cold WAV (empty speech cache) against the espeak-ng command line speaking the same
  cues one by one (goal: at most 1.5x; the medians of 3 runs each, taken in turn);
- the peak memory of a 2-hour session to WAV and to MP3 (goal: under 200 MB);
- a batch of 6 renders in one command against the same 6 one after another
  (goal: at most 0.65x; the medians of 3 runs each, taken in turn).

    .venv/bin/python scripts/bench_render.py [--minutes 36]

Each `coach` command runs from byte-compiled modules, as an installed package does (pip
compiles them at install time, and Python itself on a checkout's first run): where
PYTHONDONTWRITEBYTECODE is set, every command would otherwise compile every module of
the package from source, about 0.1 s of each that no installed copy spends. So the
package is byte-compiled (into its __pycache__ folders, which git ignores) before any
timing.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_timeline import espeak_floor, make_routine

ROOT = Path(__file__).resolve().parent.parent
# The figures measured in this process are of this tree's code, as the commands' are
# (they run in it), not of another copy of the package that may be installed.
sys.path.insert(0, str(ROOT))

RATE = 48_000
#: Runs of the cold render, of its reference and of the warm WAV, whose medians are shown.
ROUNDS = 3
COACH = [sys.executable, "-m", "coach", "render"]


def spread(seconds: list[float]) -> str:
    return " ".join(f"{s:.2f}" for s in seconds) + " s"


def run(args: list[str], env: dict[str, str] | None = None) -> float:
    """Seconds a command takes, its output thrown away; the disk settled before it."""
    os.sync()
    start = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, env=env, cwd=ROOT)
    return time.perf_counter() - start


def peak_rss_mb(args: list[str]) -> tuple[float, float]:
    """(seconds, peak resident memory in MB) of a child process."""
    os.sync()
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"bench: {' '.join(args)} failed")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def espeak_routine(steps: int) -> str:
    """make_routine's routine spoken by an espeak-ng pack (calm-en): the cold render is
    held to the espeak-ng command line, and memory does not depend on the voice."""
    return make_routine(steps).replace("steps:\n", "voice: calm-en\nsteps:\n", 1)


def steps_for(minutes: float) -> int:
    """Steps of make_routine that make a session of about this many minutes."""
    return max(1, round(minutes / 36.9 * 44))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=36, help="length of the main session")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="coach-bench-"))
    env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache")}
    os.environ.update(env)
    if not compileall.compile_dir(ROOT / "coach", quiet=1):
        sys.exit("bench: the package does not compile")
    out = work / "out"
    out.mkdir()
    session = work / "session.yaml"
    # An espeak-ng pack, so that the cold render is held to the espeak-ng command line.
    session.write_text(espeak_routine(steps_for(args.minutes)))

    # Cold: an empty cache, the whole command, against espeak-ng speaking the same cues.
    # Each side ROUNDS times, taken in turn, and the medians compared: one run of either
    # moved by a fifth from one minute to the next on these machines.
    from coach.session import prepare

    (work / "cli").mkdir()
    colds, floors = [], []
    for _ in range(ROUNDS):
        shutil.rmtree(work / "cache", ignore_errors=True)
        # No earlier file in the way, as for the warm renders: replacing one makes the
        # file system free its 400 MB first (0.13 s measured), which is not rendering.
        (out / "cold.wav").unlink(missing_ok=True)
        colds.append(run([*COACH, str(session), "-o", str(out / "cold.wav")], env))
        # Prepared here from the cache the cold render just filled (this process must
        # not synthesize the session itself), as it stands for the warm renders below.
        prepared = prepare(str(session))
        texts = sorted(prepared.script.texts())
        floors.append(espeak_floor(texts, prepared.voice_id, prepared.rate, work / "cli"))
    cold, floor = statistics.median(colds), statistics.median(floors)
    minutes = prepared.timeline.total / RATE / 60
    print(f"session: {minutes:.1f} min, {len(texts)} distinct cues ({session.name})")
    print(
        f"cold WAV render: {cold:.2f} s; espeak-ng command line once per cue: {floor:.2f} s; "
        f"cold / command line: {cold / floor:.2f}x (goal: at most 1.5x; medians of "
        f"{ROUNDS} in turn: cold {spread(colds)}, command line {spread(floors)})"
    )

    # Warm: the whole command, so start-up and preparing count too.
    def warm(ext: str) -> tuple[float, float]:
        path = out / f"warm{ext}"
        path.unlink(missing_ok=True)
        seconds = run([*COACH, str(session), "-o", str(path)], env)
        return seconds, path.stat().st_size / 1e6

    wav_runs = [warm(".wav")[0] for _ in range(ROUNDS)]
    wav_s = statistics.median(wav_runs)
    from coach.mixer import SoundBank, session_gain

    start = time.perf_counter()
    session_gain(prepared.timeline, SoundBank(prepared.clips(), volume=prepared.pack.volume))
    gain_s = time.perf_counter() - start
    print(
        f"warm WAV render: {wav_s:.2f} s, {minutes * 60 / wav_s:.0f}x real time "
        f"(goal: at least 3000x; median of {ROUNDS}: {spread(wav_runs)}); of which the "
        f"session's loudness (mixer.session_gain) {gain_s:.2f} s"
    )
    mp3_s, mp3_mb = warm(".mp3")
    lame = out / "ffmpeg.mp3"
    ffmpeg_s = run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(out / "warm.wav"), "-c:a", "libmp3lame",
         "-q:a", "4", str(lame)]
    )  # fmt: skip
    print(
        f"warm MP3 render: {mp3_s:.2f} s, {mp3_mb:.1f} MB (goal: at most 20 MB); "
        f"ffmpeg -c:a libmp3lame -q:a 4 on the mixed WAV: {ffmpeg_s:.2f} s, "
        f"{lame.stat().st_size / 1e6:.1f} MB; ours / ffmpeg: {mp3_s / ffmpeg_s:.2f}x "
        "(goal: at most 0.6x)"
    )
    for ext in (".m4b", ".opus"):
        seconds, mb = warm(ext)
        print(f"warm {ext[1:].upper()} render: {seconds:.2f} s, {mb:.1f} MB")
    for path in out.iterdir():
        path.unlink()

    # Memory: a 2-hour session, warm.
    two_hours = work / "two-hours.yaml"
    two_hours.write_text(espeak_routine(steps_for(120)))
    run([*COACH, str(two_hours), "-o", str(out / "warmup.wav")], env)
    for ext in (".wav", ".mp3"):
        seconds, mb = peak_rss_mb([*COACH, str(two_hours), "-o", str(out / f"two-hours{ext}")])
        print(
            f"peak memory, 2-hour session ({prepare(str(two_hours)).timeline.total / RATE / 60:.0f}"
            f" min) to {ext[1:].upper()}: {mb:.0f} MB (goal: under 200 MB), {seconds:.1f} s"
        )
    for path in out.iterdir():
        path.unlink()

    # A batch: two routines at three paces, as a class would render them.
    routines = ["upper-back-basics", "upper-back-fist-rocking"]
    paces = ["slow", "normal", "brisk"]
    template = str(out / "{routine}-{pace}.mp3")
    for r in routines:  # the speech both need, made once before either is timed
        run([*COACH, r, "-o", str(out / "warmup.mp3")], env)
    # Each side ROUNDS times, taken in turn, and the medians compared (as the cold line).
    batches, series = [], []
    for _ in range(ROUNDS):
        batches.append(run([*COACH, *routines, "--pace", ",".join(paces), "-o", template], env))
        series.append(
            sum(
                run([*COACH, r, "--pace", p, "-o", str(out / f"{r}-{p}-again.mp3")], env)
                for r in routines
                for p in paces
            )
        )
    batch, one_by_one = statistics.median(batches), statistics.median(series)
    print(
        f"batch of 6 MP3 renders ({', '.join(routines)} at {', '.join(paces)}): {batch:.2f} s; "
        f"the same 6 one after another: {one_by_one:.2f} s; batch / one by one: "
        f"{batch / one_by_one:.2f}x (goal: at most 0.65x; medians of {ROUNDS} in turn: batch "
        f"{spread(batches)}, one by one {spread(series)})"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
