"""End to end with the real engine: the built-in routines are synthesized by espeak-ng
through pyttsx3 (calm-en, whatever pack the routines name), and every cue's previewed
length is the length of its audio. tests/test_piper.py does the same for Piper."""

from __future__ import annotations

import shutil
import subprocess
import wave

import numpy as np
import pytest

from coach import speech
from coach.session import Options, prepare
from coach.timeline import SPEECH
from coach.units import RATE

pytestmark = pytest.mark.tts

CALM = Options(voice="calm-en")


@pytest.mark.parametrize("name", ["upper-back-basics", "upper-back-fist-rocking"])
def test_previewed_cue_lengths_are_the_lengths_of_the_synthesized_audio(name):
    prepared = prepare(name, CALM)
    assert prepared.settings.engine == "pyttsx3"
    tl = prepared.timeline
    cache = speech.SpeechCache()
    spoken = [e for e in tl.events if e.kind == SPEECH]
    assert len(spoken) > 30
    for e in spoken:
        clip = cache.load(e.text, prepared.settings)
        assert e.end - e.start == len(clip), e.text
        # The clip really is speech from edge to edge: sound within 50 ms of both ends.
        loud = np.flatnonzero(np.abs(clip) > 0.01)
        assert loud[0] < 0.05 * RATE and len(clip) - loud[-1] < 0.1 * RATE, e.text
    # At normal pace the built-in routines fit their speech: nothing is lengthened.
    assert not [w for w in tl.warnings if "lengthened" in w], tl.warnings
    assert 12 * 60 <= tl.total / RATE <= 21 * 60


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs the espeak-ng command")
def test_cue_lengths_agree_with_the_espeak_command_line(tmp_path):
    """An independent measure: the espeak-ng program speaks the same texts with the same
    voice and rate; its speech (silence trimmed) is as long as our cues, within the
    engine's own jitter."""
    prepared = prepare("upper-back-basics", CALM)
    texts = sorted({e.text for e in prepared.timeline.events if e.kind == SPEECH})[:12]
    for i, text in enumerate(texts):
        out = tmp_path / f"{i}.wav"
        subprocess.run(
            [
                *("espeak-ng", "-v", prepared.voice_id, "-s", str(prepared.rate)),
                *("-w", str(out), prepared.settings.spoken(text)),
            ],
            check=True,
        )
        with wave.open(str(out)) as w:
            x = np.frombuffer(w.readframes(w.getnframes()), "<i2") / 32768
            rate = w.getframerate()
        loud = np.flatnonzero(np.abs(x) > 1e-3)
        theirs = (loud[-1] - loud[0]) / rate
        ours = next(e for e in prepared.timeline.events if e.text == text)
        ours_s = (ours.end - ours.start) / RATE - speech.LEAD - speech.TAIL
        assert abs(ours_s - theirs) < 0.04 + 0.01 * theirs, (text, ours_s, theirs)


def test_two_rates_change_cue_lengths_as_the_rates_say():
    slow = prepare("upper-back-basics", Options(voice="calm-en", rate=120)).timeline
    fast = prepare("upper-back-basics", Options(voice="calm-en", rate=240)).timeline
    by_text = {e.text: e.end - e.start for e in fast.events if e.kind == SPEECH}
    ratios = [
        (e.end - e.start) / by_text[e.text]
        for e in slow.events
        if e.kind == SPEECH and len(e.text) > 40
    ]
    assert len(ratios) > 10
    assert 1.6 < float(np.median(ratios)) < 2.4
    assert fast.total < slow.total
