"""Encoders: samples in, the bytes of one audio format out, into a file already opened.

Each encoder takes blocks shaped (frames, channels) — int16 when its ``pcm16`` is true,
else float32 in [-1, 1] — and ``close()`` finishes the stream. They know nothing of
temporary names, chapters or tags: that is coach.writer's job. A write error (a full
disk, a file size limit) raises EncodeError with the operating system's own words.

WAV, FLAC and Ogg Vorbis go through libsndfile (soundfile). soundfile is imported inside
functions so that importing this module stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from coach.errors import CoachError

if TYPE_CHECKING:
    import numpy as np

# extension -> (libsndfile format, subtype, extra SoundFile arguments)
_SNDFILE: dict[str, tuple[str, str, dict[str, Any]]] = {
    ".wav": ("WAV", "PCM_16", {}),
    ".flac": ("FLAC", "PCM_16", {}),
    # libsndfile's Vorbis quality is 1 - compression_level: 0.5 is about 160 kb/s stereo.
    ".ogg": ("OGG", "VORBIS", {"compression_level": 0.5}),
    ".mp3": ("MP3", "MPEG_LAYER_III", {"bitrate_mode": "CONSTANT"}),
}

# MP3 constant bitrate in kb/s, by channel count. libsndfile maps compression_level c to
# 320 - c * (320 - 32) kb/s (MPEG-1 at 32 to 48 kHz); LAME then takes the nearest legal rate.
_MP3_KBPS = {1: 128, 2: 192}


class EncodeError(Exception):
    """Encoding or writing failed; the message says why ("No space left on device")."""


class FormatUnavailable(CoachError):
    """This machine's libraries cannot encode the format (exit 1)."""


def check_available(ext: str, name: str) -> None:
    """Raise FormatUnavailable unless this machine can write `ext` files (`name` is the
    format's name for the message), CoachError if it has no libsndfile at all. MP3
    needs libsndfile 1.1 or newer, and some Linux builds leave it out."""
    fmt, subtype, _ = _SNDFILE[ext]
    try:
        import soundfile

        available = subtype in soundfile.available_subtypes(fmt)
    except (ImportError, OSError) as e:
        raise CoachError(f"cannot write audio files: soundfile/libsndfile is missing ({e})") from e
    if not available:
        raise FormatUnavailable(f"this machine's libsndfile cannot write {name}")


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
    """WAV (16-bit PCM), FLAC (16-bit), Ogg Vorbis or MP3 (constant bitrate) through
    libsndfile, into `path` (the format comes from `ext`, not from the path's name)."""

    def __init__(self, path: Path, ext: str, rate: int, channels: int) -> None:
        import soundfile

        fmt, subtype, extra = _SNDFILE[ext]
        self.pcm16 = subtype == "PCM_16"
        if ext == ".mp3":
            kbps = _MP3_KBPS[channels]
            extra = {**extra, "compression_level": (320 - kbps) / (320 - 32)}
        try:
            self._raw = open(path, "w+b")  # noqa: SIM115 - closed in close()
        except OSError as e:
            raise EncodeError(e.strerror or str(e)) from e
        self._sink = _Sink(self._raw)
        try:
            self._file = soundfile.SoundFile(
                self._sink, "w", rate, channels, subtype, format=fmt, **extra
            )
        except (OSError, RuntimeError) as e:
            self._raw.close()
            raise EncodeError(self._why(e)) from e

    def write(self, data: np.ndarray) -> None:
        try:
            self._file.write(data)
        except (OSError, RuntimeError, AssertionError) as e:
            raise EncodeError(self._why(e)) from e

    def close(self) -> None:
        try:
            try:
                self._file.close()
            except (OSError, RuntimeError, AssertionError) as e:
                raise EncodeError(self._why(e)) from e
            if self._sink.error is not None:
                raise EncodeError(self._why(self._sink.error))
        finally:
            self._raw.close()

    def abort(self) -> None:
        """Stop without finishing the stream (the file is about to be deleted)."""
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
