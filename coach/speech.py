"""Speech clips: text made into measured samples, once, and kept.

Every distinct (text, engine settings) is synthesized once by its engine, post-processed
(silence trimmed to fixed margins, levelled to one loudness, edges faded, resampled to
``RATE``) and kept in an on-disk cache, so the timeline reads a cue's true length in
samples and the mixer later plays exactly those samples. Nothing here ever speaks aloud.

The engines stand behind one interface (`Engine`): pyttsx3, the system's voices, in
coach/speech_pyttsx3.py. This module imports none of them until a clip must be made.

numpy and soxr are imported inside functions so that importing this module stays cheap
(worker processes import it too).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import uuid
import wave
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from coach import loudness
from coach.dsp import raised_cosine
from coach.errors import SpeechError
from coach.units import RATE, Samples

if TYPE_CHECKING:
    import numpy as np

#: Part of every cache key. Bump it whenever the stored samples for the same input would
#: change (post-processing, sample format), so old clips are never reused.
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
    """How to speak: the engine, its voice (a pyttsx3 voice id such as ``"gmw/en"``) and
    a rate in words per minute."""

    voice: str
    rate: int
    engine: str = "pyttsx3"


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
ENGINES = {"pyttsx3": ("coach.speech_pyttsx3", "Pyttsx3Engine")}

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
    ``<directory>/<key[:2]>/<key>.wav``. A stored clip never changes (first writer wins),
    so a length once read stays true for the samples later loaded."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()

    def key(self, text: str, settings: SpeechSettings) -> str:
        """The clip's hex sha256 over the format version, what the engine says decides its
        samples (`Engine.identity`: driver, voice, rate, model...) and the text. Volume is
        not part of it: it is applied later as gain."""
        h = hashlib.sha256()
        for part in (FORMAT_VERSION, *engine(settings).identity(settings), text):
            h.update(part.encode("utf-8"))
            h.update(b"\0")
        return h.hexdigest()

    def path(self, text: str, settings: SpeechSettings) -> Path:
        """Where the clip for this text and settings lives (whether or not it exists)."""
        key = self.key(text, settings)
        return self.directory / key[:2] / f"{key}.wav"

    def length(self, text: str, settings: SpeechSettings) -> Samples | None:
        """The clip's length in samples at ``RATE``, or None if it is not cached.
        Reads only the WAV header."""
        return _stored_length(self.path(text, settings))

    def load(self, text: str, settings: SpeechSettings) -> np.ndarray:
        """The clip as float32 mono samples at ``RATE``, exactly ``length()`` of them.
        Raises CacheMiss (a KeyError and a SpeechError) if it is not cached."""
        import numpy as np

        path = self.path(text, settings)
        try:
            with wave.open(str(path), "rb") as w:
                if not _is_cache_format(w):
                    raise CacheMiss(f"not a coach speech clip: {path}")
                data = w.readframes(w.getnframes())
        except (FileNotFoundError, EOFError, wave.Error) as e:
            raise CacheMiss(f"speech not cached for {text!r}") from e
        except OSError as e:
            raise SpeechError(f"cannot read the speech cache {path}: {e.strerror}") from e
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / np.float32(32768)

    def _store(self, text: str, settings: SpeechSettings, pcm: np.ndarray) -> Samples:
        """Put 16-bit samples at ``RATE`` into the cache; return the stored clip's length.
        If another process stored this clip first, theirs is kept and its length returned."""
        path = self.path(text, settings)
        tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with wave.open(str(tmp), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(RATE)
                w.writeframes(pcm.astype("<i2").tobytes())
            try:
                # First writer wins: two engines do not give bit-identical clips (AUDIO-NOTES:
                # lengths differ by up to ~35 ms), and a timeline may already hold the first
                # one's length. link() refuses to replace an existing file, atomically.
                os.link(tmp, path)
            except FileExistsError:
                pass
            except OSError:
                # No hard links on this file system: fall back to an atomic replace.
                if not path.exists():
                    os.replace(tmp, path)
        except OSError as e:
            raise SpeechError(f"cannot write the speech cache {self.directory}: {e}") from e
        finally:
            tmp.unlink(missing_ok=True)
        length = _stored_length(path)
        if length is None:
            raise SpeechError(f"speech cache entry vanished or is damaged: {path}")
        return length


def _is_cache_format(w: wave.Wave_read) -> bool:
    return w.getnchannels() == 1 and w.getsampwidth() == 2 and w.getframerate() == RATE


def _stored_length(path: Path) -> Samples | None:
    try:
        with wave.open(str(path), "rb") as w:
            return w.getnframes() if _is_cache_format(w) else None
    except (OSError, EOFError, wave.Error):
        # Missing or damaged (a write cannot be half-done, but a user can truncate a file):
        # treat as not cached, so it is made again.
        return None


def import_post_processing() -> None:
    """Import what post-processing needs (for a thread to do while engines start)."""
    import numpy  # noqa: F401
    import soxr  # noqa: F401


def short(text: str, limit: int = 60) -> str:
    """A text quoted for a message, cut to `limit` characters."""
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def finish_clip(x: np.ndarray, rate: int, text: str) -> np.ndarray:
    """An engine's float32 mono samples at `rate` as the cache stores them: int16 mono at
    ``RATE``, silence trimmed to the LEAD/TAIL margins, levelled
    (coach.loudness.level_speech), faded at both edges. Raises SpeechError if it holds
    no sound."""
    import numpy as np
    import soxr

    loud = np.flatnonzero(np.abs(x) > SILENCE)
    if loud.size == 0:
        raise SpeechError(f"text-to-speech produced no sound for {text!r}")
    start = int(loud[0]) - round(LEAD * rate)
    end = int(loud[-1]) + 1 + round(TAIL * rate)
    seg = np.pad(x[max(start, 0) : min(end, len(x))], (max(-start, 0), max(end - len(x), 0)))
    # Levelled at the engine's rate, where it costs half as much as after resampling.
    seg = loudness.level_speech(seg, rate)
    y = soxr.resample(seg, rate, RATE, quality="HQ").astype(np.float32)
    n = min(round(FADE * RATE), len(y) // 2)
    ramp = raised_cosine(np.linspace(0.0, np.pi, n)).astype(np.float32)
    y[:n] *= ramp
    y[len(y) - n :] *= ramp[::-1]
    return np.clip(np.round(y * 32768), -32768, 32767).astype("<i2")


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
        many samples. ``progress(done, total)`` is called with (0, total) before the first
        and after each newly made clip; total counts only clips not cached before. Raises
        SpeechError for an empty text, a voice the engine rejects, a text that yields no
        sound, a missing engine or a timeout.
        """
        order = list(dict.fromkeys(texts))
        for text in order:
            if not text.strip():
                raise SpeechError("cannot speak an empty text")
        if settings.rate <= 0:
            raise SpeechError(f"speech rate must be positive, not {settings.rate}")
        lengths: dict[str, Samples] = {}
        missing = []
        for text in order:
            n = self.cache.length(text, settings)
            if n is None:
                missing.append(text)
            else:
                lengths[text] = n
        if missing:
            lengths.update(self._synthesize(missing, settings, progress))
        return {text: lengths[text] for text in order}

    def worker_count(self, missing: int) -> int:
        """How many processes a worker-process engine starts for this many missing clips."""
        from coach.speech_pyttsx3 import worker_count

        return worker_count(missing, self.workers)

    def _synthesize(
        self,
        texts: list[str],
        settings: SpeechSettings,
        progress: Callable[[int, int], None] | None,
    ) -> dict[str, Samples]:
        try:
            self.cache.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SpeechError(
                f"cannot create the speech cache {self.cache.directory}: {e.strerror}"
            ) from e
        lengths: dict[str, Samples] = {}
        total = len(texts)

        def deliver(text: str, samples: np.ndarray, rate: int) -> None:
            pcm = finish_clip(samples, rate, text)
            lengths[text] = self.cache._store(text, settings, pcm)
            self.synthesized += 1
            if progress is not None:
                progress(len(lengths), total)

        if progress is not None:
            progress(0, total)
        engine(settings).synthesize(
            texts,
            settings,
            deliver,
            scratch=self.cache.directory,
            workers=self.workers,
            timeout=self.timeout,
        )
        return lengths
