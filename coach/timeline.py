"""The timeline: every cue, chime and pulse of a session with its start and end.

It is computed before any sound is made and is the one source of truth for preview,
captions, chapters, rendering and live playback. Pure: no clock and no I/O.

`coach.script.write_script` has decided *what* is said and sounded in each run (a step,
or one side of it), and the speech stage has measured every text. `build(script, sounds,
pacing)` decides *when*, in integer samples at RATE. Its rules: speech never overlaps and is kept
   GAP apart; a run's opening speech starts at its start (after its chime, when chimes
   sound); tips and countdowns sit at their times and are pushed later, never dropped,
   when speech is in the way; a run is lengthened until its speech fits; a countdown
   cue always starts exactly its number of seconds before the run ends; pace scales each
   run's time and its tip times, never the voice; a target length scales the time that
   is not speech, and is hit to the sample.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from coach.errors import CoachError
from coach.routine import PACE_RANGE
from coach.script import Run, Script
from coach.timetext import clock
from coach.units import RATE, Samples, to_samples, to_seconds

#: Silence kept between two spoken cues.
GAP: Samples = to_samples(0.35)
#: From a chime's strike to the speech that follows it.
CHIME_LEAD: Samples = to_samples(0.8)
#: A run ends no sooner than this after its last word.
TAIL: Samples = to_samples(0.5)
#: Silence at the very end of a session (it also lets an audio device drain).
END_SILENCE: Samples = to_samples(1.5)
#: The halfway cue has at least this much quiet before and after it, so that it is not
#: run into other talk; it is looked for from the middle to this share of the session
#: later, and left out (with a warning) if there is no such silence.
HALFWAY_QUIET: Samples = to_samples(1.5)
HALFWAY_REACH = 0.25
#: A rhythm follows the pace (a slower pace, a slower beat) but pace never takes it
#: outside this range of beats a minute (one written outside it stays as written).
BEAT_RANGE = (40.0, 120.0)
#: A rhythm's first beat and every ACCENT_EVERY-th after it lean a little harder, so a
#: long stretch of beats is not monotonous.
ACCENT_EVERY = 4


def paced_beat(bpm: float, factor: float, slower: float = 1.0) -> float:
    """Beats a minute of a rhythm at a pace `factor` (slow 1.25: 1.25 times slower),
    made `slower` still (live "more pressure"), within BEAT_RANGE."""
    low, high = min(BEAT_RANGE[0], bpm), max(BEAT_RANGE[1], bpm)
    scale = factor * slower
    return high if scale <= 0 else min(max(bpm / scale, low), high)


#: What an event is: a spoken cue, a chime, or a beat of the rhythm.
Kind = Literal["speech", "chime", "pulse"]
SPEECH: Kind = "speech"
CHIME: Kind = "chime"
PULSE: Kind = "pulse"
_KIND_ORDER: dict[Kind, int] = {CHIME: 0, SPEECH: 1, PULSE: 2}

#: What an event does in the session. Speech: a run's announcement (its title) and its
#: instructions, a side switch, a tip, a countdown, the halfway cue, the closing words.
#: Chimes: a step's, a side's, the end's. Pulses: a beat of the rhythm, or its accent.
Role = Literal[
    "announce", "say", "switch", "tip", "countdown", "halfway", "finished",
    "step", "side", "end",
    "rhythm", "accent",
]  # fmt: skip


class TimelineError(CoachError):
    """A session cannot be laid out at the length asked: shorter than the speech alone
    (`shortest` is the least length that holds it), or longer than the slowest pace
    stretches it (`longest`, with `needed`, about the pace it would take). The command
    line words the message with its own option's name."""

    exit_code = 2

    def __init__(
        self,
        asked: Samples,
        *,
        shortest: Samples | None = None,
        longest: Samples | None = None,
        needed: float = 0.0,
    ) -> None:
        self.asked = asked
        self.shortest = shortest
        self.longest = longest
        self.needed = needed
        if shortest is not None:
            why = (
                f"is shorter than the speech alone ({clock(shortest)}); ask for at least "
                f"{math.ceil(to_seconds(shortest))}s"
            )
        else:
            why = (
                f"would need a pace of {needed:.1f}x, slower than the slowest "
                f"({PACE_RANGE[1]:g}x); ask for at most {clock(longest or 0)}"
            )
        super().__init__(f"a length of {clock(asked)} {why}")


# -- When it is said ----------------------------------------------------------------


@dataclass(frozen=True)
class Sounds:
    """Measured lengths of everything the timeline places."""

    speech: Mapping[str, Samples]
    chimes: Mapping[str, Samples]
    pulse: Samples


@dataclass(frozen=True)
class Pacing:
    pace: float = 1.0  # scales each run's time (slow 1.25, brisk 0.8)
    length: Samples | None = None  # fit the whole session to this; overrides pace
    chimes: bool = True


@dataclass(frozen=True, order=True)
class Event:
    start: Samples
    order: int  # chimes, then speech, then pulses, for events that start together
    seq: int  # then the order they were placed in
    end: Samples = field(compare=False)
    kind: Kind = field(compare=False)
    text: str = field(compare=False)  # what is said, the chime's sound, or the pulse
    step: int | None = field(compare=False)
    side: str | None = field(compare=False)
    role: Role = field(compare=False)

    def as_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "start": round(to_seconds(self.start), 6),
            "end": round(to_seconds(self.end), 6),
            "step": self.step,
            "side": self.side,
            "text": self.text,
        }


@dataclass(frozen=True)
class Segment:
    """Where a run landed."""

    run: int  # index into Script.runs
    step: int
    side: str | None
    title: str
    start: Samples
    end: Samples
    nominal: Samples  # what its time asked for at this pace

    @property
    def lengthened(self) -> Samples:
        return max(0, self.end - self.start - self.nominal)


@dataclass(frozen=True)
class Timeline:
    title: str
    total: Samples
    events: tuple[Event, ...]
    segments: tuple[Segment, ...]
    factor: float  # the pace factor in effect (found by the fit when a length was asked)
    warnings: tuple[str, ...] = ()

    def as_json(self) -> dict[str, object]:
        return {
            "title": self.title,
            "total": round(to_seconds(self.total), 6),
            "pace": round(self.factor, 6),
            "events": [e.as_json() for e in self.events],
            "warnings": list(self.warnings),
        }


class _Placer:
    """Collects events in placement order and keeps speech apart.

    Nothing is placed before `after` (None: no limit). A spoken cue is left out when it
    is among `said` (cues a live session has already spoken, by step, side, role and
    text), or, without `said`, when its wanted time is before `after`.
    """

    def __init__(
        self,
        sounds: Sounds,
        after: Samples | None = None,
        said: Counter[tuple[int | None, str | None, Role, str]] | None = None,
    ) -> None:
        self.sounds = sounds
        self.events: list[Event] = []
        self.seq = 0
        self.after = after
        self.said = said
        self.free: Samples = after or 0  # earliest start of the next speech

    def add(
        self, kind: Kind, start: Samples, length: Samples, text: str, run: Run | None, role: Role
    ) -> Event | None:
        if self.after is not None and start < self.after:
            return None
        event = Event(
            start,
            _KIND_ORDER[kind],
            self.seq,
            start + length,
            kind,
            text,
            run.step if run else None,
            run.side if run else None,
            role,
        )
        self.seq += 1
        self.events.append(event)
        return event

    def say(self, at: Samples, text: str, run: Run | None, role: Role) -> Event | None:
        if self.said is not None:
            key = (run.step if run else None, run.side if run else None, role, text)
            if self.said[key] > 0:
                self.said[key] -= 1
                return None
        elif self.after is not None and at < self.after:
            return None
        event = self.add(SPEECH, max(at, self.free), self.sounds.speech[text], text, run, role)
        assert event is not None
        self.free = event.end + GAP
        return event


def _place_run(
    p: _Placer,
    index: int,
    run: Run,
    start: Samples,
    factor: float,
    chimes: bool,
    more: Samples = 0,
    slower: float = 1.0,
    pause: Samples = GAP,
) -> tuple[Segment, Samples]:
    """Place one run from `start` (`more` samples longer than its time asks, its beat
    `slower` than the pace makes it, `pause` between the sentences of its opening);
    returns its segment and the latest start a later cue (the halfway cue) may have in
    it without crossing its countdown."""
    nominal = to_samples(run.time * factor) + more
    p.free = max(p.free, start)
    if chimes:
        role: Role = "side" if run.switch else "step"
        if p.add(CHIME, start, p.sounds.chimes[run.chime], run.chime, run, role):
            p.free = max(p.free, start + CHIME_LEAD)
    roles: tuple[Role, Role] = ("switch" if run.switch else "announce", "say")
    last = None
    for k, text in enumerate(run.opening):
        said = p.say(start, text, run, roles[min(k, 1)])
        if said is not None and k + 1 < len(run.opening):
            # The title (or the switch) and the instructions are one message in
            # separate sentences: a longer pause between them than between cues.
            p.free = max(p.free, said.end + pause)
        last = said or last
    opening_end = last.end if last else max(start, p.after or 0)
    for tip in run.tips:
        last = p.say(start + to_samples(tip.offset * factor), tip.text, run, "tip") or last
    end = start + nominal
    speech_end = last.end if last else max(start, p.after or 0)
    cue = None
    if run.countdown is not None:
        cd = to_samples(run.countdown)
        cue = p.say(end - cd, run.countdown_text, run, "countdown")
        if cue is not None:
            end = max(cue.start + cd, cue.end + TAIL)
    if cue is not None:
        limit = cue.start
    else:
        end = max(end, speech_end + TAIL)
        limit = end - TAIL
    if run.rhythm:
        bpm = paced_beat(run.rhythm, factor, slower)
        period = RATE * 60.0 / bpm
        first = opening_end + GAP
        k = 0
        while (at := first + round(k * period)) + p.sounds.pulse <= end - TAIL:
            beat: Role = "accent" if k % ACCENT_EVERY == 0 else "rhythm"
            p.add(PULSE, at, p.sounds.pulse, f"{bpm:.3g} bpm", run, beat)
            k += 1
    segment = Segment(index, run.step, run.side, run.title, start, end, nominal)
    return segment, limit


def _layout(
    script: Script,
    sounds: Sounds,
    factor: float,
    chimes: bool,
    extra: Samples = 0,
    *,
    first: int = 0,
    start: Samples = 0,
    after: Samples | None = None,
    more: Mapping[int, Samples] | None = None,
    beat: Mapping[int, float] | None = None,
    said: Iterable[Event] | None = None,
) -> tuple[list[Event], list[Segment], list[Samples], Samples]:
    """Lay out runs `first`.. from `start` (the first run may have begun before `after`,
    the moment from which events are kept), then the closing."""
    already: Counter[tuple[int | None, str | None, Role, str]] | None = None
    if said is not None:
        # A countdown is said again if the step has been lengthened since.
        already = Counter(
            (e.step, e.side, e.role, e.text)
            for e in said
            if e.kind == SPEECH and e.role != "countdown"
        )
    p = _Placer(sounds, after, already)
    segments: list[Segment] = []
    limits: list[Samples] = []
    at = start
    for index in range(first, len(script.runs)):
        run = script.runs[index]
        extra_time = more.get(index, 0) if more else 0
        segment, limit = _place_run(
            p, index, run, at, factor, chimes, extra_time,
            slower=beat.get(index, 1.0) if beat else 1.0,
            pause=to_samples(script.title_pause),
        )  # fmt: skip
        segments.append(segment)
        limits.append(limit)
        at = segment.end
    at = max(at, after or 0)
    p.free = max(p.free, at)
    spoken = p.say(at, script.finished, None, "finished")
    assert spoken is not None
    end = spoken.end
    if chimes:
        bell = p.add(
            CHIME, spoken.end + GAP, sounds.chimes[script.end_chime], script.end_chime, None, "end"
        )
        assert bell is not None
        end = bell.end
    return p.events, segments, limits, end + END_SILENCE + extra


def _total(script: Script, sounds: Sounds, factor: float, chimes: bool) -> Samples:
    return _layout(script, sounds, factor, chimes)[3]


def fit_factor(script: Script, sounds: Sounds, length: Samples, chimes: bool) -> float:
    """The largest pace factor whose session is no longer than `length`.

    The total grows with the factor (only the time that is not speech scales), so a
    bisection finds it. A length shorter than the speech alone, or longer than the
    slowest pace (PACE_RANGE) makes the session, is refused.
    """
    floor = _total(script, sounds, 0.0, chimes)
    if length < floor:
        raise TimelineError(length, shortest=floor)
    slowest = PACE_RANGE[1]
    ceiling = _total(script, sounds, slowest, chimes)
    if length > ceiling:
        # Nearly linear in the factor: what it would take, for the message.
        needed = slowest * (length - floor) / max(1, ceiling - floor)
        raise TimelineError(length, longest=ceiling, needed=needed)
    lo, hi = 0.0, 1.0
    while hi < slowest and _total(script, sounds, hi, chimes) <= length:
        lo, hi = hi, min(hi * 2, slowest)
    if _total(script, sounds, hi, chimes) <= length:
        return hi
    for _ in range(64):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        if _total(script, sounds, mid, chimes) <= length:
            lo = mid
        else:
            hi = mid
    return lo


def build(script: Script, sounds: Sounds, pacing: Pacing = Pacing()) -> Timeline:
    """Place every event of the session. Pure: same inputs, same timeline."""
    factor = pacing.pace
    extra = 0
    if pacing.length is not None:
        factor = fit_factor(script, sounds, pacing.length, pacing.chimes)
        # Rounding each run to whole samples leaves the fit a few samples short at most;
        # they go to the final silence so the total is exactly what was asked.
        extra = pacing.length - _total(script, sounds, factor, pacing.chimes)
    events, segments, limits, total = _layout(script, sounds, factor, pacing.chimes, extra)
    warnings = list(script.warnings)
    halfway = _place_halfway(script, sounds, events, segments, limits)
    if halfway is None:
        warnings.append(
            "the halfway cue is left out: no silence near the middle holds it with "
            f"{to_seconds(HALFWAY_QUIET):g}s of quiet on each side"
        )
    else:
        events.append(halfway)
    for seg in segments:
        if seg.lengthened >= to_samples(0.05):
            side = f" ({seg.side} side)" if seg.side else ""
            warnings.append(
                f'step {seg.step + 1} "{seg.title}"{side} lengthened by '
                f"{to_seconds(seg.lengthened):.1f}s to fit what it says"
            )
    return Timeline(
        title=script.title,
        total=total,
        events=tuple(sorted(events)),
        segments=tuple(segments),
        factor=factor,
        warnings=tuple(warnings),
    )


def build_rest(
    script: Script,
    sounds: Sounds,
    *,
    factor: float,
    chimes: bool,
    first_run: int,
    run_start: Samples,
    now: Samples,
    more: Mapping[int, Samples] | None = None,
    beat: Mapping[int, float] | None = None,
    said: Iterable[Event] | None = None,
    halfway: bool = True,
) -> Timeline:
    """The rest of a session laid out again from `now`, as a live control asks.

    Runs `first_run`.. follow each other from `run_start` (before `now` when the run is
    already under way, equal to it when it starts afresh); `more` lengthens runs by
    their index, and `beat` makes their rhythm slower by a factor. Nothing is placed
    before `now`. The cues in `said` (those already spoken, when the run under way goes
    on) are left out; without `said`, those wanted before `now` are. The halfway cue is
    placed again only if `halfway`.
    """
    events, segments, limits, total = _layout(
        script,
        sounds,
        factor,
        chimes,
        first=first_run,
        start=run_start,
        after=now,
        more=more,
        beat=beat,
        said=said,
    )
    if halfway:
        cue = _place_halfway(script, sounds, events, segments, limits, after=now)
        if cue is not None:
            events.append(cue)
    return Timeline(
        title=script.title,
        total=total,
        events=tuple(sorted(events)),
        segments=tuple(segments),
        factor=factor,
    )


def _place_halfway(
    script: Script,
    sounds: Sounds,
    events: list[Event],
    segments: list[Segment],
    limits: list[Samples],
    after: Samples = 0,
) -> Event | None:
    """The halfway cue goes into the first silence at or after the middle of the
    session's steps that holds it with HALFWAY_QUIET of quiet on each side (no speech,
    no chime's strike), inside a run and before that run's countdown; it is not looked
    for past HALFWAY_REACH of the session after the middle."""
    if not segments:
        return None
    length = sounds.speech[script.halfway]
    quiet = HALFWAY_QUIET
    sound = sorted(
        (e.start, e.end if e.kind == SPEECH else e.start + CHIME_LEAD)
        for e in events
        if e.kind != PULSE
    )
    middle = max(segments[-1].end // 2, after)
    reach = middle + round(HALFWAY_REACH * segments[-1].end)
    candidates = sorted({middle} | {end + quiet for _, end in sound if end + quiet >= middle})
    si = 0
    for at in candidates:
        if at > reach:
            return None
        while si < len(segments) and segments[si].end <= at:
            si += 1
        if si == len(segments):
            return None
        seg = segments[si]
        if at + length > limits[si]:
            continue
        if any(s < at + length + quiet and at < e + quiet for s, e in sound):
            continue
        run = script.runs[seg.run]
        return Event(
            at,
            _KIND_ORDER[SPEECH],
            10**9,
            at + length,
            SPEECH,
            script.halfway,
            run.step,
            run.side,
            "halfway",
        )
    return None
