"""Rendering end to end: the real engine speaks, the mixer mixes, real files are written
and read back by real decoders, a real recognizer listens, a real meter measures."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from audio_checks import ebur128, ffprobe, heard, onset_by_correlation

from coach import chimes
from coach.chapters import read_chapters, step_chapters
from coach.mixer import Mixer, SoundBank, session_gain
from coach.render import RenderOptions, render
from coach.session import prepare
from coach.timeline import CHIME, SPEECH
from coach.units import RATE
from coach.writer import FORMATS

pytestmark = pytest.mark.tts

ROUTINE = """\
routine: 1
title: Render test
steps:
  - title: Warm the oil
    say: Rub your hands together to warm the oil.
    time: 9s
  - title: Slow circles
    say: Press and make slow circles on the {side} side.
    time: 10s
    sides: [right, left]
    tips:
      - after: 5s
        say: Ask how the pressure feels.
    rhythm: 60
  - title: Knead the shoulders
    say: Knead the shoulders like soft dough.
    time: 9s
    countdown: 4s
"""


@pytest.fixture(scope="module")
def routine_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("routine") / "render-test.yaml"
    path.write_text(ROUTINE)
    return path


@pytest.fixture(scope="module")
def prepared(routine_file):
    return prepare(str(routine_file))


@pytest.fixture(scope="module")
def rendered(prepared, tmp_path_factory) -> dict[str, Path]:
    """The session rendered once to each format, with captions and chapters."""
    folder = tmp_path_factory.mktemp("out")
    files = {}
    for ext in FORMATS:
        out = folder / f"session{ext}"
        render(prepared, out, RenderOptions(captions=ext == ".wav", chapters=ext != ".wav"))
        files[ext] = out
    return files


def test_wav_and_flac_hold_exactly_the_previewed_total(prepared, rendered):
    for ext in (".wav", ".flac"):
        info = sf.info(str(rendered[ext]))
        assert (info.frames, info.samplerate, info.channels) == (prepared.timeline.total, RATE, 2)


@pytest.mark.parametrize("ext", [".ogg", ".mp3"])
def test_compressed_files_have_the_previewed_length_within_a_block(prepared, rendered, ext):
    probe = ffprobe(rendered[ext])
    stream = probe["streams"][0]
    assert int(stream["sample_rate"]) == RATE and stream["channels"] == 2
    pcm = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(rendered[ext]), "-f", "s16le", "-ac", "2", "-"],
        capture_output=True,
        check=True,
    ).stdout
    assert abs(len(pcm) // 4 - prepared.timeline.total) <= 2048, len(pcm) // 4
    decoded = sf.info(str(rendered[ext])).frames
    assert abs(decoded - prepared.timeline.total) <= 2048, decoded


def test_the_file_is_the_mixers_output_to_the_sample(prepared, rendered):
    """Live playback pulls blocks from the same mixer, so this is what it plays."""
    bank = SoundBank(prepared.clips(), channels=2, volume=prepared.pack.volume)
    mixer = Mixer(prepared.timeline, bank, gain=session_gain(prepared.timeline, bank))
    expected = np.empty((prepared.timeline.total, 2), dtype=np.float32)
    pos = 0
    while pos < len(expected):  # odd block sizes: the mix must not depend on them
        n = min(1237, len(expected) - pos)
        expected[pos : pos + n] = mixer.read(n)
        pos += n
    got, _ = sf.read(str(rendered[".wav"]), dtype="int16")
    want = np.clip(np.round(expected * 32768), -32768, 32767).astype(np.int16)
    assert np.array_equal(got, want)


def test_captions_parse_as_webvtt_and_match_the_spoken_cues(prepared, rendered, tmp_path):
    vtt = rendered[".wav"].with_suffix(".vtt")
    srt = tmp_path / "c.srt"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(vtt), str(srt)], check=True)
    blocks = [b.splitlines() for b in srt.read_text().strip().split("\n\n")]
    speech = [e for e in prepared.timeline.events if e.kind == SPEECH]
    assert len(blocks) == len(speech)

    def ms(stamp: str) -> int:
        h, m, rest = stamp.split(":")
        s, milli = rest.split(",")
        return ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(milli)

    for block, e in zip(blocks, speech, strict=True):
        start, end = block[1].split(" --> ")
        assert abs(ms(start) - e.start * 1000 / RATE) <= 1
        assert abs(ms(end) - e.end * 1000 / RATE) <= 1
        assert " ".join(block[2:]) == e.text


def test_a_recognizer_hears_each_cue_inside_its_caption_window(prepared, rendered):
    audio, rate = sf.read(str(rendered[".flac"]), dtype="float32")
    mono = audio.mean(axis=1)
    speech = [e for e in prepared.timeline.events if e.kind == SPEECH]
    margin = round(0.05 * RATE)
    for i, e in enumerate(speech):
        window = mono[max(0, e.start - margin) : e.end + margin]
        assert heard(window, rate, e.text), e.text
        other = speech[(i + 3) % len(speech)].text
        if other != e.text:
            assert not heard(window, rate, other), (e.text, other)


def test_chimes_strike_at_their_timeline_times_and_side_chimes_are_panned(prepared, rendered):
    audio, _ = sf.read(str(rendered[".wav"]), dtype="float32")
    bells = [e for e in prepared.timeline.events if e.kind == CHIME]
    assert {e.role for e in bells} == {"step", "side", "end"}
    for e in bells:
        template = chimes.chime(e.text)[: RATE // 10]
        found = onset_by_correlation(audio.sum(axis=1), template, e.start, RATE // 20)
        assert abs(found - e.start) <= 1, (e, found - e.start)
        left, right = (
            float(np.sqrt(np.mean(audio[e.start : e.start + RATE // 5, c] ** 2))) for c in (0, 1)
        )
        if e.role == "side":
            louder, softer = (left, right) if e.side == "left" else (right, left)
            assert 20 * np.log10(louder / softer) > 6
        else:
            assert abs(20 * np.log10(left / right)) < 0.5


@pytest.mark.parametrize("ext", [".wav", ".mp3"])
def test_loudness_is_near_minus_16_lufs_with_peaks_under_minus_1_dbfs(rendered, ext):
    loudness, peak = ebur128(rendered[ext])
    assert abs(loudness - (-16.0)) <= 1.0, loudness
    assert peak < -1.0, peak


@pytest.mark.parametrize("ext", [".mp3", ".flac", ".ogg"])
def test_chapters_one_a_step_read_back(prepared, rendered, ext):
    parts = step_chapters(prepared.timeline)
    assert [p.title for p in parts] == ["Warm the oil", "Slow circles", "Knead the shoulders"]
    chapters = read_chapters(rendered[ext])
    assert [c[0] for c in chapters] == [p.title for p in parts]
    for (_, start), part in zip(chapters, parts, strict=True):
        assert abs(start - part.start / RATE) < 0.002
    seen = [c["tags"]["title"] for c in ffprobe(rendered[ext])["chapters"]]
    assert seen == [p.title for p in parts]


def test_split_writes_one_file_a_step_and_a_playlist_that_add_up(prepared, rendered, tmp_path):
    out = tmp_path / "session.wav"
    result = render(prepared, out, RenderOptions(split=True, captions=True))
    folder = tmp_path / "session"
    playlist = (folder / "session.m3u").read_text().splitlines()
    files = [line for line in playlist if line and not line.startswith("#")]
    assert files == ["01 Warm the oil.wav", "02 Slow circles.wav", "03 Knead the shoulders.wav"]
    pieces = [sf.read(str(folder / f), dtype="int16")[0] for f in files]
    whole, _ = sf.read(str(rendered[".wav"]), dtype="int16")
    assert np.array_equal(np.concatenate(pieces), whole)
    assert all((folder / f).with_suffix(".vtt").read_text().startswith("WEBVTT") for f in files)
    assert not out.exists() and result.written == [folder / "session.m3u"]
    render(prepared, out, RenderOptions(split=True))  # again: replaces its own folder
    assert sorted(p.name for p in folder.iterdir()) == sorted([*files, "session.m3u"])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_ambient_track_is_looped_faded_and_lowered_under_speech(prepared, rendered, tmp_path):
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 0.1, (44100 * 2, 2)).astype(np.float32)  # 2 s, to be looped
    track = tmp_path / "rain.flac"
    sf.write(str(track), noise, 44100)
    out = tmp_path / "with-rain.wav"
    render(prepared, out, RenderOptions(ambient=track))
    plain, _ = sf.read(str(rendered[".wav"]), dtype="float32")
    mixed, _ = sf.read(str(out), dtype="float32")
    assert mixed.shape == plain.shape
    ambient = (mixed - plain).mean(axis=1)  # what the track added, exactly

    def rms(a: np.ndarray) -> float:
        return float(np.sqrt(np.mean(a**2)) + 1e-12)

    speech = [e for e in prepared.timeline.events if e.kind == SPEECH]
    during = np.concatenate(
        [ambient[e.start + RATE // 2 : e.end - RATE // 4] for e in speech if e.end - e.start > RATE]
    )
    quiet = []
    for a, b in itertools.pairwise(speech):
        if b.start - a.end > 2 * RATE:
            quiet.append(ambient[a.end + RATE // 2 : b.start - RATE // 2])
    ducked_by = 20 * np.log10(rms(np.concatenate(quiet)) / rms(during))
    assert 7 < ducked_by < 13, ducked_by
    assert rms(ambient[: RATE // 10]) < rms(np.concatenate(quiet)) / 10  # fades in
    assert rms(ambient[-RATE // 10 :]) < rms(np.concatenate(quiet)) / 10  # and out
    assert rms(ambient[len(ambient) // 2 :]) > 0  # still there after many loops


def test_render_errors_are_one_line_and_leave_nothing(run_cli, routine_file, tmp_path):
    cases = [
        (["-o", str(tmp_path / "x.aac")], 2, ".aac"),
        (["-o", str(tmp_path / "nope" / "x.wav")], 2, "does not exist"),
        (
            ["-o", str(tmp_path / "x.wav"), "--ambient", str(tmp_path / "missing.flac")],
            2,
            "missing.flac",
        ),
    ]
    (tmp_path / "notes.txt").write_text("not audio")
    cases.append(
        (
            ["-o", str(tmp_path / "x.wav"), "--ambient", str(tmp_path / "notes.txt")],
            2,
            "not an audio file",
        )
    )
    for args, code, words in cases:
        got, out, err = run_cli("render", str(routine_file), *args)
        assert (got, out) == (code, ""), err
        assert words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_the_render_command_reports_what_it_wrote(run_cli, routine_file, tmp_path):
    code, out, err = run_cli(
        "render",
        str(routine_file),
        "-o",
        str(tmp_path / "s.wav"),
        "--captions",
        "--chapters",
        "--pace",
        "slow",
    )
    assert code == 0, err
    assert f"wrote {tmp_path / 's.wav'}" in out and f"wrote {tmp_path / 's.vtt'}" in out
    assert ".wav files cannot hold chapters" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.vtt", "s.wav"]


def test_an_interrupted_render_leaves_nothing_behind(routine_file, tmp_path, prepared):
    out = tmp_path / "long.flac"
    env = dict(os.environ)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "coach",
            "render",
            str(routine_file),
            "-o",
            str(out),
            "--length",
            "3h",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 60
    while not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
