"""The mixer: a timeline turned into blocks of samples, from any position.

One block source shared by rendering (which pulls blocks as fast as it can) and live
playback (which pulls them a little ahead of the audio clock), so both make the same
samples at the same offsets. Two buses: the voice bus (speech and chimes) plays as it
is; the under bus (rhythm pulses and an ambient track) is lowered smoothly around every
spoken cue so the voice always stands out.

Levels: speech clips are stored at SPEECH_LUFS (mono); in stereo they are centred with a
gain that makes a session's speech measure TARGET_LUFS. A voice pack's volume sets the
voice against the chimes and pulses; `session_gain` then brings the whole session to
TARGET_LUFS, so a render's loudness does not change with it.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from coach import chimes, loudness
from coach.loudness import SPEECH_LUFS, TARGET_LUFS
from coach.timeline import CHIME, PULSE, SPEECH, Event, Kind, Timeline
from coach.units import Samples, to_samples

if TYPE_CHECKING:
    import numpy as np

#: How far the under bus is lowered while the coach speaks, and how fast.
DUCK_DB = -10.0
DUCK_RAMP: Samples = to_samples(0.3)
#: Where a side-switch chime sits: -1 is the left ear, +1 the right.
SIDE_PAN = 0.75
#: A render's peaks stay under this (a margin under the -1 dBFS ceiling we promise).
PEAK_CEILING = 10 ** (-1.1 / 20)
#: Clips kept in memory for reuse (a countdown phrase recurs all session long). Each
#: is a few hundred kB; 48 held 37 MB more at a 2-hour MP3 render's peak (175 against
#: 138 MB) and rendered a 36-minute WAV no faster (measured side by side).
_KEEP_CLIPS = 16


class Clips(Protocol):
    """Where speech samples come from (the speech cache, or a voice pack's recordings).
    It may also have `chime(name)`, giving a chime the voice pack brings (or None), and
    `summary(text)`, a clip's loudness summary kept so it need not be loaded for it."""

    def load(self, text: str) -> np.ndarray: ...


class SoundBank:
    """Samples and gains for every kind of event. Speech is loaded when first needed and
    only a few clips are kept; chimes and the pulse are made once."""

    def __init__(self, clips: Clips, *, channels: int = 2, volume: float = 1.0) -> None:
        if channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2, not {channels}")
        self.clips = clips
        self.channels = channels
        self._speech: OrderedDict[str, np.ndarray] = OrderedDict()
        self._chimes: dict[str, np.ndarray] = {}
        gain = volume * 10 ** ((TARGET_LUFS - SPEECH_LUFS) / 20)
        # Two equal channels measure 3 dB louder than one: the centre pan takes that off.
        self.speech_gain = gain / math.sqrt(2) if channels == 2 else volume

    def samples(self, event: Event) -> np.ndarray:
        """An event's mono samples."""
        if event.kind == SPEECH:
            return self.speech(event.text)
        if event.kind == CHIME:
            return self.chime(event.text)
        if event.kind == PULSE:
            return chimes.pulse(accent=event.role == "accent")
        raise ValueError(f"unknown event kind {event.kind!r}")

    def speech(self, text: str) -> np.ndarray:
        """A spoken text's mono samples."""
        clip = self._recall(text)
        if clip is None:
            clip = self.clips.load(text)
            self._keep(text, clip)
        return clip

    def _recall(self, text: str) -> np.ndarray | None:
        """A clip kept in memory, or None."""
        clip = self._speech.get(text)
        if clip is not None:
            self._speech.move_to_end(text)
        return clip

    def _keep(self, text: str, clip: np.ndarray) -> None:
        self._speech[text] = clip
        self._speech.move_to_end(text)
        if len(self._speech) > _KEEP_CLIPS:
            self._speech.popitem(last=False)

    def chime(self, name: str) -> np.ndarray:
        """A chime's mono samples: the voice pack's own file, or one of the project's.
        Kept once found (a session has a few, each a few seconds long): the mixer asks
        for a chime again in every block it sounds in."""
        sound = self._chimes.get(name)
        if sound is None:
            own = getattr(self.clips, "chime", None)
            found = own(name) if own is not None else None
            sound = found if found is not None else chimes.chime(name)
            self._chimes[name] = sound
        return sound

    def summary(self, event: Event) -> loudness.Summary:
        """What the session's loudness needs of an event's sound (speech: kept beside
        its clip by the clips' source, where it can keep one)."""
        if event.kind == SPEECH:
            own = getattr(self.clips, "summary", None)
            if own is not None:
                found: loudness.Summary = own(event.text)
                return found
        return loudness.summarize(self.samples(event))

    def gains(self, event: Event) -> tuple[float, ...]:
        """Per-channel gain of an event."""
        pan = 0.0
        if event.kind == CHIME and event.role == "side" and event.side:
            pan = -SIDE_PAN if event.side == "left" else SIDE_PAN
        return self.gains_of(event.kind, pan)

    def gains_of(self, kind: Kind, pan: float = 0.0) -> tuple[float, ...]:
        """Per-channel gain of a sound of this kind at `pan` (-1 left, +1 right)."""
        if self.channels == 1:
            return (self.speech_gain,) if kind == SPEECH else (1.0,)
        if kind == SPEECH:
            return (self.speech_gain, self.speech_gain)
        angle = (pan + 1) * math.pi / 4  # constant power: cos^2 + sin^2 = 1
        return (math.cos(angle), math.sin(angle))


def session_gain(timeline: Timeline, bank: SoundBank) -> float:
    """The master gain that brings the session to TARGET_LUFS as BS.1770 measures it.

    Every clip is levelled on its own, but a session also holds the pauses between
    cues and short words whose 400 ms gating blocks are part silence, so its loudness
    falls short by an amount that depends on the routine. This measures it from the
    timeline: the K-weighted energy of every cue and chime, placed at its start,
    summed per 100 ms hop (the filters are linear and cues do not overlap, so this is
    the K-weighted energy of the mix, estimated at loudness.ESTIMATE_RATE). The gain is
    capped so that no peak passes PEAK_CEILING, where sounds that overlap (a chime's
    tail under the words) count together. Computed once per session, so a live session
    keeps one level.
    """
    import numpy as np

    hop = loudness.HOP_SAMPLES
    hops = timeline.total // hop + 3
    energy = np.zeros(hops)
    # An upper bound of each channel's peak, hop by hop: the sum over the sounds there
    # of each one's own peak in that hop (a chime's tail rings on under the words).
    peaks = np.zeros((hops, bank.channels))
    placed: dict[tuple[str, str], list[Event]] = {}
    for e in timeline.events:
        if e.kind in (SPEECH, CHIME):
            placed.setdefault((e.kind, e.text), []).append(e)
    step = loudness.CURVE_STEP
    for events in placed.values():  # one sound at a time: memory stays that of one clip
        summary = bank.summary(events[0])
        curve = summary.curve
        # A sound's hop-long windows straddle two of the session's hops: each session
        # hop gets the larger of the two windows that can fall in it.
        own = summary.peaks
        spread = np.maximum(np.r_[own, 0.0], np.r_[0.0, own])
        for e in events:
            gains = bank.gains(e)
            first, last = e.start // hop, (e.end - 1) // hop
            edges = np.clip((np.arange(first, last + 2) * hop - e.start) // step, 0, len(curve) - 1)
            energy[first : last + 1] += np.diff(curve[edges]) * sum(g * g for g in gains)
            n = min(len(spread), hops - first)
            peaks[first : first + n] += spread[:n, None] * np.asarray(gains)[None, :]
    measured = loudness.gated_loudness(loudness.block_powers(energy))
    if not math.isfinite(measured):
        return 1.0
    gain = 10 ** ((TARGET_LUFS - measured) / 20)
    peak = float(peaks.max())
    return min(gain, PEAK_CEILING / peak) if peak > 0 else gain


class Under(Protocol):
    """A source for the under bus besides the pulses (an ambient track)."""

    level: float

    def read(self, frames: int) -> np.ndarray: ...


class Mixer:
    """Blocks of float32 samples, shaped (frames, channels), from `position` on.

    `read(n)` returns the next n frames of the session (silence past its end) and moves
    on; `seek` jumps. Nothing here waits, reads files other than speech clips, or
    synthesizes speech: that happened when the timeline was made.
    """

    def __init__(
        self,
        timeline: Timeline,
        bank: SoundBank,
        *,
        under: Under | None = None,
        start: Samples = 0,
        gain: float = 1.0,
    ) -> None:
        self.timeline = timeline
        self.gain = gain
        self.bank = bank
        self.channels = bank.channels
        self.under = under
        self._events: Sequence[Event] = timeline.events
        self._starts = [e.start for e in self._events]
        speech = [e for e in self._events if e.kind == SPEECH]
        self._speech_spans = [(e.start, e.end) for e in speech]  # never overlap: sorted both ways
        self._speech_ends = [e.end for e in speech]
        self.position: Samples = 0
        #: Whether the last `read` held a spoken cue or a chime (not only pulses or the
        #: under bus): what a microphone near the speakers would hear as the coach.
        self.foreground = False
        self._next = 0
        self._active: list[Event] = []
        self.seek(start)

    @property
    def total(self) -> Samples:
        return self.timeline.total

    def seek(self, position: Samples) -> None:
        self.position = position
        self._next = bisect.bisect_left(self._starts, position)
        self._active = [e for e in self._events[: self._next] if e.end > position]

    def next_run(self, frames: int) -> tuple[bool, Samples]:
        """The next stretch of at most `frames`, as a render takes it: (True, n) for n
        frames of digital silence (nothing sounds there, and there is no under source),
        which `skip` moves past without making them (a hole in a WAV, copies of a silent
        frame in an MP3); else (False, n) for n frames to `read`, up to where every sound
        begun by then has ended, so that the silence between two sounds (the second
        between rhythm pulses) is a stretch of its own, not mixed."""
        if self.under is not None:
            return False, frames
        limit = self.position + frames
        edge = max((e.end for e in self._active), default=self.position)
        i = self._next
        if edge == self.position and (i == len(self._events) or self._events[i].start > edge):
            start = self._events[i].start if i < len(self._events) else limit
            return True, min(start, limit) - self.position
        while i < len(self._events) and self._events[i].start <= edge < limit:
            edge = max(edge, self._events[i].end)
            i += 1
        # (only sounds of no length here: mixed all the same, as silence)
        return False, (min(edge, limit) - self.position) or frames

    def skip(self, frames: int) -> None:
        """Move past `frames` of digital silence (`next_run` said they are)."""
        self.position += frames
        self.foreground = False

    def read(self, frames: int) -> np.ndarray:
        import numpy as np

        p, q = self.position, self.position + frames
        out = np.zeros((frames, self.channels), dtype=np.float32)
        under = None
        while self._next < len(self._events) and self._events[self._next].start < q:
            self._active.append(self._events[self._next])
            self._next += 1
        still = []
        foreground = False
        for e in self._active:
            a, b = max(e.start, p), min(e.end, q)
            if a < b:
                x = self.bank.samples(e)[a - e.start : b - e.start]
                foreground = foreground or e.kind != PULSE
                if e.kind == PULSE:
                    if under is None:
                        under = np.zeros_like(out)
                    target = under
                else:
                    target = out
                gains = self.bank.gains(e)
                if len(set(gains)) == 1:  # centred (speech): scaled once for every channel
                    y = x * np.float32(gains[0])
                    for c in range(len(gains)):
                        target[a - p : b - p, c] += y
                else:
                    for c, g in enumerate(gains):
                        target[a - p : b - p, c] += x * np.float32(g)
            if e.end > q:
                still.append(e)
        self._active = still
        self.foreground = foreground
        if self.under is not None:
            extra = self.under.read(frames)
            if self.channels == 1 and extra.ndim == 2:
                extra = extra.mean(axis=1, keepdims=True)
            extra = extra * np.float32(self.under.level)
            under = extra if under is None else under + extra
        if under is not None:
            out += under * self._duck(p, q)[:, None]
        if self.gain != 1.0:
            out *= np.float32(self.gain)
        self.position = q
        return out

    def _duck(self, p: Samples, q: Samples) -> np.ndarray:
        """The under bus's gain for frames p..q: 1, falling to DUCK_DB over DUCK_RAMP
        before each spoken cue and rising again over DUCK_RAMP after it."""
        import numpy as np

        env = np.ones(q - p, dtype=np.float32)
        i = bisect.bisect_right(self._speech_ends, p - DUCK_RAMP)
        floor = 10 ** (DUCK_DB / 20)
        t = None
        while i < len(self._speech_spans) and self._speech_spans[i][0] - DUCK_RAMP < q:
            s, e = self._speech_spans[i]
            if t is None:
                t = np.arange(p, q, dtype=np.float64)
            distance = np.maximum(np.maximum(s - t, t - e), 0.0)
            env = np.minimum(env, floor + (1 - floor) * np.minimum(distance / DUCK_RAMP, 1.0))
            i += 1
        return env
