"""Our BS.1770 meter against an independent one: pyloudnorm, on real renders of the
built-in routines (real speech, chimes and pulses), and on plain test signals."""

from __future__ import annotations

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf

from coach import loudness
from coach.units import RATE


def _theirs(x: np.ndarray, rate: int) -> float:
    return float(pyloudnorm.Meter(rate).integrated_loudness(x))


@pytest.mark.parametrize("rate", [RATE, 44_100, 22_050])
def test_a_tone_with_pauses_measures_as_pyloudnorm_says(rate: int) -> None:
    t = np.arange(rate * 6) / rate
    x = 0.2 * np.sin(2 * np.pi * 997 * t) * (np.sin(2 * np.pi * 0.4 * t) > -0.3)
    ours = loudness.integrated(x.astype(np.float32), rate)
    assert ours == pytest.approx(_theirs(x, rate), abs=0.2)


@pytest.mark.tts
@pytest.mark.parametrize("routine", ["upper-back-basics", "upper-back-fist-rocking"])
def test_a_rendered_session_measures_as_pyloudnorm_says(run_cli, tmp_path, routine) -> None:
    out = tmp_path / "session.wav"
    code, _, err = run_cli(
        "render", routine, "--voice", "calm-en", "--length", "7m", "-o", str(out)
    )
    assert code == 0, err
    data, rate = sf.read(out, dtype="float32")
    theirs = _theirs(data, rate)
    ours = loudness.integrated(data, rate)
    assert ours == pytest.approx(theirs, abs=0.2)
    assert theirs == pytest.approx(loudness.TARGET_LUFS, abs=0.5)


def test_fft_sizes_are_the_smallest_5_smooth_numbers_at_least_asked():
    def smooth(k: int) -> bool:
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        return k == 1

    for n in [*range(1, 3000), 56_200, 65_537, 100_001]:
        size = loudness._fft_size(n)
        assert size >= n and smooth(size), n
        assert not any(smooth(k) for k in range(n, size)), n


def _peaky_speechlike(seconds: float, rate: int, seed: int, peak_db: float) -> np.ndarray:
    """Noise shaped like speech: syllables of band-limited noise at 4 per second, with
    clicks `peak_db` above the syllables' level (0: none) for the limiter to hold."""
    rng = np.random.default_rng(seed)
    n = round(seconds * rate)
    t = np.arange(n) / rate
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / rate)
    spectrum *= (f > 100) / (1 + (f / 1500) ** 2)
    x = np.fft.irfft(spectrum, n) * np.maximum(np.sin(2 * np.pi * 2 * t), 0) ** 2
    x *= 0.1 / np.max(np.abs(x))
    if peak_db:
        for at in rng.integers(0, n - 40, 6):
            x[at : at + 40] += 0.1 * 10 ** (peak_db / 20) * np.hanning(40) * rng.choice([-1, 1])
    return x.astype(np.float32)


@pytest.mark.parametrize("seed", range(6))
def test_the_limiter_holds_the_ceiling_and_scales_only_near_its_peaks(seed: int) -> None:
    """`_Gain.apply` scales only the chunks near a peak; each sample must still be x
    times the gain interpolated between chunk centres, as it was computed for every
    sample before (bit for bit), and `every` gives that gain anywhere."""
    rate = 22_050
    x = _peaky_speechlike(3.0, rate, seed, peak_db=12 + seed) * 4
    gain = loudness._limiter_gain(x, 0.5, rate)
    assert gain is not None
    whole = (x * np.interp(np.arange(len(x)), gain.centres, gain.gain)).astype(x.dtype)
    limited = loudness.limit(x, 0.5, rate)
    assert np.array_equal(limited, whole)
    assert np.max(np.abs(limited)) <= 0.5
    assert 0 < gain.near.mean() < 0.5  # a few stretches, not the whole clip
    step = rate / loudness.ESTIMATE_RATE
    n = round(len(x) / step) + 3  # a few positions past the last centre too
    assert np.array_equal(
        gain.every(step, n), np.interp(np.arange(n) * step, gain.centres, gain.gain)
    )
    assert loudness.limit(x, 10.0, rate) is x


def test_hop_peaks_are_the_largest_magnitudes_of_floats_and_of_16_bit_samples() -> None:
    rng = np.random.default_rng(3)
    for n in (0, 1, loudness.HOP_SAMPLES - 1, loudness.HOP_SAMPLES, 3 * loudness.HOP_SAMPLES + 7):
        x = rng.uniform(-1, 1, n).astype(np.float32)
        expected = np.array(
            [
                np.max(np.abs(x[i : i + loudness.HOP_SAMPLES]))
                for i in range(0, n, loudness.HOP_SAMPLES)
            ],
            dtype=np.float32,
        )
        assert np.array_equal(loudness.hop_peaks(x), expected)
        pcm = np.round(x * 32767).astype(np.int16)
        if n:
            pcm[-1] = -32768
        scaled = loudness.hop_peaks(pcm, 1 / 32768)
        assert np.array_equal(scaled, loudness.hop_peaks(pcm.astype(np.float32) / 32768))


@pytest.mark.parametrize(("peak_db", "seed"), [(0, 1), (9, 2), (14, 3), (30, 4)])
def test_levelling_measures_what_it_makes_as_measuring_it_again_would(peak_db, seed) -> None:
    """measured_level's energy (the clip's own, scaled by the level and the limiter)
    against the levelled samples measured afresh: unlimited, lightly and heavily limited
    (measured again there), and the same samples as level_speech."""
    rate = 22_050
    x = _peaky_speechlike(4.0, rate, seed, peak_db)
    levelled, energy = loudness.measured_level(x, rate)
    assert np.array_equal(levelled, loudness.level_speech(x, rate))
    again = loudness.k_weighted(loudness.at_estimate_rate(levelled, rate), loudness.ESTIMATE_RATE)
    assert len(energy) == len(again)
    total = 10 * np.log10(energy.sum() / np.sum(again**2))
    assert abs(total) < (0.001 if peak_db == 0 else 0.1), total
    # Hop by hop (as a session's loudness adds them up), where there is sound.
    hop = loudness.HOP_SAMPLES * loudness.ESTIMATE_RATE // RATE
    k = len(energy) // hop * hop
    ours, theirs = (e[:k].reshape(-1, hop).sum(axis=1) for e in (energy, again**2))
    loud = theirs > theirs.max() * 1e-3
    assert np.max(np.abs(10 * np.log10(ours[loud] / theirs[loud]))) < 0.5
    if peak_db < 30:  # clicks 30 dB over the words leave them quieter, limited or not
        assert loudness.estimate(levelled, rate) == pytest.approx(loudness.SPEECH_LUFS, abs=0.5)
