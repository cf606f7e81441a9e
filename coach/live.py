"""Live sessions: the timeline played through the speakers, steered by keys (or voice).

Three parts, outermost last:

- `LivePlan` (pure): the session's schedule, and how each control changes it from the
  moment it is pressed: next and back jump to a step, faster and slower re-pace the rest,
  more time lengthens this step. Each returns the new timeline of the rest.
- `Player`: makes the blocks of samples, a little ahead of the audio clock, into the
  queue the output callback copies from. It uses the same Mixer as a render, so an
  untouched live session is the rendered file, sample for sample. Controls run between
  blocks: the queue is cut after the block playing now, and what follows fades across
  from the old schedule to the new one. Pausing holds the session's clock; what the
  coach says about it (paused, resumed, a repeated cue) plays while the clock is held.
- `run_live`: output stream, keys and screen around a Player.

Time here is the session's own, in samples: it only moves while the session plays, so
a pause of any length changes nothing that comes after it.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from coach.controls import QUIT_WINDOW, WAKE_WORD, Command, Status
from coach.mixer import Mixer, SoundBank
from coach.routine import PACE_RANGE
from coach.script import Hint, Script
from coach.timeline import CHIME, SPEECH, Event, Kind, Segment, Sounds, Timeline, build_rest
from coach.units import RATE, Samples, to_samples

if TYPE_CHECKING:
    import numpy as np

    from coach.session import Prepared

#: Frames the player makes at a time (a control takes effect after the block playing,
#: so this bounds its delay, with the device's latency), and how far ahead of the
#: speakers it keeps (a control drops what is queued, so this costs no delay).
BLOCK: Samples = 512
AHEAD: Samples = to_samples(0.3)
#: Fades that keep controls free of clicks.
FADE: Samples = to_samples(0.012)
#: "m" adds this to the step in progress.
MORE_TIME: Samples = to_samples(30.0)
#: "b" within this much of a step's start goes to the step before; later, to its start.
BACK_GRACE: Samples = to_samples(5.0)
#: "+" and "-" change the pace by this factor.
PACE_STEP = 1.1
#: "More pressure" makes the rhythm of the step under way this much slower.
PRESSURE_BEAT = 1.15
#: The output latency asked of the device: PortAudio's "low" (9 ms on PulseAudio) let
#: a Python callback underflow now and then; this is still far under a cue's notice.
LATENCY = 0.03
#: Silence after the end, so the device plays out what it holds (docs/audio-devices.md).
TAIL: Samples = to_samples(0.4)

#: How long after the coach last made a sound (speech or a chime, heard in the room)
#: the microphone is still taken to hear it: the room's echo, the sound server's buffers
#: and the microphone's own latency.
ECHO_TAIL = 0.45
#: How much of what the speakers were sent is kept for the echo canceller, in seconds.
REFERENCE_KEEP = 20.0


class Audible:
    """What the coach sends to the speakers, and when the room hears it: written by the
    thread that queues blocks (`sent`), read by the one that listens.

    Two things come of it. `during(start, end)` says whether the coach could be heard
    between two times of time.monotonic() (speech, chimes, taps; not the rhythm's soft
    pulses): without an echo canceller a listener ignores what it heard then, so that the
    coach never obeys itself. And `read(frame, n)` gives back the sound itself, mono, by
    the output stream's frame, with `frame_at(t)` for the frame the room hears at time t:
    the reference an echo canceller takes out of the microphone's signal.

    Frames are counted as the output queue counts them (frames put, less those a control
    dropped before they played), so the reference is exactly what played, controls and
    all. When a frame plays is estimated from each block's queueing (the queue ahead of
    it and the output latency), which runs early by up to one callback's worth; the
    latest of the recent estimates is the offset, and it only moves (`epoch` counts the
    moves) when the estimates move by more than `jump`: an underrun, a clock that drifts.
    """

    def __init__(
        self,
        tail: float = ECHO_TAIL,
        keep: float = 30.0,
        *,
        reference: float = REFERENCE_KEEP,
        jump: float = 0.03,
    ) -> None:
        self.tail = tail
        self.keep = keep
        self.jump = jump
        self.epoch = 0
        self.offset: float | None = None  # monotonic time at which frame 0 is heard
        self._spans: collections.deque[list[float]] = collections.deque()
        self._lock = threading.Lock()
        self._size = to_samples(reference)
        self._ring: np.ndarray | None = None  # made on the first block
        self._written = 0  # the ring holds frames up to this one
        self._estimates: collections.deque[float] = collections.deque(maxlen=96)

    def add(self, start: float, end: float) -> None:
        """The coach sounds from `start` to `end` (time.monotonic())."""
        with self._lock:
            spans = self._spans
            if spans and start <= spans[-1][1] + 0.05:
                spans[-1][1] = max(spans[-1][1], end)
            else:
                spans.append([start, end])
            while spans and spans[0][1] < end - self.keep:
                spans.popleft()

    def during(self, start: float, end: float) -> bool:
        """Whether the coach could be heard at any moment from `start` to `end`."""
        with self._lock:
            return any(a <= end and start <= b + self.tail for a, b in self._spans)

    def sent(self, block: np.ndarray, frame: int, start: float, sounding: bool) -> None:
        """A block (frames, channels) was queued to play from the output's `frame` on,
        heard from about `start`; `sounding`: speech or a chime is in it."""
        import numpy as np

        if sounding:
            self.add(start, start + len(block) / RATE)
        mono = block.mean(axis=1, dtype=np.float32) if block.ndim == 2 else block
        with self._lock:
            if self._ring is None:
                self._ring = np.zeros(self._size, dtype=np.float32)
            if frame > self._written:  # the stream played silence of its own meanwhile
                gap = min(frame - self._written, self._size)
                self._store(self._written, np.zeros(gap, dtype=np.float32))
            self._store(frame, mono)
            self._written = frame + len(mono)  # later frames, if any, were dropped
            self._estimates.append(start - frame / RATE)
            latest = max(self._estimates)
            if self.offset is None or abs(latest - self.offset) > self.jump:
                self.offset = latest
                self.epoch += 1

    def _store(self, frame: int, mono: np.ndarray) -> None:
        """Write frames from `frame` on into the ring (its last `_size` at most)."""
        assert self._ring is not None
        at = frame % self._size
        n = min(len(mono), self._size)
        first = min(n, self._size - at)
        self._ring[at : at + first] = mono[:first]
        self._ring[: n - first] = mono[first:n]

    def frame_at(self, t: float) -> int | None:
        """The output frame the room hears at monotonic time `t` (None before any block)."""
        offset = self.offset
        return None if offset is None else round((t - offset) * RATE)

    def read(self, frame: int, n: int) -> np.ndarray:
        """Frames `frame` to `frame + n` as sent, mono float32; silence where nothing was
        sent (yet, or any more)."""
        import numpy as np

        out = np.zeros(n, dtype=np.float32)
        with self._lock:
            ring = self._ring
            if ring is None:
                return out
            lo = max(frame, self._written - self._size, 0)
            hi = min(frame + n, self._written)
            if hi > lo:  # at most one ring's length: two pieces at most
                at = lo % self._size
                first = min(hi - lo, self._size - at)
                out[lo - frame : lo - frame + first] = ring[at : at + first]
                out[lo - frame + first : hi - frame] = ring[: hi - lo - first]
        return out


@dataclass
class LivePlan:
    """The schedule of a live session and the controls that change it (pure)."""

    script: Script
    sounds: Sounds
    timeline: Timeline
    chimes: bool = True
    more: dict[int, Samples] = field(default_factory=dict)
    beat: dict[int, float] = field(default_factory=dict)  # a run's rhythm made slower

    @property
    def factor(self) -> float:
        return self.timeline.factor

    def segment_at(self, now: Samples) -> Segment | None:
        """The run being played at `now`; None in the closing."""
        for seg in self.timeline.segments:
            if seg.start <= now < seg.end:
                return seg
        return None

    def _halfway_said(self, now: Samples) -> bool:
        return not any(e.role == "halfway" and e.start >= now for e in self.timeline.events)

    def _rest(
        self,
        first_run: int,
        run_start: Samples,
        now: Samples,
        factor: float | None = None,
        *,
        goes_on: bool = False,
    ) -> Timeline:
        """The rest from `now`. When the run under way `goes_on` (re-paced, lengthened),
        what it has already said is not said again, whenever it was meant to be."""
        said = [e for e in self.timeline.events if e.start < now] if goes_on else None
        self.timeline = build_rest(
            self.script,
            self.sounds,
            factor=self.factor if factor is None else factor,
            chimes=self.chimes,
            first_run=first_run,
            run_start=run_start,
            now=now,
            more=self.more,
            beat=self.beat,
            said=said,
            halfway=not self._halfway_said(now),
        )
        return self.timeline

    def next_run(self, now: Samples) -> Timeline:
        """To the next run: the other side of a two-sided step, or the next step."""
        seg = self.segment_at(now)
        if seg is None:
            return self.timeline
        return self._rest(seg.run + 1, now, now)

    def back(self, now: Samples) -> Timeline:
        """To the start of this run, or of the run before within BACK_GRACE of its start
        (from the closing: the last run)."""
        seg = self.segment_at(now)
        if seg is None:
            return self._rest(len(self.script.runs) - 1, now, now)
        run = seg.run
        if now - seg.start < BACK_GRACE and run > 0:
            run -= 1
        return self._rest(run, now, now)

    def repace(self, now: Samples, factor: float) -> Timeline:
        """The rest at another pace; the run under way keeps the share of it already done."""
        factor = min(max(factor, PACE_RANGE[0]), PACE_RANGE[1])
        seg = self.segment_at(now)
        if seg is None:
            return self.timeline
        done = (now - seg.start) / max(1, seg.end - seg.start)
        length = to_samples(self.script.runs[seg.run].time * factor) + self.more.get(seg.run, 0)
        return self._rest(seg.run, now - round(done * length), now, factor, goes_on=True)

    def more_time(self, now: Samples) -> Timeline:
        seg = self.segment_at(now)
        if seg is None:
            return self.timeline
        self.more[seg.run] = self.more.get(seg.run, 0) + MORE_TIME
        return self._rest(seg.run, seg.start, now, goes_on=True)

    def pressure(self, now: Samples, which: Hint) -> Timeline | None:
        """More pressure slows the rhythm of the run under way a little (pressing slower
        and deeper), lighter brings it back; None when nothing changes."""
        seg = self.segment_at(now)
        if seg is None or not self.script.runs[seg.run].rhythm:
            return None
        slower = PRESSURE_BEAT if which == "more" else 1.0
        if self.beat.get(seg.run, 1.0) == slower:
            return None
        self.beat[seg.run] = slower
        return self._rest(seg.run, seg.start, now, goes_on=True)

    def cue_at(self, now: Samples) -> Event | None:
        """The spoken cue sounding at `now`, if any."""
        for e in self.timeline.events:
            if e.kind == SPEECH and e.start <= now < e.end:
                return e
        return None

    def last_cue(self, now: Samples) -> Event | None:
        said = [e for e in self.timeline.events if e.kind == SPEECH and e.start <= now]
        return said[-1] if said else None


@dataclass
class Hold:
    """A stretch of sound played while the session's clock stands still."""

    samples: np.ndarray  # (n, channels)
    offset: int = 0


class Player:
    """Makes blocks for the output queue, runs controls, and reports where it is.

    `pump()` does one round (controls, then blocks until AHEAD is queued) and is called
    from a feeder thread, or directly by tests with a fake output. `control(name)` may
    be called from any thread: commands wait in a queue for the next round.
    """

    def __init__(
        self,
        plan: LivePlan,
        bank: SoundBank,
        out: Any,
        *,
        gain: float,
        speak_controls: bool = True,
        latency: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plan = plan
        self.bank = bank
        self.out = out  # a speakers.BlockQueue
        self.gain = gain
        self.channels = bank.channels
        self.mixer = Mixer(plan.timeline, bank, gain=gain)
        self.commands: queue.Queue[tuple[Command, str | None]] = queue.Queue()
        self.speak_controls = speak_controls  # say "paused", the pressure hints...
        self.paused = False
        self.resume_at: Samples = 0  # where a pause will resume
        self.hold: Hold | None = None
        self.overlays: list[Hold] = []
        self.finished = False  # everything, tail included, is queued
        self.quit = False
        self.message = ""
        self.made: Samples = 0  # session position of the next block to make (the mixer
        # is moved there when it is not: controls only set this)
        self.origin: Samples = 0  # where the session starts
        self._fade_in = False  # the next session block starts from silence
        #: When the coach is heard (blocks holding speech or chimes, taps, what it says
        #: about a control), by `clock`, reckoned from the queue and the output latency.
        self.audible = Audible()
        self.latency = latency
        self.clock = clock
        self.voice = ""  # what the screen says about voice commands
        self.stutters = 0  # the output's underruns, for the screen
        self._tapped = False
        self._quit_asked: float | None = None  # when a first QUIT came

    # -- where we are --------------------------------------------------------------

    # Every block is queued with the tag (start, frames, after[, held]): its session
    # position (None while the session's clock is held), where the session stands after
    # it, and for a held block the Hold it plays and how far into it the block ends.

    def position(self) -> Samples:
        """The session position the speakers are playing. While the session's clock is
        held (paused, or the coach saying something about a control) it stands still."""
        tag, offset = self.out.played
        if tag is None:
            return self.origin
        if tag[0] is None:
            return tag[2]
        return tag[0] + min(offset, tag[1])

    def _cut(self) -> Samples:
        """Drop what is queued after the block being played, and return where the
        session stands after that block: the moment a control takes effect from. It is
        read from what the queue kept, not before clearing it, since the output may
        move on into the next block meanwhile (that block then plays, and the control
        follows it, so no block ever plays twice)."""
        import numpy as np

        tag = self.out.clear()
        if self.hold is not None:
            # What the coach was saying about a control gives way to the new one: it
            # fades out from where the speakers are in it (nothing of it, if they have
            # not reached it yet).
            held = tag[3] if tag is not None and tag[0] is None else None
            if held is not None and held[0] is self.hold:
                rest = self.hold.samples[held[1] : held[1] + FADE]
                ramp = np.linspace(1, 0, len(rest), dtype=np.float32)[:, None]
                self.overlays.insert(0, Hold(rest * ramp))
            self.hold = None
        return self.origin if tag is None else tag[2]

    # -- controls ------------------------------------------------------------------

    def control(self, name: Command | str, heard: str | None = None) -> None:
        """Queue a control for the next round. `heard` is the spoken phrase when it came
        by voice: it is then always acknowledged with a tap and shown."""
        try:
            command = Command(name)
        except ValueError:
            raise ValueError(f"unknown control {name!r}") from None
        self.commands.put((command, heard))

    def _apply(self, name: Command, heard: str | None = None) -> None:
        if self.finished and name != Command.QUIT:
            return
        self._tapped = False
        before, self.message = self.message, ""
        self._run(name)
        if heard is not None and not self.finished:
            if not self._tapped:
                self._tap()
            self.message = f'heard "{heard}"' + (f": {self.message}" if self.message else "")
        elif not self.message:
            self.message = before

    def _run(self, name: Command) -> None:
        asked, self._quit_asked = self._quit_asked, None
        if name == Command.QUIT and (asked is None or self.clock() - asked > QUIT_WINDOW):
            self._quit_asked = self.clock()
            self.message = "press q again to quit"
            return
        if name in (Command.QUIT, Command.STOP):
            self._fade_out(self._cut())
            self.quit = True
            self.message = "stopping"
            return
        if (
            name == Command.PAUSE
            or (name == Command.HOLD and not self.paused)
            or (name == Command.RESUME and self.paused)
        ):
            self._toggle_pause()
            return
        if name in (Command.HOLD, Command.RESUME):  # already so
            return
        if self.paused:
            self._toggle_pause()  # any other control resumes first
        now = self._cut()
        plan = self.plan
        if name == Command.NEXT:
            self._switch(plan.next_run(now), now)
            self.message = "next"
        elif name == Command.BACK:
            self._switch(plan.back(now), now)
            self.message = "back"
        elif name in (Command.FASTER, Command.SLOWER):
            faster = name == Command.FASTER
            factor = plan.factor / PACE_STEP if faster else plan.factor * PACE_STEP
            self._switch(plan.repace(now, factor), now)
            self.message = f"{name}: {plan.factor:.2f}x the time"
        elif name == Command.MORE_TIME:
            self._switch(plan.more_time(now), now)
            self.message = "30 seconds more on this step"
        elif name == Command.REPEAT:
            self._repeat(now)
        elif name in (Command.MORE_PRESSURE, Command.LESS_PRESSURE):
            self._pressure(now, "more" if name == Command.MORE_PRESSURE else "less")

    def _tap(self) -> None:
        self.overlays.append(Hold(self._sound(CHIME, "wood")))
        self._tapped = True

    def _sound(self, kind: Kind, name: str) -> np.ndarray:
        """A spoken text or a chime, centred, in the output's channels at the session's
        level."""
        import numpy as np

        mono = self.bank.speech(name) if kind == SPEECH else self.bank.chime(name)
        out = np.empty((len(mono), self.channels), dtype=np.float32)
        for c, g in enumerate(self.bank.gains_of(kind)):
            out[:, c] = mono * np.float32(g * self.gain)
        return out

    def _say(self, text: str, pause: float = 0.0) -> Hold | None:
        """What the coach says about a control, played while the session's clock is held,
        then `pause` seconds of quiet before the session goes on."""
        import numpy as np

        if not text or not self.speak_controls:
            return None
        said = self._sound(SPEECH, text)
        quiet = np.zeros((to_samples(pause), self.channels), dtype=np.float32)
        return Hold(np.concatenate([said, quiet]) if len(quiet) else said)

    def _switch(self, timeline: Timeline, now: Samples) -> None:
        """Go on from `now` with a new schedule, fading across from the old one."""
        old = self.mixer
        self.mixer = Mixer(timeline, self.bank, gain=self.gain, start=now)
        self._fade_out(now, fade_from=old)
        self._tap()

    def _fade_out(self, now: Samples, fade_from: Mixer | None = None) -> None:
        """Fade out what was sounding at `now` (in `fade_from`'s schedule, by default the
        current one) and go on from `now`; the queue has been cut there (`_cut`)."""
        import numpy as np

        mixer = fade_from or self.mixer
        mixer.seek(now)
        tail = mixer.read(FADE) * np.linspace(1, 0, FADE, dtype=np.float32)[:, None]
        self.overlays.insert(0, Hold(tail))
        self.made = now

    def _toggle_pause(self) -> None:
        if not self.paused:
            now = self._cut()
            cue = self.plan.cue_at(now)
            self._fade_out(now)
            self.paused = True
            self.resume_at = cue.start if cue is not None else now
            self.hold = self._say(self.plan.script.paused)
            self.message = ""  # the screen says PAUSED
        else:
            self.paused = False
            self.hold = self._say(self.plan.script.resumed, pause=self.plan.script.title_pause)
            self.made = self.resume_at
            self._fade_in = True
            self.message = "resumed"

    def _repeat(self, now: Samples) -> None:
        cue = self.plan.cue_at(now)
        if cue is not None:  # a cue is under way: start it again
            self._fade_out(now)
            self.made = cue.start
            self._fade_in = True
        else:
            last = self.plan.last_cue(now)
            if last is None:
                self.made = now  # nothing to repeat: the session goes on as it was
                return
            self._fade_out(now)
            self.hold = Hold(self._sound(SPEECH, last.text))
        self.message = "repeat"

    def _pressure(self, now: Samples, which: Hint) -> None:
        seg = self.plan.segment_at(now)
        hold = self._say(self.plan.script.pressure_hint(seg.run if seg else None, which))
        slower = self.plan.pressure(now, which)
        if slower is not None:
            old = self.mixer
            self.mixer = Mixer(slower, self.bank, gain=self.gain, start=now)
            self._fade_out(now, fade_from=old)
        elif hold is not None:
            self._fade_out(now)
        else:
            self.made = now  # nothing to say or change: the session goes on as it was
            return
        self.hold = hold
        self.message = "more pressure" if which == "more" else "lighter"

    # -- making blocks -------------------------------------------------------------

    def pump(self) -> bool:
        """One round: apply waiting controls, then queue blocks up to AHEAD. Returns
        False once the session is over and everything has been queued."""
        while True:
            try:
                self._apply(*self.commands.get_nowait())
            except queue.Empty:
                break
        if self.finished:
            return False
        while self.out.queued_frames() < AHEAD and not self.finished:
            self._make_block()
        return True

    def _make_block(self) -> None:
        import numpy as np

        if self.quit:
            self._end()
            return
        if self.hold is not None or self.paused:
            block = np.zeros((BLOCK, self.channels), dtype=np.float32)
            held = None
            if self.hold is not None:
                part = self.hold.samples[self.hold.offset : self.hold.offset + BLOCK]
                block[: len(part)] += part
                self.hold.offset += len(part)
                held = (self.hold, self.hold.offset)
                if self.hold.offset >= len(self.hold.samples):
                    self.hold = None
            after = self.resume_at if self.paused else self.made
            sounding = self.hold is not None or bool(self.overlays)
            self._put(self._mix_overlays(block), (None, BLOCK, after, held), sounding)
            return
        if self.made >= self.mixer.total:
            self._end()
            return
        n = min(BLOCK, self.mixer.total - self.made)
        if self.mixer.position != self.made:
            self.mixer.seek(self.made)
        block = self.mixer.read(n)
        if self._fade_in:
            k = min(FADE, n)
            block[:k] *= np.linspace(0, 1, k, dtype=np.float32)[:, None]
            self._fade_in = False
        sounding = self.mixer.foreground or bool(self.overlays)
        block = self._mix_overlays(block)
        self._put(block, (self.made, n, self.made + n, None), sounding)
        self.made += n

    def _end(self) -> None:
        """A last silent stretch, which carries the fades out and lets the device play
        out what it holds; then no more blocks."""
        import numpy as np

        sounding = bool(self.overlays)
        block = self._mix_overlays(np.zeros((TAIL, self.channels), dtype=np.float32))
        self._put(block, (None, len(block), self.made, None), sounding)
        self.out.finish()
        self.finished = True

    def _put(self, block: np.ndarray, tag: tuple[Any, ...], sounding: bool) -> None:
        """Queue a block, and tell `audible` what the room will hear, and when."""
        start = self.clock() + self.out.queued_frames() / RATE + self.latency
        self.audible.sent(block, self.out.put_frames, start, sounding)
        self.out.put(block, tag)

    def _mix_overlays(self, block: np.ndarray) -> np.ndarray:
        if not self.overlays:
            return block
        keep = []
        for o in self.overlays:
            part = o.samples[o.offset : o.offset + len(block)]
            block[: len(part)] += part
            o.offset += len(part)
            if o.offset < len(o.samples):
                keep.append(o)
        self.overlays = keep
        return block

    # -- for the screen ------------------------------------------------------------

    def status(self) -> Status:
        """What the screen shows now."""
        now = self.position()
        tl = self.plan.timeline
        seg = self.plan.segment_at(now)
        runs = self.plan.script.runs
        nxt = None
        if seg is not None and seg.run + 1 < len(runs):
            after = runs[seg.run + 1]
            nxt = after.title + (f", partner's {after.side} side" if after.side else "")
        return Status(
            title=self.plan.script.title,
            step=None if seg is None else seg.step + 1,
            steps=len({r.step for r in runs}),
            step_title="closing" if seg is None else seg.title,
            side=None if seg is None else seg.side,
            step_left=0.0 if seg is None else max(0, seg.end - now) / RATE,
            session_left=max(0, tl.total - now) / RATE,
            session_total=tl.total / RATE,
            next_title=nxt,
            pace=self.plan.factor,
            paused=self.paused,
            message=self.message,
            voice=self.voice,
            stutters=self.stutters,
        )


def feed(player: Player, stop: threading.Event, period: float = 0.004) -> None:
    """The feeder thread: keeps the queue topped up until the session is over."""
    while not stop.is_set() and player.pump():
        time.sleep(period)


@dataclass(frozen=True)
class LiveResult:
    played: Samples
    underruns: int
    quit: bool
    heard: tuple[Any, ...] = ()  # listen.Heard, the voice commands obeyed
    voice: str = ""  # what the screen last said about voice commands
    ignored: int = 0  # sounds heard while the coach was sounding, left unobeyed


def run_live(
    prepared: Prepared,
    *,
    device: str | None = None,
    keys: Any = None,
    screen: Any = None,
    on_tick: Callable[[Player], None] | None = None,
    speak_controls: bool = True,
    listen: bool = False,
    mic: str | None = None,
    wake: str | None = WAKE_WORD,
) -> LiveResult:
    """Play a prepared session through the speakers until it ends or is quit.

    `keys` (coach.terminal.Keys, entered) gives commands; `screen` shows the status;
    `on_tick` sees the player about ten times a second; without `speak_controls` the
    coach says nothing about controls (paused, the pressure hints). With `listen`, spoken
    commands from the `mic` input device (default: the system's) steer it too, after the
    `wake` word (None: bare commands); without a working microphone it plays on with
    keys. Ctrl-C fades out within a few blocks and re-raises KeyboardInterrupt.
    """
    from coach import speakers
    from coach.mixer import session_gain

    dev = speakers.find_device(device)
    channels = 2 if dev.channels >= 2 else 1
    volume = prepared.pack.volume
    bank = SoundBank(prepared.clips(), channels=channels, volume=volume)
    gain = session_gain(prepared.timeline, SoundBank(prepared.clips(), volume=volume))
    plan = LivePlan(prepared.script, prepared.sounds, prepared.timeline, chimes=prepared.chimes)
    out = speakers.BlockQueue(channels)
    player = Player(plan, bank, out, gain=gain, speak_controls=speak_controls)
    voice = None
    if listen:
        from coach.listen import VoiceControl

        voice = VoiceControl(player, mic=mic, wake=wake)
        voice.start()
    player.pump()
    stream = speakers.Output(dev, out, channels=channels, latency=LATENCY)
    stop = threading.Event()
    feeder = threading.Thread(target=feed, args=(player, stop), name="coach-feeder", daemon=True)
    try:
        stream.start()
    except BaseException:
        if voice is not None:
            voice.stop()
        raise
    player.latency = stream.latency
    feeder.start()
    interrupted = False
    try:
        while feeder.is_alive() or out.queued_frames() > 0:
            command = keys.read(0.1) if keys is not None and keys.interactive else None
            if command is None and (keys is None or not keys.interactive):
                time.sleep(0.05)
            if command is not None:
                player.control(command)
            if on_tick is not None:
                on_tick(player)
            player.stutters = stream.underruns
            if screen is not None:
                screen(player)
    except KeyboardInterrupt:
        interrupted = True
        player.control(Command.STOP)
        deadline = time.monotonic() + 0.3
        while out.queued_frames() > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        if voice is not None:
            voice.stop()
        stop.set()
        feeder.join(1.0)
        time.sleep(min(0.25, max(0.0, getattr(stream, "latency", 0.05))))
        stream.stop()
    if interrupted:
        raise KeyboardInterrupt
    return LiveResult(
        player.position(),
        stream.underruns,
        player.quit,
        tuple(voice.heard) if voice is not None else (),
        player.voice,
        voice.listener.counts.ignored if voice is not None and voice.listener is not None else 0,
    )
