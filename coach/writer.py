"""Writing a rendered session to a file that appears only when it is complete.

``AudioWriter`` streams float32 blocks at ``RATE`` through an encoder (coach.encoders)
into a hidden temporary file next to the target (coach.temporary names it),
and at ``commit()`` has the encoder finish it (tags and chapters included), syncs it and
renames it into place: an error or a Ctrl-C never leaves a partial file behind, nor
touches an existing target. Blocks come one after another (``write``), or, for an
encoder that joins pieces, as several streams encoded at once on separate threads
(``write_pieces``). ``FORMATS`` are the formats it writes, by extension, and
``check_output`` checks an output path (and that this machine can encode its format)
before any work is done.

numpy is imported inside functions so that importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coach import malloc, temporary
from coach.encoders import (
    EncodeError,
    Encoder,
    FormatUnavailable,
    Metadata,
    Piece,
    Quality,
    check_available,
    check_quality,
    open_encoder,
)
from coach.errors import CoachError, UsageError
from coach.temporary import fsync_dir
from coach.units import Samples

if TYPE_CHECKING:
    import numpy as np

#: The output formats, by file extension.
FORMATS: dict[str, str] = {
    ".wav": "WAV (16-bit PCM)",
    ".flac": "FLAC (16-bit)",
    ".ogg": "Ogg Vorbis",
    ".mp3": "MP3",
    ".m4a": "AAC in MP4",
    ".m4b": "AAC in MP4 (an audiobook)",
    ".opus": "Opus",
}

#: Formats that carry tags: every compressed one.
TAGGED = (".flac", ".ogg", ".mp3", ".m4a", ".m4b", ".opus")


def _supported() -> str:
    return ", ".join(FORMATS)


def check_output(path: Path, quality: Quality = "normal") -> str:
    """Check an output path (and the quality asked for it) before any work is done;
    return its extension, lower case.

    An unknown extension, a missing parent folder, a path that is a folder or a quality
    the format cannot have raise UsageError (exit 2); a folder we may not write to, or a
    format this machine cannot encode, raise CoachError (exit 1)."""
    path = Path(path)
    ext = path.suffix.lower()
    if path.is_dir():
        example = path / f"session{ext if ext in FORMATS else '.mp3'}"
        raise UsageError(f"{path}: is a folder; give a file name such as {example}")
    if ext not in FORMATS:
        shown = f"'{path.suffix}'" if path.suffix else "no extension"
        raise UsageError(f"{path}: unknown output format ({shown}); use one of {_supported()}")
    parent = path.parent
    if not parent.exists():
        raise UsageError(f"{path}: the folder {parent} does not exist; create it first")
    if not parent.is_dir():
        raise UsageError(f"{path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CoachError(f"{path}: cannot write to the folder {parent}; choose another folder")
    try:
        check_available(ext, FORMATS[ext])
    except FormatUnavailable as e:
        others = ", ".join(x for x in FORMATS if x != ext)
        raise CoachError(f"{path}: {e}; use one of {others}") from e
    check_quality(ext, quality)
    return ext


class AudioWriter:
    """Stream a session into an audio file that appears only when complete.

    ::

        with AudioWriter(Path("session.mp3"), meta=Metadata(tags, chapters)) as out:
            for block in blocks:          # float32, shape (frames, channels), at RATE
                out.write(block)
            out.commit()

    Every block is multiplied by `gain` on its way to the encoder (the session's master
    gain: on the way to 16 bits it costs nothing), clipped to [-1, 1], NaN made 0.
    Encoding and writing happen in a thread of the writer's own, so the caller can make
    the next block meanwhile; a failure there surfaces at the next write() or commit().
    Leaving the ``with`` block without ``commit()`` (an exception, Ctrl-C) deletes the
    temporary file and leaves any existing target untouched. Write errors (a full disk,
    permissions) raise CoachError.
    """

    def __init__(
        self,
        path: Path,
        channels: int = 2,
        *,
        quality: Quality = "normal",
        meta: Metadata | None = None,
        gain: float = 1.0,
    ) -> None:
        import numpy as np

        self.path = Path(path)
        self.ext = check_output(self.path, quality)
        if channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2, got {channels}")
        self.channels = channels
        self.frames_written: int = 0
        self._gain = np.float32(gain)
        self._encoder: Encoder | None = None
        self._pieces: list[Piece] = []
        self._lengths: list[Samples] = []
        self._committed = False
        self._tmp = temporary.new_file(self.path)
        try:
            self._encoder = open_encoder(self._tmp, self.ext, channels, quality, meta or Metadata())
        except EncodeError as e:
            self._discard()
            raise CoachError(f"cannot write {self.path}: {e}") from e
        except BaseException:
            self._discard()
            raise
        self._pcm16 = self._encoder.pcm16
        self._scale = self._gain * np.float32(32768) if self._pcm16 else self._gain
        self._blocks: queue.Queue[Any] = queue.Queue(maxsize=4)
        self._failure: str | None = None
        self._drainer: threading.Thread | None = None
        # Set by abort(): the writer thread stops at its next block. (A Ctrl-C that lands
        # inside Queue.put can leave the queue's lock held for good: measured, about one
        # Ctrl-C in 60 hung the process when abort() then put its end marker.)
        self._abandon = threading.Event()

    @property
    def grid(self) -> Samples | None:
        """Where pieces may start (multiples of this, in samples at RATE), for an encoder
        that encodes pieces at once and joins them; None: one stream only."""
        return self._encoder.grid if self._encoder is not None else None

    def __enter__(self) -> AudioWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._committed:
            self.abort()

    def write(self, block: np.ndarray | int) -> None:
        """Append a block of samples, shape (frames, channels) (or (frames,) when mono),
        or, given a number, that many frames of digital silence."""
        if self._encoder is None:
            raise RuntimeError("AudioWriter.write after commit or abort")
        if self._drainer is None:
            if self._pieces:
                raise RuntimeError("AudioWriter.write after write_pieces")
            self._pieces.append(self._encoder.piece(0))
            self._lengths.append(0)
            self._drainer = threading.Thread(target=self._drain, name="coach-writer", daemon=True)
            self._drainer.start()
        data = self._prepare(block)
        self._check()
        self._blocks.put(data)
        frames = data if isinstance(data, int) else len(data)
        self.frames_written += frames
        self._lengths[0] += frames

    def write_pieces(
        self,
        sources: Sequence[Iterable[np.ndarray | int]],
        starts: Sequence[Samples],
        progress: Callable[[Samples], None] | None = None,
    ) -> None:
        """Encode several streams at once, one thread each: piece i is what `sources[i]`
        yields (blocks, or numbers of frames of digital silence, as `write` takes them)
        and starts `starts[i]` frames into the file, where piece i - 1 ends. All but the
        first must start on ``grid`` in digital silence (the caller knows where that
        is). `progress` is told, from this thread, the frames done in all. Ctrl-C stops
        every thread."""
        if self._encoder is None:
            raise RuntimeError("AudioWriter.write_pieces after commit or abort")
        if self._pieces:
            raise RuntimeError("AudioWriter.write_pieces after writing")
        if len(sources) > 1 and self.grid is None:
            raise ValueError(f"{self.ext} files are written in one piece")
        if len(starts) != len(sources) or (starts and starts[0] != 0):
            raise ValueError(f"pieces start at {list(starts)}: one start each, the first 0")
        if len(sources) > 1:
            malloc.share_arenas()
        encoder = self._encoder
        self._pieces = [encoder.piece(start) for start in starts]
        self._lengths = [0] * len(sources)
        stop = threading.Event()
        errors: list[BaseException] = []

        def run(i: int, source: Iterable[np.ndarray]) -> None:
            piece = self._pieces[i]
            try:
                for block in source:
                    if stop.is_set():
                        return
                    data = self._prepare(block)
                    if isinstance(data, int):
                        piece.skip(data)
                        self._lengths[i] += data
                    else:
                        piece.write(data)
                        self._lengths[i] += len(data)
            except BaseException as e:
                errors.append(e)
                stop.set()

        threads = [
            threading.Thread(target=run, args=(i, s), name=f"coach-piece-{i}", daemon=True)
            for i, s in enumerate(sources)
        ]
        for t in threads:
            t.start()
        try:
            while alive := [t for t in threads if t.is_alive()]:
                alive[0].join(0.1)
                if progress is not None:
                    progress(sum(self._lengths))
        except BaseException:
            stop.set()
            for t in threads:
                t.join()
            raise
        self.frames_written = sum(self._lengths)
        if not errors:
            ends = [*starts[1:], self.frames_written]
            if [a + n for a, n in zip(starts, self._lengths, strict=True)] != ends:
                raise ValueError(f"pieces of {self._lengths} frames do not start at {starts}")
        if errors:
            error = errors[0]
            if isinstance(error, EncodeError):
                self.abort()
                raise CoachError(f"cannot write {self.path}: {error}") from error
            raise error

    def commit(self) -> None:
        """Finish the file: the encoder closes it (tags, chapters), sync, rename."""
        if self._encoder is None:
            raise RuntimeError("AudioWriter.commit after commit or abort")
        self._finish_drain()
        self._check()
        try:
            encoder, self._encoder = self._encoder, None
            if not self._pieces:
                self._pieces, self._lengths = [encoder.piece(0)], [0]
            try:
                encoder.finish(self._pieces, self._lengths)
            except EncodeError as e:
                raise CoachError(f"cannot write {self.path}: {e}") from e
            _fsync_file(self._tmp)
            os.replace(self._tmp, self.path)
        except OSError as e:
            self._discard()
            raise CoachError(f"cannot write {self.path}: {e.strerror or e}") from e
        except BaseException:
            self._discard()
            raise
        self._committed = True
        fsync_dir(self.path.parent)

    def abort(self) -> None:
        """Give up: close and delete the temporary file. Safe to call more than once."""
        if self._committed:
            return
        self._abandon_drain()
        encoder, self._encoder = self._encoder, None
        if encoder is not None:
            with contextlib.suppress(Exception):
                encoder.abort()
        self._discard()

    # -- internals --------------------------------------------------------------------------

    def _checked(self, block: np.ndarray) -> np.ndarray:
        """A block as float32 (frames, channels); ValueError for any other shape."""
        import numpy as np

        data = np.asarray(block, dtype=np.float32)
        if data.ndim == 1 and self.channels == 1:
            data = data[:, None]
        if data.ndim != 2 or data.shape[1] != self.channels:
            raise ValueError(
                f"expected a block of shape (frames, {self.channels}), got {data.shape}"
            )
        return data

    def _prepare(self, block: np.ndarray | int) -> np.ndarray | int:
        """A block as the encoder takes it, or its length when it is digital silence.
        Its samples are finite (the mixer's are; an ambient track's are made so where
        it is read)."""
        import numpy as np

        if isinstance(block, int):
            return block
        data = self._checked(block)
        if self._pcm16:
            # Quantize to the nearest step (k/32768 is what any reader gives back for k).
            # Scaling by gain * 32768 at once is exact: the power of two commutes with
            # rounding, so this equals scaling by gain first. In place: every sample.
            scaled = np.multiply(data, self._scale, dtype=np.float32)
            np.rint(scaled, out=scaled)
            np.clip(scaled, -32768, 32767, out=scaled)
            pcm = scaled.astype(np.int16)
            # Silence within a cue's block (a clip's own quiet end) is written as such.
            return pcm if pcm.any() else len(pcm)
        if not data.any():
            # Most of a session is silence between cues: nothing to scale or encode.
            return len(data)
        if self._gain != 1:
            data = np.multiply(data, self._gain, dtype=np.float32)
        return np.ascontiguousarray(np.clip(data, -1.0, 1.0))

    def _drain(self) -> None:
        """The writer thread: hands blocks to the encoder until None arrives. After a
        failure it keeps taking blocks (and drops them), so write() never blocks."""
        piece = self._pieces[0]
        while not self._abandon.is_set():
            try:
                data = self._blocks.get(timeout=0.05)
            except queue.Empty:
                continue
            if data is None:
                return
            if self._failure is None:
                try:
                    if isinstance(data, int):
                        piece.skip(data)
                    else:
                        piece.write(data)
                except EncodeError as e:
                    self._failure = str(e)

    def _finish_drain(self) -> None:
        """The writer thread, after all the blocks."""
        if self._drainer is not None and self._drainer.is_alive():
            self._blocks.put(None)
            self._drainer.join()

    def _abandon_drain(self) -> None:
        """Stop the writer thread without touching the queue. Within a second it stops
        between blocks; if it does not, it is stuck on the queue's lock (never inside
        the encoder), and the encoder may be closed under it."""
        self._abandon.set()
        if self._drainer is not None:
            self._drainer.join(1.0)

    def _check(self) -> None:
        if self._failure is not None:
            detail = self._failure
            self.abort()
            raise CoachError(f"cannot write {self.path}: {detail}")

    def _discard(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)  # Windows wants write access to flush a file
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
