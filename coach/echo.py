"""Acoustic echo cancellation: the coach's own sound, taken out of what the microphone hears.

The one module that loads libspeexdsp (the Speex project's DSP library), through ctypes.
Its echo canceller is a multidelay block frequency-domain adaptive filter (MDF), the one
PulseAudio's own echo-cancel module uses; Debian's ``libspeexdsp1`` is a dependency of
PulseAudio, so it is there wherever the sound server is. (PyPI's ``speexdsp`` 0.1.1 and
``webrtc-audio-processing`` are source packages that did not build here: they need SWIG,
headers and a compiler, for what ctypes reaches in the shared library.)

``Aligner`` keeps the reference where the canceller can use it: it measures, from the two
signals themselves, how late the coach's echo reaches the microphone after its reference,
and says how far to move the reference when that delay leaves the canceller's reach.
Timestamps alone (when a block was queued, when one was captured) are off by tens of
milliseconds and wander; an echo that arrives before its reference, or later than the
filter is long, cannot be cancelled at all (measured: docs/audio-devices.md).

``EchoCanceller.process(mic, reference)`` takes 16-bit frames of what the microphone heard
and of what the speakers were sent at the same moments, and returns the microphone's
sound less its estimate of the echo. The filter learns the room (its delay and
reverberation, up to ``tail`` seconds) from the coach's own sound: docs/audio-devices.md
has how long that takes and how much it removes.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import ctypes.util
import functools
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import numpy as np

#: Samples the canceller takes at a time: 10 ms at 16 kHz.
FRAME = 160
#: How much of the room the filter models, in seconds: the sound's way from the
#: speakers to the microphone (buffers included) and its reverberation.
TAIL = 0.3
#: Where the Aligner keeps the echo: this long after its reference, and it moves the
#: reference when a measured delay falls outside BAND (slow drift between the two
#: clocks is followed by the filter itself in between).
TARGET = 0.02
BAND = (0.005, 0.06)
#: The Aligner measures over the last HISTORY seconds of both signals (FIRST at least),
#: every CHECK seconds of them, and trusts a delay whose whitened correlation peak
#: stands MIN_PEAK times over its median and whose plain normalized correlation reaches
#: MIN_CORR (a room's reflections leave the direct sound 0.2-0.4 of it; speech the
#: reference does not explain, under 0.07, measured), measured twice in a row within AGREE.
HISTORY = 3.0
FIRST = 1.5
CHECK = 0.5
MIN_CORR = 0.12
MIN_PEAK = 25.0
AGREE = 0.002
#: A trusted delay this far from the one before means the sound's way changed.
JUMP = 0.002
#: The delays it looks for, either side of the reference.
SEARCH = 0.5
#: The direct sound is the earliest peak this high against the highest.
FIRST_PEAK = 0.5
#: How far the cross-spectrum is whitened to find the delay (1: all the way, PHAT).
WHITEN = 0.8
#: The drift is the slope of the delays trusted over the last DRIFT_TIME seconds (over
#: DRIFT_MIN at least; a robust slope); at most MAX_DRIFT (1000 ppm: a clock that far
#: off is broken).
DRIFT_TIME = 30.0
DRIFT_MIN = 10.0
MAX_DRIFT = 1e-3

#: What the canceller leaves of the echo is suppressed after it (Speex's preprocessor,
#: from the canceller's estimate of that residue), by ECHO_SUPPRESS dB at most, and by
#: ECHO_SUPPRESS_ACTIVE at most while someone speaks over it; steady noise by
#: NOISE_SUPPRESS. Speex's defaults for the last two (-15, -15) took more of a command
#: than they gave: scripts/bench_listen.py --quick, commands over the coach's speech,
#: heard 46/60 without the suppressor, 56/60 with the defaults, 57/60 with -6 while
#: someone speaks, 55/60 with -6 of noise too, which keeps test_listen's weakest "next"
#: (docs/audio-devices.md).
ECHO_SUPPRESS = -40
ECHO_SUPPRESS_ACTIVE = -6
NOISE_SUPPRESS = -6

_SET_SAMPLING_RATE = 24  # speex_echo.h: SPEEX_ECHO_SET_SAMPLING_RATE
# speex_preprocess.h
_SET_DENOISE = 0
_SET_NOISE_SUPPRESS = 18
_SET_ECHO_SUPPRESS = 20
_SET_ECHO_SUPPRESS_ACTIVE = 22
_SET_ECHO_STATE = 24


class EchoUnavailable(Exception):
    """No echo canceller on this machine (libspeexdsp is missing)."""


@functools.cache
def _library() -> Any:
    name = ctypes.util.find_library("speexdsp") or "libspeexdsp.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError as e:
        raise EchoUnavailable(
            "no echo canceller: libspeexdsp is missing (apt install libspeexdsp1)"
        ) from e
    lib.speex_echo_state_init.restype = ctypes.c_void_p
    lib.speex_echo_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.speex_echo_state_destroy.argtypes = [ctypes.c_void_p]
    lib.speex_echo_state_reset.argtypes = [ctypes.c_void_p]
    lib.speex_echo_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    lib.speex_echo_cancellation.argtypes = [ctypes.c_void_p] * 4
    lib.speex_preprocess_state_init.restype = ctypes.c_void_p
    lib.speex_preprocess_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.speex_preprocess_state_destroy.argtypes = [ctypes.c_void_p]
    lib.speex_preprocess_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    lib.speex_preprocess_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    return lib


class Correlation(NamedTuple):
    """Where a reference best explains a signal: `lag` samples after it; `peak`: how
    far its whitened correlation peak stands over the median; `corr`: the plain
    normalized correlation there (1: the reference explains the signal entirely)."""

    lag: float
    peak: float
    corr: float


class Aligner:
    """Where the reference must be for the canceller: how late the coach's echo reaches
    the microphone after it, measured from the signals themselves (a cross-correlation
    of the last HISTORY seconds, every CHECK seconds while the coach sounds), and how
    fast that delay drifts (two clocks a little apart: the speakers' and the
    microphone's; measured over DRIFT_TIME).

    ::

        aligner = Aligner(16000)
        move = aligner.push(mic, ref)  # samples; 0 but when the echo left BAND
        # move > 0: the echo comes `move` samples later than TARGET, so read the
        # reference that much earlier from now on (and start the canceller over);
        # aligner.drift: read it 1 - drift samples on for each microphone sample
    """

    def __init__(self, rate: int = 16000) -> None:
        import numpy as np

        self.rate = rate
        self._size = round(HISTORY * rate)
        self._mic = np.zeros(0, dtype=np.float64)
        self._ref = np.zeros(0, dtype=np.float64)
        self._fed = 0  # samples since the last measurement
        self._last: float | None = None  # the last delay measured, in samples
        self.delay: float | None = None  # seconds: the delay last trusted
        self.moves = 0
        #: Samples the echo's delay grows by for each sample (0: one clock).
        self.drift = 0.0
        self._t = 0  # samples pushed in all
        self._applied = 0.0  # samples the reference was read earlier by, moves and drift
        # (sample, delay + applied) of the delays trusted: the delay as it would be had
        # the reference never moved, whose slope is the drift.
        self._readings: collections.deque[tuple[int, float]] = collections.deque()

    def push(self, mic: np.ndarray, reference: np.ndarray) -> int:
        """Take the next samples of both (the same length; any scale, the same for each
        from call to call); return how many samples to move the reference by."""
        import numpy as np

        n = len(mic)
        self._t += n
        self._applied += self.drift * n
        self._mic = np.concatenate([self._mic, np.asarray(mic, dtype=np.float64)])[-self._size :]
        self._ref = np.concatenate([self._ref, np.asarray(reference, dtype=np.float64)])[
            -self._size :
        ]
        self._fed += n
        if self._fed < CHECK * self.rate or len(self._mic) < FIRST * self.rate:
            return 0
        self._fed = 0
        lag = self.measure(self._mic, self._ref)
        if lag is None:
            self._last = None
            return 0
        agreed = self._last is not None and abs(lag - self._last) <= AGREE * self.rate
        self._last = lag
        if not agreed:
            return 0
        before = self.delay
        self.delay = lag / self.rate
        if before is not None and abs(self.delay - before) > JUMP:
            # The sound's way changed at once (an underrun, a device that stalled): the
            # delays before are no guide to the drift, and the canceller starts over.
            self._readings.clear()
            return self._move(lag)
        # The middle of the history measured, and the correction applied there (the
        # drift's part of it grew over the history; take it at the middle).
        self._readings.append((self._t - len(self._mic) // 2, lag + self._applied))
        self._follow_drift()
        if BAND[0] <= self.delay <= BAND[1]:
            return 0
        return self._move(lag)

    def _move(self, lag: float) -> int:
        move = round(lag - TARGET * self.rate)
        self._applied += move
        self.forget(readings=False)
        self.delay = TARGET
        self.moves += 1
        return move

    def _follow_drift(self) -> None:
        """The drift: the slope of the delay (had the reference never moved) over the
        last DRIFT_TIME."""
        import numpy as np

        readings = self._readings
        while readings and readings[0][0] < self._t - DRIFT_TIME * self.rate:
            readings.popleft()
        if len(readings) < 8 or readings[-1][0] - readings[0][0] < DRIFT_MIN * self.rate:
            return
        t = np.array([r[0] for r in readings], dtype=np.float64)
        d = np.array([r[1] for r in readings])
        # Theil-Sen: the median of the slopes between every two readings far enough
        # apart, which a few stray readings do not move.
        i, j = np.triu_indices(len(t), 1)
        apart = t[j] - t[i] >= DRIFT_MIN * self.rate / 2
        if apart.sum() < 8:
            return
        slope = float(np.median((d[j] - d[i])[apart] / (t[j] - t[i])[apart]))
        self.drift = float(np.clip(slope, -MAX_DRIFT, MAX_DRIFT))

    def forget(self, *, readings: bool = True) -> None:
        """Start measuring again: the reference moved (by a move of ours), or the
        output's timing jumped (`readings` too: the delays before are no guide)."""
        import numpy as np

        self._mic = np.zeros(0, dtype=np.float64)
        self._ref = np.zeros(0, dtype=np.float64)
        self._fed = 0
        self._last = None
        if readings:
            self._readings.clear()

    def measure(self, mic: np.ndarray, ref: np.ndarray) -> float | None:
        """The lag (samples, to a fraction of one) at which `ref` best explains `mic`
        (mic[i] ~ g ref[i - lag]), within SEARCH either way, or None when nothing fits to
        MIN_CORR (the coach was quiet, or someone spoke over all of it)."""
        found = self.correlate(mic, ref)
        if found is None or found.peak < MIN_PEAK or found.corr < MIN_CORR:
            return None
        return found.lag

    def correlate(self, mic: np.ndarray, ref: np.ndarray) -> Correlation | None:
        """Where `ref` explains `mic` best, within SEARCH either way, and how well; None
        when either is silent."""
        import numpy as np

        e_mic, e_ref = float(np.dot(mic, mic)), float(np.dot(ref, ref))
        if e_ref <= 0 or e_mic <= 0:
            return None
        w = round(SEARCH * self.rate)
        size = 1 << (len(mic) + w).bit_length()  # lags up to w either way do not wrap
        cross = np.fft.rfft(mic, size) * np.conj(np.fft.rfft(ref, size))
        # Where: the cross-spectrum whitened (most of the way: PHAT-beta), so the direct
        # sound stands out of the reflections and of speech's own low-frequency weight.
        c = np.fft.irfft(cross / np.maximum(np.abs(cross), 1e-12) ** WHITEN, size)
        white = np.abs(np.concatenate([c[-w:], c[: w + 1]]))  # lag -w .. w
        top = int(np.argmax(white))
        # The direct sound comes first: the earliest peak of at least FIRST_PEAK of the
        # highest (a reflection off a wall or a desk can be nearly as strong, and which
        # of the two is highest changes from one stretch of speech to the next).
        first = int(np.flatnonzero(white >= FIRST_PEAK * white[top])[0])
        k = first + int(np.argmax(white[first : first + 8]))
        peak = float(white[k] / max(float(np.median(white)), 1e-30))
        # How well: the plain normalized correlation there (1: the reference explains
        # the microphone entirely), the best within a millisecond.
        lag = k - w
        plain = max(abs(_dot_at(mic, ref, d)) for d in range(lag - 16, lag + 17))
        # To a fraction of a sample: the parabola through the peak and its neighbours.
        frac = 0.0
        if 0 < k < len(white) - 1:
            y0, y1, y2 = white[k - 1], white[k], white[k + 1]
            bend = y0 - 2 * y1 + y2
            if bend < 0:
                frac = float(np.clip(0.5 * (y0 - y2) / bend, -0.5, 0.5))
        return Correlation(k - w + frac, peak, plain / np.sqrt(e_mic * e_ref))


def _dot_at(mic: np.ndarray, ref: np.ndarray, lag: int) -> float:
    """sum of mic[i] * ref[i - lag]."""
    import numpy as np

    if lag >= 0:
        return float(np.dot(mic[lag:], ref[: len(ref) - lag]))
    return float(np.dot(mic[:lag], ref[-lag:]))


class EchoCanceller:
    """Speex's echo canceller for one microphone and one reference, at `rate`.

    ::

        aec = EchoCanceller()        # EchoUnavailable without libspeexdsp
        clean = aec.process(mic, ref)  # int16 arrays, a whole number of FRAMEs each
        aec.delay                    # clean lags mic by this many samples
        aec.cancelled                # the canceller's own output, before the suppressor

    With `suppress` (the default), Speex's preprocessor takes out what the filter left
    of the echo, a frame late.
    """

    def __init__(
        self, rate: int = 16000, *, frame: int = FRAME, tail: float = TAIL, suppress: bool = True
    ) -> None:
        self._lib = _library()
        self._pre: int | None = None
        self.frame = frame
        self.rate = rate
        state = self._lib.speex_echo_state_init(frame, round(tail * rate))
        if not state:
            raise EchoUnavailable("libspeexdsp could not make an echo canceller")
        self._state: int | None = state
        value = ctypes.c_int(rate)
        self._lib.speex_echo_ctl(state, _SET_SAMPLING_RATE, ctypes.byref(value))
        #: samples by which the output lags the microphone: the suppressor overlaps
        #: its frames, and gives each a frame late
        self.delay = 0
        self.cancelled: np.ndarray | None = None
        if suppress:
            self._pre = self._suppressor(state)
            self.delay = frame

    def _suppressor(self, state: int) -> int:
        """Speex's preprocessor, told of the canceller: it takes out what the filter
        left of the echo (and a little steady noise), from the canceller's own estimate
        of that residue."""
        lib = self._lib
        pre = lib.speex_preprocess_state_init(self.frame, self.rate)
        if not pre:
            self.close()
            raise EchoUnavailable("libspeexdsp could not make a residual echo suppressor")
        lib.speex_preprocess_ctl(pre, _SET_ECHO_STATE, ctypes.c_void_p(state))
        # (the preprocessor applies no gain at all with its denoiser off)
        for request, value in (
            (_SET_DENOISE, 1),
            (_SET_NOISE_SUPPRESS, NOISE_SUPPRESS),
            (_SET_ECHO_SUPPRESS, ECHO_SUPPRESS),
            (_SET_ECHO_SUPPRESS_ACTIVE, ECHO_SUPPRESS_ACTIVE),
        ):
            number = ctypes.c_int(value)
            lib.speex_preprocess_ctl(pre, request, ctypes.byref(number))
        return int(pre)

    def process(self, mic: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """`mic` less the echo of `reference` (both int16, the same length, a whole number
        of frames), as a new int16 array."""
        import numpy as np

        if len(mic) != len(reference) or len(mic) % self.frame:
            raise ValueError(
                f"expected two int16 arrays of one length, a multiple of {self.frame}; "
                f"got {len(mic)} and {len(reference)}"
            )
        if self._state is None:
            raise ValueError("the echo canceller is closed")
        near = np.ascontiguousarray(mic, dtype=np.int16)
        far = np.ascontiguousarray(reference, dtype=np.int16)
        out = np.empty_like(near)
        step = self.frame * 2  # bytes
        base_near, base_far, base_out = near.ctypes.data, far.ctypes.data, out.ctypes.data
        cancel = self._lib.speex_echo_cancellation
        self.cancelled = out
        if self._pre is None:
            for k in range(0, len(near) * 2, step):
                cancel(self._state, base_near + k, base_far + k, base_out + k)
            return out
        # Frame by frame: the suppressor reads the canceller's estimate of the residue
        # of the frame it has just cancelled.
        suppressed = np.empty_like(near)
        run, pre, base = self._lib.speex_preprocess_run, self._pre, suppressed.ctypes.data
        for k in range(0, len(near) * 2, step):
            cancel(self._state, base_near + k, base_far + k, base_out + k)
            ctypes.memmove(base + k, base_out + k, step)
            run(pre, base + k)
        return suppressed

    def reset(self) -> None:
        """Forget the room (after the reference jumped, the old filter is wrong)."""
        if self._state is not None:
            self._lib.speex_echo_state_reset(self._state)

    def close(self) -> None:
        pre, self._pre = self._pre, None
        if pre is not None:
            self._lib.speex_preprocess_state_destroy(pre)
        state, self._state = self._state, None
        if state is not None:
            self._lib.speex_echo_state_destroy(state)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at shutdown the library may be gone
            self.close()
