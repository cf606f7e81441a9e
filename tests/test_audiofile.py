"""The audio file modules (coach.writer, coach.chapters, coach.ambient, coach.soundfiles)
with real files and real decoders: soundfile reads back what AudioWriter wrote, ffprobe
checks the containers, mutagen (and ffprobe) the chapters, and real subprocesses are
interrupted and starved of disk space."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from coach import mp3
from coach.ambient import AmbientTrack
from coach.captions import MAX_LINE, MAX_LINES, captions, clean, webvtt
from coach.chapters import Chapter, chapter_support, read_chapters
from coach.encoders import Metadata
from coach.errors import CoachError, InputError, UsageError
from coach.soundfiles import read_sound
from coach.tags import Tags
from coach.timeline import Event
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
    path: Path,
    x: np.ndarray,
    chapters: list[Chapter] | None = None,
    channels: int = 2,
    *,
    quality: str | int = "normal",
    tags: Tags | None = None,
) -> None:
    meta = Metadata(tags, chapters or ())
    with AudioWriter(path, channels=channels, quality=quality, meta=meta) as out:
        for block in in_blocks(x):
            out.write(block)
        assert out.frames_written == len(x)
        out.commit()


def in_blocks(x: np.ndarray) -> Iterator[np.ndarray]:
    i = k = 0
    while i < len(x):
        n = BLOCKS[k % len(BLOCKS)]
        yield x[i : i + n]
        i += n
        k += 1


def decode(path: Path) -> tuple[np.ndarray, int]:
    """Float stereo samples and their rate, as ffmpeg's decoder gives them."""
    rate = int(ffprobe(path, "-show_streams")["streams"][0]["sample_rate"])
    pcm = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "2", "-"],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(pcm, dtype=np.float32).reshape(-1, 2), rate


def at_rate(x: np.ndarray, rate: int) -> np.ndarray:
    return x if rate == RATE else soxr.resample(x, RATE, rate).astype(np.float32)


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


LOSSY = [  # extension, codec, sample rate, least SNR in dB, how much longer it may decode
    (".mp3", "mp3", 24_000, 20, 0),
    (".ogg", "vorbis", RATE, 20, 0),
    (".opus", "opus", RATE, 15, 0),
    (".m4a", "aac", RATE, 15, 1024),
    (".m4b", "aac", RATE, 15, 1024),
]


@needs_ffprobe
@pytest.mark.parametrize(("ext", "codec", "rate", "min_snr", "longer"), LOSSY)
def test_lossy_formats_decode_to_the_signal_at_its_length(
    tmp_path, ext, codec, rate, min_snr, longer
):
    x = np.clip(stereo_signal(), -1, 1)
    path = tmp_path / f"session{ext}"
    write_in_blocks(path, x)
    (stream,) = ffprobe(path, "-show_streams")["streams"]
    assert (stream["codec_name"], int(stream["sample_rate"]), stream["channels"]) == (
        codec,
        rate,
        2,
    )
    decoded, _ = decode(path)
    want = at_rate(x, rate)
    # The encoder's delay and padding are trimmed: the samples line up, the length is
    # the signal's (AAC in MP4 may keep part of its last frame: FFmpeg does not trim it).
    assert len(want) <= len(decoded) <= len(want) + longer, (len(decoded), len(want))
    assert snr_db(want[:, 0], decoded[: len(want), 0]) > min_snr
    assert snr_db(want[:, 1], decoded[: len(want), 1]) > min_snr
    if ext in (".mp3", ".ogg", ".opus"):  # and libsndfile's decoders (mpg123 for MP3) agree
        assert sf.info(path).frames == len(want)


def mp3_frames(path: Path) -> list[bytes]:
    data = path.read_bytes()
    if data[:3] == b"ID3":
        size = data[6] << 21 | data[7] << 14 | data[8] << 7 | data[9]
        data = data[10 + size :]
    return [data[a:b] for a, b in itertools.pairwise([*mp3.frame_offsets(data), len(data)])]


@pytest.mark.parametrize(
    ("quality", "rate", "cbr"),
    [("low", 24_000, None), ("normal", 24_000, None), ("high", RATE, None), (64, 24_000, 64),
     (128, RATE, 128)],
)  # fmt: skip
def test_mp3_is_joint_stereo_with_an_info_frame(tmp_path, quality, rate, cbr):
    x = np.concatenate([stereo_signal(2.0), np.zeros((RATE * 2, 2), np.float32)])
    path = tmp_path / "session.mp3"
    write_in_blocks(path, np.clip(x, -1, 1), quality=quality)
    info, *audio = mp3_frames(path)
    assert info[:40].count(b"Info" if cbr else b"Xing") == 1 and b"LAME" in info
    assert all(f[3] >> 6 == 0b01 for f in audio)  # joint stereo: both sides kept
    kbps = [len(f) * 8 * rate / (1152 if rate == RATE else 576) / 1000 for f in audio]
    if cbr:
        assert {round(k) for k in kbps} == {cbr}
    else:  # VBR: the silence costs the least a frame can
        assert min(kbps[-len(kbps) // 3 :]) == (32 if rate == RATE else 8)
    assert sf.info(path).samplerate == rate


def test_mp3_qualities_rise_in_size(tmp_path):
    x = stereo_signal(3.0).clip(-1, 1)
    sizes = []
    for quality in ("low", "normal", "high"):
        write_in_blocks(tmp_path / f"{quality}.mp3", x, quality=quality)
        sizes.append((tmp_path / f"{quality}.mp3").stat().st_size)
    assert sizes == sorted(sizes) and sizes[0] < sizes[2] / 2


def bursts(seconds: float, at: list[float]) -> np.ndarray:
    """Silence with half-second tone bursts (a different tone on each side) at `at`."""
    x = np.zeros((round(seconds * RATE), 2), np.float32)
    t = np.arange(RATE // 2) / RATE
    for k, start in enumerate(at):
        i = round(start * RATE)
        x[i : i + len(t), 0] = 0.4 * np.sin(2 * np.pi * (300 + 50 * k) * t) * np.hanning(len(t))
        x[i : i + len(t), 1] = 0.2 * np.sin(2 * np.pi * (500 + 70 * k) * t) * np.hanning(len(t))
    return x


def lag(reference: np.ndarray, decoded: np.ndarray, at: int, span: int) -> int:
    """How many samples later than in `reference` the sound at `at` comes in `decoded`."""
    window = reference[at : at + span]
    return max(range(-40, 41), key=lambda d: float(window @ decoded[at + d : at + d + span]))


@needs_ffprobe
def test_mp3_pieces_encoded_at_once_and_silences_skipped_join_without_a_gap_or_a_click(tmp_path):
    x = bursts(12.0, [0.5, 2.5, 4.6, 7.1, 9.3, 11.0])
    grid = mp3.QUALITIES["normal"].grid
    cuts = [0, round(3.6 * RATE) // grid * grid, round(8.3 * RATE) // grid * grid, len(x)]
    path = tmp_path / "pieces.mp3"
    with AudioWriter(path) as out:
        assert out.grid == grid
        out.write_pieces([in_blocks(x[a:b]) for a, b in itertools.pairwise(cuts)], cuts[:-1])
        out.commit()
    # The long silences were not encoded: they are copies of one silent frame.
    assert mp3.silent_frame(mp3.QUALITIES["normal"], 2) * 20 in path.read_bytes()
    decoded, rate = decode(path)
    want = at_rate(x, rate)
    assert len(decoded) == len(want) == sf.info(path).frames
    for cut in cuts[1:-1]:  # the joins: silence in, silence out
        j = cut * rate // RATE
        assert np.abs(decoded[j - rate // 10 : j + rate // 10]).max() < 1e-3
    for start in (0.5, 2.5, 4.6, 7.1, 9.3, 11.0):  # every burst where it belongs, intact
        i = round(start * rate)
        assert lag(want[:, 0], decoded[:, 0], i, rate // 2) == 0
        assert snr_db(want[i : i + rate // 2, 0], decoded[i : i + rate // 2, 0]) > 20


def test_formats_that_do_not_join_pieces_take_one_stream(tmp_path):
    with AudioWriter(tmp_path / "x.flac") as out:
        assert out.grid is None
        with pytest.raises(ValueError, match="one piece"):
            out.write_pieces([iter(()), iter(())], [0, 0])
    assert os.listdir(tmp_path) == []


TAGS = Tags(
    title="Warm the oil", album="Upper back basics", comment="pace slow (1.25x)", track=(2, 8)
)


@needs_ffprobe
@pytest.mark.parametrize("ext", [".mp3", ".ogg", ".flac", ".opus", ".m4a", ".m4b"])
def test_compressed_files_carry_title_artist_album_and_comment(tmp_path, ext):
    path = tmp_path / f"session{ext}"
    write_in_blocks(path, stereo_signal(0.5), CHAPTERS[1:3], tags=TAGS)
    probe = subprocess.run(
        ["ffprobe", "-v", "warning", "-of", "json", "-show_format", "-show_streams", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "comment header" not in probe.stderr  # no padding after an Ogg comment
    data = json.loads(probe.stdout)
    found = {k.lower(): v for k, v in data["format"].get("tags", {}).items()}
    found |= {k.lower(): v for k, v in data["streams"][0].get("tags", {}).items()}
    assert {k: found.get(k) for k in TAGS.as_dict()} == TAGS.as_dict()
    if ext == ".m4b":
        assert found.get("media_type") == "2"  # an audiobook to Apple's players


@needs_ffprobe
def centred_sound(seconds: float, seed: int = 7) -> np.ndarray:
    """One channel of what a session mostly holds: tones that come and go under noise,
    and clicks sharp enough that LAME switches to short blocks for them."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * RATE)) / RATE
    x = 0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.3 * np.sin(t))) * (0.6 + 0.4 * np.sin(3 * t))
    x += 0.02 * rng.standard_normal(len(t))
    for at in np.arange(0.25, seconds - 0.1, 0.5):
        i = round(at * RATE)
        x[i : i + 40] += 0.8 * np.exp(-np.arange(40) / 8)
    return np.clip(x, -1, 1).astype(np.float32)


def lame_mono(x: np.ndarray, rate: int, vbr: int) -> bytes:
    import lameenc

    enc = lameenc.Encoder()
    enc.silence()
    enc.set_channels(1)
    enc.set_in_sample_rate(rate)
    enc.set_out_sample_rate(rate)
    enc.set_quality(mp3.LAME_QUALITY)
    enc.set_vbr(4)
    enc.set_vbr_quality(vbr)
    pcm = pcm16(at_rate(x, rate)).astype("<i2").tobytes()
    return bytes(enc.encode(pcm) + enc.flush())


def decoded_by_both(
    frames: bytes, sizes: list[int], samples: int, settings: mp3.Mp3Settings, path: Path
) -> list[np.ndarray]:
    """Frames of `samples` (at RATE) written as a file, after an Info frame (without
    one, libsndfile takes a VBR stream's length from its first frame): as ffmpeg
    decodes it, and as libsndfile (mpg123) does; float, as many channels as it has."""
    with open(path, "wb") as out:
        mp3.join([(frames, samples, sizes)], settings, out)
    channels = int(ffprobe(path, "-show_streams")["streams"][0]["channels"])
    pcm = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "f32le", "-"],
        capture_output=True,
        check=True,
    ).stdout
    ours = np.frombuffer(pcm, dtype=np.float32).reshape(-1, channels)
    theirs, _ = sf.read(path, dtype="float32", always_2d=True)
    return [ours, theirs]


@needs_ffprobe
@pytest.mark.parametrize(("rate", "vbr"), [(24_000, 5), (24_000, 9), (RATE, 3)])
def test_mono_frames_rewritten_as_joint_stereo_decode_to_the_same_sound_in_both_channels(
    tmp_path, rate, vbr
):
    from coach.mp3stereo import joint_stereo

    x = centred_sound(6.0)
    mono = lame_mono(x, rate, vbr)
    stereo, sizes = joint_stereo(mono)
    assert list(sizes) == list(mp3.frame_sizes(stereo)) and sum(sizes) == len(stereo)
    starts = itertools.accumulate([0, *sizes])
    frames = [stereo[a : a + n] for a, n in zip(starts, sizes, strict=False)]
    assert all(f[3] >> 4 == 0b0110 for f in frames)  # joint stereo, mid/side on
    # Short blocks were among them (the window flag of the first granule's mid channel:
    # after main_data_begin, the private bits, scfsi, part2_3_length, big_values,
    # global_gain and scalefac_compress).
    flag_at = 32 + (9 + 3 + 8 + 12 + 9 + 8 + 4 if rate == RATE else 8 + 2 + 12 + 9 + 8 + 9)
    assert any(int.from_bytes(f[:12], "big") >> (96 - flag_at - 1) & 1 for f in frames)
    # Each decoder decodes the rewritten frames to its decoding of the mono ones, in
    # both channels (ffmpeg and mpg123 round differently: each is held to itself).
    settings = mp3.Mp3Settings(rate=rate, vbr=vbr)
    mono_sizes = list(mp3.frame_sizes(mono))
    for one, both in zip(
        decoded_by_both(mono, mono_sizes, len(x), settings, tmp_path / "mono.mp3"),
        decoded_by_both(bytes(stereo), list(sizes), len(x), settings, tmp_path / "st.mp3"),
        strict=True,
    ):
        assert one.shape == (len(x) * rate // RATE, 1) and both.shape == (len(one), 2)
        assert snr_db(at_rate(x, rate), one[:, 0]) > 15
        assert np.abs(both - one).max() < 1e-6


def test_joint_stereo_refuses_frames_that_are_not_mono():
    from coach.mp3stereo import joint_stereo

    piece = mp3.Mp3Piece(mp3.QUALITIES["normal"], 2)
    piece.write(stereo_signal(0.5).clip(-1, 1))
    with pytest.raises(ValueError, match="not a mono layer III frame"):
        joint_stereo(piece.finish())


@needs_ffprobe
def test_centred_sound_is_encoded_as_mono_and_panned_sound_as_stereo(tmp_path, monkeypatch):
    # The same session but for one sample of one channel, a step of 16 bits off: it must
    # be encoded as stereo; the centred one as mono (rewritten, no larger), and both
    # decode to what went in, with a panned burst after it panned.
    x = np.zeros((8 * RATE, 2), np.float32)
    x[: 5 * RATE] = centred_sound(5.0)[:, None]
    x[6 * RATE :] = bursts(2.0, [0.5])  # left louder than right
    nudged = x.copy()
    nudged[RATE, 0] += 1 / 32768
    monkeypatch.setattr(mp3, "ENCODED", mp3._Encoded(1 << 20))  # what this test made
    sizes = {}
    for name, sound in (("centred", x), ("nudged", nudged)):
        path = tmp_path / f"{name}.mp3"
        misses = mp3.ENCODED.misses
        write_in_blocks(path, sound)
        assert mp3.ENCODED.misses - misses == (name == "centred")
        sizes[name] = path.stat().st_size
        decoded, rate = decode(path)
        want = at_rate(sound, rate)
        assert len(decoded) == len(want)
        span = slice(rate // 2, 4 * rate)
        assert snr_db(want[span, 0], decoded[span, 0]) > 15
        assert snr_db(want[span, 1], decoded[span, 1]) > 15
        if name == "centred":
            assert np.array_equal(decoded[: 5 * rate, 0], decoded[: 5 * rate, 1])
        burst = decoded[6 * rate :]
        assert np.abs(burst[:, 0]).max() > 1.5 * np.abs(burst[:, 1]).max()
    assert sizes["centred"] <= sizes["nudged"]


@needs_ffprobe
def test_a_stretch_heard_again_on_the_frame_grid_is_encoded_once(tmp_path, monkeypatch):
    # Pulses every 50 frames, as a session's rhythm: one encoding serves them all; one
    # off the grid by a sample is encoded for itself, and each is where it belongs.
    grid = mp3.QUALITIES["normal"].grid
    pulse = centred_sound(0.2, seed=3) * np.hanning(round(0.2 * RATE)).astype(np.float32)
    x = np.zeros((12 * RATE, 2), np.float32)
    starts = [k * 50 * grid for k in range(1, 9)] + [9 * 50 * grid + 1]
    for start in starts:
        x[start : start + len(pulse)] = pulse[:, None]
    monkeypatch.setattr(mp3, "ENCODED", mp3._Encoded(1 << 20))  # what this test made
    path = tmp_path / "pulses.mp3"
    with AudioWriter(path) as out:  # as a render writes: the silence as such
        edges = [0, *itertools.chain(*((a, a + len(pulse)) for a in starts)), len(x)]
        for k, (a, b) in enumerate(itertools.pairwise(edges)):
            out.write(x[a:b] if k % 2 else b - a)
        out.commit()
    # The silence before the first pulse, then the first, are encoded; and the last.
    assert (mp3.ENCODED.misses, mp3.ENCODED.hits) == (3, len(starts) - 2)
    decoded, rate = decode(path)
    want = at_rate(x, rate)
    for start in starts:
        i = start * rate // RATE
        assert lag(want[:, 0], decoded[:, 0], i, rate // 5) == 0
        assert snr_db(want[i : i + rate // 5, 0], decoded[i : i + rate // 5, 0]) > 15


def test_an_encoding_that_cannot_be_rewritten_is_made_again_as_stereo(tmp_path, monkeypatch):
    import coach.mp3stereo

    def refuse(data: bytes) -> None:
        raise ValueError("refused")

    monkeypatch.setattr(coach.mp3stereo, "joint_stereo", refuse)
    x = np.repeat(centred_sound(2.0, seed=11)[:, None], 2, axis=1)
    path = tmp_path / "stereo.mp3"
    write_in_blocks(path, x)
    decoded, rate = decode(path)
    want = at_rate(x, rate)
    assert len(decoded) == len(want) and snr_db(want[:, 0], decoded[:, 0]) > 15


def test_mono_mp3_stays_mono(tmp_path):
    path = tmp_path / "mono.mp3"
    write_in_blocks(path, stereo_signal(0.5)[:, 0], channels=1)
    (stream,) = ffprobe(path, "-show_streams")["streams"]
    assert (stream["channels"], int(stream["sample_rate"])) == (1, 24_000)
    assert sf.info(path).frames == round(0.5 * 24_000)


def test_a_wav_stores_its_silence_as_holes(tmp_path):
    x = np.zeros((RATE * 20, 2), np.float32)
    x[RATE : RATE * 2] = 0.25
    path = tmp_path / "quiet.wav"
    with AudioWriter(path) as out:
        for i in range(0, len(x), RATE):
            out.write(x[i : i + RATE])
        out.commit()
    stored, rate = sf.read(path, dtype="int16")
    assert rate == RATE and np.array_equal(stored, pcm16(x))
    assert path.stat().st_size == 44 + len(x) * 4
    if hasattr(os.stat_result, "st_blocks"):  # the file system may not do holes: say so
        assert path.stat().st_blocks * 512 < path.stat().st_size / 4


def test_a_wav_written_in_pieces_at_once_is_the_wav_written_in_one_stream(tmp_path):
    # Pieces cut anywhere (in sound too: a WAV has no frames), silence at either end of
    # one, silence at the file's end: each lands where it belongs, nothing between.
    x = stereo_signal(4.0)
    x[: RATE // 2] = 0
    x[-RATE:] = 0
    cuts = [0, 997, RATE, round(2.3 * RATE), len(x) - RATE // 2, len(x)]
    whole, pieces = tmp_path / "whole.wav", tmp_path / "pieces.wav"
    write_in_blocks(whole, x)
    with AudioWriter(pieces) as out:
        assert out.grid == 1
        out.write_pieces([in_blocks(x[a:b]) for a, b in itertools.pairwise(cuts)], cuts[:-1])
        assert out.frames_written == len(x)
        out.commit()
    assert pieces.read_bytes() == whole.read_bytes()
    stored, _ = sf.read(pieces, dtype="int16")
    assert np.array_equal(stored, pcm16(x))


def test_pieces_must_start_where_the_one_before_ends(tmp_path):
    x = stereo_signal(1.0)
    with AudioWriter(tmp_path / "x.wav") as out, pytest.raises(ValueError, match="start at"):
        out.write_pieces([in_blocks(x[:1000]), in_blocks(x[1000:])], [0, 999])
    assert os.listdir(tmp_path) == []
    with AudioWriter(tmp_path / "x.wav") as out, pytest.raises(ValueError, match="the first 0"):
        out.write_pieces([in_blocks(x)], [5])


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


def test_a_ctrl_c_that_leaves_the_block_queue_locked_still_ends_the_writer(tmp_path):
    # A Ctrl-C that lands inside Queue.put can leave the queue's lock held for good;
    # abort() used to put its end marker on that queue and hung (about one Ctrl-C in
    # 60, in test_sigint_while_writing_leaves_nothing). Here the lock is held as such a
    # Ctrl-C leaves it: abort still ends at once, and leaves nothing.
    out = AudioWriter(tmp_path / "session.mp3")
    out.write(np.full((1001, 2), 0.1, np.float32))
    time.sleep(0.2)  # the writer thread waits for the next block
    assert out._blocks.mutex.acquire(timeout=1)
    try:
        aborting = threading.Thread(target=out.abort, daemon=True)  # (a hang stays there)
        aborting.start()
        aborting.join(3)
        assert not aborting.is_alive(), "abort() hung on the queue's lock"
    finally:
        out._blocks.mutex.release()
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
    assert all(ext in message for ext in (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".m4b", ".opus"))
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


CHAPTERED = [".mp3", ".flac", ".ogg", ".opus", ".m4a", ".m4b"]


@pytest.mark.parametrize("ext", CHAPTERED)
def test_chapters_round_trip(tmp_path, ext):
    assert chapter_support(ext)
    path = tmp_path / f"session{ext}"
    write_in_blocks(path, stereo_signal(0.5), CHAPTERS)
    chapters = read_chapters(path)
    assert [title for title, _ in chapters] == [title for title, _ in EXPECTED]
    assert [start for _, start in chapters] == pytest.approx([s for _, s in EXPECTED], abs=5e-4)
    decoded, rate = decode(path)  # the audio survived the tagging
    assert abs(len(decoded) - round(0.5 * rate)) <= 1024


@needs_ffprobe
@pytest.mark.parametrize("ext", CHAPTERED)
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
    sf.write(path, np.full((RATE + 1000, 2), 0.25, np.float32), RATE, subtype="FLOAT")
    track = AmbientTrack(path, total=3 * RATE, fade_in=0, fade_out=0)
    out = read_all(track, 3 * RATE)
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


# -- captions --------------------------------------------------------------------------------


def event(kind: str, start: float, end: float, text: str, role: str, side: str | None = None):
    order = {"chime": 0, "speech": 1, "pulse": 2}[kind]
    return Event(round(start * RATE), order, 0, round(end * RATE), kind, text, 0, side, role)


LONG = (
    "Fingertips side by side next to the spine, on the left side.\n\n"
    "Press in slowly, and make small circles as you move up toward the neck, then glide "
    "back down --> and again.\tAsk how it feels & listen <closely>.\x1b[2J"
)


def test_a_long_cue_becomes_captions_of_two_short_lines_timed_by_their_characters():
    cue = event("speech", 10.0, 25.0, LONG, "say")
    made = captions([cue], 0, RATE * 60)
    assert len(made) > 1
    assert all(1 <= len(c.lines) <= MAX_LINES for c in made)
    assert all(len(line) <= MAX_LINE for c in made for line in c.lines)
    words = " ".join(" ".join(c.lines) for c in made)
    assert words == clean(LONG) and "\n" not in words and "\x1b" not in words
    assert "-->" not in words
    assert made[0].lines[-1].endswith("left side.")  # the first sentence is a caption
    assert made[0].start == cue.start and made[-1].end == cue.end
    for a, b in itertools.pairwise(made):
        assert a.end == b.start  # they tile the cue
    chars = [len(" ".join(c.lines)) + 1 for c in made]
    for c, n in zip(made, chars, strict=True):
        assert abs((c.end - c.start) - (cue.end - cue.start) * n / sum(chars)) <= 1


def test_chimes_and_side_switches_get_bracketed_captions_until_the_speech():
    events = [
        event("chime", 0.0, 3.0, "bell", "step"),
        event("speech", 0.8, 2.0, "Warm the oil.", "announce"),
        event("chime", 30.0, 33.0, "bell-bright", "side", "left"),
        event("speech", 30.8, 32.0, "Now the left side.", "switch"),
        event("chime", 60.0, 64.0, "bell-low", "end"),
    ]
    made = captions(events, 0, RATE * 70, sides={"left": "left", "right": "right"})
    assert [(c.lines, c.start / RATE, c.end / RATE) for c in made] == [
        (("[bell]",), 0.0, 0.8),
        (("Warm the oil.",), 0.8, 2.0),
        (("[switch to your partner's left side]",), 30.0, 30.8),
        (("Now the left side.",), 30.8, 32.0),
        (("[bell]",), 60.0, 61.5),
    ]
    assert [c.lines for c in captions(events, 0, RATE * 70, sides=None)][2] == ("[♪]",)
    assert all(c.lines[0][0] != "[" for c in captions(events, 0, RATE * 70, sounds=False))


@needs_ffprobe
def test_captions_stay_valid_webvtt_whatever_the_text(tmp_path):
    texts = [LONG, "One.\n\n\nTwo.", "A <b>bold</b> & 00:00:01.000 --> 00:00:02.000 cue", "\x00"]
    events = [event("speech", 5.0 * i, 5.0 * i + 4, t, "say") for i, t in enumerate(texts)]
    made = captions(events, 0, RATE * 60)
    vtt = tmp_path / "c.vtt"
    vtt.write_text(webvtt(made), encoding="utf-8")
    srt = tmp_path / "c.srt"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(vtt), str(srt)], check=True)
    blocks = [b.splitlines() for b in srt.read_text(encoding="utf-8").strip().split("\n\n")]
    assert len(blocks) == len(made)  # no cue was cut short or swallowed
    for block, c in zip(blocks, made, strict=True):
        assert block[2:] == list(c.lines)  # ffmpeg unescapes &amp; &lt; &gt;


def test_a_float_file_with_nan_or_infinity_reads_as_finite_samples(tmp_path):
    x = np.full((2 * RATE, 1), 0.25, np.float32)
    x[10], x[20], x[30] = np.nan, np.inf, -np.inf
    path = tmp_path / "odd.wav"
    sf.write(path, x, RATE, subtype="FLOAT")
    mono = read_sound(path)
    assert np.isfinite(mono).all()
    assert (mono[10], mono[20], mono[30], mono[40]) == (0.0, 1.0, -1.0, 0.25)
    track = AmbientTrack(path, total=RATE, fade_in=0, fade_out=0)
    assert np.isfinite(track.read(RATE)).all()
    track.close()


def test_an_mp3_piece_knows_the_size_of_every_frame_it_made(tmp_path):
    # What the join writes the Info frame's seek table from, without reading them again.
    x = bursts(12.0, [0.5, 4.6, 9.3])
    piece = mp3.Mp3Piece(mp3.QUALITIES["normal"], 2)
    for block in in_blocks(x):
        if block.any():
            piece.write(block)
        else:
            piece.skip(len(block))
    data = piece.finish()
    assert mp3.silent_frame(mp3.QUALITIES["normal"], 2) * 20 in data  # silences skipped
    assert list(piece.sizes) == list(mp3.frame_sizes(data)) and sum(piece.sizes) == len(data)
