"""The voice-command listener with the real recognizer (pocketsphinx) on espeak-ng speech,
fed as a microphone would feed it; and the gate that keeps the coach from obeying itself."""

from __future__ import annotations

import io
import subprocess

import numpy as np
import pytest
import soundfile as sf
import soxr

from coach import listen
from coach.chimes import pulse
from coach.live import Audible
from coach.units import RATE

pytestmark = pytest.mark.tts


def espeak(text: str, voice: str = "en-us") -> np.ndarray:
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "--stdout", text], capture_output=True, check=True
    ).stdout
    y, rate = sf.read(io.BytesIO(wav), dtype="float64")
    return soxr.resample(y, rate, listen.MIC_RATE)


def feed(listener: listen.Listener, *sounds: np.ndarray) -> list[listen.Heard]:
    """Each sound after 1 s of faint hiss, then 1 s more, in 30 ms blocks."""
    gap = np.zeros(listen.MIC_RATE)
    x = np.concatenate([part for s in sounds for part in (gap, s)] + [gap])
    data = listen.to_pcm(x, listen.MIC_RATE, seed=0)
    heard = []
    block = 960
    for k in range(0, len(data), block):
        heard += listener.feed(data[k : k + block], (k + block) / 2 / listen.MIC_RATE)
    return heard


@pytest.fixture(scope="module")
def recognizer() -> listen.Recognizer:
    return listen.Recognizer()


def test_commands_are_heard_with_their_times(recognizer):
    listener = listen.Listener(recognizer)
    heard = feed(listener, espeak("next"), espeak("more pressure", "en"), espeak("pause"))
    assert [h.phrase for h in heard] == ["next", "more pressure", "pause"]
    assert [h.control for h in heard] == ["next", "more_pressure", "hold"]
    # "next" is said from 1 s on: the utterance's times are the stream's.
    assert 0.8 < heard[0].start < 1.1 and heard[0].start < heard[0].end < 1.8


def test_what_is_heard_while_the_coach_sounds_is_dropped(recognizer):
    coach = Audible(tail=0.45)
    coach.add(0.5, 1.2)  # the coach sounded until 1.2 s; "next" starts at 1.0 s
    listener = listen.Listener(recognizer, gate=coach.during)
    assert feed(listener, espeak("next"), espeak("faster"))[0].phrase == "faster"
    assert listener.counts.during_coach == 1


def test_rhythm_pulses_and_talk_are_not_commands(recognizer):
    thumps = soxr.resample(
        np.tile(np.concatenate([pulse(), np.zeros(RATE // 3)]), 4).astype(np.float64),
        RATE,
        listen.MIC_RATE,
    )
    talk = espeak(
        "Ask your partner to lie face down and breathe out slowly, "
        "while you warm the oil between your hands."
    )
    for sound in (thumps, talk):
        listener = listen.Listener(recognizer)
        assert feed(listener, sound) == []
    assert listener.counts.utterances >= 1  # the talk reached the recognizer


def test_audible_spans_merge_and_keep_an_echo_tail():
    a = Audible(tail=0.5, keep=10.0)
    a.add(1.0, 2.0)
    a.add(2.02, 3.0)  # touching: one span
    a.add(5.0, 6.0)
    assert a.during(3.4, 3.6) and not a.during(3.6, 4.9) and a.during(4.9, 5.1)
    a.add(20.0, 21.0)  # the old spans are forgotten
    assert not a.during(0.0, 10.0)
