"""Encoders: samples in, one audio format's bytes out, into a file coach.writer opened.

Every encoder makes one or more *pieces*, each a stream of blocks shaped (frames,
channels) — int16 when the encoder's ``pcm16`` is true, else float32 within [-1, 1] —
with ``skip(frames)`` standing for that much digital silence; ``piece(start)`` is told
where in the file its piece begins. ``finish(pieces)`` ends the file; ``abort()`` gives
up. An encoder whose ``grid`` is not None can encode pieces at the same time, each
starting on that grid in a stretch of silence: MP3 joins them, WAV writes each at its
own place in the file; the others take one piece. Encoders also embed the tags and
chapters they are given. A write error (a full disk, a file size limit) raises EncodeError with the
operating system's own words. They know nothing of temporary names: coach.writer does.

| format      | through                    | tags and chapters          |
| ----------- | -------------------------- | -------------------------- |
| .wav        | this module (16-bit PCM)   | none                       |
| .flac, .ogg | libsndfile (soundfile)     | coach.tags, coach.chapters |
| .mp3        | lameenc (coach.mp3)        | coach.tags, coach.chapters |
| .m4a, .m4b  | PyAV: AAC in MP4           | the muxer (coach.avfiles)  |
| .opus       | PyAV: Opus in Ogg          | the muxer (coach.avfiles)  |

soundfile is imported inside functions so that importing this module stays cheap.
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from coach import chapters as chapter_files
from coach import tags as tag_files
from coach.chapters import Chapter
from coach.errors import CoachError, UsageError
from coach.tags import Tags
from coach.units import RATE, Samples

if TYPE_CHECKING:
    import numpy as np

#: A --quality: a name, or a bitrate in kb/s for the formats that take one.
Quality = str | int
QUALITY_NAMES = ("low", "normal", "high")


@dataclass(frozen=True)
class Metadata:
    """What a file says about itself besides its sound."""

    tags: Tags | None = None
    chapters: Sequence[Chapter] = field(default_factory=tuple)


class EncodeError(Exception):
    """Encoding or writing failed; the message says why ("No space left on device")."""


class FormatUnavailable(CoachError):
    """This machine's libraries cannot encode the format (exit 1)."""


class Piece(Protocol):
    def write(self, data: np.ndarray) -> None: ...

    def skip(self, frames: int) -> None: ...


class Encoder(Protocol):
    pcm16: bool
    grid: Samples | None

    def piece(self, start: Samples) -> Piece: ...

    def finish(self, pieces: Sequence[Piece], lengths: Sequence[Samples]) -> None: ...

    def abort(self) -> None: ...


def open_encoder(path: Path, ext: str, channels: int, quality: Quality, meta: Metadata) -> Encoder:
    """The encoder for `ext`, writing into `path` (the format comes from `ext`, not from
    the path's name). Raises UsageError for a quality the format does not take,
    EncodeError if the file cannot be written."""
    if ext == ".wav":
        return WavEncoder(path, channels)
    if ext in (".flac", ".ogg"):
        return SndfileEncoder(path, ext, channels, quality, meta)
    if ext == ".mp3":
        from coach.mp3 import Mp3Encoder

        return Mp3Encoder(path, channels, quality, meta)
    from coach.avfiles import AvEncoder

    return AvEncoder(path, ext, channels, quality, meta)


def preload(ext: str) -> None:
    """Import what encoding `ext` files needs (in a process that has time for it before
    its first file); nothing for a library that is missing."""
    import contextlib

    with contextlib.suppress(ImportError, OSError):
        import numpy  # noqa: F401

        if ext == ".mp3":
            from coach import mp3

            mp3.preload()
        elif ext in _SNDFILE:
            import soundfile  # noqa: F401
        elif ext != ".wav":
            from coach import avfiles

            avfiles.preload()


def check_available(ext: str, name: str) -> None:
    """Raise FormatUnavailable unless this machine can write `ext` files (`name` is the
    format's name for the message), CoachError if a library is missing altogether."""
    if ext == ".wav":
        return
    if ext in _SNDFILE:
        fmt, subtype = _SNDFILE[ext]
        try:
            import soundfile

            available = subtype in soundfile.available_subtypes(fmt)
        except (ImportError, OSError) as e:
            raise CoachError(
                f"cannot write audio files: soundfile/libsndfile is missing ({e})"
            ) from e
        if not available:
            raise FormatUnavailable(f"this machine's libsndfile cannot write {name}")
        return
    library = "lameenc" if ext == ".mp3" else "av"
    try:
        __import__(library)
    except ImportError as e:
        raise FormatUnavailable(
            f"cannot write {name}: the Python package {library!r} is missing "
            f"(pip install {'lameenc' if ext == '.mp3' else 'av'})"
        ) from e


def check_quality(ext: str, quality: Quality) -> None:
    """Raise UsageError for a quality `ext` files cannot have."""
    if isinstance(quality, str):
        if quality not in QUALITY_NAMES:
            raise UsageError(f"--quality {quality!r}: use low, normal, high or a bitrate")
        return
    if ext in (".wav", ".flac", ".ogg"):
        raise UsageError(
            f"--quality {quality}: a bitrate is for .mp3, .m4a, .m4b and .opus; "
            f"use low, normal or high for {ext}"
        )
    if ext == ".mp3":
        from coach.mp3 import settings_for

        try:
            settings_for(quality)
        except ValueError as e:
            raise UsageError(f"--quality {quality}: {e}") from None
    elif not 6 <= quality <= 320:
        raise UsageError(f"--quality {quality}: use a bitrate from 6 to 320 kb/s")


# -- WAV ---------------------------------------------------------------------------------


class WavEncoder:
    """16-bit PCM WAV, written directly: a header and the samples. Silence is skipped
    over rather than written, so the file system stores the long quiet stretches
    between cues as holes (they read back as zeros) and writes a fraction of the bytes.
    Every piece writes at its own place in the file (``pwrite``), so pieces are written
    at the same time, on any sample (``grid`` 1)."""

    pcm16 = True
    grid: Samples | None = 1

    def __init__(self, path: Path, channels: int) -> None:
        self.channels = channels
        self.align = 2 * channels  # bytes a frame
        try:
            self._file = open(path, "r+b")  # noqa: SIM115 - closed in finish() or abort()
        except OSError as e:
            raise EncodeError(e.strerror or str(e)) from e
        self.fd = self._file.fileno()

    def piece(self, start: Samples) -> WavPiece:
        return WavPiece(self, start)

    def _header(self, frames: int) -> bytes:
        data = frames * self.align
        return struct.pack(
            "<4sI4s4sIHHIIHH4sI",
            b"RIFF",
            36 + data,
            b"WAVE",
            b"fmt ",
            16,
            1,  # PCM
            self.channels,
            RATE,
            RATE * self.align,
            self.align,
            16,
            b"data",
            data,
        )

    def finish(self, pieces: Sequence[Piece], lengths: Sequence[Samples]) -> None:
        frames = sum(lengths)
        size = _WAV_HEADER + frames * self.align
        if size >= 1 << 32:
            self.abort()
            raise EncodeError("longer than a WAV file can hold (4 GB); use .flac")
        try:
            with self._file:
                os.ftruncate(self.fd, size)  # the silence at the end, as a hole too
                _pwrite_all(self.fd, self._header(frames), 0)
        except OSError as e:
            raise EncodeError(e.strerror or str(e)) from e

    def abort(self) -> None:
        self._file.close()


#: Bytes before a WAV file's samples.
_WAV_HEADER = 44


class WavPiece:
    """The samples of a WAV file from frame `start` on, written where they belong."""

    def __init__(self, wav: WavEncoder, start: Samples) -> None:
        self.wav = wav
        self.offset = _WAV_HEADER + start * wav.align
        self._flushed = self.offset

    def write(self, data: np.ndarray) -> None:
        try:
            _pwrite_all(self.wav.fd, data.data.cast("B"), self.offset)
        except OSError as e:
            raise EncodeError(e.strerror or str(e)) from e
        self.offset += len(data) * self.wav.align
        if self.offset - self._flushed >= _WRITEBACK:
            _start_writeback(self.wav.fd, self._flushed, self.offset - self._flushed)
            self._flushed = self.offset

    def skip(self, frames: int) -> None:
        self.offset += frames * self.wav.align


#: Bytes a WAV piece writes before it has the kernel start writing them to the disk, so
#: that the sync at commit waits for the last few only, not for the whole file.
_WRITEBACK = 8 << 20
_SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: start writing, do not wait


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Have the kernel start writing this range of the file to the disk, without waiting
    (Linux's sync_file_range); nothing where there is no such call."""
    call = _sync_file_range()
    if call is not None:
        call(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # a failure: commit's fsync tells


@functools.cache
def _sync_file_range() -> Any:
    import ctypes

    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return call


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of `data` at `offset` (a short write is continued, an error raised)."""
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


# -- libsndfile: FLAC and Ogg Vorbis ------------------------------------------------------

# extension -> (libsndfile format, subtype)
_SNDFILE: dict[str, tuple[str, str]] = {".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS")}

# Vorbis: libsndfile's quality is 1 - compression_level, Vorbis's own -q divided by 10;
# q2 (about 96 kb/s stereo) carries speech and bells cleanly.
_VORBIS_LEVEL = {"low": 0.9, "normal": 0.8, "high": 0.6}


class _Sink:
    """The file object libsndfile writes through. An OSError is kept, not raised: it
    would otherwise vanish inside libsndfile's callback, which sees only a short write."""

    def __init__(self, file: Any) -> None:
        self.file = file
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            written: int = self.file.write(data)
        except OSError as e:
            self.error = self.error or e
            return 0
        return written

    def read(self, size: int = -1) -> bytes:
        data: bytes = self.file.read(size)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        position: int = self.file.seek(offset, whence)
        return position

    def tell(self) -> int:
        position: int = self.file.tell()
        return position


class SndfileEncoder:
    """FLAC (16-bit) or Ogg Vorbis through libsndfile; tags and chapters added after."""

    grid: Samples | None = None

    def __init__(
        self, path: Path, ext: str, channels: int, quality: Quality, meta: Metadata
    ) -> None:
        import soundfile

        self.path, self.ext, self.meta = path, ext, meta
        fmt, subtype = _SNDFILE[ext]
        self.pcm16 = subtype == "PCM_16"
        self._zeros: Any = None
        extra: dict[str, Any] = {}
        if ext == ".ogg":
            extra["compression_level"] = _VORBIS_LEVEL[str(quality)]
        try:
            self._raw = open(path, "w+b")  # noqa: SIM115 - closed in finish() or abort()
        except OSError as e:
            raise EncodeError(e.strerror or str(e)) from e
        self._sink = _Sink(self._raw)
        try:
            self._file = soundfile.SoundFile(
                self._sink, "w", RATE, channels, subtype, format=fmt, **extra
            )
        except (OSError, RuntimeError) as e:
            self._raw.close()
            raise EncodeError(self._why(e)) from e
        self.channels = channels

    def piece(self, start: Samples) -> SndfileEncoder:
        return self

    def write(self, data: np.ndarray) -> None:
        try:
            self._file.write(data)
        except (OSError, RuntimeError, AssertionError) as e:
            raise EncodeError(self._why(e)) from e

    def skip(self, frames: int) -> None:
        import numpy as np

        dtype = np.int16 if self.pcm16 else np.float32
        if self._zeros is None or len(self._zeros) < frames:
            self._zeros = np.zeros((frames, self.channels), dtype=dtype)
        self.write(self._zeros[:frames])

    def finish(self, pieces: Sequence[Piece], lengths: Sequence[Samples]) -> None:
        try:
            try:
                self._file.close()
            except (OSError, RuntimeError, AssertionError) as e:
                raise EncodeError(self._why(e)) from e
            if self._sink.error is not None:
                raise EncodeError(self._why(self._sink.error))
        finally:
            self._raw.close()
        embed(self.path, self.ext, self.meta)

    def abort(self) -> None:
        try:
            self._file.close()
        except Exception:
            pass
        finally:
            self._raw.close()

    def _why(self, error: BaseException) -> str:
        """The operating system's reason when a write failed, else libsndfile's."""
        if self._sink.error is not None:
            os_error = self._sink.error
            return str(os_error.strerror or os_error)
        text = str(getattr(error, "error_string", "") or error).rstrip(".")
        return text or type(error).__name__


def embed(path: Path, ext: str, meta: Metadata) -> None:
    """Write the tags and chapters of a finished MP3, FLAC or Ogg file. Raises OSError,
    or EncodeError when mutagen cannot make sense of the file."""
    try:
        if meta.tags is not None:
            tag_files.write_tags(path, ext, meta.tags)
        if meta.chapters:
            chapter_files.write_chapters(path, ext, list(meta.chapters))
    except OSError:
        raise
    except Exception as e:  # mutagen.MutagenError and its kin
        raise EncodeError(f"cannot add tags or chapters: {e}") from e
