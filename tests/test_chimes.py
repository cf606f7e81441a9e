"""The synthesized chimes and the rhythm pulse: lengths, levels, clean edges, pitch, decay."""

from __future__ import annotations

import numpy as np
import pytest

from coach.chimes import PULSE_SECONDS, SYNTH_CHIMES, chime, pulse
from coach.units import RATE, to_samples

LEVELS = {
    "bell": 0.28,
    "bell-bright": 0.25,
    "bell-low": 0.3,
    "wood": 0.2,
    "pulse": 0.18,
}
BELLS = ("bell", "bell-bright", "bell-low")
PITCH_RANGES = {"bell": (500, 700), "bell-bright": (900, 1100), "bell-low": (250, 400)}
EDGE = to_samples(0.005)


def sound(name: str) -> np.ndarray:
    return pulse() if name == "pulse" else chime(name)


def length(name: str) -> int:
    return to_samples(PULSE_SECONDS if name == "pulse" else SYNTH_CHIMES[name])


def peak(x: np.ndarray) -> float:
    return float(np.max(np.abs(x)))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def largest_step(x: np.ndarray) -> float:
    return float(np.max(np.abs(np.diff(x.astype(np.float64)))))


def dominant_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / RATE)[np.argmax(spectrum)])


def test_the_table_has_every_chime():
    assert set(SYNTH_CHIMES) == set(LEVELS) - {"pulse"}


@pytest.mark.parametrize("name", LEVELS)
def test_length_type_and_level(name):
    x = sound(name)
    assert x.shape == (length(name),)
    assert x.dtype == np.float32
    assert np.all(np.isfinite(x))
    assert peak(x) == pytest.approx(LEVELS[name], rel=0.1)


@pytest.mark.parametrize("name", LEVELS)
def test_starts_and_ends_at_zero_without_a_click(name):
    x = sound(name)
    assert abs(x[0]) < 1e-6
    assert abs(x[-1]) < 1e-6
    # A hard start (silence, then the sound at its loudest) jumps by the whole peak at once;
    # a soft start rises over a few milliseconds, its steps a fraction of that.
    at_peak = int(np.argmax(np.abs(x)))
    hard = np.concatenate([np.zeros(EDGE), x[at_peak:]])
    assert largest_step(hard[: 2 * EDGE]) > 0.9 * peak(x)
    assert largest_step(x[:EDGE]) < 0.3 * peak(x)
    # The very first millisecond is gentler still: the attack has barely begun.
    assert largest_step(x[: to_samples(0.001)]) < 0.1 * peak(x)
    # The end has faded to silence, so its steps are tiny.
    assert largest_step(x[-EDGE:]) < 0.01 * peak(x)


@pytest.mark.parametrize("name", BELLS)
def test_bell_pitch(name):
    low, high = PITCH_RANGES[name]
    assert low <= dominant_hz(chime(name)) <= high


def test_bells_are_ordered_low_bell_bright():
    assert dominant_hz(chime("bell-low")) < dominant_hz(chime("bell"))
    assert dominant_hz(chime("bell")) < dominant_hz(chime("bell-bright"))


@pytest.mark.parametrize("name", BELLS)
def test_bells_decay_to_silence(name):
    x = chime(name)
    tenth = len(x) // 10
    assert 20 * np.log10(rms(x[:tenth]) / rms(x[-tenth:])) >= 30


def test_wood_is_a_short_tap():
    x = chime("wood")
    loud = rms(x[: to_samples(0.02)])
    assert 20 * np.log10(loud / rms(x[to_samples(0.2) :])) >= 40


def test_wood_resonates_between_800_and_2000_hz():
    assert 800 <= dominant_hz(chime("wood")) <= 2000


def test_pulse_is_low():
    x = pulse().astype(np.float64)
    energy = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / RATE)
    assert energy[freqs < 250].sum() > 0.8 * energy.sum()
    assert 60 <= dominant_hz(x) <= 120


@pytest.mark.parametrize("name", LEVELS)
def test_deterministic(name):
    first = sound(name).copy()
    assert np.array_equal(first, sound(name))


@pytest.mark.parametrize("name", LEVELS)
def test_shared_samples_are_read_only(name):
    with pytest.raises(ValueError):
        sound(name)[0] = 1.0


def test_unknown_chime():
    with pytest.raises(KeyError):
        chime("gong")
