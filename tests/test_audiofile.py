"""The audio file modules (coach.writer, coach.chapters, coach.ambient, coach.soundfiles)
with real files and real decoders: soundfile reads back what AudioWriter wrote, ffprobe
checks the containers, mutagen (and ffprobe) the chapters, and real subprocesses are
interrupted and starved of disk space."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from coach.ambient import AmbientTrack
from coach.chapters import Chapter, chapter_support, read_chapters
from coach.errors import CoachError, InputError, UsageError
from coach.units import RATE
from coach.writer import FORMATS, AudioWriter, check_output

REPO = Path(__file__).resolve().parent.parent
HAVE_FFPROBE = shutil.which("ffprobe") is not None
needs_ffprobe = pytest.mark.skipif(not HAVE_FFPROBE, reason="ffprobe is not installed")

# Odd block sizes, cycled, so no block lines up with codec frames (1152, 1024, ...).
BLOCKS = (1, 997, 2047, 13, 4093, 480)
MAX_BLOCK = 2048
# MP3: one LAME frame; Vorbis: one long block. Both decoders here trim exactly (LAME tag,
# Ogg granule positions), but a file may legitimately be up to this much longer.
CODEC_PADDING = 1152


def stereo_signal(seconds: float = 3.0) -> np.ndarray:
    """Different tones left and right (so a channel swap shows), with a short stretch
    beyond full scale that must be clipped."""
    t = np.arange(round(seconds * RATE)) / RATE
    x = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)], 1)
    x[1000:1100] = [1.5, -1.5]
    return x.astype(np.float32)


def write_in_blocks(
    path: Path, x: np.ndarray, chapters: list[Chapter] | None = None, channels: int = 2
) -> None:
    with AudioWriter(path, channels=channels) as out:
        i = k = 0
        while i < len(x):
            n = BLOCKS[k % len(BLOCKS)]
            out.write(x[i : i + n])
            i += n
            k += 1
        assert out.frames_written == len(x)
        if chapters:
            out.add_chapters(chapters)
        out.commit()


def ffprobe(path: Path, *args: str) -> dict:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", *args, str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


def pcm16(x: np.ndarray) -> np.ndarray:
    """16-bit quantization: the nearest step of 1/32768 (a reader's k/32768), clipped."""
    return np.clip(np.rint(x.astype(np.float64) * 32768), -32768, 32767).astype(np.int16)


def snr_db(reference: np.ndarray, decoded: np.ndarray) -> float:
    error = reference - decoded
    return float(10 * np.log10(np.mean(reference**2) / np.mean(error**2)))


# -- writing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".wav", ".flac"])
def test_lossless_formats_hold_exactly_the_16_bit_samples(tmp_path, ext):
    x = stereo_signal()
    path = tmp_path / f"session{ext}"
    write_in_blocks(path, x)
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (RATE, 2, "PCM_16")
    assert info.frames == len(x)
    stored, _ = sf.read(path, dtype="int16")
    np.testing.assert_array_equal(stored, pcm16(x))
    assert stored[1050].tolist() == [32767, -32768]  # clipped, not wrapped around
    assert os.listdir(tmp_path) == [path.name]


@needs_ffprobe
@pytest.mark.parametrize(("ext", "codec", "min_snr"), [(".mp3", "mp3", 20), (".ogg", "vorbis", 25)])
def test_lossy_formats_decode_to_the_signal(tmp_path, ext, codec, min_snr):
    x = np.clip(stereo_signal(), -1, 1)
    path = tmp_path / f"session{ext}"
    write_in_blocks(path, x)

    decoded, rate = sf.read(path, dtype="float32")
    assert rate == RATE and decoded.shape[1] == 2
    assert len(x) <= len(decoded) <= len(x) + MAX_BLOCK + CODEC_PADDING
    # Both decoders remove the encoder delay, so the samples line up without a shift.
    assert snr_db(x[:, 0], decoded[: len(x), 0]) > min_snr
    assert snr_db(x[:, 1], decoded[: len(x), 1]) > min_snr

    probe = ffprobe(path, "-show_streams", "-show_format")
    (stream,) = probe["streams"]
    assert stream["codec_name"] == codec
    assert (int(stream["sample_rate"]), stream["channels"]) == (RATE, 2)
    duration = float(stream.get("duration") or probe["format"]["duration"])
    # ffprobe's MP3 duration counts whole frames, the LAME delay and padding included.
    assert len(x) / RATE - 0.001 <= duration <= (len(x) + MAX_BLOCK + 2 * CODEC_PADDING) / RATE
    if ext == ".mp3":
        assert int(stream["bit_rate"]) == 192_000


@needs_ffprobe
def test_mono_mp3_stays_mono(tmp_path):
    path = tmp_path / "mono.mp3"
    write_in_blocks(path, stereo_signal(0.5)[:, 0], channels=1)
    (stream,) = ffprobe(path, "-show_streams")["streams"]
    assert (stream["channels"], int(stream["sample_rate"])) == (1, RATE)


def test_the_temporary_file_is_hidden_next_to_the_target(tmp_path):
    path = tmp_path / "session.mp3"
    with AudioWriter(path) as out:
        out.write(np.zeros((4800, 2), np.float32))
        (tmp,) = os.listdir(tmp_path)
        assert tmp.startswith(".session.mp3.coach-") and tmp.endswith(".tmp")
        assert not path.exists()
        out.commit()
    assert os.listdir(tmp_path) == ["session.mp3"]
    assert sf.info(path).format == "MP3"  # chosen from ".mp3", not from ".tmp"


def test_blocks_of_the_wrong_shape_are_refused(tmp_path):
    with AudioWriter(tmp_path / "x.wav") as out, pytest.raises(ValueError):
        out.write(np.zeros((10, 3), np.float32))
    assert os.listdir(tmp_path) == []


# -- never a partial file --------------------------------------------------------------------


@pytest.mark.parametrize("ext", sorted(FORMATS))
def test_an_exception_inside_the_writer_leaves_no_file(tmp_path, ext):
    path = tmp_path / f"session{ext}"
    with pytest.raises(RuntimeError, match="boom"), AudioWriter(path) as out:
        out.write(stereo_signal(0.2))
        assert len(os.listdir(tmp_path)) == 1  # the temporary file
        raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_an_exception_leaves_an_existing_target_untouched(tmp_path):
    path = tmp_path / "session.flac"
    path.write_bytes(b"the previous session")
    with pytest.raises(KeyboardInterrupt), AudioWriter(path) as out:
        out.write(stereo_signal(0.2))
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == ["session.flac"]
    assert path.read_bytes() == b"the previous session"


def test_commit_replaces_an_existing_target(tmp_path):
    path = tmp_path / "session.wav"
    path.write_bytes(b"old")
    write_in_blocks(path, stereo_signal(0.1))
    assert sf.info(path).frames == round(0.1 * RATE)
    assert os.listdir(tmp_path) == ["session.wav"]


def run_python(code: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_while_writing_leaves_nothing(tmp_path):
    process = run_python(f"""
        from pathlib import Path
        import numpy as np
        from coach.writer import AudioWriter
        block = np.zeros((1001, 2), np.float32)
        with AudioWriter(Path({str(tmp_path / "session.mp3")!r})) as out:
            out.write(block)
            print("writing", flush=True)
            while True:
                out.write(block)
    """)
    try:
        assert process.stdout.readline() == "writing\n", process.stderr.read()
        assert len(os.listdir(tmp_path)) == 1
        time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode != 0
    assert "KeyboardInterrupt" in stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX resource limits")
@pytest.mark.parametrize("ext", [".wav", ".ogg"])
def test_a_full_disk_is_a_coach_error_and_leaves_nothing(tmp_path, ext):
    # A file size limit makes write() fail with EFBIG, as a full disk fails with ENOSPC.
    process = run_python(f"""
        import resource, signal, sys
        from pathlib import Path
        import numpy as np
        from coach.writer import AudioWriter
        from coach.errors import CoachError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        noise = np.random.default_rng(0).uniform(-0.5, 0.5, (4096, 2)).astype(np.float32)
        try:
            with AudioWriter(Path({str(tmp_path / "session")!r} + {ext!r})) as out:
                for _ in range(1000):
                    out.write(noise)
                out.commit()
        except CoachError as e:
            print(e.exit_code, e)
            sys.exit(0)
        sys.exit("no error")
    """)
    stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert stdout.startswith("1 cannot write ") and "File too large" in stdout
    assert len(stdout.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == []


# -- check_output ----------------------------------------------------------------------------


def test_check_output_accepts_known_extensions(tmp_path):
    assert [check_output(tmp_path / f"a{ext}") for ext in FORMATS] == list(FORMATS)
    assert check_output(tmp_path / "A.MP3") == ".mp3"


@pytest.mark.parametrize("name", ["session.aac", "session"])
def test_check_output_lists_the_supported_extensions(tmp_path, name):
    with pytest.raises(UsageError) as caught:
        check_output(tmp_path / name)
    assert caught.value.exit_code == 2
    message = str(caught.value)
    assert all(ext in message for ext in (".wav", ".flac", ".ogg", ".mp3"))
    assert "\n" not in message


def test_check_output_needs_an_existing_folder(tmp_path):
    with pytest.raises(UsageError, match="does not exist") as caught:
        check_output(tmp_path / "no" / "such" / "session.wav")
    assert caught.value.exit_code == 2
    with pytest.raises(UsageError, match="is a folder"):
        (tmp_path / "x.wav").mkdir()
        check_output(tmp_path / "x.wav")


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write to any folder"
)
def test_check_output_needs_a_writable_folder(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o500)
    try:
        with pytest.raises(CoachError, match="cannot write") as caught:
            check_output(folder / "session.wav")
        assert caught.value.exit_code in (1, 2)
    finally:
        folder.chmod(0o700)


def test_check_output_reports_an_unwritable_folder(tmp_path, monkeypatch):
    # The same branch as above, reachable as root too.
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
    with pytest.raises(CoachError, match="cannot write to the folder") as caught:
        check_output(tmp_path / "session.ogg")
    assert caught.value.exit_code == 1


# -- chapters --------------------------------------------------------------------------------

CHAPTERS = [  # given out of order, with a long title, to show they are sorted by start
    Chapter("Circles beside the spine, right side", start=61_234 * 48, end=125_000 * 48),
    Chapter("Welcome", start=0, end=1_500 * 48),
    Chapter("Ä short één", start=1_500 * 48, end=61_234 * 48),
    Chapter("Closing", start=125_000 * 48, end=130_000 * 48),
]
EXPECTED = [
    ("Welcome", 0.0),
    ("Ä short één", 1.5),
    ("Circles beside the spine, right side", 61.234),
    ("Closing", 125.0),
]


@pytest.mark.parametrize("ext", [".mp3", ".flac", ".ogg"])
def test_chapters_round_trip(tmp_path, ext):
    assert chapter_support(ext)
    path = tmp_path / f"session{ext}"
    write_in_blocks(path, stereo_signal(0.5), CHAPTERS)
    chapters = read_chapters(path)
    assert [title for title, _ in chapters] == [title for title, _ in EXPECTED]
    assert [start for _, start in chapters] == pytest.approx([s for _, s in EXPECTED], abs=5e-4)
    assert sf.info(path).frames == round(0.5 * RATE)  # the audio survived the tagging


@needs_ffprobe
@pytest.mark.parametrize("ext", [".mp3", ".flac", ".ogg"])
def test_ffmpeg_sees_the_chapters_in_order(tmp_path, ext):
    path = tmp_path / f"session{ext}"
    write_in_blocks(path, stereo_signal(0.5), CHAPTERS)
    chapters = ffprobe(path, "-show_chapters")["chapters"]
    assert [(c["tags"]["title"], float(c["start_time"])) for c in chapters] == EXPECTED


def test_wav_has_no_chapters(tmp_path):
    assert not chapter_support(".wav")
    path = tmp_path / "session.wav"
    write_in_blocks(path, stereo_signal(0.1), CHAPTERS)  # ignored, not an error
    assert read_chapters(path) == []


def test_read_chapters_of_a_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_chapters(tmp_path / "gone.mp3")


# -- ambient tracks --------------------------------------------------------------------------


def read_all(track: AmbientTrack, frames: int) -> np.ndarray:
    parts, got, k = [], 0, 0
    while got < frames:
        n = min(BLOCKS[k % len(BLOCKS)] * 3, frames - got)
        parts.append(track.read(n))
        got += n
        k += 1
    return np.concatenate(parts)


def test_ambient_loops_without_a_click_and_fades(tmp_path):
    # One second of a 100.25 Hz sine at 44.1 kHz: it ends a quarter cycle away from where
    # it starts, so looping it naively would jump by its full amplitude.
    rate, amplitude, freq = 44_100, 0.5, 100.25
    t = np.arange(rate) / rate
    tone = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    assert abs(tone[-1] - tone[0]) > 0.9 * amplitude
    path = tmp_path / "ambient.flac"
    sf.write(path, tone, rate, subtype="PCM_16")

    total, fade_in, fade_out = 5 * RATE, RATE // 5, RATE // 2
    track = AmbientTrack(path, total=total, fade_in=fade_in, fade_out=fade_out)
    out = read_all(track, total + RATE // 2)

    assert out.dtype == np.float32 and out.shape == (total + RATE // 2, 2)
    np.testing.assert_array_equal(out[:, 0], out[:, 1])  # mono on both sides
    x = out[:total, 0]
    own_max_step = amplitude * 2 * np.sin(np.pi * freq / RATE)
    assert np.abs(np.diff(x)).max() <= 1.05 * own_max_step  # no click at the 4 loop points
    assert np.abs(x[RATE : 4 * RATE]).max() > 0.95 * amplitude  # and it keeps playing
    assert abs(x[0]) < 1e-3 and np.abs(x[-3:]).max() < 1e-3  # faded in and out
    assert np.abs(x[:100]).max() < 0.01 * amplitude
    assert not out[total:].any()  # silent after the end
    assert not track.read(1000).any()


def test_ambient_read_returns_what_was_asked_at_48k_too(tmp_path):
    path = tmp_path / "ambient.wav"
    sf.write(path, np.full((1000, 2), 0.25, np.float32), RATE, subtype="FLOAT")
    track = AmbientTrack(path, total=3000, fade_in=0, fade_out=0)
    out = read_all(track, 3000)
    # Same rate: no resampler, and a constant signal crossfaded into itself stays constant.
    np.testing.assert_allclose(out, 0.25, atol=1e-6)


def test_ambient_memory_stays_small(tmp_path):
    rate = 44_100
    noise = np.random.default_rng(1).uniform(-0.3, 0.3, (20 * rate, 2)).astype(np.float32)
    path = tmp_path / "rain.wav"
    sf.write(path, noise, rate, subtype="PCM_16")
    track = AmbientTrack(path, total=90 * RATE, fade_in=RATE, fade_out=RATE)
    track.read(4096)
    tracemalloc.start()
    try:
        for _ in range(90 * RATE // 4096):  # 90 s: four and a half passes over the file
            track.read(4096)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000  # the 20 s file alone would be 7 MB as float32 stereo


@pytest.mark.parametrize(
    ("amplitude", "expected_db"),
    [
        (0.1, -30 - 20 * np.log10(0.1 / np.sqrt(2))),  # RMS -23 dBFS: -7 dB
        (0.001, 20.0),  # would need +33 dB: clamped
    ],
)
def test_ambient_level_brings_the_rms_to_minus_30_dbfs(tmp_path, amplitude, expected_db):
    t = np.arange(2 * RATE) / RATE
    tone = amplitude * np.sin(2 * np.pi * 220 * t)
    path = tmp_path / "tone.wav"
    sf.write(path, np.stack([tone, tone, tone], 1), RATE, subtype="FLOAT")  # 3 channels
    track = AmbientTrack(path, total=RATE, fade_in=0, fade_out=0)
    assert 20 * np.log10(track.level) == pytest.approx(expected_db, abs=0.5)
    assert track.read(10).shape == (10, 2)


def test_ambient_level_of_silence_is_one(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(RATE, np.float32), RATE)
    assert AmbientTrack(path, total=RATE, fade_in=0, fade_out=0).level == 1.0


@pytest.mark.parametrize("make", ["text", "missing", "folder", "empty"])
def test_ambient_refuses_what_is_not_audio(tmp_path, make):
    path = tmp_path / "background.wav"
    if make == "text":
        path.write_text("not sound at all\n" * 100)
    elif make == "folder":
        path.mkdir()
    elif make == "empty":
        sf.write(path, np.zeros((0, 2), np.float32), RATE)
    with pytest.raises(InputError) as caught:
        AmbientTrack(path, total=RATE, fade_in=0, fade_out=0)
    message = str(caught.value)
    assert caught.value.exit_code == 2
    assert message.startswith(f"{path}: ") and "\n" not in message
    if make == "text":
        assert "not an audio file soundfile can read (WAV, FLAC, OGG, MP3)" in message
    else:
        assert "(WAV, FLAC, OGG, MP3)" in message
