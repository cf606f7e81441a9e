"""The synthesized chimes and the rhythm pulse: lengths, levels, clean edges, pitch, decay,
how loud each pack's chimes are against each other, and where the pulse's energy lies in a
rendered session (what a phone's small speaker can still play)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from coach import loudness
from coach.chimes import PULSE_SECONDS, SYNTH_CHIMES, chime, pulse
from coach.timeline import CHIME_LEAD
from coach.units import RATE, to_samples, to_seconds
from coach.voicepack import builtin_pack_dir, load_pack

LEVELS = {
    "bell": 0.28,
    "bell-bright": 0.25,
    "bell-low": 0.3,
    "wood": 0.2,
    "pulse": 0.155,
    "accent": 0.17,
}
PULSES = ("pulse", "accent")
SHIPPED_PACKS = sorted(p.name for p in builtin_pack_dir().iterdir() if (p / "pack.yaml").is_file())
#: The pause the SPEC asks for between a step's title and its instructions.
TITLE_GAP = 0.7
BELLS = ("bell", "bell-bright", "bell-low")
PITCH_RANGES = {"bell": (500, 700), "bell-bright": (900, 1100), "bell-low": (250, 400)}
EDGE = to_samples(0.005)


def sound(name: str) -> np.ndarray:
    if name in PULSES:
        return pulse(accent=name == "accent")
    return chime(name)


def length(name: str) -> int:
    return to_samples(PULSE_SECONDS if name in PULSES else SYNTH_CHIMES[name])


def peak(x: np.ndarray) -> float:
    return float(np.max(np.abs(x)))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def largest_step(x: np.ndarray) -> float:
    return float(np.max(np.abs(np.diff(x.astype(np.float64)))))


def dominant_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / RATE)[np.argmax(spectrum)])


def energy_share(x: np.ndarray, low: float, high: float = np.inf) -> float:
    """The share of the energy of X between LOW and HIGH Hz."""
    energy = np.abs(np.fft.rfft(x.astype(np.float64), 4 * len(x))) ** 2
    freqs = np.fft.rfftfreq(4 * len(x), 1 / RATE)
    return float(energy[(freqs >= low) & (freqs <= high)].sum() / energy.sum())


def loss_through_highpass_db(x: np.ndarray, cutoff: float = 300.0) -> float:
    """How much quieter X is through a 2nd-order Butterworth high-pass at CUTOFF (a phone's
    small speaker plays little below about 300 Hz), in dB."""
    spectrum = np.fft.rfft(x.astype(np.float64), 4 * len(x))
    ratio = (np.fft.rfftfreq(4 * len(x), 1 / RATE) / cutoff) ** 4
    passed = np.abs(spectrum) ** 2 * ratio / (1 + ratio)
    return float(10 * np.log10(passed.sum() / (np.abs(spectrum) ** 2).sum()))


def pack_chime(pack, role: str) -> np.ndarray:
    name = pack.chimes[role]
    if name in pack.sound_files:
        import soundfile as sf

        x, rate = sf.read(str(pack.sound_files[name]), dtype="float32", always_2d=True)
        assert rate == RATE, (pack.id, name, rate)
        return x.mean(axis=1)
    return chime(name)


def test_the_table_has_every_chime():
    assert set(SYNTH_CHIMES) == set(LEVELS) - set(PULSES)


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


@pytest.mark.parametrize("name", PULSES)
def test_the_pulse_is_a_tap_a_phone_speaker_can_play(name):
    x = sound(name)
    assert energy_share(x, 250) >= 0.5
    assert energy_share(x, 250, 1500) >= 0.9
    assert 250 <= dominant_hz(x) <= 1500
    # Speech loses under a decibel through such a speaker; the tap loses little more.
    assert loss_through_highpass_db(x) > -3.0


@pytest.mark.parametrize("name", PULSES)
def test_the_pulse_is_a_short_tap_gone_long_before_the_next_beat(name):
    x = sound(name)
    loud = rms(x[: to_samples(0.03)])
    assert 20 * np.log10(loud / rms(x[to_samples(0.15) :])) >= 25
    # Even at the fastest rhythm (120 bpm) a beat is over before the next one.
    assert PULSE_SECONDS < 0.5


def test_the_accent_is_a_gentle_lean_lower_and_a_little_louder():
    tap, accent = pulse(), pulse(accent=True)
    assert dominant_hz(accent) < dominant_hz(tap)
    difference = loudness.integrated(accent) - loudness.integrated(tap)
    assert 1.0 <= difference <= 3.0, difference


def test_the_pulse_stays_far_under_the_voice():
    # A session's voice measures TARGET_LUFS at a pack's full volume, and the pulse plays at
    # its own level in the centre: even the accent is 12 LU under the voice between cues
    # (and the mixer lowers it 10 dB more while the coach speaks).
    for name in PULSES:
        assert loudness.integrated(sound(name)) <= loudness.TARGET_LUFS - 12, name


@pytest.mark.parametrize("pack_id", SHIPPED_PACKS)
def test_a_packs_side_chime_is_as_loud_as_its_step_chime(pack_id):
    pack = load_pack(pack_id)
    step = loudness.integrated(pack_chime(pack, "step"))
    side = loudness.integrated(pack_chime(pack, "side"))
    assert abs(side - step) <= 3.0, (pack.chimes, step, side)


@pytest.mark.parametrize("pack_id", SHIPPED_PACKS)
def test_a_step_chime_has_died_away_before_the_instructions_begin(pack_id):
    x = pack_chime(load_pack(pack_id), "step")
    after = to_samples(to_seconds(CHIME_LEAD) + TITLE_GAP)
    tail = float(np.max(np.abs(x[after:]))) if after < len(x) else 0.0
    assert tail < peak(x) * 10 ** (-30 / 20), 20 * np.log10(max(tail, 1e-12) / peak(x))


PULSE_ROUTINE = """\
routine: 1
title: Pulse test
steps:
  - title: Rock
    say: Rock gently.
    time: 30s
    rhythm: 60
"""


def quiet_stretch(events: list[dict], margin: float) -> tuple[float, float]:
    """The longest stretch with no speech or chime in it, MARGIN seconds inside its
    neighbours (the mixer lowers the pulse for 0.3 s around each cue)."""
    sounding = sorted((e["start"], e["end"]) for e in events if e["kind"] != "pulse")
    gaps, reached = [], 0.0
    for start, end in sounding:
        gaps.append((reached + margin, start - margin))
        reached = max(reached, end)
    return max(gaps, key=lambda g: g[1] - g[0])


@pytest.mark.tts
def test_in_a_rendered_session_the_pulse_is_mostly_above_250_hz(tmp_path):
    routine = tmp_path / "pulse-test.yaml"
    routine.write_text(PULSE_ROUTINE)
    out = tmp_path / "pulse-test.wav"
    coach = [sys.executable, "-m", "coach"]
    top = Path(__file__).parents[1]
    preview = subprocess.run(
        [*coach, "preview", str(routine), "--voice", "calm-en", "--json"],
        cwd=top,
        capture_output=True,
        text=True,
        check=True,
    )
    subprocess.run(
        [*coach, "render", str(routine), "--voice", "calm-en", "-o", str(out)],
        cwd=top,
        capture_output=True,
        check=True,
    )
    import soundfile as sf

    audio, rate = sf.read(str(out), dtype="float64", always_2d=True)
    assert rate == RATE
    events = json.loads(preview.stdout)["events"]
    start, end = quiet_stretch(events, margin=0.4)
    beats = [e for e in events if e["kind"] == "pulse" and start <= e["start"] < end]
    assert len(beats) >= 5, (start, end)
    stretch = audio[to_samples(start) : to_samples(end)].mean(axis=1)
    assert rms(stretch) > 1e-3  # the pulses are there, not silence
    assert energy_share(stretch, 250) >= 0.5
    assert loss_through_highpass_db(stretch) > -3.0


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
