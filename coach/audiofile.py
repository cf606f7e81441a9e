"""Audio files: the one module that imports soundfile and mutagen.

Three jobs. ``AudioWriter`` streams a rendered session (float32 blocks at ``RATE``) into a
WAV, FLAC, OGG (Vorbis) or MP3 file, embeds chapters, and only ever shows the finished
file: it writes a hidden temporary file next to the target and renames it into place at
``commit()``, so an error or Ctrl-C never leaves a partial file behind. ``read_chapters``
reads the chapters back. ``AmbientTrack`` streams a user's background track, looped,
resampled to ``RATE``, stereo and faded, in constant memory.

Chapters: MP3 gets ID3v2.3 ``CHAP`` frames listed by a top-level, ordered ``CTOC`` frame;
FLAC and OGG get the Vorbis-comment pair ``CHAPTER001=HH:MM:SS.mmm`` and
``CHAPTER001NAME=title`` (what ffmpeg and many players read); WAV gets none.

numpy, soundfile, soxr and mutagen are imported inside functions so that importing this
module stays cheap.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coach.dsp import falling_cosine, raised_cosine, rising
from coach.errors import CoachError, InputError, UsageError
from coach.timetext import milliseconds, stamp
from coach.units import RATE, Samples

if TYPE_CHECKING:
    import numpy as np

#: The output formats, by file extension.
FORMATS: dict[str, str] = {
    ".wav": "WAV (16-bit PCM)",
    ".flac": "FLAC (16-bit)",
    ".ogg": "Ogg Vorbis",
    ".mp3": "MP3",
}

# extension -> (libsndfile format, subtype, extra SoundFile arguments)
_ENCODINGS: dict[str, tuple[str, str, dict[str, Any]]] = {
    ".wav": ("WAV", "PCM_16", {}),
    ".flac": ("FLAC", "PCM_16", {}),
    # libsndfile's Vorbis quality is 1 - compression_level: 0.5 is about 160 kb/s stereo.
    ".ogg": ("OGG", "VORBIS", {"compression_level": 0.5}),
    ".mp3": ("MP3", "MPEG_LAYER_III", {"bitrate_mode": "CONSTANT"}),
}

# MP3 constant bitrate in kb/s, by channel count. libsndfile maps compression_level c to
# 320 - c * (320 - 32) kb/s (MPEG-1 at 32 to 48 kHz); LAME then takes the nearest legal rate.
_MP3_KBPS = {1: 128, 2: 192}

#: What an ambient track must be, in every message about one that is not.
AUDIO_EXPECTED = "an audio file soundfile can read (WAV, FLAC, OGG, MP3)"

# Ambient tracks: read in blocks of this many frames (at the file's own rate); loop with a
# CROSSFADE-second sum-to-one crossfade; estimate the level over the first LEVEL_WINDOW
# seconds; bring that RMS to LEVEL_TARGET dBFS with at most LEVEL_MAX_BOOST dB of gain.
_BLOCK = 8192
CROSSFADE = 0.05
LEVEL_WINDOW = 30.0
LEVEL_TARGET = -30.0
LEVEL_MAX_BOOST = 20.0


def _supported() -> str:
    return ", ".join(FORMATS)


def check_output(path: Path) -> str:
    """Check an output path before any work is done; return its extension, lower case.

    An unknown extension, a missing parent folder or a path that is a folder raise
    UsageError (exit 2); a folder we may not write to raises CoachError (exit 1)."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in FORMATS:
        shown = f"'{path.suffix}'" if path.suffix else "no extension"
        raise UsageError(f"{path}: unknown output format ({shown}); use one of {_supported()}")
    parent = path.parent
    if not parent.exists():
        raise UsageError(f"{path}: the folder {parent} does not exist; create it first")
    if not parent.is_dir():
        raise UsageError(f"{path}: {parent} is not a folder")
    if path.is_dir():
        raise UsageError(f"{path}: is a folder; give a file name such as {path / 'session'}{ext}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CoachError(f"{path}: cannot write to the folder {parent}; choose another folder")
    _check_encoder(path, ext)
    return ext


def _check_encoder(path: Path, ext: str) -> None:
    """This machine's libsndfile can write the format (MP3 needs libsndfile 1.1 or newer,
    and some Linux builds leave it out)."""
    fmt, subtype, _ = _ENCODINGS[ext]
    try:
        import soundfile

        available = subtype in soundfile.available_subtypes(fmt)
    except (ImportError, OSError) as e:
        raise CoachError(f"cannot write audio files: soundfile/libsndfile is missing ({e})") from e
    if not available:
        others = ", ".join(x for x in FORMATS if x != ext)
        raise CoachError(
            f"{path}: this machine's libsndfile cannot write {FORMATS[ext]}; use one of {others}"
        )


@dataclass(frozen=True)
class Chapter:
    """A named part of a session, in samples at ``RATE`` (``end`` exclusive)."""

    title: str
    start: Samples
    end: Samples

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise ValueError(
                f"chapter {self.title!r}: need 0 <= start <= end, got {self.start}, {self.end}"
            )


def chapter_support(ext: str) -> bool:
    """Whether files with this extension can carry chapters (MP3, FLAC, OGG; not WAV)."""
    return ext.lower() in (".mp3", ".flac", ".ogg")


class AudioWriter:
    """Stream a session into an audio file that appears only when complete.

    ::

        with AudioWriter(Path("session.mp3")) as out:
            for block in blocks:          # float32, shape (frames, channels), at RATE
                out.write(block)
            out.add_chapters(chapters)
            out.commit()

    Encoding and writing happen in a thread of the writer's own, so the caller can make
    the next block meanwhile; a failure there surfaces at the next write() or commit().
    The data goes to a hidden temporary file in the target's folder
    (``.session.mp3.coach-XXXXXXXX.tmp``); ``commit()`` closes it, embeds the chapters,
    syncs it to disk and renames it over the target. Leaving the ``with`` block without
    ``commit()`` (an exception, Ctrl-C) deletes the temporary file and leaves any existing
    target untouched. Write errors (a full disk, permissions) raise CoachError.
    """

    def __init__(self, path: Path, channels: int = 2) -> None:
        self.path = Path(path)
        self.ext = check_output(self.path)
        if channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2, got {channels}")
        self.channels = channels
        self.frames_written: int = 0
        self._chapters: list[Chapter] = []
        self._file: Any = None
        self._committed = False
        self._pcm16 = _ENCODINGS[self.ext][1] == "PCM_16"
        self._tmp = self._create_temp()
        try:
            self._file = self._open_encoder()
        except BaseException:
            self._discard()
            raise
        self._blocks: queue.Queue[Any] = queue.Queue(maxsize=4)
        self._failure: str | None = None
        self._drainer = threading.Thread(target=self._drain, name="coach-writer", daemon=True)
        self._drainer.start()

    def _drain(self) -> None:
        """The writer thread: hands blocks to the encoder until None arrives. After a
        failure it keeps taking blocks (and drops them), so write() never blocks."""
        while (data := self._blocks.get()) is not None:
            if self._failure is None:
                try:
                    self._file.write(data)
                except (OSError, RuntimeError, AssertionError) as e:
                    self._failure = self._encoder_error(e)

    def _finish_drain(self) -> None:
        if self._drainer.is_alive():
            self._blocks.put(None)
            self._drainer.join()

    def _check(self) -> None:
        if self._failure is not None:
            detail = self._failure
            self.abort()
            raise CoachError(f"cannot write {self.path}: {detail}")

    def __enter__(self) -> AudioWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._committed:
            self.abort()

    def write(self, block: np.ndarray) -> None:
        """Append a block of samples, shape (frames, channels) (or (frames,) when mono),
        values in [-1, 1]; anything outside is clipped, NaN becomes 0."""
        import numpy as np

        if self._file is None:
            raise RuntimeError("AudioWriter.write after commit or abort")
        data = np.asarray(block, dtype=np.float32)
        if data.ndim == 1 and self.channels == 1:
            data = data[:, None]
        if data.ndim != 2 or data.shape[1] != self.channels:
            raise ValueError(
                f"expected a block of shape (frames, {self.channels}), got {data.shape}"
            )
        if len(data) == 0:
            return
        if not np.isfinite(data).all():
            data = np.nan_to_num(data, nan=0.0, posinf=1.0, neginf=-1.0)
        if self._pcm16 and not data.any():
            # Most of a session is silence between cues: nothing to quantize.
            data = np.zeros(data.shape, dtype=np.int16)
        elif self._pcm16:
            # Quantize here, to the nearest step: libsndfile's own float to 16-bit WAV
            # conversion rounds down (floor), its FLAC one to nearest. k/32768 is what any
            # reader (soundfile too) gives back for k. In place: this runs on every sample.
            scaled = np.multiply(data, 32768, dtype=np.float32)
            np.rint(scaled, out=scaled)
            np.clip(scaled, -32768, 32767, out=scaled)
            data = scaled.astype(np.int16)
        else:
            data = np.clip(data, -1.0, 1.0)
        self._check()
        self._blocks.put(np.ascontiguousarray(data))
        self.frames_written += len(data)

    def add_chapters(self, chapters: list[Chapter]) -> None:
        """Chapters to embed at ``commit()``, in any order. Formats without chapters
        (WAV) ignore them: check ``chapter_support`` to tell the user."""
        self._chapters.extend(chapters)

    def commit(self) -> None:
        """Finish the file: close the encoder, embed chapters, sync, rename into place."""
        if self._file is None:
            raise RuntimeError("AudioWriter.commit after commit or abort")
        self._finish_drain()
        self._check()
        try:
            file, self._file = self._file, None
            try:
                file.close()
            except (OSError, RuntimeError) as e:
                raise CoachError(f"cannot write {self.path}: {self._encoder_error(e, file)}") from e
            if self._chapters and chapter_support(self.ext):
                self._embed_chapters()
            _fsync_file(self._tmp)
            os.replace(self._tmp, self.path)
        except OSError as e:
            self._discard()
            raise CoachError(f"cannot write {self.path}: {e.strerror or e}") from e
        except BaseException:
            self._discard()
            raise
        self._committed = True
        _fsync_dir(self.path.parent)

    def abort(self) -> None:
        """Give up: close and delete the temporary file. Safe to call more than once."""
        if self._committed:
            return
        if hasattr(self, "_drainer"):
            self._finish_drain()
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(Exception):
                file.close()
        self._discard()

    # -- internals --------------------------------------------------------------------------

    def _create_temp(self) -> Path:
        """Create an empty, hidden temporary file next to the target (mode 0666 & ~umask,
        like any new file) and return its path."""
        for _ in range(100):
            tmp = self.path.with_name(f".{self.path.name}.coach-{secrets.token_hex(4)}.tmp")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                continue
            except OSError as e:
                raise CoachError(f"cannot write {self.path}: {e.strerror or e}") from e
            os.close(fd)
            return tmp
        raise CoachError(f"cannot write {self.path}: no free temporary file name")

    def _open_encoder(self) -> Any:
        import soundfile

        fmt, subtype, extra = _ENCODINGS[self.ext]
        if self.ext == ".mp3":
            kbps = _MP3_KBPS[self.channels]
            extra = {**extra, "compression_level": (320 - kbps) / (320 - 32)}
        try:
            # The format comes from the real extension: the temporary name ends in ".tmp".
            return soundfile.SoundFile(
                self._tmp, "w", RATE, self.channels, subtype, format=fmt, **extra
            )
        except (OSError, RuntimeError) as e:
            detail = str(getattr(e, "error_string", e)).rstrip(".")
            raise CoachError(f"cannot write {self.path}: {detail}") from e

    def _encoder_error(self, error: BaseException, file: Any = None) -> str:
        """libsndfile's own description of a failure ("System error : No space left on
        device."), which says more than the exception soundfile raises."""
        file = file if file is not None else self._file
        try:
            import soundfile

            text = soundfile._ffi.string(soundfile._snd.sf_strerror(file._file)).decode()
            if text and text != "No Error.":
                return text.rstrip(".")
        except Exception:
            pass
        return str(error).rstrip(".") or type(error).__name__

    def _discard(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)

    def _embed_chapters(self) -> None:
        chapters = sorted(self._chapters, key=lambda c: (c.start, c.end))
        try:
            if self.ext == ".mp3":
                _write_id3_chapters(self._tmp, chapters)
            else:
                _write_vorbis_chapters(self._tmp, self.ext, chapters)
        except OSError:
            raise
        except Exception as e:  # mutagen.MutagenError and its kin
            raise CoachError(f"cannot add chapters to {self.path}: {e}") from e


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)  # Windows wants write access to flush a file
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable; best effort (not every OS or file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_id3_chapters(path: Path, chapters: list[Chapter]) -> None:
    from mutagen.id3 import CHAP, CTOC, ID3, TIT2, CTOCFlags, ID3NoHeaderError

    try:
        tags = ID3(path)
    except ID3NoHeaderError:
        tags = ID3()
    tags.delall("CHAP")
    tags.delall("CTOC")
    ids = [f"chp{i}" for i in range(len(chapters))]
    tags.add(
        CTOC(
            element_id="toc",
            flags=CTOCFlags.TOP_LEVEL | CTOCFlags.ORDERED,
            child_element_ids=ids,
            sub_frames=[],
        )
    )
    for element_id, chapter in zip(ids, chapters, strict=True):
        tags.add(
            CHAP(
                element_id=element_id,
                start_time=milliseconds(chapter.start),
                end_time=milliseconds(chapter.end),
                # 0xFFFFFFFF: no byte offsets, the times are what counts.
                start_offset=0xFFFFFFFF,
                end_offset=0xFFFFFFFF,
                sub_frames=[TIT2(encoding=3, text=[chapter.title])],
            )
        )
    # ID3v2.3: what the most players read (mutagen turns the UTF-8 text into UTF-16).
    tags.save(path, v2_version=3)
    _sort_chap_frames(path)


def _sort_chap_frames(path: Path) -> None:
    """Put the tag's CHAP frames in order of start time, in place.

    mutagen writes frames ordered by their size (quodlibet/mutagen#506), and ffmpeg (5.1)
    lists ID3 chapters in file order, so a longer title would come out of order there
    (and in what ffmpeg converts the file to). Swapping whole frames keeps the tag's size.
    Anything unexpected (unsynchronisation, an extended header, flagged frames) leaves the
    tag as mutagen wrote it: still valid, with the CTOC frame giving the order."""
    with open(path, "r+b") as f:
        header = f.read(10)
        if len(header) < 10 or header[:3] != b"ID3" or header[3] not in (3, 4) or header[5] & 0xC0:
            return
        body = f.read(_syncsafe(header[6:10]))
        frames: list[bytes] = []
        pos = 0
        while pos + 10 <= len(body) and body[pos] != 0:  # a zero byte starts the padding
            raw = body[pos + 4 : pos + 8]
            size = _syncsafe(raw) if header[3] == 4 else int.from_bytes(raw, "big")
            frame = body[pos : pos + 10 + size]
            if len(frame) < 10 + size:
                return
            if frame[:4] == b"CHAP" and (frame[8:10] != b"\0\0" or b"\0" not in frame[10:]):
                return
            frames.append(frame)
            pos += len(frame)

        def start(frame: bytes) -> int:
            end_of_id = frame.index(b"\0", 10)
            return int.from_bytes(frame[end_of_id + 1 : end_of_id + 5], "big")

        ordered = iter(sorted((fr for fr in frames if fr[:4] == b"CHAP"), key=start))
        new = b"".join(next(ordered) if fr[:4] == b"CHAP" else fr for fr in frames)
        if new != body[:pos]:
            f.seek(10)
            f.write(new)


def _syncsafe(raw: bytes) -> int:
    return (raw[0] & 0x7F) << 21 | (raw[1] & 0x7F) << 14 | (raw[2] & 0x7F) << 7 | raw[3] & 0x7F


def _vorbis_file(path: Path, ext: str) -> Any:
    if ext == ".flac":
        from mutagen.flac import FLAC

        return FLAC(path)
    from mutagen.oggvorbis import OggVorbis

    return OggVorbis(path)


def _write_vorbis_chapters(path: Path, ext: str, chapters: list[Chapter]) -> None:
    audio = _vorbis_file(path, ext)
    if audio.tags is None:
        audio.add_tags()
    # Iterating a Vorbis comment gives (key, value) pairs; deleting a key is case-blind.
    for key in {k.upper() for k, _ in audio.tags if _VORBIS_CHAPTER.fullmatch(k.upper())}:
        del audio.tags[key]
    # ffmpeg reads at most three digits (CHAPTER001..CHAPTER999).
    for number, chapter in enumerate(chapters[:999], start=1):
        audio.tags[f"CHAPTER{number:03d}"] = stamp(chapter.start)
        audio.tags[f"CHAPTER{number:03d}NAME"] = chapter.title
    audio.save()


_VORBIS_CHAPTER = re.compile(r"CHAPTER(\d+)(NAME)?")
_VORBIS_TIME = re.compile(r"(\d+):(\d{1,2}):(\d{1,2})(?:\.(\d+))?")


def read_chapters(path: Path) -> list[tuple[str, float]]:
    """The chapters stored in an audio file written by ``AudioWriter``, as (title, start
    in seconds), in order. WAV files (and files without chapters) give ``[]``."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in FORMATS:
        raise UsageError(f"{path}: unknown audio format; use one of {_supported()}")
    if not path.is_file():
        raise InputError("no such file", file=str(path))
    if not chapter_support(ext):
        return []
    try:
        if ext == ".mp3":
            return _read_id3_chapters(path)
        return _read_vorbis_chapters(path, ext)
    except OSError as e:
        raise InputError(f"cannot read it: {e.strerror or e}", file=str(path)) from e
    except Exception as e:  # mutagen.MutagenError: not the format its name says
        raise InputError(f"not a valid {FORMATS[ext]} file ({e})", file=str(path)) from e


def _read_id3_chapters(path: Path) -> list[tuple[str, float]]:
    from mutagen.id3 import ID3, CTOCFlags, ID3NoHeaderError

    try:
        tags = ID3(path)
    except ID3NoHeaderError:
        return []
    chaps = {frame.element_id: frame for frame in tags.getall("CHAP")}
    order = sorted(chaps, key=lambda i: chaps[i].start_time)
    for toc in tags.getall("CTOC"):
        if toc.flags & CTOCFlags.TOP_LEVEL and all(i in chaps for i in toc.child_element_ids):
            order = list(toc.child_element_ids)
            break
    result = []
    for element_id in order:
        frame = chaps[element_id]
        titles = [str(sub.text[0]) for sub in frame.sub_frames.getall("TIT2") if sub.text]
        result.append((titles[0] if titles else element_id, frame.start_time / 1000))
    return result


def _read_vorbis_chapters(path: Path, ext: str) -> list[tuple[str, float]]:
    audio = _vorbis_file(path, ext)
    starts: dict[int, float] = {}
    names: dict[int, str] = {}
    for key, value in audio.tags or []:
        match = _VORBIS_CHAPTER.fullmatch(key.upper())
        if not match:
            continue
        number = int(match.group(1))
        if match.group(2):
            names[number] = value
        elif time := _VORBIS_TIME.fullmatch(value.strip()):
            h, m, s, frac = time.groups()
            starts[number] = (
                int(h) * 3600
                + int(m) * 60
                + int(s)
                + (int(frac) / 10 ** len(frac) if frac else 0.0)
            )
    return [(names.get(n, f"Chapter {n}"), starts[n]) for n in sorted(starts)]


class AmbientTrack:
    """A user's background track as a stream at ``RATE``, stereo, ``total`` samples long.

    The file is read in blocks and resampled on the fly, so memory stays small whatever the
    lengths. When the file ends it starts again, its last ``CROSSFADE`` seconds crossfaded
    into its first (no click). The stream fades in over ``fade_in`` samples, out over the
    last ``fade_out`` samples before ``total``, and is silent after ``total``.

    ``level`` is the linear gain that brings the track's RMS over its first
    ``LEVEL_WINDOW`` seconds to ``LEVEL_TARGET`` dBFS (20·log10 RMS, so a full-scale sine
    is -3 dBFS), at most ``LEVEL_MAX_BOOST`` dB, 1.0 for digital silence: roughly -30 LUFS
    for typical ambience. ``read()`` does not apply it; the mixer does, with its ducking.

    Mono files play on both sides; files with more than two channels are down-mixed to
    their average on both sides (channel orders differ between formats).
    Raises InputError (exit 2) for a missing, unreadable or empty file.
    """

    def __init__(self, path: Path, total: Samples, fade_in: Samples, fade_out: Samples) -> None:
        if total < 0 or fade_in < 0 or fade_out < 0:
            raise ValueError("total, fade_in and fade_out must not be negative")
        self.path = Path(path)
        self.total = total
        self.fade_in = fade_in
        self.fade_out = fade_out
        self._pos: Samples = 0
        self._file = _open_ambient(self.path)
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        import numpy as np

        self.samplerate: int = self._file.samplerate
        # Level, over the first LEVEL_WINDOW seconds; that pass also tells whether the file
        # is empty, and its exact length when it is shorter than the window.
        window = round(LEVEL_WINDOW * self.samplerate)
        seen, energy = 0, 0.0
        while seen < window:
            block = self._read_file(min(_BLOCK, window - seen))
            if len(block) == 0:
                break
            seen += len(block)
            energy += float(np.square(block, dtype=np.float64).sum())
        if seen == 0:
            raise InputError(
                f"the file has no samples; expected {AUDIO_EXPECTED} with sound",
                file=str(self.path),
            )
        rms = (energy / (2 * seen)) ** 0.5
        if rms > 0:
            gain_db = min(LEVEL_TARGET - 20 * np.log10(rms), LEVEL_MAX_BOOST)
            self.level: float = float(10 ** (gain_db / 20))
        else:
            self.level = 1.0
        # The loop: the first _xfade frames are kept, to crossfade the file's end into.
        self._xfade = min(round(CROSSFADE * self.samplerate), seen // 2)
        self._seek_start()
        self._head = self._read_exact(self._xfade)
        self._ramp = rising(len(self._head))
        self._pending = self._head  # the first pass plays the head as it is
        self._pass_frames = 0  # frames read in this pass after the head
        self._resampler: Any = None
        if self.samplerate != RATE:
            import soxr

            self._resampler = soxr.ResampleStream(
                self.samplerate, RATE, 2, dtype="float32", quality="HQ"
            )
        self._out: list[np.ndarray] = []  # resampled frames at RATE, not yet returned
        self._out_frames = 0

    def read(self, frames: int) -> np.ndarray:
        """The next ``frames`` samples, shape (frames, 2), float32 (without ``level``)."""
        import numpy as np

        if frames < 0:
            raise ValueError("frames must not be negative")
        out = np.zeros((frames, 2), dtype=np.float32)
        active = max(0, min(frames, self.total - self._pos))
        if active:
            out[:active] = self._take(active)
            gain = self._fade_gain(self._pos, active)
            if gain is not None:
                out[:active] *= gain[:, None]
        self._pos += frames
        if self._pos >= self.total:
            self.close()
        return out

    def close(self) -> None:
        """Close the file (reading past ``total`` needs no file). Safe to call twice."""
        file, self._file = self._file, None
        if file is not None:
            file.close()

    def __enter__(self) -> AmbientTrack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------

    def _fade_gain(self, start: Samples, n: int) -> np.ndarray | None:
        """Fade gains for output samples start .. start+n, or None if all are 1."""
        import numpy as np

        gain = None
        if start < self.fade_in:
            i = np.arange(start, start + n, dtype=np.float64)
            gain = np.where(i < self.fade_in, raised_cosine(np.pi * i / self.fade_in), 1.0)
        fade_from = self.total - self.fade_out
        if self.fade_out and start + n > fade_from:
            i = np.arange(start, start + n, dtype=np.float64)
            # 1 just before the fade, exactly 0 at the last sample (total - 1).
            down = np.where(
                i < fade_from, 1.0, falling_cosine(np.pi * (i - fade_from + 1) / self.fade_out)
            )
            gain = down if gain is None else gain * down
        return None if gain is None else gain.astype(np.float32)

    def _take(self, n: int) -> np.ndarray:
        import numpy as np

        while self._out_frames < n:
            block = self._next_source_block()
            if self._resampler is not None:
                block = self._resampler.resample_chunk(block)
            if len(block):
                self._out.append(block)
                self._out_frames += len(block)
        result = np.concatenate(self._out) if len(self._out) > 1 else self._out[0]
        rest = result[n:]
        self._out = [rest] if len(rest) else []
        self._out_frames = len(rest)
        return result[:n]

    def _next_source_block(self) -> np.ndarray:
        """The looped file at its own rate, a block at a time: each pass holds back its
        last _xfade frames, which are crossfaded into the kept head at the end of the file."""
        import numpy as np

        block = self._read_file(_BLOCK)
        if len(block):
            self._pass_frames += len(block)
            data = np.concatenate([self._pending, block])
            keep = min(self._xfade, len(data))
            self._pending = data[len(data) - keep :]
            return data[: len(data) - keep]
        # End of file: the held-back tail fades out while the head fades in (sum to one),
        # then the file goes on right after the head.
        if self._pass_frames == 0 and not len(self._pending):
            # A pass that gave nothing: the file was emptied or cut while we played it.
            raise InputError(
                "the audio file could no longer be read (was it changed?)", file=str(self.path)
            )
        tail = self._pending
        n = min(len(tail), len(self._head))
        ramp = self._ramp if n == len(self._ramp) else rising(n)
        joint = (
            tail[len(tail) - n :] * (1 - ramp)[:, None] + self._head[:n] * ramp[:, None]
        ).astype(np.float32)
        self._seek_start()
        self._read_exact(self._xfade)  # skip the head, already played in the crossfade
        self._pending = joint[:0]
        self._pass_frames = 0
        return np.concatenate([tail[: len(tail) - n], joint])

    def _read_file(self, frames: int) -> np.ndarray:
        """Up to ``frames`` frames as float32 stereo; fewer (or none) at the end of file."""
        import soundfile

        try:
            data = self._file.read(frames, dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError, OSError) as e:
            raise InputError(f"cannot read it as audio ({e})", file=str(self.path)) from e
        return _to_stereo(data)

    def _read_exact(self, frames: int) -> np.ndarray:
        import numpy as np

        parts, got = [], 0
        while got < frames:
            block = self._read_file(frames - got)
            if not len(block):
                break
            parts.append(block)
            got += len(block)
        return np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.float32)

    def _seek_start(self) -> None:
        try:
            self._file.seek(0)
        except (RuntimeError, OSError) as e:
            raise InputError(f"cannot read it as audio ({e})", file=str(self.path)) from e


#: The longest a recorded clip or chime in a voice pack may be.
CLIP_MAX_SECONDS = 120


def probe_sound(path: Path) -> float:
    """Check that `path` is a readable audio file of at most CLIP_MAX_SECONDS; return its
    length in seconds. Raises InputError saying what is wrong."""
    with _open_ambient(path) as f:
        if f.frames == 0:
            raise InputError("holds no samples", file=str(path))
        seconds = f.frames / f.samplerate
    if seconds > CLIP_MAX_SECONDS:
        raise InputError(
            f"is {seconds:.0f} s long; a clip is at most {CLIP_MAX_SECONDS} s", file=str(path)
        )
    return seconds


def read_sound(path: Path) -> np.ndarray:
    """A short audio file (a recorded clip, a chime) as float32 mono samples at RATE."""
    import numpy as np
    import soxr

    probe_sound(path)
    with _open_ambient(path) as f:
        data = f.read(dtype="float32", always_2d=True)
        rate = f.samplerate
    mono = data.mean(axis=1, dtype=np.float32)
    if rate != RATE:
        mono = soxr.resample(mono, rate, RATE, quality="HQ").astype(np.float32)
    return mono


def _open_ambient(path: Path) -> Any:
    """The file opened with soundfile, or an InputError that says what is wrong."""
    if not path.exists():
        raise InputError(f"no such file; expected {AUDIO_EXPECTED}", file=str(path))
    if path.is_dir():
        raise InputError(f"is a folder; expected {AUDIO_EXPECTED}", file=str(path))
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise InputError(f"cannot read it: {e.strerror or e}", file=str(path)) from e
    import soundfile

    try:
        return soundfile.SoundFile(path)
    except (RuntimeError, OSError, TypeError, ValueError) as e:
        raise InputError(f"not {AUDIO_EXPECTED}", file=str(path)) from e


def _to_stereo(data: np.ndarray) -> np.ndarray:
    import numpy as np

    channels = data.shape[1]
    if channels == 2:
        return data
    mono = data[:, 0] if channels == 1 else data.mean(axis=1, dtype=np.float32)
    return np.repeat(mono[:, None], 2, axis=1)
