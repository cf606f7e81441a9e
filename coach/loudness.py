"""Loudness: measuring it (ITU-R BS.1770, through pyloudnorm) and levelling speech clips.

Every speech clip is stored at the same loudness, SPEECH_LUFS, with its peaks held under
SPEECH_PEAK by a look-ahead limiter, so cues sound equally loud and a render only has
to scale them (see `coach.mixer`). pyloudnorm brings scipy, which costs most of a second
to import, so both are imported only when a clip is levelled or a file measured.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from coach.units import RATE

if TYPE_CHECKING:
    import numpy as np

#: Loudness of every stored speech clip (mono, integrated).
SPEECH_LUFS = -18.0
#: Peak ceiling of a stored speech clip (-1 dBFS).
SPEECH_PEAK = 10 ** (-1.0 / 20)
#: The loudness a rendered session is made to have (SPEC "Rendered files").
TARGET_LUFS = -16.0

_MIN_SECONDS = 0.5  # pyloudnorm needs at least one 400 ms gating block
_LOOKAHEAD = 0.008  # seconds; the limiter's gain falls this long before a peak


@functools.cache
def _meter(rate: int):  # type: ignore[no-untyped-def]
    import pyloudnorm

    return pyloudnorm.Meter(rate)


def preload() -> None:
    """Import the heavy parts now (e.g. in a thread while other work goes on)."""
    _meter(RATE)
    import scipy.ndimage  # noqa: F401


def integrated(x: np.ndarray, rate: int = RATE) -> float:
    """Integrated loudness in LUFS of mono (n,) or multichannel (n, c) samples.
    A clip shorter than a gating block is measured as if repeated, not padded with
    silence, so short words are not judged quieter than they are."""
    import numpy as np

    if len(x) == 0:
        return float("-inf")
    if len(x) < _MIN_SECONDS * rate:
        x = np.concatenate([x] * (int(_MIN_SECONDS * rate) // len(x) + 1))
    return float(_meter(rate).integrated_loudness(x.astype(np.float64)))


def limit(x: np.ndarray, ceiling: float, rate: int = RATE) -> np.ndarray:
    """Hold |x| under `ceiling` with a smooth gain: the per-sample gain a hard clip would
    need is spread by a running minimum over +-W and then averaged over W, so the gain
    starts falling W/2 before a peak and every sample ends at or under the ceiling."""
    import numpy as np
    from scipy.ndimage import minimum_filter1d

    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak <= ceiling:
        return x
    w = max(1, round(_LOOKAHEAD * rate))
    with np.errstate(divide="ignore"):
        need = np.minimum(1.0, ceiling / np.maximum(np.abs(x), 1e-12))
    floor = minimum_filter1d(need.astype(np.float64), size=2 * w + 1, mode="nearest")
    # A centred moving average of width w + 1, by cumulative sums (O(n) for any w).
    padded = np.concatenate([np.full(w // 2 + 1, floor[0]), floor, np.full(w - w // 2, floor[-1])])
    sums = np.cumsum(padded)
    gain = (sums[w + 1 :] - sums[: -(w + 1)]) / (w + 1)
    return (x * gain[: len(x)]).astype(x.dtype)


def level_speech(x: np.ndarray, rate: int = RATE) -> np.ndarray:
    """A speech clip at SPEECH_LUFS (within about 0.3 LU) with peaks under SPEECH_PEAK
    (float32 mono)."""
    import numpy as np

    y = x.astype(np.float32)
    loud = integrated(y, rate)
    if not np.isfinite(loud):
        return y
    gained = y * np.float32(10 ** ((SPEECH_LUFS - loud) / 20))
    limited = limit(gained, SPEECH_PEAK * 0.999, rate)
    if limited is not gained and float(np.max(np.abs(gained))) > SPEECH_PEAK * 2:
        # Heavy limiting (over 6 dB) takes noticeable loudness away: measure and restore it.
        loud = integrated(limited, rate)
        limited = limit(limited * np.float32(10 ** ((SPEECH_LUFS - loud) / 20)),
                        SPEECH_PEAK * 0.999, rate)
    return limited
