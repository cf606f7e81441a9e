"""Voice packs: the shipped ones load, bad ones are refused with their file and line, a
user's recordings replace synthesized speech, and packs change how sessions sound."""

from __future__ import annotations

import re
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from coach.errors import UsageError, VoicePackError
from coach.routine import load_routine
from coach.session import Options, choose_pack, prepare
from coach.timeline import SPEECH
from coach.units import RATE
from coach.voicepack import available_packs, load_pack, resolve_voice, user_pack_dir

CALM = (Path(__file__).parent.parent / "voice_packs" / "calm-en" / "pack.yaml").read_text()

ROUTINE = """\
routine: 1
title: Pack test
language: en
steps:
  - title: Warm the oil
    say: Rub your hands together to warm the oil.
    time: 8s
"""


@pytest.fixture
def user_pack():
    """Make a pack in the user's folder (XDG_DATA_HOME, a temporary one in tests)."""
    made = []

    def make(name: str, text: str, files: dict[str, bytes] | None = None) -> Path:
        folder = user_pack_dir() / name
        folder.mkdir(parents=True)
        (folder / "pack.yaml").write_text(text)
        for rel, data in (files or {}).items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(data)
        made.append(folder)
        return folder

    yield make
    for folder in made:
        shutil.rmtree(folder, ignore_errors=True)


def wav_bytes(samples: np.ndarray, rate: int = 22050) -> bytes:
    import io

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def tone(seconds: float, freq: float, rate: int = 22050) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return 0.5 * np.sin(2 * np.pi * freq * t) * np.minimum(1, np.minimum(t, t[::-1]) / 0.01)


def test_the_shipped_packs_load_with_their_language_and_voice():
    packs = available_packs()
    assert {"calm-en", "brisk-en"} <= set(packs)
    languages = {load_pack(name).language for name in packs}
    assert "en" in languages and len(languages) >= 2
    brisk, calm = load_pack("brisk-en"), load_pack("calm-en")
    assert brisk.rate > calm.rate
    words = sum(len(getattr(brisk.phrases, k).split()) for k in ("paused", "resumed", "finished"))
    calm_words = sum(
        len(getattr(calm.phrases, k).split()) for k in ("paused", "resumed", "finished")
    )
    assert words < calm_words


def test_a_user_pack_is_found_and_listed(user_pack, run_cli):
    user_pack("mine-en", CALM.replace("name: Calm English", "name: My voice"))
    assert load_pack("mine-en").name == "My voice"
    code, out, _ = run_cli("list")
    assert code == 0 and "mine-en" in out and "My voice" in out


@pytest.mark.parametrize(
    ("change", "files", "expected"),
    [
        (
            ("chimes:\n  step: bell\n", "chimes:\n  step: gong\n"),
            {},
            'pack.yaml:{L:step: gong}:9: chimes.step: "gong" is not a chime '
            "(expected one of: bell,",
        ),
        (
            ("phrases:\n", "clips:\n  Paused.: clips/paused.wav\nphrases:\n"),
            {},
            'pack.yaml:{L:Paused.:}:12: clips.Paused.: "clips/paused.wav": no such file; '
            "expected an audio",
        ),
        (
            ("phrases:\n", "clips:\n  Paused.: notes.txt\nphrases:\n"),
            {"notes.txt": b"hello"},
            'pack.yaml:{L:Paused.:}:12: clips.Paused.: "notes.txt": '
            "not an audio file soundfile can read",
        ),
        (
            ("phrases:\n", "clips:\n  Paused.: ../calm-en/x.wav\nphrases:\n"),
            {},
            'pack.yaml:{L:Paused.:}:12: clips.Paused.: "../calm-en/x.wav" '
            "leaves the pack's folder",
        ),
        (
            ("phrases:\n", "clips:\n  Paused.: /etc/passwd\nphrases:\n"),
            {},
            'pack.yaml:{L:Paused.:}:12: clips.Paused.: "/etc/passwd" leaves the pack\'s folder',
        ),
        (
            ('countdown: "Begin to finish this stroke."', 'countdown: "{secs} to go."'),
            {},
            "pack.yaml:{L:{secs}}:14: phrases.countdown: {secs} is not a placeholder here "
            "(use {seconds})",
        ),
        (
            ('  halfway: "', '  halfwy: "'),
            {},
            "pack.yaml:{L:halfwy}:3: phrases.halfwy: unknown key 'halfwy'",
        ),
        (
            ("rate: 122", "rate: 5000"),
            {},
            "pack.yaml:{L:rate: 5000}:7: rate: 5000 is out of range (expected 80 to 450)",
        ),
        (("pack: 1", "pack: [1"), {}, "pack.yaml:2:5: not valid YAML"),
    ],
)
def test_each_bad_pack_is_refused_with_file_line_and_what_was_expected(
    user_pack, change, files, expected
):
    old, new = change
    assert old in CALM
    text = CALM.replace(old, new, 1)
    folder = user_pack("bad-en", text, files)
    with pytest.raises(VoicePackError) as info:
        load_pack("bad-en")
    message = str(info.value)
    # {L:words}: the line of the pack that holds those words, wherever the pack has it.
    expected = re.sub(
        r"\{L:(.+?)\}(?=:)",
        lambda m: str(next(i for i, line in enumerate(text.splitlines(), 1) if m[1] in line)),
        expected,
    )
    assert message.startswith(f"{folder}/{expected}"), message
    assert "\n" not in message


def test_a_pack_without_pack_yaml_is_not_a_pack(user_pack, tmp_path):
    (user_pack_dir() / "empty-en").mkdir(parents=True)
    try:
        with pytest.raises(UsageError, match="no voice pack named 'empty-en'"):
            load_pack("empty-en")
    finally:
        (user_pack_dir() / "empty-en").rmdir()


def test_a_pack_of_another_language_is_refused_for_a_routine(user_pack, tmp_path):
    user_pack("calma-es", CALM.replace("language: en", "language: es"))
    path = tmp_path / "r.yaml"
    path.write_text(ROUTINE)
    with pytest.raises(VoicePackError) as info:
        choose_pack(load_routine(str(path)), "calma-es")
    assert str(info.value).startswith(
        f'{user_pack_dir()}/calma-es/pack.yaml:3:11: language: "es" does not match the '
        f'language of {path} ("en")'
    )


@pytest.mark.tts
def test_a_voice_this_machine_lacks_falls_back_to_the_languages_voice(user_pack):
    from coach.speech import list_voices

    user_pack("odd-en", CALM.replace("voice: gmw/en", "voice: no-such-voice"))
    voice, warning = resolve_voice(load_pack("odd-en"), list_voices())
    assert any(code.startswith("en") for code in voice.languages)
    assert warning is not None and "no voice 'no-such-voice'" in warning


@pytest.mark.tts
def test_a_recorded_clip_replaces_its_phrase_in_a_rendered_file(user_pack, tmp_path):
    from coach.render import render

    recording = tone(1.3, 330.0)
    user_pack(
        "recorded-en",
        CALM.replace("phrases:\n", 'clips:\n  "Warm the oil.": clips/warm.wav\nphrases:\n'),
        {"clips/warm.wav": wav_bytes(recording)},
    )
    path = tmp_path / "r.yaml"
    path.write_text(ROUTINE)
    prepared = prepare(str(path), Options(voice="recorded-en"))
    cue = next(e for e in prepared.timeline.events if e.text == "Warm the oil.")
    # The timeline uses the recording's real length (resampled to RATE)...
    assert abs((cue.end - cue.start) - 1.3 * RATE) <= 2
    out = tmp_path / "s.wav"
    render(prepared, out)
    audio, _ = sf.read(str(out), dtype="float32")
    heard = audio[cue.start : cue.end, 0]
    # ... and the file holds the recording there: the same waveform.
    clip = prepared.clips().load(cue.text)
    similarity = float(np.dot(heard, clip) / (np.linalg.norm(heard) * np.linalg.norm(clip)))
    assert similarity > 0.99  # the step chime still rings under its start
    # And that is the 330 Hz tone of the recording, not a voice.
    spectrum = np.abs(np.fft.rfft(heard[RATE // 10 : -RATE // 10]))
    assert abs(np.argmax(spectrum) * RATE / (len(heard) - RATE // 5) - 330) < 3


@pytest.mark.tts
def test_a_pack_may_bring_its_own_chime_as_a_wav_file(user_pack, tmp_path):
    from coach.render import render

    user_pack(
        "gong-en",
        CALM.replace("  step: bell\n", "  step: sounds/gong.wav\n"),
        {"sounds/gong.wav": wav_bytes(tone(0.9, 220.0, 44100), 44100)},
    )
    path = tmp_path / "r.yaml"
    path.write_text(ROUTINE)
    prepared = prepare(str(path), Options(voice="gong-en"))
    chime = next(e for e in prepared.timeline.events if e.kind == "chime")
    assert chime.text == "sounds/gong.wav" and chime.end - chime.start == round(0.9 * RATE)
    render(prepared, tmp_path / "s.wav")
    audio, _ = sf.read(str(tmp_path / "s.wav"), dtype="float32")
    head = audio[: RATE // 2, 0]
    spectrum = np.abs(np.fft.rfft(head))
    assert abs(np.argmax(spectrum) * RATE / len(head) - 220) < 5


@pytest.mark.tts
def test_two_packs_give_cue_lengths_as_their_rates_say(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(ROUTINE.replace("time: 8s", "time: 20s"))
    calm = prepare(str(path), Options(voice="calm-en")).timeline
    brisk = prepare(str(path), Options(voice="brisk-en")).timeline
    text = "Rub your hands together to warm the oil."

    def length(tl):
        return next(e.end - e.start for e in tl.events if e.text == text)

    ratio = length(brisk) / length(calm)
    expected = load_pack("calm-en").rate / load_pack("brisk-en").rate
    assert abs(ratio - expected) < 0.12, (ratio, expected)


def test_record_list_names_every_phrase_and_what_is_recorded(user_pack, run_cli, tmp_path):
    user_pack(
        "rec-en",
        CALM.replace("phrases:\n", 'clips:\n  "Warm the oil.": c/w.wav\nphrases:\n'),
        {"c/w.wav": wav_bytes(tone(0.5, 300))},
    )
    path = tmp_path / "r.yaml"
    path.write_text(ROUTINE)
    code, out, err = run_cli("record-list", str(path), "--voice", "rec-en")
    assert code == 0, err
    assert '  recorded   "Warm the oil.": c/w.wav' in out
    assert '  to record  "Rub your hands together to warm the oil.": clips/' in out
    assert '  to record  "Paused. Take your time."' in out  # live sessions say it too
    total = out.count("  to record  ") + out.count("  recorded   ")
    assert f"{total} phrases, 1 recorded, {total - 1} to record" in out


@pytest.mark.tts
def test_the_spanish_routines_speak_with_a_spanish_voice(tmp_path):
    spanish = [n for n in available_packs() if load_pack(n).language == "es"]
    assert spanish
    prepared = prepare("upper-back-basics-es")
    assert prepared.pack.language == "es"
    assert prepared.voice_id.startswith("roa/es")
    cue = next(e for e in prepared.timeline.events if e.kind == SPEECH and e.role == "say")
    from coach.render import render

    render(prepared, tmp_path / "es.wav")
    audio, _ = sf.read(str(tmp_path / "es.wav"), dtype="float32")
    clip = prepared.cache.load(cue.text, prepared.settings)
    heard = audio[cue.start : cue.end, 0]
    assert float(np.dot(heard, clip) / (np.linalg.norm(heard) * np.linalg.norm(clip))) > 0.99


GENTLE = (Path(__file__).parent.parent / "voice_packs" / "gentle-en" / "pack.yaml").read_text()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            CALM.replace("engine: pyttsx3", "engine: festival"),
            'pack.yaml:4:9: engine: "festival" is not a speech engine (expected one of: '
            "pyttsx3, piper)",
        ),
        (
            CALM.replace("rate: 122", "rate: 122\nlength_scale: 1.2"),
            "pack.yaml:7:15: length_scale: is a setting of the piper engine "
            "(write `engine: piper`)",
        ),
        (
            GENTLE.replace("length_scale: 1.5", "length_scale: 1.5\nrate: 150"),
            "pack.yaml:9:7: rate: is a setting of the pyttsx3 engine",
        ),
        (GENTLE.replace("length_scale: 1.5", "length_scale: 9"), "pack.yaml:8:15: length_scale: 9"),
        (
            GENTLE.replace("model: en_US-joe-medium", "model: ../../joe.onnx"),
            'pack.yaml:7:8: model: "../../joe.onnx" is a path; name the voice',
        ),
        (CALM.replace("voice: gmw/en\n", ""), "pack.yaml:1:1: a pyttsx3 pack needs `voice:`"),
    ],
)
def test_engine_settings_belong_to_their_engine(user_pack, text, expected):
    folder = user_pack("bad-en", text)
    with pytest.raises(VoicePackError) as info:
        load_pack("bad-en")
    assert str(info.value).startswith(f"{folder}/{expected}"), str(info.value)


def test_the_shipped_english_packs_name_their_engine_and_the_default_follows_piper():
    from coach.speech_piper import find_model, piper_installed
    from coach.voicepack import default_pack

    gentle, calm, brisk = (load_pack(n) for n in ("gentle-en", "calm-en", "brisk-en"))
    assert (gentle.engine, gentle.voice, gentle.fallback) == (
        "piper",
        "en_US-joe-medium",
        "calm-en",
    )
    assert calm.engine == brisk.engine == "pyttsx3"
    assert gentle.phrases == calm.phrases
    assert dict(gentle.lexicon)["supraspinatus"] == dict(calm.lexicon)["supraspinatus"]
    have_piper = piper_installed() and find_model("en_US-joe-medium") is not None
    assert default_pack() == ("gentle-en" if have_piper else "calm-en")


@pytest.mark.tts
def test_a_pack_whose_piper_voice_is_missing_falls_back_with_one_warning(
    user_pack, run_cli, tmp_path
):
    user_pack("lost-en", GENTLE.replace("en_US-joe-medium", "en_GB-nobody-low"))
    routine = tmp_path / "r.yaml"
    routine.write_text(ROUTINE)
    code, out, err = run_cli("preview", str(routine), "--voice", "lost-en")
    assert code == 0, err
    assert err.splitlines() == [
        "warning: voice pack lost-en: the Piper voice en_GB-nobody-low is not installed "
        f"(put en_GB-nobody-low.onnx and en_GB-nobody-low.onnx.json in {user_pack_dir().parent}"
        "/voices); using calm-en"
    ]
    assert "voice calm-en (gmw/en" in out
    code, out, _ = run_cli("list")
    assert code == 0
    line = next(x for x in out.splitlines() if x.strip().startswith("lost-en"))
    assert "piper en_GB-nobody-low" in line and "falls back to calm-en" in line


def test_a_broken_user_pack_does_not_hide_the_others_in_list(user_pack, run_cli):
    user_pack("broken-en", CALM.replace("rate: 122", "rate: fast"))
    code, out, err = run_cli("list")
    assert code == 0
    assert "calm-en" in out and "gentle-en" in out and "broken-en" not in out
    assert "broken-en/pack.yaml:6:7: rate:" in err


@pytest.mark.tts
def test_the_lexicon_changes_what_espeak_is_given_and_not_the_captions(
    user_pack, tmp_path, monkeypatch
):
    from coach import speech

    given: list[str] = []
    real = speech.engine(speech.SpeechSettings("gmw/en", 150))

    class Spy:
        name = real.name
        identity = real.identity

        def synthesize(self, texts, settings, deliver, **kw):
            given.extend(texts)
            real.synthesize(texts, settings, deliver, **kw)

    monkeypatch.setitem(speech._engines, "pyttsx3", Spy())
    user_pack("lex-en", CALM.replace("  supraspinatus: soopra-spy-naytus", "  oil: oyle"))
    routine = tmp_path / "r.yaml"
    routine.write_text(ROUTINE)
    out = tmp_path / "r.wav"
    prepared = prepare(str(routine), Options(voice="lex-en"))
    from coach.render import RenderOptions, render

    render(prepared, out, RenderOptions(captions=True))
    assert "Rub your hands together to warm the oyle." in given
    assert "Warm the oyle." in given and not [t for t in given if "oil" in t]
    captions = out.with_suffix(".vtt").read_text()
    assert "warm the oil." in captions and "oyle" not in captions
    cues = [e.text for e in prepared.timeline.events if e.kind == SPEECH]
    assert "Warm the oil." in cues


@pytest.mark.tts
def test_cold_synthesis_shows_progress_on_a_terminal(run_cli, tmp_path, monkeypatch):
    import sys
    import uuid

    routine = tmp_path / "r.yaml"
    word = uuid.uuid4().hex[:6]  # texts no earlier test has cached
    routine.write_text(ROUTINE.replace("warm the oil.", f"warm the oil, {word}."))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, _, err = run_cli("preview", str(routine), "--voice", "calm-en")
    assert code == 0
    total = int(re.search(r"\rsynthesizing 0 of (\d+) cues \(0%\)", err)[1])
    assert 1 <= total <= 4
    assert err.endswith(f"\rsynthesizing {total} of {total} cues (100%)\n"), err
