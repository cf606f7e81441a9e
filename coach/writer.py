"""Writing a rendered session to a file that appears only when it is complete.

``AudioWriter`` streams float32 blocks at ``RATE`` through an encoder (coach.encoders)
into a hidden temporary file next to the target (``.session.mp3.coach-XXXXXXXX.tmp``),
embeds the chapters, syncs it and renames it into place at ``commit()``: an error or a
Ctrl-C never leaves a partial file behind, nor touches an existing target. ``FORMATS``
are the formats it writes, by extension, and ``check_output`` checks an output path (and
that this machine can encode its format) before any work is done.

numpy is imported inside functions so that importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import os
import queue
import secrets
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coach import chapters as chapter_files
from coach.chapters import Chapter
from coach.encoders import EncodeError, FormatUnavailable, SndfileEncoder, check_available
from coach.errors import CoachError, UsageError
from coach.units import RATE

if TYPE_CHECKING:
    import numpy as np

#: The output formats, by file extension.
FORMATS: dict[str, str] = {
    ".wav": "WAV (16-bit PCM)",
    ".flac": "FLAC (16-bit)",
    ".ogg": "Ogg Vorbis",
    ".mp3": "MP3",
}


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
    try:
        check_available(ext, FORMATS[ext])
    except FormatUnavailable as e:
        others = ", ".join(x for x in FORMATS if x != ext)
        raise CoachError(f"{path}: {e}; use one of {others}") from e
    return ext


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
    ``commit()`` closes the temporary file, embeds the chapters, syncs it to disk and
    renames it over the target. Leaving the ``with`` block without ``commit()`` (an
    exception, Ctrl-C) deletes the temporary file and leaves any existing target
    untouched. Write errors (a full disk, permissions) raise CoachError.
    """

    def __init__(self, path: Path, channels: int = 2) -> None:
        self.path = Path(path)
        self.ext = check_output(self.path)
        if channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2, got {channels}")
        self.channels = channels
        self.frames_written: int = 0
        self._chapters: list[Chapter] = []
        self._encoder: SndfileEncoder | None = None
        self._committed = False
        self._tmp = self._create_temp()
        try:
            self._encoder = SndfileEncoder(self._tmp, self.ext, RATE, channels)
        except EncodeError as e:
            self._discard()
            raise CoachError(f"cannot write {self.path}: {e}") from e
        except BaseException:
            self._discard()
            raise
        self._pcm16 = self._encoder.pcm16
        self._blocks: queue.Queue[Any] = queue.Queue(maxsize=4)
        self._failure: str | None = None
        self._drainer = threading.Thread(target=self._drain, name="coach-writer", daemon=True)
        self._drainer.start()

    def _drain(self) -> None:
        """The writer thread: hands blocks to the encoder until None arrives. After a
        failure it keeps taking blocks (and drops them), so write() never blocks."""
        encoder = self._encoder
        assert encoder is not None
        while (data := self._blocks.get()) is not None:
            if self._failure is None:
                try:
                    encoder.write(data)
                except EncodeError as e:
                    self._failure = str(e)

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

        if self._encoder is None:
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
        (WAV) ignore them: check ``chapters.chapter_support`` to tell the user."""
        self._chapters.extend(chapters)

    def commit(self) -> None:
        """Finish the file: close the encoder, embed chapters, sync, rename into place."""
        if self._encoder is None:
            raise RuntimeError("AudioWriter.commit after commit or abort")
        self._finish_drain()
        self._check()
        try:
            encoder, self._encoder = self._encoder, None
            try:
                encoder.close()
            except EncodeError as e:
                raise CoachError(f"cannot write {self.path}: {e}") from e
            if self._chapters and chapter_files.chapter_support(self.ext):
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
        encoder, self._encoder = self._encoder, None
        if encoder is not None:
            with contextlib.suppress(Exception):
                encoder.abort()
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

    def _discard(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)

    def _embed_chapters(self) -> None:
        try:
            chapter_files.write_chapters(self._tmp, self.ext, self._chapters)
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
