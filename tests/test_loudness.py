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
