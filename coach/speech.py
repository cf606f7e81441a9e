"""Speech clips: text made into measured samples, once, and kept.

Every distinct (text, engine settings) is synthesized once by its engine, post-processed
(silence trimmed to fixed margins, levelled to one loudness, edges faded, resampled to
``RATE``) and kept in an on-disk cache, so the timeline reads a cue's true length in
samples and the mixer later plays exactly those samples. Nothing here ever speaks aloud.

The engines stand behind one interface (`Engine`): pyttsx3, the system's voices, in
coach/speech_pyttsx3.py, and Piper, a neural voice, in coach/speech_piper.py. This module
imports none of them until a clip must be made. docs/speech-engines.md tells what each
engine does wrong and how the cache copes.

Every cache entry verifies itself: the WAV carries, in a chunk of its own before the
samples, their count and sha256, so a truncated, emptied or garbled clip counts as missing
and is made again and replaced.

numpy and soxr are imported inside functions so that importing this module stays cheap
(worker processes import it too).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import re
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from coach import loudness
from coach.children import cores
from coach.dsp import raised_cosine
from coach.errors import SpeechError
from coach.temporary import fsync_dir, running
from coach.units import RATE, Samples

if TYPE_CHECKING:
    import numpy as np

#: Part of every cache key. Bump it whenever the stored samples for the same input would
#: change (post-processing, sample format), so old clips are never reused.
#: Part of a clip's summary file: bump it when `loudness.summarize` or the file's layout
#: changes. (3: the stamp holds the clip's inode and change time too.)
SUMMARY_VERSION = 3
#: A clip's summary file is the clip's path with this suffix.
SUMMARY_SUFFIX = ".summary"

FORMAT_VERSION = "coach-speech-2"

# Post-processing. Speech starts where |x| first exceeds SILENCE (-60 dBFS); the clip keeps
# LEAD seconds before that and TAIL after the last such sample (zero-padded if the engine
# gave less), then FADE-long raised-cosine ramps make both edges exactly zero.
SILENCE = 1e-3
LEAD = 0.010
TAIL = 0.060
FADE = 0.005


@dataclass(frozen=True)
class Voice:
    """One installed text-to-speech voice, as its engine reports it."""

    id: str
    name: str
    languages: tuple[str, ...]
    gender: str | None


@dataclass(frozen=True)
class SpeechSettings:
    """How to speak: the engine and its voice and settings.

    pyttsx3: `voice` is a voice id such as ``"gmw/en"`` and `rate` the words per minute
    it is asked for. Piper: `voice` is the model's name, `model` its .onnx file,
    `length_scale` stretches every phoneme (above 1 is slower), `sentence_silence` is the
    pause added between sentences in seconds; `rate` is not a setting there (any positive
    value). `lexicon` maps written words to the spoken forms the engine is given
    (`spoken`); captions and the timeline keep the written text.
    """

    voice: str
    rate: int
    engine: str = "pyttsx3"
    model: str = ""
    length_scale: float = 1.0
    sentence_silence: float = 0.0
    lexicon: tuple[tuple[str, str], ...] = ()

    def spoken(self, text: str) -> str:
        """The text as the engine is given it: each lexicon word (whole words, any case)
        replaced by its spoken form, capitalized where the written word was."""
        if not self.lexicon:
            return text
        return _lexicon_pattern(self.lexicon).sub(
            lambda m: _respell(m.group(0), self.lexicon), text
        )


def _lexicon_pattern(lexicon: tuple[tuple[str, str], ...]) -> re.Pattern[str]:
    words = sorted((w for w, _ in lexicon), key=len, reverse=True)
    return re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)


def _respell(found: str, lexicon: tuple[tuple[str, str], ...]) -> str:
    said = next(s for w, s in lexicon if w.lower() == found.lower())
    return said[:1].upper() + said[1:] if found[:1].isupper() else said


#: Receives one synthesized text: (text, float32 mono samples, their sample rate).
Deliver = Callable[[str, "np.ndarray", int], None]


class Engine(Protocol):
    """A text-to-speech engine as the synthesizer uses it."""

    name: str

    def identity(self, settings: SpeechSettings) -> tuple[str, ...]:
        """Everything besides the text that decides the samples (part of the cache key)."""
        ...

    def synthesize(
        self,
        texts: Sequence[str],
        settings: SpeechSettings,
        deliver: Deliver,
        *,
        scratch: Path,
        workers: int | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Speak every text, calling `deliver` for each; `scratch` is a folder for
        temporary files. Raises SpeechError on failure or when one text takes longer
        than `timeout` seconds."""
        ...


#: Engine name -> the module and class that implement it.
ENGINES = {
    "pyttsx3": ("coach.speech_pyttsx3", "Pyttsx3Engine"),
    "piper": ("coach.speech_piper", "PiperEngine"),
}

_engines: dict[str, Engine] = {}


def engine(settings: SpeechSettings) -> Engine:
    """The engine for these settings, made once per process."""
    name = settings.engine
    if name not in _engines:
        if name not in ENGINES:
            raise SpeechError(f"unknown speech engine {name!r} (known: {', '.join(ENGINES)})")
        module, cls = ENGINES[name]
        _engines[name] = getattr(importlib.import_module(module), cls)()
    return _engines[name]


def list_voices() -> list[Voice]:
    """The system voices (pyttsx3) this machine has. Raises SpeechError if there is none."""
    from coach import speech_pyttsx3

    return speech_pyttsx3.list_voices()


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/coach/speech`` if that variable is an absolute path, else
    ``~/.cache/coach/speech``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "coach" / "speech"


class CacheMiss(SpeechError, KeyError):
    """``SpeechCache.load`` of a clip that is not in the cache (both a SpeechError and a
    KeyError)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class SpeechCache:
    """Post-processed clips on disk: 16-bit PCM mono WAV at ``RATE`` under
    ``<directory>/<key[:2]>/<key>.wav``, each with a ``csum`` chunk (sample count and
    sha256 of the samples) written with it.

    An entry that does not verify (truncated, emptied, garbled, of another format) is a
    miss, and storing over it replaces it atomically. An entry is checked in full once:
    its loudness summary, written beside it then, records it as it was (size, times,
    inode), and later runs trust it while it is still so. A good entry never changes (the
    first good writer wins), so a length once read stays true for the samples later
    loaded. Clips are fsynced before they are linked in, so a crash leaves either no
    entry or a whole one.
    """

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        # path -> (size, mtime_ns, frames) of entries verified in this process, so a
        # length lookup reads one stat once an entry has been checked in full.
        self._verified: dict[Path, tuple[int, int, Samples]] = {}
        # settings -> their engine's identity (part of every key), asked once.
        self._identities: dict[SpeechSettings, tuple[str, ...]] = {}

    def key(self, text: str, settings: SpeechSettings) -> str:
        """The clip's hex sha256 over the format version, what the engine says decides its
        samples (`Engine.identity`: driver, voice, rate, model...) and the text as the
        engine is given it (`SpeechSettings.spoken`). Volume is not part of it: it is
        applied later as gain."""
        identity = self._identities.get(settings)
        if identity is None:
            # Once per settings: Piper's stats and resolves its model file for it.
            identity = self._identities[settings] = engine(settings).identity(settings)
        h = hashlib.sha256()
        for part in (FORMAT_VERSION, *identity, settings.spoken(text)):
            h.update(part.encode("utf-8"))
            h.update(b"\0")
        return h.hexdigest()

    def path(self, text: str, settings: SpeechSettings) -> Path:
        """Where the clip for this text and settings lives (whether or not it exists)."""
        key = self.key(text, settings)
        return self.directory / key[:2] / f"{key}.wav"

    def length(self, text: str, settings: SpeechSettings) -> Samples | None:
        """The clip's length in samples at ``RATE``, or None if it is not cached or does
        not verify. The first lookup of an entry reads and checks it all, unless its
        summary says it was checked as it is now; later ones only stat it."""
        return self._check(self.path(text, settings))

    def lengths(self, texts: Sequence[str], settings: SpeechSettings) -> list[Samples | None]:
        """`length` of each text, the entries checked on every core at once (the reads and
        checksums run outside the interpreter's lock): the first time, a 36-minute
        session's entries are 50 MB to read and hash."""
        paths = [self.path(text, settings) for text in texts]
        results: list[Samples | None] = [None] * len(paths)
        todo = iter(range(len(paths)))  # shared: next() on it is atomic

        def check() -> None:
            for i in todo:
                results[i] = self._check(paths[i])

        helpers = [
            threading.Thread(target=check, name="coach-cache-check", daemon=True)
            for _ in range(min(cores(), len(paths)) - 1)
        ]
        for t in helpers:
            t.start()
        check()
        for t in helpers:
            t.join()
        return results

    def load(self, text: str, settings: SpeechSettings) -> np.ndarray:
        """The clip as float32 mono samples at ``RATE``, exactly ``length()`` of them.
        Raises CacheMiss (a KeyError and a SpeechError) if it is not cached or is damaged."""
        import numpy as np

        path = self.path(text, settings)
        try:
            st = path.stat()
            data = _read_reused(path)
        except FileNotFoundError as e:
            raise CacheMiss(f"speech not cached for {text!r}") from e
        except OSError as e:
            raise SpeechError(f"cannot read the speech cache {path}: {e.strerror}") from e
        seen = self._verified.get(path)
        checked = seen is not None and seen[:2] == (st.st_size, st.st_mtime_ns)
        pcm = _verified_samples(data, digest_checked=checked)
        if pcm is None:
            self._verified.pop(path, None)
            raise CacheMiss(
                f"speech cache entry for {short(text)} is damaged: {path} (run again to remake it)"
            )
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
        samples *= np.float32(1 / 32768)  # a power of two: exact, as a division would be
        return samples

    def _check(self, path: Path) -> Samples | None:
        try:
            st = path.stat()
        except OSError:
            return None
        seen = self._verified.get(path)
        if seen is not None and seen[:2] == (st.st_size, st.st_mtime_ns):
            return seen[2]
        frames = _summarized(path, st)
        if frames is not None:
            self._verified[path] = (st.st_size, st.st_mtime_ns, frames)
            return frames
        try:
            data = _read_reused(path)
        except OSError:
            return None
        pcm = _verified_samples(data)
        if pcm is None:
            return None
        frames = len(pcm) // 2
        self._verified[path] = (st.st_size, st.st_mtime_ns, frames)
        return frames

    def summary(self, text: str, settings: SpeechSettings) -> loudness.Summary:
        """The clip's loudness summary (`coach.loudness.summarize`), kept in a file beside
        it so that a session's loudness is reckoned without loading every clip again.
        The file records the clip's size, time and length: one that does not match the
        clip (or cannot be read) is made again from the clip. Raises CacheMiss as `load`."""

        path = self.path(text, settings)
        frames = self._check(path)
        if frames is None:
            raise CacheMiss(f"speech not cached for {text!r}")
        stamp = self._stamp(path, frames)
        side = path.with_suffix(SUMMARY_SUFFIX)
        try:
            kept = _read_summary(side.read_bytes(), stamp)
        except OSError:
            kept = None  # none yet: made below
        if kept is not None:
            return kept
        made = loudness.summarize(self.load(text, settings))
        self._keep_summary(path, stamp, made)
        return made

    @staticmethod
    def _stamp(path: Path, frames: Samples) -> Stamp:
        """What a summary file records of its clip, to tell whether it is still the clip's."""
        return _stamp_of(path.stat(), frames)

    def _keep_summary(self, path: Path, stamp: Stamp, summary: loudness.Summary) -> None:
        import numpy as np

        curve = np.ascontiguousarray(summary.curve, dtype="<f8")
        peaks = np.ascontiguousarray(summary.peaks, dtype="<f4")
        data = _SUMMARY.pack(_SUMMARY_MAGIC, *stamp, len(curve), len(peaks))
        tmp = self.directory / f".tmp-{os.getpid()}-{uuid.uuid4().hex}.tmp"
        try:
            tmp.write_bytes(data + curve.tobytes() + peaks.tobytes())
            os.replace(tmp, path.with_suffix(SUMMARY_SUFFIX))
            # The format before SUMMARY_VERSION 2 (a .npz file): no longer read.
            path.with_suffix(".summary.npz").unlink(missing_ok=True)
        except OSError:
            pass  # a summary is a saving, not a need: the cache may be read-only
        finally:
            tmp.unlink(missing_ok=True)

    def chime(self, name: str) -> np.ndarray:
        """One of the project's synthesized chimes (coach.chimes), kept in the cache under
        a name that changes whenever chimes.py does; made and kept if it is not there."""
        import numpy as np

        from coach import chimes

        source = hashlib.sha256(Path(chimes.__file__).read_bytes()).hexdigest()[:16]
        path = self.directory / "chimes" / f"{name}-{source}.npy"
        try:
            kept = np.load(path, allow_pickle=False)
            if kept.dtype == np.float32 and kept.ndim == 1 and len(kept) > 0:
                kept.flags.writeable = False
                return kept
        except (OSError, ValueError, EOFError):
            pass
        made = chimes.chime(name)
        tmp = self.directory / f".tmp-{os.getpid()}-{uuid.uuid4().hex}.npy"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(tmp, made)
            os.replace(tmp, path)
        except OSError:
            pass  # a saving, not a need
        finally:
            tmp.unlink(missing_ok=True)
        return made

    def check_writable(self) -> None:
        """Raise SpeechError at once, naming the folder, if clips cannot be written here
        (missing permission, a full disk, a file in the way)."""
        probe = self.directory / f".probe-{os.getpid()}-{uuid.uuid4().hex}.tmp"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, b"\0" * 4096)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise SpeechError(cache_write_error(self.directory, e)) from e
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()

    def sweep(self, older_than: float = 600.0) -> int:
        """Remove our own temporaries (``.raw-*.wav`` from engines, ``.tmp-*`` and
        ``.probe-*`` from writes) left by a run that was killed: those of a process that
        is no longer running, or older than `older_than` seconds. Returns how many."""
        removed = 0
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return 0
        now = time.time()
        for entry in entries:
            m = _TEMP_NAME.match(entry.name)
            if m is None:
                continue
            pid = int(m.group(2)) if m.group(2) else None
            try:
                old = now - entry.stat(follow_symlinks=False).st_mtime > older_than
            except OSError:
                continue
            if old or (pid is not None and pid != os.getpid() and not running(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def _store(
        self,
        text: str,
        settings: SpeechSettings,
        pcm: np.ndarray,
        summary: loudness.Summary | None = None,
    ) -> Samples:
        """Put 16-bit samples at ``RATE`` into the cache; return the stored clip's length.
        If another process stored a good clip first, theirs is kept and its length
        returned; a bad entry in the way is replaced. `summary`, the samples' loudness
        summary, is kept beside the clip if it is ours that is stored."""
        path = self.path(text, settings)
        tmp = self.directory / f".tmp-{os.getpid()}-{uuid.uuid4().hex}.wav"
        data = wav_bytes(pcm)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                # First good writer wins: two runs of an engine do not give bit-identical
                # clips (docs/speech-engines.md), and a timeline may already hold the first
                # one's length. link() refuses to replace an existing file, atomically.
                os.link(tmp, path)
                # Ours, then: the bytes just written and synced, not read back to check.
                st = path.stat()
                self._verified[path] = (st.st_size, st.st_mtime_ns, len(pcm))
                ours = True
            except FileExistsError:
                ours = self._check(path) is None
                if ours:
                    os.replace(tmp, path)  # a damaged entry: ours takes its place
            except OSError:
                # No hard links on this file system: an atomic replace, unless a good
                # entry is there already.
                ours = self._check(path) is None
                if ours:
                    os.replace(tmp, path)
            fsync_dir(path.parent)
        except OSError as e:
            raise SpeechError(cache_write_error(self.directory, e)) from e
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        length = self._check(path)
        if length is None:
            raise SpeechError(f"speech cache entry vanished or is damaged: {path}")
        if ours and summary is not None and summary.length == length:
            self._keep_summary(path, self._stamp(path, length), summary)
        return length


#: Temporaries of our own naming in the cache folder: group 1 the kind, group 2 the pid
#: (absent in the names of older versions).
_TEMP_NAME = re.compile(r"^\.(raw|tmp|probe)-(?:(\d+)-)?[0-9a-f]{32}(?:-\d+)?\.(?:wav|tmp)$")

# The WAV layout every entry has: RIFF, fmt (PCM mono 16-bit at RATE), csum, data.
_CSUM = b"csum"
_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sIQ32s4sI")


def wav_bytes(pcm: np.ndarray) -> bytes:
    """16-bit mono samples as a cache entry: a WAV whose csum chunk holds the sample count
    and the sha256 of the sample bytes (other WAV readers skip the chunk)."""
    data = pcm.astype("<i2").tobytes()
    header = _HEADER.pack(
        b"RIFF",
        _HEADER.size - 8 + len(data),
        b"WAVE",
        b"fmt ",
        16,
        1,
        1,
        RATE,
        RATE * 2,
        2,
        16,
        _CSUM,
        40,
        len(data) // 2,
        hashlib.sha256(data).digest(),
        b"data",
        len(data),
    )
    return header + data


_buffers = threading.local()


def _read_reused(path: Path) -> memoryview:
    """A file's bytes, in a buffer this thread reuses (good until its next call): a warm
    36-minute session reads 50 MB of clips, and fresh memory for each would cost the
    page faults of all of it (measured: 0.1 s, of a render under 1 s)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size + 1  # one more: a file that grew meanwhile
        buf: bytearray | None = getattr(_buffers, "buf", None)
        if buf is None or len(buf) < size:
            buf = _buffers.buf = bytearray(max(size, 2 * len(buf or b"")))
        view = memoryview(buf)
        n = f.readinto(view[:size])
        while n < size and (more := f.readinto(view[n:size])):
            n += more
    return view[:n]


def _verified_samples(
    blob: bytes | memoryview, *, digest_checked: bool = False
) -> memoryview | None:
    """The sample bytes of a cache entry (a view into `blob`, not a copy), or None if it
    is not one or does not verify. With `digest_checked` (this process has checked this
    very file: same size and time) the checksum is not computed again."""
    if len(blob) < _HEADER.size:
        return None
    f = _HEADER.unpack_from(blob)
    riff, size, wave_, fmt, fmt_len, pcm, ch, rate, _, align, bits, csum, csum_len = f[:13]
    frames, digest, data_id, data_len = f[13:]
    if (riff, wave_, fmt, csum, data_id) != (b"RIFF", b"WAVE", b"fmt ", _CSUM, b"data"):
        return None
    if (fmt_len, pcm, ch, rate, align, bits, csum_len) != (16, 1, 1, RATE, 2, 16, 40):
        return None
    data = memoryview(blob)[_HEADER.size :]
    if data_len != len(data) or frames * 2 != len(data) or size != len(blob) - 8:
        return None
    if not digest_checked and hashlib.sha256(data).digest() != digest:
        return None
    return data


# A summary file: a header (a magic, the stamp of the clip it summarizes: version, size,
# mtime_ns, frames; the counts of curve points and peaks), then the curve as float64 and
# the peaks as float32, little-endian. Read with one read and no parsing (an .npz took
# 0.6 ms a clip, a tenth of a warm render for a 36-minute session).
_SUMMARY_MAGIC = b"coachsum"
_SUMMARY = struct.Struct("<8s8q")

#: What a summary file records of its clip: SUMMARY_VERSION, then the clip's size,
#: modification time, change time and inode (as the clip was when it was checked in
#: full and summarized), then its length in samples.
Stamp = tuple[int, int, int, int, int, int]


def _stamp_of(st: os.stat_result, frames: Samples) -> Stamp:
    return (SUMMARY_VERSION, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, frames)


def _summarized(path: Path, st: os.stat_result) -> Samples | None:
    """The length of a clip that a summary file says was checked in full as it is now
    (same size, times and inode), else None. A summary is only ever written of a clip
    just checked (or just stored), so a later run need not read the clip's 50 MB (a
    warm 36-minute session) to trust it; a clip changed in any way since is checked
    again, in full."""
    try:
        with open(path.with_suffix(SUMMARY_SUFFIX), "rb") as f:
            head = f.read(_SUMMARY.size)
    except OSError:
        return None
    if len(head) < _SUMMARY.size:
        return None
    magic, *kept, _, _ = _SUMMARY.unpack(head)
    if magic != _SUMMARY_MAGIC or tuple(kept[:5]) != _stamp_of(st, 0)[:5]:
        return None
    frames: int = kept[5]
    return frames if frames * 2 + _HEADER.size == st.st_size else None


def _read_summary(blob: bytes, stamp: Stamp) -> loudness.Summary | None:
    """The summary in a summary file's bytes, or None if it is damaged or is not (or no
    longer) the summary of the clip with this stamp."""
    import numpy as np

    if len(blob) < _SUMMARY.size:
        return None
    magic, *kept, points, peaks = _SUMMARY.unpack_from(blob)
    if magic != _SUMMARY_MAGIC or tuple(kept) != stamp or min(points, peaks) < 0:
        return None
    if len(blob) != _SUMMARY.size + 8 * points + 4 * peaks:
        return None
    curve = np.frombuffer(blob, dtype="<f8", count=points, offset=_SUMMARY.size)
    top = np.frombuffer(blob, dtype="<f4", count=peaks, offset=_SUMMARY.size + 8 * points)
    return loudness.Summary(stamp[5], curve, top)


def cache_write_error(folder: Path, e: OSError) -> str:
    """The one-line message for a speech cache folder that cannot be written."""
    import errno

    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        why = "is full"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "is not writable"
    elif e.errno in (errno.ENOTDIR, errno.EEXIST):
        why = "cannot be made (a file is in the way)"
    else:
        why = f"cannot be written ({e.strerror or e})"
    return (
        f"the speech cache folder {folder} {why}: free some space or fix its permissions, "
        "or set XDG_CACHE_HOME to a writable folder"
    )


def import_post_processing() -> None:
    """Import what post-processing needs (for a thread to do while engines start)."""
    import numpy  # noqa: F401
    import soxr  # noqa: F401


def short(text: str, limit: int = 60) -> str:
    """A text quoted for a message, cut to `limit` characters."""
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def finish_clip(x: np.ndarray, rate: int, text: str) -> tuple[np.ndarray, loudness.Summary]:
    """An engine's float32 mono samples at `rate` as the cache stores them: int16 mono at
    ``RATE``, silence trimmed to the LEAD/TAIL margins, levelled
    (coach.loudness.level_speech), faded at both edges; and the clip's loudness summary,
    from the measurement the levelling made (`loudness.measured_level`: measuring the
    finished clip again took a fifth of a cold render's work). Raises SpeechError if
    it holds no sound."""
    import numpy as np
    import soxr

    loud = np.flatnonzero(np.abs(x) > SILENCE)
    if loud.size == 0:
        why = "" if re.search(r"\w", text) else " (it has no words to speak)"
        raise SpeechError(f"text-to-speech produced no sound for {short(text)}{why}")
    start = int(loud[0]) - round(LEAD * rate)
    end = int(loud[-1]) + 1 + round(TAIL * rate)
    seg = np.pad(x[max(start, 0) : min(end, len(x))], (max(-start, 0), max(end - len(x), 0)))
    # Levelled at the engine's rate, where it costs half as much as after resampling.
    seg, energy = loudness.measured_level(seg, rate)
    y = soxr.resample(seg, rate, RATE, quality="HQ").astype(np.float32)
    n = min(round(FADE * RATE), len(y) // 2)
    ramp = raised_cosine(np.linspace(0.0, np.pi, n)).astype(np.float32)
    y[:n] *= ramp
    y[len(y) - n :] *= ramp[::-1]
    pcm = np.clip(np.round(y * 32768), -32768, 32767).astype("<i2")
    # The energy's samples as many as the finished clip's at ESTIMATE_RATE would be (the
    # fades fall in the silent margins, where it is all but nothing).
    size = round(len(pcm) * loudness.ESTIMATE_RATE / RATE)
    energy = np.pad(energy[:size], (0, max(size - len(energy), 0)))
    return pcm, loudness.summary_of(pcm, energy, 1 / 32768)


class Synthesizer:
    """Makes sure clips are in a SpeechCache, having the engine make the missing ones.

    ``workers`` fixes the number of worker processes of an engine that uses them (never
    more than there are clips to make); None picks it from the amount of work.
    ``timeout`` bounds, in seconds, how long any one clip may take (the first also
    includes the engine's start-up); past it SpeechError is raised.
    """

    def __init__(
        self, cache: SpeechCache, *, workers: int | None = None, timeout: float = 30.0
    ) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.cache = cache
        self.workers = workers
        self.timeout = timeout
        #: How many clips this synthesizer has made (cache hits do not count).
        self.synthesized = 0

    def ensure(
        self,
        texts: Iterable[str],
        settings: SpeechSettings,
        progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, Samples]:
        """Lengths (samples at RATE) of every distinct text; synthesizes the ones not cached yet.

        On return every text's clip is in the cache and ``cache.load`` gives exactly that
        many samples. The engine is given each text's spoken form (the settings' lexicon
        applied); texts with the same spoken form share one clip. ``progress(done,
        total)`` is called with (0, total) before the first and after each newly made
        clip; total counts only clips not cached before. Raises SpeechError for an empty
        text, a voice the engine rejects, a text that yields no sound, a missing engine,
        a cache folder that cannot be written or a timeout.
        """
        order = list(dict.fromkeys(texts))
        for text in order:
            if not text.strip():
                raise SpeechError("cannot speak an empty text")
        if settings.rate <= 0:
            raise SpeechError(f"speech rate must be positive, not {settings.rate}")
        self.cache.sweep()
        lengths: dict[str, Samples] = {}
        missing: dict[str, list[str]] = {}  # spoken form -> the texts that say it
        for text, n in zip(order, self.cache.lengths(order, settings), strict=True):
            if n is None:
                missing.setdefault(settings.spoken(text), []).append(text)
            else:
                lengths[text] = n
        if missing:
            made = self._synthesize(list(missing), settings, progress)
            for spoken, written in missing.items():
                for text in written:
                    lengths[text] = made[spoken]
        return {text: lengths[text] for text in order}

    def worker_count(self, missing: int) -> int:
        """How many processes a worker-process engine starts for this many missing clips."""
        from coach.speech_pyttsx3 import worker_count

        return worker_count(missing, self.workers)

    def _synthesize(
        self,
        spoken: list[str],
        settings: SpeechSettings,
        progress: Callable[[int, int], None] | None,
    ) -> dict[str, Samples]:
        """Make the clips of these spoken forms; lengths by spoken form."""
        # Before any engine starts: a full or read-only cache folder fails here, at once.
        self.cache.check_writable()
        plain = replace(settings, lexicon=())  # the texts below are spoken forms already
        lengths: dict[str, Samples] = {}
        total = len(spoken)

        from concurrent.futures import Future, ThreadPoolExecutor

        from coach import malloc

        malloc.reuse_large_blocks()  # each clip's arrays in memory the last one's freed
        lock = threading.Lock()
        pending: list[Future[None]] = []

        def finish(text: str, samples: np.ndarray, rate: int) -> None:
            # Its loudness summary kept now, while the engine makes the next clip, rather
            # than when the session's level is reckoned.
            n = self.cache._store(text, plain, *finish_clip(samples, rate, text))
            with lock:
                lengths[text] = n
                self.synthesized += 1
                if progress is not None:
                    progress(len(lengths), total)

        def deliver(text: str, samples: np.ndarray, rate: int) -> None:
            # Finished on every core (numpy, soxr and the file system mostly run outside
            # the interpreter's lock) while the engine speaks on: measured, the one thread
            # that finished every clip kept the engine's workers waiting. A clip that
            # could not be finished stops the engine, at its next clip.
            for done in [f for f in pending if f.done()]:
                pending.remove(done)
                done.result()
            pending.append(pool.submit(finish, text, samples, rate))

        if progress is not None:
            progress(0, total)
        pool = ThreadPoolExecutor(max_workers=cores(), thread_name_prefix="coach-finish")
        try:
            engine(settings).synthesize(
                spoken,
                plain,
                deliver,
                scratch=self.cache.directory,
                workers=self.workers,
                timeout=self.timeout,
            )
            for f in pending:
                f.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return lengths
