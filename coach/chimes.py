"""The chimes and the rhythm pulse the project makes itself.

The timeline needs only their lengths, so those are plain numbers here; the samples are
made by the audio stage from the same table, with chime() and pulse(). numpy is imported
inside those functions, so the timeline can use this module without it.

Every sound is additive synthesis: a few partials, each a pair of slightly detuned sines
(a slow beating, the shimmer of a real bell) with its own exponential decay, under a
raised-cosine attack (no click at the strike) and a raised-cosine fade over the last 30%
of the buffer, so each starts and ends at exactly zero and has died away by its end.

What the levels and decays are held to (tests/test_chimes.py): a pack's side chime is as
loud as its step chime (within 3 LU, BS.1770); a step chime has fallen 30 dB below its
peak by the time the step's instructions can begin (its strike, the 0.8 s lead to the
title, a 0.7 s title gap), so it never rings under them; the rhythm pulse keeps most of
its energy between 250 and 1500 Hz, where a phone's small speaker still plays it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from coach.dsp import falling_cosine, raised_cosine
from coach.units import RATE, Seconds, to_samples

if TYPE_CHECKING:
    import numpy as np

#: Synthesized chime sounds by name, with their length.
SYNTH_CHIMES: dict[str, Seconds] = {
    "bell": 2.5,
    "bell-bright": 2.0,
    "bell-low": 3.5,
    "wood": 0.6,
}

#: The soft tap of a step's rhythm (every beat is this long, accented or not).
PULSE_SECONDS: Seconds = 0.2
#: A rhythm's accent (coach.timeline.ACCENT_EVERY places it) is pulse(accent=True).

#: Peak absolute sample value of each sound: well under the voice (about -18 LUFS,
#: peaks under -1 dBFS), so the chimes sit behind it.
LEVELS: dict[str, float] = {
    "bell": 0.28,
    "bell-bright": 0.25,
    "bell-low": 0.30,
    "wood": 0.20,
}
#: The tap measures about -32 LUFS, some 16 LU under the voice (and 10 more while the
#: voice speaks, when the mixer lowers it); the fuller accent measures 2 LU above it.
PULSE_LEVEL = 0.155
ACCENT_LEVEL = 0.17

#: The share of each buffer, at its end, faded to silence.
_FADE_SHARE = 0.3


@dataclass(frozen=True)
class _Partial:
    ratio: float  # frequency relative to the fundamental (the bell's prime)
    amp: float  # initial amplitude relative to the others
    tau: Seconds  # time constant of its exponential decay
    beat: float = 0.0  # Hz between the two sines of its detuned pair (0: a single sine)


@dataclass(frozen=True)
class _Strike:
    fundamental: float  # Hz
    partials: tuple[_Partial, ...]
    attack: Seconds  # raised-cosine rise: the softness of the mallet
    noise: float = 0.0  # level of the filtered noise at the strike, relative to the peak
    noise_cutoff: float = 2500.0  # Hz, the low-pass on that noise (a soft mallet)
    noise_tau: Seconds = 0.004


# Bell partials (hum, prime, tierce, quint, nominal, and a few above), each dying faster the
# higher it is; the prime is the strongest, so it is the pitch one hears and measures.
_STRIKES: dict[str, _Strike] = {
    # D5: the step-change chime, a small warm bell, damped so that it is 30 dB down
    # 1.5 s after the strike, before the step's instructions begin.
    "bell": _Strike(
        fundamental=587.33,
        partials=(
            _Partial(0.5, 0.30, 0.62, beat=0.7),  # hum
            _Partial(1.0, 1.00, 0.43, beat=1.1),  # prime
            _Partial(1.19, 0.30, 0.31, beat=1.4),  # tierce
            _Partial(1.5, 0.15, 0.26, beat=1.2),  # quint
            _Partial(2.0, 0.50, 0.24, beat=1.9),  # nominal
            _Partial(2.52, 0.18, 0.14, beat=2.3),  # superquint
            _Partial(3.01, 0.10, 0.095),  # octave nominal
            _Partial(4.16, 0.05, 0.056),
            _Partial(5.43, 0.03, 0.037),
        ),
        attack=0.004,
        noise=0.05,
    ),
    # B5, a major sixth above: the side-switch chime, a smaller, harder-struck bell with no
    # hum and stronger upper partials, so it rings brighter and shorter.
    "bell-bright": _Strike(
        fundamental=987.77,
        partials=(
            _Partial(1.0, 1.00, 0.55, beat=1.6),  # prime
            _Partial(1.19, 0.15, 0.35, beat=1.3),  # tierce
            _Partial(1.5, 0.12, 0.30),  # quint
            _Partial(2.0, 0.55, 0.32, beat=2.4),  # nominal
            _Partial(2.74, 0.30, 0.18, beat=2.9),
            _Partial(3.42, 0.16, 0.11),
            _Partial(4.12, 0.10, 0.07),
            _Partial(5.40, 0.05, 0.045),
        ),
        attack=0.0025,
        noise=0.06,
        noise_cutoff=4000.0,
        noise_tau=0.003,
    ),
    # D4, an octave below the bell: the end-of-session chime, a deep bell softly struck
    # that hums a long while; its upper partials are faint, so it stays calm and dark.
    "bell-low": _Strike(
        fundamental=293.66,
        partials=(
            _Partial(0.5, 0.40, 1.30, beat=0.45),  # hum
            _Partial(1.0, 1.00, 1.05, beat=0.8),  # prime
            _Partial(1.19, 0.28, 0.75, beat=1.0),  # tierce
            _Partial(1.5, 0.12, 0.60, beat=0.9),  # quint
            _Partial(2.0, 0.40, 0.55, beat=1.3),  # nominal
            _Partial(2.52, 0.12, 0.32, beat=1.7),  # superquint
            _Partial(3.01, 0.06, 0.20),  # octave nominal
            _Partial(4.16, 0.03, 0.12),
        ),
        attack=0.007,
        noise=0.03,
        noise_cutoff=1500.0,
        noise_tau=0.005,
    ),
    # A woodblock "tok": a few damped resonances of a small block of hard wood, tapped
    # with a soft stick; gone within a fifth of a second. It rings just long enough to
    # measure as loud as the bells at the same peak, so as a side chime it is not missed.
    "wood": _Strike(
        fundamental=820.0,
        partials=(
            _Partial(1.0, 1.00, 0.048),
            _Partial(1.62, 0.45, 0.030),
            _Partial(2.41, 0.18, 0.018),
        ),
        attack=0.0015,
        noise=0.08,
        noise_cutoff=3000.0,
        noise_tau=0.002,
    ),
}

# The rhythm's tap: a felt mallet on a small wooden tongue, its modes (not a bell's) from
# a little below the fundamental (the body) to four times it, all short, so it is a warm
# "tock" of a tenth of a second with almost all its energy between 250 and 1500 Hz. The
# accent is the same tap a major third lower, fuller and a little longer: a lean, not a
# click.
_TAP_MODES = ((0.5, 0.22, 0.75), (1.0, 1.00, 1.0), (2.32, 0.30, 0.5), (4.1, 0.07, 0.22))
_PULSES: dict[bool, _Strike] = {
    accent: _Strike(
        fundamental=fundamental,
        partials=tuple(_Partial(ratio, amp, tau * decay) for ratio, amp, decay in _TAP_MODES),
        attack=0.006 if accent else 0.005,
        noise=0.03,
        noise_cutoff=1200.0,
        noise_tau=0.003,
    )
    for accent, fundamental, tau in ((False, 440.0, 0.045), (True, 349.23, 0.06))
}


def chime(name: str) -> np.ndarray:
    """The chime NAME (a key of SYNTH_CHIMES): float32 mono at RATE, exactly
    to_samples(SYNTH_CHIMES[name]) samples long, peaking at LEVELS[name]. The same
    read-only array on every call; KeyError for an unknown name."""
    if name not in SYNTH_CHIMES:
        raise KeyError(name)
    return _chime(name)


def pulse(accent: bool = False) -> np.ndarray:
    """The soft tap of a rhythm's beat, or its accent (the first beat and every
    coach.timeline.ACCENT_EVERY-th): float32 mono at RATE, exactly
    to_samples(PULSE_SECONDS) samples long, peaking at PULSE_LEVEL (ACCENT_LEVEL). The
    same read-only array on every call."""
    return _pulse(bool(accent))


@cache
def _chime(name: str) -> np.ndarray:
    strike = _STRIKES[name]
    n = to_samples(SYNTH_CHIMES[name])
    return _finish(_synthesize(strike, n), LEVELS[name])


@cache
def _pulse(accent: bool) -> np.ndarray:
    n = to_samples(PULSE_SECONDS)
    return _finish(_synthesize(_PULSES[accent], n), ACCENT_LEVEL if accent else PULSE_LEVEL)


def _synthesize(strike: _Strike, n: int) -> np.ndarray:
    import numpy as np

    t = np.arange(n) / RATE
    out = np.zeros(n)
    for p in strike.partials:
        f = strike.fundamental * p.ratio
        if p.beat:
            # Two sines beat.beat Hz apart, unequal so the beating never fully cancels.
            tone = 0.6 * np.sin(2 * np.pi * (f - p.beat / 2) * t) + 0.4 * np.sin(
                2 * np.pi * (f + p.beat / 2) * t
            )
        else:
            tone = np.sin(2 * np.pi * f * t)
        out += p.amp * np.exp(-t / p.tau) * tone
    out *= _attack(n, strike.attack)
    if strike.noise:
        out += strike.noise * np.max(np.abs(out)) * _strike_noise(strike, n)
    return out


def _strike_noise(strike: _Strike, n: int) -> np.ndarray:
    """A very short burst of low-passed noise, the mallet touching the metal or wood,
    at a peak of 1; the same samples every time (a fixed seed)."""
    import numpy as np

    m = min(n, to_samples(strike.noise_tau * 8))
    noise = np.random.default_rng(20_240_617).uniform(-1.0, 1.0, m)
    spectrum = np.fft.rfft(noise)
    freqs = np.fft.rfftfreq(m, 1 / RATE)
    spectrum /= np.sqrt(1 + (freqs / strike.noise_cutoff) ** 4)  # 2nd-order-ish low-pass
    burst = np.fft.irfft(spectrum, m)
    t = np.arange(m) / RATE
    burst *= _attack(m, 0.001) * np.exp(-t / strike.noise_tau) * _fade(m, 0.5)
    peak = np.max(np.abs(burst))
    out = np.zeros(n)
    out[:m] = burst / peak if peak > 0 else burst
    return out


def _attack(n: int, seconds: Seconds) -> np.ndarray:
    """Gain rising from exactly 0 to 1 over SECONDS as a raised cosine, then 1."""
    import numpy as np

    k = max(2, min(n, to_samples(seconds)))
    gain = np.ones(n)
    gain[:k] = raised_cosine(np.pi * np.arange(k) / k)
    return gain


def _fade(n: int, share: float) -> np.ndarray:
    """Gain of 1, then falling as a raised cosine over the last SHARE of N to exactly 0."""
    import numpy as np

    k = max(2, round(n * share))
    gain = np.ones(n)
    gain[n - k :] = falling_cosine(np.pi * np.arange(1, k + 1) / k)
    gain[-1] = 0.0
    return gain


def _finish(wave: np.ndarray, level: float) -> np.ndarray:
    """WAVE faded out over its last 30%, scaled to peak at LEVEL, float32, read-only."""
    import numpy as np

    wave = wave * _fade(len(wave), _FADE_SHARE)
    wave[0] = 0.0
    out = (wave * (level / np.max(np.abs(wave)))).astype(np.float32)
    out.flags.writeable = False
    return out
