"""Voice commands: how many are understood, how often the coach's own voice would be
obeyed, and how long a command takes to act.

Everything runs through coach.listen.Listener, the code `coach run --listen` uses, fed
16 kHz audio block by block as a microphone would feed it (but faster than real time).

1. Recognition: every command in several espeak-ng voices and rates, 1 s apart, with
   a faint hiss (-60 dBFS) and, in turn, no more, white noise 30 dB and 20 dB under the
   speech. A command counts when the Listener hears that command for it (a wrong
   command and no command both count against).
2. False triggers: rendered sessions (both routines, calm-en and brisk-en) fed in whole,
   as if the speakers were beside the microphone: once with the gate that drops what is
   heard while the coach sounds (as live), once without it (the recognizer alone).
3. Command to effect: per command, the endpointer's wait after the speech ends (stream
   time), plus the decoding (wall time on this machine), plus one block and the output
   latency a live Player adds (coach.live). tests/test_listen_e2e.py measures the whole
   path through PulseAudio and holds it under 1 s.

    .venv/bin/python scripts/bench_listen.py
"""

from __future__ import annotations

import io
import itertools
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from coach import listen
from coach.live import BLOCK, ECHO_TAIL, LATENCY
from coach.timeline import PULSE
from coach.units import RATE

VOICES = ["en-us", "en", "en-gb-scotland", "en-029", "en-us+f3", "en-gb-x-rp"]
SPEEDS = [140, 175, 210]
NOISES: list[float | None] = [None, 30.0, 20.0]  # speech-to-noise in dB; None: hiss only
SR = listen.MIC_RATE


def espeak(text: str, voice: str, speed: int) -> np.ndarray:
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text],
        capture_output=True,
        check=True,
    ).stdout
    y, rate = sf.read(io.BytesIO(wav), dtype="float64")
    return soxr.resample(y, rate, SR)


def stream(
    listener: listen.Listener, audio: bytes, t0: float = 0.0
) -> list[tuple[listen.Heard, float, float]]:
    """Feed `audio` in 30 ms blocks; each command with the stream time at which it was
    decided and the wall time its block took."""
    out = []
    block = round(0.03 * SR) * 2
    for k in range(0, len(audio), block):
        chunk = audio[k : k + block]
        captured = t0 + (k + len(chunk)) / 2 / SR
        began = time.perf_counter()
        heard = listener.feed(chunk, captured)
        took = time.perf_counter() - began
        out += [(h, captured, took) for h in heard]
    return out


def recognition() -> tuple[list[float], list[float]]:
    rng = np.random.default_rng(1)
    parts, truth = [], []
    pos = 1.0
    parts.append(np.zeros(SR))
    cases = list(itertools.product(VOICES, SPEEDS, listen.WORDS))
    for i, (voice, speed, command) in enumerate(cases):
        y = espeak(command, voice, speed)
        noise = NOISES[i % len(NOISES)]
        if noise is not None:
            power = np.mean(y[np.abs(y) > 1e-3] ** 2)
            y = y + rng.normal(0, np.sqrt(power / 10 ** (noise / 10)), len(y))
        parts += [y, np.zeros(SR)]
        truth.append((pos, pos + len(y) / SR, command, voice, speed, noise))
        pos += len(y) / SR + 1.0
    x = np.concatenate(parts)
    listener = listen.Listener(listen.Recognizer())
    results = stream(listener, listen.to_pcm(x, SR, seed=3))  # with a microphone's hiss
    right = Counter()
    total = Counter()
    waits, decodes = [], []
    wrong = []
    for start, end, command, voice, speed, noise in truth:
        got = [
            (h, at, took) for h, at, took in results if h.start < end + 0.3 and h.end > start - 0.3
        ]
        ok = len(got) == 1 and got[0][0].phrase == command
        for key in ("all", f"noise {noise or 'none'}", f"voice {voice}", f"rate {speed}"):
            total[key] += 1
            right[key] += ok
        if ok:
            _, at, took = got[0]
            waits.append(at - end)
            decodes.append(took)
        else:
            wrong.append(
                f"{command!r} ({voice}, {speed} wpm, noise {noise}) -> "
                f"{[g[0].phrase for g in got] or 'nothing'}"
            )
    print(
        f"recognition: {right['all']}/{total['all']} commands "
        f"({100 * right['all'] / total['all']:.1f}%; goal: at least 95%)"
    )
    for key in sorted(total):
        if key != "all":
            print(
                f"  {key:<22} {right[key]:>3}/{total[key]:<3} "
                f"({100 * right[key] / total[key]:.0f}%)"
            )
    for line in wrong:
        print(f"  missed: {line}")
    print(f"  utterances {listener.counts.utterances}, rejected {listener.counts.rejected}")
    return waits, decodes


def false_triggers() -> None:
    from coach.render import render
    from coach.session import Options, prepare

    sessions = [
        (r, v)
        for r in ("upper-back-basics", "upper-back-fist-rocking")
        for v in ("calm-en", "brisk-en")
    ]
    totals = {"gate": 0, "no gate": 0}
    heard_without: list[str] = []
    heard_with: list[str] = []
    session_hours = speech_hours = 0.0
    ignored = 0
    with tempfile.TemporaryDirectory() as folder:
        for routine, voice in sessions:
            prepared = prepare(routine, Options(voice=voice))
            path = Path(folder) / f"{routine}-{voice}.wav"
            render(prepared, path)
            audio, rate = sf.read(str(path), dtype="float64")
            data = listen.to_pcm(audio.mean(axis=1), rate, seed=2)
            spans = [
                (e.start / RATE, e.end / RATE) for e in prepared.timeline.events if e.kind != PULSE
            ]

            def sounding(start: float, end: float, spans=spans) -> bool:
                return any(a <= end and start <= b + ECHO_TAIL for a, b in spans)

            recognizer = listen.Recognizer()
            gated = listen.Listener(recognizer, gate=sounding)
            open_ = listen.Listener(recognizer)
            through = stream(gated, data)
            totals["gate"] += len(through)
            heard_with += [
                f"{h.phrase!r} at {h.start:.1f} s in {routine} ({voice})" for h, _, _ in through
            ]
            found = stream(open_, data)
            totals["no gate"] += len(found)
            heard_without += [
                f"{h.phrase!r} at {h.start:.1f} s in {routine} ({voice})" for h, _, _ in found
            ]
            ignored += gated.counts.during_coach
            session_hours += len(data) / 2 / SR / 3600
            speech_hours += (
                sum(e.end - e.start for e in prepared.timeline.events if e.kind == "speech")
                / RATE
                / 3600
            )
    print(
        f"false triggers, coach's own speech fed back: {session_hours:.2f} h of sessions "
        f"holding {speech_hours:.2f} h of speech"
    )
    print(
        f"  with the gate (as live): {totals['gate']} "
        f"({totals['gate'] / speech_hours:.1f} per hour of speech; goal: 0); "
        f"{ignored} utterances ignored"
    )
    for line in heard_with[:12]:
        print(f"    {line}")
    print(
        f"  without the gate (recognizer alone): {totals['no gate']} "
        f"({totals['no gate'] / speech_hours:.1f} per hour of speech)"
    )
    for line in heard_without[:12]:
        print(f"    {line}")


def main() -> int:
    began = time.perf_counter()
    waits, decodes = recognition()
    player = BLOCK / RATE + LATENCY
    effect = [w + d + player for w, d in zip(waits, decodes, strict=True)]
    print(
        f"command to effect: median {1000 * statistics.median(effect):.0f} ms, "
        f"max {1000 * max(effect):.0f} ms (goal: under 1 s): endpointer wait median "
        f"{1000 * statistics.median(waits):.0f} ms, decoding median "
        f"{1000 * statistics.median(decodes):.0f} ms max {1000 * max(decodes):.0f} ms, "
        f"player {1000 * player:.0f} ms"
    )
    false_triggers()
    print(f"bench time {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
