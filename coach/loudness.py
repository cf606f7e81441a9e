"""Loudness: measuring it (ITU-R BS.1770-4 integrated loudness) and levelling speech clips.

Every speech clip is stored at the same loudness, SPEECH_LUFS, with its peaks held under
SPEECH_PEAK by a look-ahead limiter, so cues sound equally loud and a render only has to
scale them (see `coach.mixer`).

Written with numpy alone, on purpose: the usual Python meter (pyloudnorm) needs scipy,
whose import costs most of a second, and levelling runs in every speech worker process
at start-up. The tests hold this meter to pyloudnorm and to ffmpeg's ebur128 filter.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from coach.units import RATE

if TYPE_CHECKING:
    import numpy as np

#: Loudness of every stored speech clip (mono, integrated).
SPEECH_LUFS = -18.0
#: Peak ceiling of a stored speech clip (-1 dBFS).
SPEECH_PEAK = 10 ** (-1.0 / 20)
#: The loudness a rendered session is made to have, as podcasts and audiobooks are.
TARGET_LUFS = -16.0

_BLOCK = 0.400  # gating block, seconds (BS.1770)
_HOP = 0.100  # 75 % overlap
#: A gating hop in samples at RATE.
HOP_SAMPLES = round(_HOP * RATE)
_ABSOLUTE_GATE = -70.0
_RELATIVE_GATE = -10.0
_LOOKAHEAD = 0.008  # seconds; the limiter's gain falls this long before a peak
_CHUNK = 16  # samples the limiter decides its gain for at once


def _k_weighting(rate: int) -> list[tuple[tuple[float, float, float], tuple[float, float, float]]]:
    """The two biquads of BS.1770's K-weighting (a high shelf for the head, a high pass),
    designed for any sample rate as libebur128 does; at 48 kHz they are the standard's
    published coefficients."""
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / rate)
    vh = 10 ** (gain_db / 20)
    vb = vh**0.4996667741545416
    a0 = 1 + k / q + k * k
    shelf = (
        ((vh + vb * k / q + k * k) / a0, 2 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0),
        (1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0),
    )
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / rate)
    a0 = 1 + k / q + k * k
    highpass = ((1.0, -2.0, 1.0), (1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0))
    return [shelf, highpass]


@functools.lru_cache(maxsize=256)
def _response(rate: int, size: int) -> np.ndarray:
    """The K-weighting's frequency response on the bins of a real FFT of `size`."""
    import numpy as np

    z = np.exp(-2j * np.pi * np.fft.rfftfreq(size))  # z^-1 on the unit circle
    response = np.ones_like(z)
    for b, a in _k_weighting(rate):
        response *= (b[0] + b[1] * z + b[2] * z * z) / (a[0] + a[1] * z + a[2] * z * z)
    return response


def _fft_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: the sizes pocketfft is fastest at (for a 4-second
    clip at 12 kHz, 56,250 takes 1.6 ms where 65,536 takes 3.0), and a few percent of
    padding at most."""
    best = 1 << (n - 1).bit_length()
    five = 1
    while five < best:
        three = five
        while three < best:
            size = three
            while size < n:
                size *= 2
            best = min(best, size)
            three *= 3
        five *= 5
    return best


def k_weighted(x: np.ndarray, rate: int = RATE) -> np.ndarray:
    """The K-weighted signal of mono (n,) or multichannel (n, c) samples, as float64.

    The filters are applied in the frequency domain (their response times the signal's
    spectrum), with enough zero padding (0.1 s) that the high pass's ring, long decayed
    by then, does not wrap around onto the start.
    """
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    size = _fft_size(len(x) + rate // 10)
    response = _response(rate, size)
    spectrum = np.fft.rfft(x, size, axis=0)
    spectrum *= response[:, None] if x.ndim == 2 else response
    return np.fft.irfft(spectrum, size, axis=0)[: len(x)]


#: The sample rate loudness is estimated at when only an estimate is needed: a quarter
#: of RATE costs a sixth of the time and, for speech, is within 0.15 dB.
ESTIMATE_RATE = 12_000


#: A sound's summary (`summarize`) has its energy every CURVE_STEP samples at RATE (10 ms).
CURVE_STEP = RATE // 100


@dataclass(frozen=True)
class Summary:
    """What a session's loudness and peak need of one sound, without its samples:
    `curve[i]`, the K-weighted energy (a sum of squares, in samples at RATE) of its
    first i * CURVE_STEP samples (the last point: all of it); `peaks[j]`, its largest
    |sample| in its j-th stretch of HOP_SAMPLES."""

    length: int
    curve: np.ndarray
    peaks: np.ndarray


def summarize(x: np.ndarray) -> Summary:
    """The summary of mono samples at RATE; the energy is estimated at ESTIMATE_RATE."""
    return summary_of(x, k_weighted(at_estimate_rate(x, RATE), ESTIMATE_RATE) ** 2)


def summary_of(x: np.ndarray, energy: np.ndarray, scale: float = 1.0) -> Summary:
    """The summary of mono samples `x` at RATE (each sample times `scale`: 1 / 32768 for
    16-bit ones) whose K-weighted energy, sample by sample at ESTIMATE_RATE, is
    `energy` (as `summarize` measures it, or as `measured_level` gives it for a clip it
    levels)."""
    import numpy as np

    step = RATE // ESTIMATE_RATE
    fine = np.concatenate([np.zeros(1), np.cumsum(energy * step)])
    every = CURVE_STEP // step
    curve = fine[::every]
    if (len(fine) - 1) % every:
        curve = np.concatenate([curve, fine[-1:]])
    return Summary(len(x), curve.astype(np.float64), hop_peaks(x, scale))


def hop_peaks(x: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """The largest |sample| of each stretch of HOP_SAMPLES (the last may be shorter),
    times `scale`, as float32: the largest of each stretch's maximum and minus its
    minimum, so 16-bit samples are read as they are (no float copy, and -32768 has an
    absolute value there)."""
    import numpy as np

    hop = HOP_SAMPLES
    whole = len(x) // hop * hop
    parts = [x[:whole].reshape(-1, hop)] + ([x[whole:][None, :]] if whole < len(x) else [])
    top = np.concatenate([p.max(axis=1).astype(np.float32) for p in parts])
    bottom = np.concatenate([p.min(axis=1).astype(np.float32) for p in parts])
    return np.maximum(top, -bottom) * np.float32(scale)


def gated_loudness(block_power: np.ndarray) -> float:
    """Integrated loudness (LUFS) from the mean square of every 400 ms gating block
    (75 % overlap), summed over channels: BS.1770's absolute and relative gates."""
    import numpy as np

    with np.errstate(divide="ignore"):
        level = -0.691 + 10 * np.log10(block_power)
    power = block_power[level > _ABSOLUTE_GATE]
    if power.size == 0:
        return float("-inf")
    relative = -0.691 + 10 * math.log10(power.mean()) + _RELATIVE_GATE
    with np.errstate(divide="ignore"):
        power = power[-0.691 + 10 * np.log10(power) > relative]
    return float(-0.691 + 10 * math.log10(power.mean()))


def block_powers(hop_energy: np.ndarray) -> np.ndarray:
    """Gating-block mean squares from the K-weighted energy of consecutive hops of
    HOP_SAMPLES (at RATE)."""
    import numpy as np

    per_block = round(_BLOCK / _HOP)
    if len(hop_energy) < per_block:
        return np.empty(0)
    sums = np.concatenate([np.zeros(1), np.cumsum(hop_energy)])
    return (sums[per_block:] - sums[:-per_block]) / (per_block * HOP_SAMPLES)


def integrated(x: np.ndarray, rate: int = RATE) -> float:
    """Integrated loudness in LUFS of mono (n,) or multichannel (n, c) samples (all
    channels weighted 1, as for mono and stereo). A clip shorter than a gating block is
    measured as if repeated, not padded with silence, so short words are not judged
    quieter than they are."""
    import numpy as np

    if len(x) == 0:
        return float("-inf")
    if _too_short(len(x), rate):
        x = np.concatenate([x] * (int((_BLOCK + _HOP) * rate) // len(x) + 1))
    y = k_weighted(x, rate)
    return _gated(y * y if y.ndim == 1 else (y * y).sum(axis=1), rate)


def _too_short(n: int, rate: int) -> bool:
    """Whether `integrated` measures n samples as if repeated (shorter than a block)."""
    return n < (_BLOCK + _HOP) * rate


def _gated(energy: np.ndarray, rate: int) -> float:
    """Integrated loudness from the K-weighted energy of each sample (channels summed)."""
    import numpy as np

    block, hop = round(_BLOCK * rate), round(_HOP * rate)
    sums = np.concatenate([np.zeros(1), np.cumsum(energy)])
    starts = np.arange(0, len(energy) - block + 1, hop)
    return gated_loudness((sums[starts + block] - sums[starts]) / block)


def at_estimate_rate(x: np.ndarray, rate: int) -> np.ndarray:
    """Mono samples at `rate` resampled to ESTIMATE_RATE (float32)."""
    import numpy as np
    import soxr

    x = np.asarray(x, dtype=np.float32)
    if rate == ESTIMATE_RATE:
        return x
    return soxr.resample(x, rate, ESTIMATE_RATE, quality="LQ")


def estimate(x: np.ndarray, rate: int = RATE) -> float:
    """Integrated loudness of mono samples, measured at ESTIMATE_RATE (speech loses
    under 0.15 dB there, and it costs a fraction of the full-rate measurement)."""
    return integrated(at_estimate_rate(x, rate), ESTIMATE_RATE)


def _running_min(x: np.ndarray, width: int) -> np.ndarray:
    """min(x[i - width//2 : i + width//2 + 1]) for every i (edges see the nearest values),
    in O(n) whatever the width (van Herk / Gil-Werman: prefix and suffix minima of
    width-long blocks)."""
    import numpy as np

    half = width // 2
    padded = np.concatenate([np.full(half, x[0]), x, np.full(half + width, x[-1])])
    blocks = len(padded) // width
    grid = padded[: blocks * width].reshape(blocks, width)
    prefix = np.minimum.accumulate(grid, axis=1).ravel()
    suffix = np.minimum.accumulate(grid[:, ::-1], axis=1)[:, ::-1].ravel()
    i = np.arange(len(x))  # window [i, i + width - 1] in padded coordinates
    return np.minimum(suffix[i], prefix[i + width - 1])


def limit(x: np.ndarray, ceiling: float, rate: int = RATE) -> np.ndarray:
    """Hold |x| under `ceiling` with a smooth gain.

    The gain a hard clip would need is taken per chunk of _CHUNK samples (its loudest
    sample decides), spread by a running minimum over +-W chunks and averaged over W,
    then interpolated between chunk centres. Each sample's gain is thus a blend of
    values no greater than the gain its own chunk needs: every sample ends at or under
    the ceiling, and the gain starts falling about W/2 before a peak.
    """
    gain = _limiter_gain(x, ceiling, rate)
    return x if gain is None else gain.apply(x)


@dataclass(frozen=True)
class _Gain:
    """A limiter's gain: `gain[j]` at the centre of chunk j (`centres[j]`, in samples),
    linear between centres. A sample's gain comes from the two centres around it, so
    it differs from 1 only in a chunk marked `near` (it or a neighbour needs less)."""

    centres: np.ndarray
    gain: np.ndarray
    near: np.ndarray

    def apply(self, x: np.ndarray) -> np.ndarray:
        """x times the gain, in x's dtype. Only the chunks near a peak are scaled: the
        rest, most of a clip, are exactly x * 1.0 (computing their gain took two
        thirds of the limiter's time)."""
        import numpy as np

        at = (np.flatnonzero(self.near)[:, None] * _CHUNK + np.arange(_CHUNK)).ravel()
        at = at[at < len(x)]
        out = x.copy()
        out[at] = x[at] * np.interp(at, self.centres, self.gain)
        return out

    def every(self, step: float, n: int) -> np.ndarray:
        """The gain at the n sample positions 0, step, 2 * step, ... (float64): worked
        out only in the runs of chunks marked `near`, the rest being 1."""
        import numpy as np

        out = np.ones(n)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], self.near.view(np.int8), [0]])))
        first, end = edges[::2], edges[1::2]  # runs of near chunks, [first, end)
        lo = np.minimum(np.ceil(first * _CHUNK / step).astype(np.int64), n)
        hi = np.minimum(np.ceil(end * _CHUNK / step).astype(np.int64), n)
        hi[end == len(self.near)] = n  # past the last centre: its gain
        counts = np.maximum(hi - lo, 0)
        if counts.sum() == 0:
            return out
        # The positions of every run, one after another: lo[r], lo[r] + 1, ..., hi[r] - 1.
        starts = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        at = np.arange(counts.sum()) + starts
        out[at] = np.interp(at * step, self.centres, self.gain)
        return out


def _limiter_gain(x: np.ndarray, ceiling: float, rate: int) -> _Gain | None:
    """The gain `limit` applies, or None where no sample passes the ceiling."""
    import numpy as np

    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak <= ceiling:
        return None
    chunks = -(-len(x) // _CHUNK)
    loud = np.zeros(chunks * _CHUNK, dtype=np.float64)
    loud[: len(x)] = np.abs(x)
    loud = loud.reshape(chunks, _CHUNK).max(axis=1)
    need = np.minimum(1.0, ceiling / np.maximum(loud, 1e-12))
    w = max(1, round(_LOOKAHEAD * rate / _CHUNK))
    floor = _running_min(need, 2 * w + 1)
    # A centred moving average of width w + 1, by cumulative sums (O(n) for any w).
    padded = np.concatenate([np.full(w // 2 + 1, floor[0]), floor, np.full(w - w // 2, floor[-1])])
    sums = np.cumsum(padded)
    # At most 1, as a blend of values that are: the sums' rounding can pass it by 1e-16.
    gain = np.minimum((sums[w + 1 :] - sums[: -(w + 1)])[:chunks] / (w + 1), 1.0)
    below = gain < 1.0
    near = below.copy()
    near[1:] |= below[:-1]
    near[:-1] |= below[1:]
    return _Gain(np.arange(chunks) * _CHUNK + (_CHUNK - 1) / 2, gain, near)


def level_speech(x: np.ndarray, rate: int = RATE) -> np.ndarray:
    """A speech clip at SPEECH_LUFS (within about 0.3 LU) with peaks under SPEECH_PEAK
    (float32 mono). The loudness is an estimate: each render measures its session's
    loudness again and corrects it (coach.mixer.session_gain)."""
    return measured_level(x, rate)[0]


def measured_level(x: np.ndarray, rate: int = RATE) -> tuple[np.ndarray, np.ndarray]:
    """`level_speech`'s samples, and their K-weighted energy sample by sample at
    ESTIMATE_RATE (as `summary_of` takes it) from the one measurement levelling makes:
    the clip's own, scaled by the level's gain (exactly: the filters are linear) and by
    the limiter's (approximately: that gain is smooth over milliseconds, and the
    K-weighting's response to speech is shorter). A clip limited by over 6 dB is
    measured again instead. Measured on every cue of the built-in routines against
    `summarize` of the finished clip: within 0.1 dB (tests/test_loudness.py)."""
    import numpy as np

    y = x.astype(np.float32)
    low = at_estimate_rate(y, rate)
    weighted = k_weighted(low, ESTIMATE_RATE)
    energy = weighted * weighted
    short = _too_short(len(low), ESTIMATE_RATE)
    loud = integrated(low, ESTIMATE_RATE) if short else _gated(energy, ESTIMATE_RATE)
    if not np.isfinite(loud):
        return y, energy
    scale = np.float32(10 ** ((SPEECH_LUFS - loud) / 20))
    gained = y * scale
    energy *= float(scale) ** 2
    gain = _limiter_gain(gained, SPEECH_PEAK * 0.999, rate)
    if gain is None:
        return gained, energy
    limited = gain.apply(gained)
    if float(np.max(np.abs(gained))) > SPEECH_PEAK * 2:
        # Heavy limiting (over 6 dB) takes noticeable loudness away: measure and restore it.
        loud = estimate(limited, rate)
        limited = limit(
            limited * np.float32(10 ** ((SPEECH_LUFS - loud) / 20)), SPEECH_PEAK * 0.999, rate
        )
        return limited, k_weighted(at_estimate_rate(limited, rate), ESTIMATE_RATE) ** 2
    energy *= gain.every(rate / ESTIMATE_RATE, len(low)) ** 2
    return limited, energy
