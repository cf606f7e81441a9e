"""Voice commands in a simulated room: how many are understood between cues and over the
coach's speech, how often chatter or the coach's own voice would be obeyed, and how long
a command takes to act.

Everything runs through coach.listen.Listener, the code `coach run --listen` uses, fed
16 kHz microphone audio block by block (faster than real time), with the reference of
what the speakers were sent in a coach.live.Audible, as a live Player writes it, its
timing estimates jittered as a real queue's are. The room: the speakers reach the
microphone after 80 ms with reflections (tests/speech_for_listen.py: room), the coach's
echo about as loud as the person speaking, and a microphone's hiss (-60 dBFS).

1. Recognition: "coach, <command>" for every command, in the Piper voice (en_US-joe,
   three length scales) and five espeak-ng voices (three rates), with no added noise and
   with white noise 30 dB and 20 dB under the speech, in turn; once between cues, once
   over the coach's speech (rendered sessions of the built-in routines, commands laid
   over its cues after the first 8 s, the echo canceller learning the room as it goes).
   A command counts when the Listener hears that command for it (a wrong command and no
   command both count against).
2. False triggers: the chatter of tests/speech_for_listen.py (38 phrases, five voices,
   a cough and a laugh) between cues, with the wake word and without (--listen=direct);
   its 30 held-out phrases (CHATTER_HELD_OUT, said at the voices' other rates) with the
   wake word, and as many unseen ones (CHATTER_UNSEEN, the same way: no threshold is set
   on them, and none was set by looking at them); CHATTER said over the coach's cues,
   with the wake word (no goal); and the rendered sessions alone, the coach's speech fed
   back with barge-in on.
3. Command to effect: the later of the endpointer's wait after the speech ends and the
   end of the decoding (begun in the quiet before the endpointer's end: listen.TAIL;
   stream time, plus the decoding's wall time on this machine), plus one block and the
   output latency a live Player adds (coach.live). tests/test_listen_e2e.py measures
   the whole path through PulseAudio.

    .venv/bin/python scripts/bench_listen.py [--quick] [--skip over,own] [--log FILE]

The recognizer runs as in `coach run`: in a process of its own, its free loop of phones
in another (so "decoding" is the wall time a session sees, on this machine's cores).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TextIO

import numpy as np
import soundfile as sf
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from speech_for_listen import (
    CHATTER,
    CHATTER_HELD_OUT,
    CHATTER_UNSEEN,
    ESPEAK_VOICES,
    SR,
    cough,
    laugh,
    noisy,
    piper_available,
    room,
    speak,
)

from coach import listen
from coach.controls import WORDS
from coach.live import BLOCK, LATENCY, Audible
from coach.units import RATE

ESPEAK_RATES = [140, 175, 210]
PIPER_SCALES = [0.85, 1.0, 1.2]
#: onnxruntime's seed for Piper's noise (see seed_piper).
PIPER_SEED = 2026
NOISES: list[float | None] = [None, 30.0, 20.0]
ECHO_GAIN = 0.7  # the coach's sound at the microphone, against what the speakers were sent
ROUTINES = ("upper-back-basics", "upper-back-fist-rocking")


def speakers(quick: bool) -> list[tuple[str, float]]:
    voices = [("piper", s) for s in PIPER_SCALES] if piper_available() else []
    voices += [(v, r) for v in ESPEAK_VOICES for r in ESPEAK_RATES]
    return voices[::3] if quick else voices


@dataclass
class Room:
    """One simulated run: the coach's sound (48 kHz, mono) and what people say (16 kHz),
    both on one stream clock, through the Listener."""

    coach: np.ndarray  # 48 kHz
    sounding: list[tuple[float, float]]  # seconds: speech and chimes
    people: np.ndarray  # 16 kHz
    wake: str | None = "coach"
    seed: int = 0
    title: str = ""  # for --log
    heard: list[tuple[listen.Heard, float]] = field(default_factory=list)  # and stream time

    def run(self) -> listen.Listener:
        rng = np.random.default_rng(self.seed)
        n = len(self.people)
        t0 = 1000.0  # the monotonic clock at stream time 0
        audible = Audible()
        ref = soxr.resample(self.coach.astype(np.float64), RATE, SR)[:n]
        ref = np.pad(ref, (0, n - len(ref)))
        echo = np.convolve(ref, room(self.seed))[:n] * ECHO_GAIN
        mic = echo + self.people + rng.normal(0, 30 / 32768, n)
        pcm = np.clip(np.round(mic * 32768), -32768, 32767).astype("<i2").tobytes()
        # The recognizer as `coach run` has it on this machine: in a process of its own,
        # with the free loop of phones in another if there are cores for it
        # (listen.PHONE_LOOP_CORES; the decoding time is what a session would see).
        recognizer = listen.RecognizerProcess(self.wake, phones=_PHONES[0] if _PHONES else None)
        listener = listen.Listener(
            recognizer, gate=audible.during, reference=audible, trace=_tracer(self.title)
        )
        try:
            self._feed(listener, audible, pcm, rng, t0)
        finally:
            recognizer.close()
        return listener

    def _feed(
        self,
        listener: listen.Listener,
        audible: Audible,
        pcm: bytes,
        rng: np.random.Generator,
        t0: float,
    ) -> None:
        n = len(self.people)
        spans = iter(self.sounding)
        span = next(spans, None)
        written = 0
        block = round(0.03 * SR)
        for k in range(0, n, block):
            t = (k + block) / SR
            upto = min(len(self.coach), round((t + 0.3) * RATE))  # the Player keeps ahead
            while written < upto:
                m = min(BLOCK, upto - written)
                a, b = written / RATE, (written + m) / RATE
                while span is not None and span[1] < a:
                    span = next(spans, None)
                on = span is not None and span[0] < b
                heard_at = t0 + a - rng.uniform(0, 0.012)  # the queue's estimate runs early
                audible.sent(self.coach[written : written + m, None], written, heard_at, on)
                written += m
            got = listener.feed(pcm[2 * k : 2 * (k + block)], t0 + t + rng.uniform(0, 0.008))
            self.heard += [(shifted(h, -t0), t) for h in got]


#: --phone-loop on|off: whether the recognizer's free loop decodes in a process of its own
_PHONES: list[bool] = []
#: --log FILE: every utterance's fate and measures, as COACH_LISTEN_LOG writes them
_LOG: list[TextIO] = []


def _tracer(title: str) -> Callable[[str], None] | None:
    if not _LOG:
        return None
    log = _LOG[0]
    return lambda line: print(f"[{title}] {line}", file=log, flush=True)


def shifted(h: listen.Heard, by: float) -> listen.Heard:
    """`h` on another clock."""
    assert h.decoded_from is not None
    return replace(h, start=h.start + by, end=h.end + by, decoded_from=h.decoded_from + by)


def lay(clips: list[np.ndarray], at: list[float], n: int) -> np.ndarray:
    out = np.zeros(n)
    for clip, t in zip(clips, at, strict=True):
        k = round(t * SR)
        out[k : k + len(clip)] += clip[: n - k]
    return out


@dataclass(frozen=True)
class Said:
    text: str
    voice: str
    rate: float
    noise: float | None
    start: float
    end: float


def commands(
    voices: list[tuple[str, float]], seed: int
) -> list[tuple[str, str, float, float | None, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for i, ((voice, rate), command) in enumerate(itertools.product(voices, WORDS)):
        noise = NOISES[i % len(NOISES)]
        clip = noisy(speak(f"coach, {command}", voice, rate), noise, rng)
        out.append((command, voice, rate, noise, clip))
    return out


def score(
    said: list[Said], heard: list[tuple[listen.Heard, float]], title: str
) -> list[tuple[float, float, float]]:
    """Print the recognition figures; return, for each right command, the endpointer's
    wait from its end, when its decoding began from its end, and how long it took."""
    right: Counter[str] = Counter()
    total: Counter[str] = Counter()
    timing = []
    missed = []
    for s in said:
        got = [(h, at) for h, at in heard if h.start < s.end + 0.3 and h.end > s.start - 0.3]
        ok = len(got) == 1 and got[0][0].phrase == s.text
        voice = "piper" if s.voice == "piper" else f"espeak {s.voice}"
        for key in ("all", f"noise {s.noise or 'none'}", f"voice {voice}"):
            total[key] += 1
            right[key] += ok
        if ok:
            h, at = got[0]
            assert h.decoded_from is not None and h.decoding is not None
            timing.append((at - s.end, h.decoded_from - s.end, h.decoding))
        else:
            missed.append(
                f"{s.text!r} ({s.voice}, {s.rate:g}, noise {s.noise}) -> "
                f"{[g[0].phrase for g in got] or 'nothing'}"
            )
    goal = "at least 95%" if "between" in title else "at least 85%"
    print(
        f"recognition {title}: {right['all']}/{total['all']} commands "
        f"({100 * right['all'] / total['all']:.1f}%; goal: {goal})"
    )
    print("  " + "; ".join(f"{k} {right[k]}/{total[k]}" for k in sorted(total) if k != "all"))
    for line in missed[:10]:
        print(f"  missed: {line}")
    if len(missed) > 10:
        print(f"  ... and {len(missed) - 10} more")
    return timing


def between_cues(voices: list[tuple[str, float]]) -> list[tuple[float, float, float]]:
    clips = commands(voices, seed=1)
    at, t = [], 1.0
    for *_, clip in clips:
        at.append(t)
        t += len(clip) / SR + 1.3
    people = lay([c[-1] for c in clips], at, round((t + 1) * SR))
    silent = np.zeros(round((t + 1) * RATE), dtype=np.float32)
    sim = Room(silent, [], people, seed=1, title="between")
    listener = sim.run()
    said = [
        Said(c, v, r, nz, a, a + len(clip) / SR)
        for (c, v, r, nz, clip), a in zip(clips, at, strict=True)
    ]
    timing = score(said, sim.heard, "between cues")
    print(f"  {listener.counts}")
    return timing


def sessions() -> list[
    tuple[str, np.ndarray, list[tuple[float, float]], list[tuple[float, float]]]
]:
    """Rendered sessions: (name, 48 kHz mono, speech spans, speech-and-chime spans)."""
    from coach.render import render
    from coach.session import Options, prepare
    from coach.timeline import PULSE, SPEECH

    packs = ["gentle-en", "calm-en"] if piper_available() else ["calm-en"]
    out = []
    with tempfile.TemporaryDirectory() as folder:
        for routine, pack in itertools.product(ROUTINES, packs):
            prepared = prepare(routine, Options(voice=pack))
            path = Path(folder) / "session.wav"
            render(prepared, path)
            audio, rate = sf.read(str(path), dtype="float32")
            assert rate == RATE
            events = prepared.timeline.events
            speech = [(e.start / RATE, e.end / RATE) for e in events if e.kind == SPEECH]
            sounding = [(e.start / RATE, e.end / RATE) for e in events if e.kind != PULSE]
            out.append((f"{routine} ({pack})", audio.mean(axis=1), speech, sounding))
    return out


def over_cues(speech: list[tuple[float, float]], queue: list) -> tuple:
    """Which of `queue`'s clips (tuples, their sound last; taken from it, in turn) to say
    over the cues `speech` spans, and when: each within one cue, after the first 8 s
    (the canceller learns the room from the coach's first words), 1.2 s apart."""
    at, take = [], []
    last = 8.0
    for a, b in speech:
        while queue and max(a + 0.3, last) + len(queue[0][-1]) / SR < b and a > 8.0:
            start = max(a + 0.3, last)
            clip = queue.pop(0)
            at.append(start)
            take.append(clip)
            last = start + len(clip[-1]) / SR + 1.2
    return at, take


def chatter_over(voices: list[tuple[str, float]], rendered) -> None:
    """False triggers of CHATTER said over the coach's cues, with the wake word."""
    rng = np.random.default_rng(6)
    queue = [
        (text, v, r, noisy(speak(text, v, r), NOISES[i % 3], rng))
        for i, (text, (v, r)) in enumerate(itertools.product(CHATTER, voices))
    ]
    total, seconds, found, said = 0, 0.0, [], 0
    for k, (_, audio, speech, sounding) in enumerate(rendered):
        at, take = over_cues(speech, queue)
        people = lay([c[-1] for c in take], at, round(len(audio) / RATE * SR))
        sim = Room(audio, sounding, people, seed=30 + k, title=f"chatter over {k}")
        sim.run()
        total += len(sim.heard)
        said += len(take)
        seconds += sum(len(c[-1]) for c in take) / SR
        for h, _ in sim.heard:
            i = max(j for j, a in enumerate(at) if a <= h.start + 0.3)
            found.append(f"{h.phrase!r} from {take[i][0]!r} ({take[i][1]}, {take[i][2]:g})")
    print(
        f"false triggers, chatter over the coach's speech with the wake word: {total} in "
        f"{said} utterances, {seconds / 60:.1f} min of talk "
        f"({total / (seconds / 3600):.0f} per hour; no goal set)"
    )
    for line in found[:8]:
        print(f"    {line}")


def over_speech(voices: list[tuple[str, float]], rendered) -> None:
    clips = commands(voices, seed=2)
    said: list[Said] = []
    heard: list[tuple[listen.Heard, float]] = []
    ratios = []
    counts: Counter[str] = Counter()
    queue = list(clips)
    for k, (_, audio, speech, sounding) in enumerate(rendered):
        if not queue:
            break
        at, take = over_cues(speech, queue)
        n = round(len(audio) / RATE * SR)
        people = lay([c[-1] for c in take], at, n)
        sim = Room(audio, sounding, people, seed=10 + k, title=f"over {k}")
        listener = sim.run()
        counts += Counter(vars(listener.counts))
        shift = 10_000.0 * k  # each session on a clock of its own: keep them apart
        heard += [(shifted(h, shift), at) for h, at in sim.heard]
        ref = soxr.resample(audio.astype(np.float64), RATE, SR)
        for (c, v, r, nz, clip), a in zip(take, at, strict=True):
            said.append(Said(c, v, r, nz, a + shift, a + shift + len(clip) / SR))
            i = round(a * SR)
            echo = ref[i : i + len(clip)] * ECHO_GAIN
            ratios.append(10 * np.log10(np.mean(clip**2) / max(1e-12, np.mean(echo**2))))
    if queue:
        print(f"  ({len(queue)} commands found no cue long enough to say them over)")
    score(said, heard, "over the coach's speech")
    print(f"  {', '.join(f'{k} {v}' for k, v in counts.items())}")
    print(
        f"  command to echo: median {statistics.median(ratios):.1f} dB (the command against the "
        "coach's sound reaching the microphone)"
    )


#: The chatter sets: their phrases, the seed of their noise, and how the bench names them.
CHATTERS = {
    "chatter": (CHATTER, 3, "chatter"),
    "held-out": (
        CHATTER_HELD_OUT,
        4,
        "held-out chatter (one of its triggers looked at for listen.MIN_WAKE_SCORE)",
    ),
    "unseen": (CHATTER_UNSEEN, 5, "unseen chatter (no threshold set on it or by it)"),
}


def chatter(voices: list[tuple[str, float]], which: str = "chatter") -> None:
    """False triggers of talk between cues: CHATTER; or CHATTER_HELD_OUT or
    CHATTER_UNSEEN (said at the voices' other rates, and with the wake word only)."""
    phrases, seed, what = CHATTERS[which]
    held_out = which != "chatter"
    rng = np.random.default_rng(seed)
    if held_out:
        rates = {r for _, r in voices}
        others = sorted({r for v, r in speakers(False) if r not in rates} or rates)
        voices = [(v, others[i % len(others)]) for i, (v, _) in enumerate(voices)]
    clips = [
        noisy(speak(text, v, r), NOISES[i % 3], rng)
        for i, (text, (v, r)) in enumerate(itertools.product(phrases, voices))
    ]
    if not held_out:
        clips += [cough(0), laugh(0), cough(1), laugh(1)]
    at, t = [], 1.0
    for clip in clips:
        at.append(t)
        t += len(clip) / SR + 1.0
    n = round((t + 1) * SR)
    people = lay(clips, at, n)
    hours = sum(len(c) for c in clips) / SR / 3600
    runs: list[tuple[str | None, str]] = [("coach", "with the wake word")]
    if not held_out:
        runs.append((None, "without (--listen=direct)"))
    for wake, name in runs:
        silent = np.zeros(round((t + 1) * RATE), dtype=np.float32)
        title = f"{which} {wake or 'direct'}"
        sim = Room(silent, [], people, wake=wake, seed=3, title=title)
        listener = sim.run()
        goal = "; goal: 0" if wake else ""
        print(
            f"false triggers, {what} between cues {name}: {len(sim.heard)} in "
            f"{len(clips)} utterances, {hours * 60:.1f} min of talk "
            f"({len(sim.heard) / hours:.0f} per hour{goal}); {listener.counts.utterances} "
            "utterances reached the recognizer"
        )
        for h, _ in sim.heard[:8]:
            i = max(k for k, a in enumerate(at) if a <= h.start + 0.3)
            said = phrases[i // len(voices)] if i < len(phrases) * len(voices) else "cough/laugh"
            v, r = voices[i % len(voices)]
            print(f"    {h.phrase!r} from utterance {i}: {said!r} ({v}, {r:g})")


def own_voice(rendered) -> None:
    for wake, name in (("coach", "with the wake word"), (None, "bare commands (--listen=direct)")):
        total = 0
        speech_hours = 0.0
        counts = Counter()
        found = []
        for k, (title, audio, speech, sounding) in enumerate(rendered):
            n = round(len(audio) / RATE * SR)
            sim = Room(audio, sounding, np.zeros(n), wake=wake, seed=20 + k, title=f"own {k}")
            listener = sim.run()
            total += len(sim.heard)
            found += [f"{h.phrase!r} at {h.start:.1f} s in {title}" for h, _ in sim.heard]
            speech_hours += sum(b - a for a, b in speech) / 3600
            c = listener.counts
            counts.update(
                dict(
                    dropped_unlearnt=c.during_coach,
                    echo=c.echo,
                    own_words=c.own_words,
                    rejected=c.rejected,
                    too_long=c.too_long,
                )
            )
        print(
            f"false triggers, the coach's own speech fed back, barge-in on, {name}: {total} in "
            f"{speech_hours * 60:.1f} min of speech "
            f"({total / speech_hours:.1f} per hour; goal: 0); "
            + ", ".join(f"{k} {v}" for k, v in counts.items())
        )
        for line in found[:8]:
            print(f"    {line}")


def seed_piper() -> None:
    """Piper's voice is random: its model draws noise, and onnxruntime draws it unseeded
    (one command came out 19,172, 19,907 and 19,714 samples long in three takes), so two
    runs of this bench heard different commands and their figures scattered. Seeded
    before the model loads, every run says the very same commands."""
    with contextlib.suppress(ImportError):
        import onnxruntime

        onnxruntime.set_seed(PIPER_SEED)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a third of the voices")
    parser.add_argument(
        "--skip",
        default="",
        help="comma list: between,over,chatter,chatter-over,held-out,unseen,own",
    )
    parser.add_argument("--log", help="write each utterance's fate and measures to this file")
    parser.add_argument(
        "--phone-loop",
        choices=["on", "off"],
        help="decode the free loop of phones in a process of its own (default: as coach run "
        f"does, with {listen.PHONE_LOOP_CORES} cores or more)",
    )
    args = parser.parse_args()
    if args.phone_loop:
        _PHONES.append(args.phone_loop == "on")
    if args.log:
        _LOG.append(open(args.log, "w", encoding="utf-8"))  # noqa: SIM115 (for the whole run)
    skip = set(args.skip.split(","))
    began = time.perf_counter()
    seed_piper()
    voices = speakers(args.quick)
    print(f"voices: {', '.join(f'{v} {r:g}' for v, r in voices)}")
    if "between" not in skip:
        timing = between_cues(voices)
        player = BLOCK / RATE + LATENCY
        # The bench feeds faster than real time; live, the command acts once both the
        # endpointer has waited and the decoding (begun before, or then) is done.
        effect = [max(w, a + d) + player for w, a, d in timing]
        if effect:
            w, a, d = (statistics.median(column) for column in zip(*timing, strict=True))
            print(
                f"command to effect: median {1000 * statistics.median(effect):.0f} ms, "
                f"max {1000 * max(effect):.0f} ms (goal: median under 0.7 s): endpointer wait "
                f"median {1000 * w:.0f} ms, decoding from {1000 * a:.0f} ms (median) and "
                f"taking {1000 * d:.0f} ms (median), player {1000 * player:.0f} ms"
            )
    rendered = sessions() if not {"over", "own", "chatter-over"} <= skip else []
    if "over" not in skip:
        over_speech(voices, rendered)
    if "chatter" not in skip:
        chatter(voices)
    if "chatter-over" not in skip:
        chatter_over(voices, rendered)
    for which in ("held-out", "unseen"):
        if which not in skip:
            chatter(voices, which)
    if "own" not in skip:
        own_voice(rendered)
    print(f"bench time {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
