"""Rendering end to end: the real engine speaks, the mixer mixes, real files are written
and read back by real decoders, a real recognizer listens, a real meter measures."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from audio_checks import ebur128, ffprobe, heard, onset_by_correlation

from coach import chimes, mp3
from coach.chapters import read_chapters, step_chapters
from coach.mixer import Mixer, SoundBank, session_gain
from coach.render import MANIFEST, RenderOptions, quiet_cuts, render
from coach.session import prepare
from coach.timeline import CHIME, SPEECH
from coach.units import RATE
from coach.writer import FORMATS

pytestmark = pytest.mark.tts

# calm-en (espeak-ng): these tests are about files; tests/test_piper.py renders with the
# neural voice, whose "left" and "right" the recognizer's negative check cannot tell apart.
ROUTINE = """\
routine: 1
title: Render test
voice: calm-en
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


@pytest.mark.parametrize(
    ("ext", "rate", "longer"),
    [(".mp3", 24_000, 0), (".ogg", RATE, 0), (".opus", RATE, 0), (".m4b", RATE, 1024)],
)
def test_compressed_files_decode_to_the_previewed_length(prepared, rendered, ext, rate, longer):
    stream = ffprobe(rendered[ext])["streams"][0]
    assert int(stream["sample_rate"]) == rate and stream["channels"] == 2
    pcm = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(rendered[ext]), "-f", "s16le", "-ac", "2", "-"],
        capture_output=True,
        check=True,
    ).stdout
    want = -(-prepared.timeline.total * rate // RATE)
    assert want <= len(pcm) // 4 <= want + longer, (len(pcm) // 4, want)
    if ext != ".m4b":  # libsndfile's decoders trim the same
        assert sf.info(str(rendered[ext])).frames == want


def mixed(prepared) -> np.ndarray:
    bank = SoundBank(prepared.clips(), channels=2, volume=prepared.pack.volume)
    mixer = Mixer(prepared.timeline, bank, gain=session_gain(prepared.timeline, bank))
    return mixer.read(prepared.timeline.total)


def test_a_render_mixes_only_the_sound_and_skips_each_silence_even_between_pulses(prepared):
    bank = SoundBank(prepared.clips(), channels=2, volume=prepared.pack.volume)
    gain = session_gain(prepared.timeline, bank)
    mixer = Mixer(prepared.timeline, bank, gain=gain)
    made, skipped = [], []
    while mixer.position < prepared.timeline.total:
        silent, n = mixer.next_run(min(RATE, prepared.timeline.total - mixer.position))
        assert n > 0
        if silent:
            skipped.append((mixer.position, n))
            mixer.skip(n)
            made.append(np.zeros((n, 2), np.float32))
        else:
            made.append(mixer.read(n))
    # The same samples as mixing it all, and every silence between two pulses (a second
    # apart, in "Slow circles") skipped.
    assert np.array_equal(np.concatenate(made), mixed(prepared))
    pulses = sorted(e.start for e in prepared.timeline.events if e.kind == "pulse")
    gaps = [(a, b) for a, b in itertools.pairwise(pulses) if b - a <= RATE]
    ends = {e.start: e.end for e in prepared.timeline.events if e.kind == "pulse"}
    quiet = {start for start, _ in skipped}
    overlapping = [e for e in prepared.timeline.events if e.kind != "pulse"]
    alone = [
        (a, b) for a, b in gaps if not any(e.start < b and e.end > ends[a] for e in overlapping)
    ]
    assert alone  # pulses with no cue between them
    assert all(ends[a] in quiet for a, _ in alone)


def test_an_mp3_made_on_several_cores_is_whole_at_every_join(prepared, tmp_path):
    out = tmp_path / "cores.mp3"
    render(prepared, out, RenderOptions(threads=3))
    grid = mp3.QUALITIES["normal"].grid
    cuts = quiet_cuts(prepared.timeline, 3, grid)
    assert len(cuts) == 3  # the session really was made in three pieces
    decoded, rate = sf.read(str(out), dtype="float32")
    want = soxr.resample(mixed(prepared), RATE, rate)
    assert decoded.shape == want.shape
    for cut in cuts[1:]:
        j = cut * rate // RATE
        quiet = slice(j - rate // 5, j + rate // 5)
        assert not want[quiet].any() and np.abs(decoded[quiet]).max() < 1e-3  # no click
        after = next(e.start for e in prepared.timeline.events if e.start > cut) * rate // RATE
        window = want[after : after + rate // 2, 0]
        shift = max(
            range(-30, 31), key=lambda d: float(window @ decoded[after + d :][: len(window), 0])
        )
        assert shift == 0  # no gap: what follows the join is where it belongs
    error = decoded - want
    assert 10 * np.log10(np.sum(want**2) / np.sum(error**2)) > 20


def test_a_wav_made_on_several_cores_is_the_wav_made_on_one(prepared, tmp_path):
    assert len(quiet_cuts(prepared.timeline, 3, 1)) == 3  # three pieces, at once
    render(prepared, tmp_path / "three.wav", RenderOptions(threads=3))
    render(prepared, tmp_path / "one.wav", RenderOptions(threads=1))
    assert (tmp_path / "three.wav").read_bytes() == (tmp_path / "one.wav").read_bytes()


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


def test_captions_parse_as_webvtt_and_say_every_cue_and_chime(prepared, rendered, tmp_path):
    vtt = rendered[".wav"].with_suffix(".vtt")
    srt = tmp_path / "c.srt"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(vtt), str(srt)], check=True)
    blocks = [b.splitlines() for b in srt.read_text().strip().split("\n\n")]

    def ms(stamp: str) -> int:
        h, m, rest = stamp.split(":")
        s, milli = rest.split(",")
        return ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(milli)

    shown = [
        (ms(b[1].split(" --> ")[0]), ms(b[1].split(" --> ")[1]), " ".join(b[2:])) for b in blocks
    ]
    assert all(len(line) <= 42 for b in blocks for line in b[2:]) and all(
        len(b) <= 4 for b in blocks
    )
    for e in prepared.timeline.events:
        start, end = e.start * 1000 / RATE, e.end * 1000 / RATE
        if e.kind == SPEECH:  # its captions cover it and say it, in order
            said = [t for a, b, t in shown if start - 1 <= a and b <= end + 1 and t[0] != "["]
            assert " ".join(said) == e.text
        elif e.kind == CHIME:
            (text,) = [t for a, _, t in shown if abs(a - start) <= 1 and t[0] == "["]
            side = f"[switch to your partner's {e.side} side]"
            assert text == (side if e.role == "side" else "[bell]")


def test_a_recognizer_hears_each_cue_inside_its_caption_window(prepared, rendered):
    audio, rate = sf.read(str(rendered[".flac"]), dtype="float32")
    mono = audio.mean(axis=1)
    speech = [e for e in prepared.timeline.events if e.kind == SPEECH]
    margin = round(0.05 * RATE)
    for e in speech:
        window = mono[max(0, e.start - margin) : e.end + margin]
        assert heard(window, rate, e.text), e.text
        # And not some other cue: of the cues of four words or more (a two-word title
        # aligns onto almost any short sound), the one that shares the fewest of its
        # words (cues that differ in one word, "right" for "left", are alike to it).
        words = set(e.text.lower().split())
        if len(words) < 4:
            continue
        other = min(
            (x.text for x in speech if x.text != e.text and len(x.text.split()) >= 4),
            key=lambda t: len(words & set(t.lower().split())),
        )
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


@pytest.mark.parametrize("ext", [".mp3", ".flac", ".ogg", ".opus", ".m4a", ".m4b"])
def test_chapters_one_a_step_read_back(prepared, rendered, ext):
    parts = step_chapters(prepared.timeline)
    assert [p.title for p in parts] == ["Warm the oil", "Slow circles", "Knead the shoulders"]
    chapters = read_chapters(rendered[ext])
    assert [c[0] for c in chapters] == [p.title for p in parts]
    for (_, start), part in zip(chapters, parts, strict=True):
        assert abs(start - part.start / RATE) < 0.002
    seen = [c["tags"]["title"] for c in ffprobe(rendered[ext])["chapters"]]
    assert seen == [p.title for p in parts]


def test_an_m4b_lists_its_steps_as_a_phone_does(prepared, rendered):
    """Apple's players read the QuickTime chapter track (ffprobe lists it), Android's
    and mutagen the Nero list: both hold the step titles in order, at exact starts."""
    from mutagen.mp4 import MP4

    parts = step_chapters(prepared.timeline)
    book = MP4(rendered[".m4b"])
    assert [(c.title, round(c.start, 3)) for c in book.chapters] == [
        (p.title, round(p.start / RATE, 3)) for p in parts
    ]
    listed = ffprobe(rendered[".m4b"])["chapters"]
    assert [(c["tags"]["title"], float(c["start_time"])) for c in listed] == [
        (p.title, round(p.start / RATE, 3)) for p in parts
    ]
    assert book.tags["stik"] == [2]  # shown among audiobooks


@pytest.mark.parametrize("ext", [".mp3", ".ogg", ".opus", ".m4b", ".flac"])
def test_a_rendered_file_is_tagged_with_the_routine_and_its_settings(prepared, rendered, ext):
    probe = ffprobe(rendered[ext])
    tags = {k.lower(): v for k, v in probe["format"].get("tags", {}).items()}
    tags |= {k.lower(): v for k, v in probe["streams"][0].get("tags", {}).items()}
    assert (tags["title"], tags["artist"], tags["album"]) == ("Render test", "coach", "Render test")
    assert "pace normal" in tags["comment"] and "voice calm-en" in tags["comment"]


def test_a_36_minute_mp3_is_phone_sized(run_cli, tmp_path):
    out = tmp_path / "long.mp3"
    code, _, err = run_cli("render", "upper-back-basics", "--length", "36m", "-o", str(out))
    assert code == 0, err
    assert out.stat().st_size <= 20_000_000
    info = sf.info(str(out))
    assert (info.samplerate, info.frames) == (24_000, 36 * 60 * 24_000)


def test_render_takes_a_quality_or_a_bitrate_and_refuses_others(run_cli, routine_file, tmp_path):
    sizes = {}
    for quality in ("low", "high", "32k"):
        out = tmp_path / f"{quality}.mp3"
        code, _, err = run_cli("render", str(routine_file), "-o", str(out), "--quality", quality)
        assert code == 0, err
        sizes[quality] = out.stat().st_size
    assert sizes["low"] < sizes["high"]
    assert mp3_bitrates(tmp_path / "32k.mp3") == {32}
    for quality, ext, words in [
        ("best", ".mp3", "'best' is not a quality"),
        ("65", ".mp3", "MP3 has no 65 kb/s"),
        ("96", ".flac", "a bitrate is for"),
    ]:
        out = tmp_path / f"x{ext}"
        code, _, err = run_cli("render", str(routine_file), "-o", str(out), "--quality", quality)
        # (argparse prints its usage above the message: cli's parser, not render's, owns that)
        assert code == 2 and words in err.strip().splitlines()[-1] and "Traceback" not in err
        assert not out.exists()


def mp3_bitrates(path: Path) -> set[int]:
    data = path.read_bytes()
    size = data[6] << 21 | data[7] << 14 | data[8] << 7 | data[9]
    data = data[10 + size :]
    sizes = [b - a for a, b in itertools.pairwise([*mp3.frame_offsets(data), len(data)])]
    return {round(size * 8 * 24_000 / 576 / 1000) for size in sizes[1:]}  # after the Info frame


def test_a_batch_renders_every_combination_and_reports_the_one_that_failed(
    run_cli, routine_file, tmp_path
):
    short = tmp_path / "short.yaml"
    short.write_text(
        "routine: 1\ntitle: Short\nvoice: calm-en\nsteps:\n"
        "  - title: Rest\n    say: Rest.\n    time: 5s\n"
    )
    template = str(tmp_path / "out" / "{routine}-{pace}-{voice}.ogg")
    (tmp_path / "out").mkdir()
    code, out, err = run_cli(
        "render", str(routine_file), str(short), "--length", "20s", "-o", template
    )
    # The render test routine says more than 20 s: its one job fails, the other is made.
    assert code == 1
    assert "failed: " in err and "render-test-normal-calm-en.ogg" in err and "1 of 2" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["short-normal-calm-en.ogg"]
    assert "wrote " in out and "short-normal-calm-en.ogg" in out
    code, out, err = run_cli(
        "render", str(short), "--pace", "slow,brisk", "--voice", "calm-en,brisk-en", "-o", template
    )
    assert code == 0, err
    made = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert made == sorted(
        ["short-normal-calm-en.ogg"]
        + [f"short-{p}-{v}.ogg" for p in ("slow", "brisk") for v in ("calm-en", "brisk-en")]
    )
    lengths = {n: sf.info(str(tmp_path / "out" / n)).frames for n in made}
    assert lengths["short-slow-calm-en.ogg"] > lengths["short-brisk-calm-en.ogg"]


def test_a_batch_makes_the_folders_its_template_names_and_only_those(
    run_cli, routine_file, tmp_path
):
    short = tmp_path / "short.yaml"
    short.write_text(
        "routine: 1\ntitle: Short\nvoice: calm-en\nsteps:\n"
        "  - title: Rest\n    say: Rest.\n    time: 5s\n"
    )
    (tmp_path / "out").mkdir()
    template = str(tmp_path / "out" / "{routine}" / "{pace}" / "{voice}.wav")
    code, _, err = run_cli("render", str(short), "--pace", "slow,brisk", "-o", template)
    assert code == 0, err
    made = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "out").rglob("*.wav"))
    assert made == ["out/short/brisk/calm-en.wav", "out/short/slow/calm-en.wav"]
    assert sf.info(str(tmp_path / made[0])).frames < sf.info(str(tmp_path / made[1])).frames
    # The fixed part of the folder is not made: a typo there is refused, nothing made.
    code, _, err = run_cli(
        "render", str(short), "--pace", "slow,brisk", "-o", str(tmp_path / "typo" / "{pace}.wav")
    )
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "typo").exists()
    # A brace that names no field is part of the fixed folder, not a field.
    brace = str(tmp_path / "out" / "{x}" / "{pace}.wav")
    code, _, err = run_cli("render", str(short), "--pace", "slow,brisk", "-o", brace)
    assert code == 2 and "does not exist" in err and not (tmp_path / "out" / "{x}").exists()
    # A render that fails leaves no folder behind for it; the batch's others keep theirs.
    code, _, err = run_cli(
        "render", str(routine_file), str(short), "--length", "20s",
        "-o", str(tmp_path / "out" / "{routine}" / "x.wav"),
    )  # fmt: skip
    assert code == 1 and "1 of 2" in err
    assert (tmp_path / "out" / "short" / "x.wav").is_file()
    assert not (tmp_path / "out" / "render-test").exists()
    # A request refused before any work takes back the folders it made.
    code, _, err = run_cli(
        "render", str(short), "--pace", "slow,brisk",
        "-o", str(tmp_path / "out" / "new-{pace}" / "x.wma"),
    )  # fmt: skip
    assert code == 2 and "unknown output format" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["short"]


def test_a_batch_whose_files_would_collide_is_refused_before_any_work(
    run_cli, routine_file, tmp_path
):
    code, out, err = run_cli(
        "render", str(routine_file), "--pace", "slow,brisk", "-o", str(tmp_path / "{routine}.mp3")
    )
    assert (code, out) == (2, "")
    assert "would share" in err and "{pace}" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


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
    umask = os.umask(0)
    os.umask(umask)
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask  # an ordinary folder, not 0700
    render(prepared, out, RenderOptions(split=True))  # again: replaces its own folder
    assert sorted(p.name for p in folder.iterdir()) == sorted([*files, "session.m3u", MANIFEST])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_split_never_replaces_a_folder_coach_did_not_write(run_cli, routine_file, tmp_path):
    music = tmp_path / "music"
    music.mkdir()
    (music / "My song.mp3").write_bytes(b"ID3 a song I love")
    (music / "music.m3u").write_text("#EXTM3U\n")
    before = snapshot(tmp_path)
    code, out, err = run_cli("render", str(routine_file), "-o", str(music) + ".mp3", "--split")
    assert (code, out) == (2, "")
    assert "a folder coach did not write" in err and len(err.strip().splitlines()) == 1
    assert snapshot(tmp_path) == before and sorted(os.listdir(tmp_path)) == ["music"]


def test_split_refuses_its_own_folder_once_someone_changed_it(run_cli, routine_file, tmp_path):
    out = tmp_path / "session.wav"
    assert run_cli("render", str(routine_file), "-o", str(out), "--split")[0] == 0
    (tmp_path / "session" / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    code, _, err = run_cli("render", str(routine_file), "-o", str(out), "--split")
    assert code == 2 and "did not write (or one changed since)" in err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("case", ["routine", "ambient", "ambient-spelled-otherwise", "captions"])
def test_a_render_never_writes_over_one_of_its_inputs(run_cli, tmp_path, case):
    routine = tmp_path / ("r.vtt" if case == "captions" else "r.wav")
    routine.write_text(ROUTINE)
    track = tmp_path / "a.wav"
    sf.write(str(track), np.zeros((RATE * 2, 2), np.float32), RATE)
    args = {
        "routine": ["-o", str(routine)],
        "ambient": ["-o", str(track), "--ambient", str(track)],
        "ambient-spelled-otherwise": [
            "-o", str(track), "--ambient", str(tmp_path / "x" / ".." / "a.wav")
        ],
        "captions": ["-o", str(tmp_path / "r.mp3"), "--captions"],
    }[case]  # fmt: skip
    (tmp_path / "x").mkdir()
    before = snapshot(tmp_path)
    code, out, err = run_cli("render", str(routine), *args)
    assert (code, out) == (2, ""), err
    assert "a render never writes over its inputs" in err and len(err.strip().splitlines()) == 1
    assert snapshot(tmp_path) == before


def test_an_output_that_is_a_folder_is_named_as_such(run_cli, routine_file, tmp_path):
    folder = tmp_path / "adir"
    folder.mkdir()
    code, out, err = run_cli("render", str(routine_file), "-o", str(folder))
    assert (code, out) == (2, "")
    assert err == f"{folder}: is a folder; give a file name such as {folder / 'session.mp3'}\n"
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("kind", ["one sample", "one hertz", "a fifo"])
def test_an_ambient_track_that_cannot_loop_is_refused_at_once(routine_file, tmp_path, kind):
    track = tmp_path / "tiny.wav"
    if kind == "a fifo":
        os.mkfifo(track)
    else:
        rate, frames = (RATE, 1) if kind == "one sample" else (1, 4)
        sf.write(str(track), np.full((frames, 2), 0.1, np.float32), rate)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "coach", "render", str(routine_file), "-o",
         str(tmp_path / "s.wav"), "--ambient", str(track)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert time.monotonic() - started < 10
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and str(track) in done.stderr
    words = {
        "one sample": "at least 1 s",
        "one hertz": "at least 8000 Hz",
        "a fifo": "regular file",
    }
    assert words[kind] in done.stderr
    assert sorted(os.listdir(tmp_path)) == ["tiny.wav"]


def test_stale_temporaries_of_our_own_naming_are_swept_by_the_next_render(prepared, tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process that no longer runs
    stale = [
        f".s.wav.coach-{gone.pid}-1a2b3c4d.tmp",  # killed while writing
        f".s.vtt.coach-{gone.pid}-zz9yy8xx.tmp",  # its captions
        ".old.mp3.coach-0123abcd.tmp",  # an older coach's name, two minutes old
    ]
    kept = [
        f".s.wav.coach-{os.getpid()}-5e6f7a8b.tmp",  # a render of this process, under way
        ".fresh.mp3.coach-4567cdef.tmp",  # older naming, but just made
        ".notes.tmp",
        "keep.coach-1-ab.tmp",
    ]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"partial")
    staging = tmp_path / f".session.coach-{gone.pid}-0f0f0f0f.tmp"  # a split's staging
    staging.mkdir()
    (staging / "01 Warm the oil.wav").write_bytes(b"partial")
    two_minutes_ago = time.time() - 120
    os.utime(tmp_path / ".old.mp3.coach-0123abcd.tmp", (two_minutes_ago, two_minutes_ago))
    render(prepared, tmp_path / "s.wav")
    assert sorted(os.listdir(tmp_path)) == sorted([*kept, "s.wav"])


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


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_an_interrupted_render_leaves_nothing_behind(routine_file, tmp_path, prepared, stop):
    # Two hours of a quiet session (a --length that long is refused: no pace stretches
    # the render test's routine so far).
    routine = tmp_path.parent / f"{tmp_path.name}-long.yaml"
    steps = "".join(f"  - title: Rest {i}\n    say: Rest.\n    time: 1h\n" for i in range(2))
    routine.write_text(f"routine: 1\ntitle: Long\nvoice: calm-en\nsteps:\n{steps}")
    out = tmp_path / "long.flac"
    env = dict(os.environ)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "coach",
            "render",
            str(routine),
            "-o",
            str(out),
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
    proc.send_signal(stop)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("extra", [3, 23, 400])
def test_an_m4b_holds_the_whole_session_whatever_its_length(run_cli, tmp_path, extra):
    """AAC codes whole frames of 1024 samples, and a session ending a few samples past a
    whole frame lost them. `extra` picks a length that many samples past a frame."""
    routine = tmp_path / "r.yaml"

    def total_for(seconds: float) -> int:
        routine.write_text(
            f"routine: 1\ntitle: T\nvoice: calm-en\nsteps:\n"
            f"  - title: A\n    say: Rest.\n    time: {seconds:.6f}s\n"
        )
        code, preview, err = run_cli("preview", str(routine), "--json")
        assert code == 0, err
        return round(json.loads(preview)["total"] * RATE)

    first = total_for(5.0)
    total = total_for(5.0 + ((extra - first) % 1024) / RATE)
    assert total % 1024 == extra
    out = tmp_path / "x.m4b"
    code, _, err = run_cli("render", str(routine), "-o", str(out))
    assert code == 0, err
    pcm = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(out), "-f", "s16le", "-ac", "2", "-"],
        capture_output=True,
        check=True,
    ).stdout
    assert total <= len(pcm) // 4 < total + 1024, (len(pcm) // 4, total)
