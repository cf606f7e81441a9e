"""Acoustic echo cancellation: the coach's own sound, taken out of what the microphone hears.

The one module that loads libspeexdsp (the Speex project's DSP library), through ctypes.
Its echo canceller is a multidelay block frequency-domain adaptive filter (MDF), the one
PulseAudio's own echo-cancel module uses; Debian's ``libspeexdsp1`` is a dependency of
PulseAudio, so it is there wherever the sound server is. (PyPI's ``speexdsp`` 0.1.1 and
``webrtc-audio-processing`` are source packages that did not build here: they need SWIG,
headers and a compiler, for what ctypes reaches in the shared library.)

``EchoCanceller.process(mic, reference)`` takes 16-bit frames of what the microphone heard
and of what the speakers were sent at the same moments, and returns the microphone's
sound less its estimate of the echo. The filter learns the room (its delay and
reverberation, up to ``tail`` seconds) from the coach's own sound: docs/audio-devices.md
has how long that takes and how much it removes.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

#: Samples the canceller takes at a time: 10 ms at 16 kHz.
FRAME = 160
#: How much of the room the filter models, in seconds: the sound's way from the
#: speakers to the microphone (buffers included) and its reverberation.
TAIL = 0.4

_SET_SAMPLING_RATE = 24  # speex_echo.h: SPEEX_ECHO_SET_SAMPLING_RATE


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
    return lib


class EchoCanceller:
    """Speex's echo canceller for one microphone and one reference, at `rate`.

    ::

        aec = EchoCanceller()        # EchoUnavailable without libspeexdsp
        clean = aec.process(mic, ref)  # int16 arrays, a whole number of FRAMEs each
    """

    def __init__(self, rate: int = 16000, *, frame: int = FRAME, tail: float = TAIL) -> None:
        self._lib = _library()
        self.frame = frame
        self.rate = rate
        state = self._lib.speex_echo_state_init(frame, round(tail * rate))
        if not state:
            raise EchoUnavailable("libspeexdsp could not make an echo canceller")
        self._state: int | None = state
        value = ctypes.c_int(rate)
        self._lib.speex_echo_ctl(state, _SET_SAMPLING_RATE, ctypes.byref(value))

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
        for k in range(0, len(near) * 2, step):
            cancel(self._state, base_near + k, base_far + k, base_out + k)
        return out

    def reset(self) -> None:
        """Forget the room (after the reference jumped, the old filter is wrong)."""
        if self._state is not None:
            self._lib.speex_echo_state_reset(self._state)

    def close(self) -> None:
        state, self._state = self._state, None
        if state is not None:
            self._lib.speex_echo_state_destroy(state)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at shutdown the library may be gone
            self.close()
