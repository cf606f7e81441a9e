"""Text to speech clips: the one module that talks to pyttsx3.

Every distinct (text, voice, rate) is synthesized once, post-processed (silence trimmed to
fixed margins, levelled to one loudness, edges faded, resampled to ``RATE``) and kept in an
on-disk cache, so the timeline reads a cue's true length in samples and the mixer later
plays exactly those samples. Nothing here ever speaks aloud.

Synthesis runs in worker processes ("spawn", so it behaves the same on every OS), each
holding one pyttsx3 engine in its main thread. That gives parallelism and a real timeout:
a worker that hangs is terminated. A program that calls ``Synthesizer.ensure`` from a
script must guard its entry point with ``if __name__ == "__main__":`` (spawn re-imports it).

numpy, soxr and pyttsx3 are imported inside functions so that importing this module
stays cheap (worker processes import it too).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import threading
import time
import uuid
import wave
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coach import loudness
from coach.dsp import raised_cosine
from coach.errors import SpeechError
from coach.units import RATE, Samples

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    import numpy as np

#: Part of every cache key. Bump it whenever the stored samples for the same input would
#: change (post-processing, sample format), so old clips are never reused.
FORMAT_VERSION = "coach-speech-2"

#: What the CLI prints when there is no engine at all.
NO_ENGINE = "no text-to-speech engine: install espeak-ng (apt install espeak-ng)"

# Post-processing. Speech starts where |x| first exceeds SILENCE (-60 dBFS); the clip keeps
# LEAD seconds before that and TAIL after the last such sample (zero-padded if the engine
# gave less), then FADE-long raised-cosine ramps make both edges exactly zero.
SILENCE = 1e-3
LEAD = 0.010
TAIL = 0.060
FADE = 0.005

# Worker count. A worker is ready ~0.1 s after it is started (spawn, imports, engine,
# warm-up) and then makes a short cue in ~11 ms, so its start-up costs about
# _STARTUP_IN_CUES cues. The k-th worker saves n/(k-1) - n/k cue-times of n cues, so it
# pays once n >= k*(k-1)*_STARTUP_IN_CUES: one worker below 18 cues, two from 18, ...
_STARTUP_IN_CUES = 9

# Jobs sent ahead to each worker, so it never idles while the parent post-processes.
_IN_FLIGHT = 2


@dataclass(frozen=True)
class Voice:
    """One installed text-to-speech voice, as pyttsx3 reports it."""

    id: str
    name: str
    languages: tuple[str, ...]
    gender: str | None


@dataclass(frozen=True)
class SpeechSettings:
    """How to speak: a pyttsx3 voice id (e.g. ``"gmw/en"``) and a rate in words per minute."""

    voice: str
    rate: int


def list_voices() -> list[Voice]:
    """The text-to-speech voices this machine has. Raises SpeechError if there is no engine."""
    engine = _init_engine(_driver_name())
    voices = []
    for v in engine.getProperty("voices"):
        languages = tuple(
            lang.decode("utf-8", "replace") if isinstance(lang, bytes) else str(lang)
            for lang in (v.languages or ())
        )
        voices.append(
            Voice(
                id=str(v.id),
                name=str(v.name),
                languages=languages,
                gender=str(v.gender) if v.gender else None,
            )
        )
    return voices


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/coach/speech`` if that variable is an absolute path, else
    ``~/.cache/coach/speech``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "coach" / "speech"


@functools.cache
def _driver_name() -> str:
    """The pyttsx3 driver this platform uses; part of the cache key, and the worker asks
    pyttsx3 for exactly this driver so key and clip always agree."""
    try:
        from pyttsx3.engine import default_engine_by_sys_platform
    except ImportError as e:
        raise SpeechError(NO_ENGINE) from e
    return default_engine_by_sys_platform()


def _init_engine(driver: str) -> Any:
    try:
        import pyttsx3

        return pyttsx3.init(driver)
    except (ImportError, RuntimeError, OSError) as e:
        raise SpeechError(NO_ENGINE) from e


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
        """The clip's hex sha256 over format version, driver, voice, rate and text.
        Volume is not part of it: it is applied later as gain."""
        h = hashlib.sha256()
        for part in (FORMAT_VERSION, _driver_name(), settings.voice, str(settings.rate), text):
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


def _import_post_processing() -> None:
    import numpy  # noqa: F401
    import soxr  # noqa: F401


def _finish_clip(raw: Path, text: str) -> np.ndarray:
    """The engine's WAV as the cache stores it: int16 mono at ``RATE``, silence trimmed to
    the LEAD/TAIL margins, levelled (coach.loudness.level_speech), faded at both edges.
    Raises SpeechError if it holds no sound."""
    import numpy as np
    import soxr

    try:
        with wave.open(str(raw), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            data = w.readframes(w.getnframes())
    except (OSError, EOFError, wave.Error) as e:
        raise SpeechError(f"text-to-speech wrote no usable audio for {text!r}: {e}") from e
    if width != 2:
        raise SpeechError(
            f"text-to-speech wrote {8 * width}-bit audio for {text!r}; only 16-bit is supported"
        )
    x = np.frombuffer(data, dtype="<i2").astype(np.float32) / np.float32(32768)
    if channels > 1:
        x = x[: len(x) - len(x) % channels].reshape(-1, channels).mean(axis=1)
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


# ------------------------------------------------------------------------------ workers


def _worker_main(conn: Connection, driver: str, timeout: float) -> None:
    """Body of a synthesis process: one pyttsx3 engine, used from this main thread only.

    Receives jobs ``(id, text, voice, rate, path)`` and answers each, in order, with
    ``("done", id)``, ``("failed", id, why)`` or ``("bad-voice", id, voice)``; ``None`` or
    a closed pipe ends it. Sends ``("no-engine", why)`` and ends if pyttsx3 cannot start.
    """
    import signal
    import threading

    # Ctrl-C reaches the whole process group; the parent decides and terminates us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # pyttsx3 prints "Audio saved to ..." on stdout for every save (trap 7).
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    try:
        import pyttsx3

        engine = pyttsx3.init(driver)
    except Exception as e:
        conn.send(("no-engine", f"{type(e).__name__}: {e}"))
        return

    finished = threading.Event()
    outcome: list[bool] = []
    errors: list[object] = []

    def on_finished(name: object = None, completed: bool = True, **_: object) -> None:
        outcome.append(completed)
        finished.set()

    def on_error(name: object = None, exception: object = None, **_: object) -> None:
        errors.append(exception)

    engine.connect("finished-utterance", on_finished)
    engine.connect("error", on_error)

    if driver == "espeak":
        from pyttsx3.drivers import _espeak

        def settle() -> None:
            # setProperty only queues a command for espeak's own thread, and runAndWait
            # cancels espeak's queue if it is still busy, so the rate is lost (trap 3). The
            # tail of the previous synthesis would likewise make the next runAndWait cancel
            # (pyttsx3 then reports the new utterance as not completed). Wait until idle.
            limit = time.monotonic() + timeout
            while _espeak.IsPlaying() and time.monotonic() < limit:
                time.sleep(0.001)
    else:

        def settle() -> None:
            pass

    def synth(text: str, path: str) -> str | None:
        """Save one utterance to path: None on success, else what went wrong."""
        settle()
        finished.clear()
        outcome.clear()
        errors.clear()
        # One save per runAndWait: of several queued saves only the last is written (trap 1).
        engine.save_to_file(text, path)
        engine.runAndWait()
        # On espeak runAndWait can return before the file is written (trap 2); the
        # finished-utterance event comes only after the write. Other drivers block in
        # runAndWait, so a missing event there is not a failure.
        in_time = finished.wait(timeout if driver == "espeak" else 1.0)
        if driver == "espeak" and not in_time:
            return f"no finished-utterance event within {timeout:g} s"
        if errors:
            return f"{type(errors[0]).__name__}: {errors[0]}"
        if outcome and not outcome[-1]:
            return "synthesis was cancelled"
        if not os.path.exists(path) or os.path.getsize(path) <= 44:
            return "no audio was written"
        return None

    voice: str | None = None
    rate: int | None = None
    warm = False
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        job_id, text, want_voice, want_rate, path = job
        if not warm:
            # A new engine holds setProperty back until its first runAndWait, which then
            # cancels it (trap 3), and its first save returns early (trap 2). One throw-away
            # save leaves it idle, so later setProperty calls take effect at once.
            synth("warm up", path)
            warm = True
        # espeak calls back from its own thread; the finished-utterance callback goes on to
        # touch pyttsx3's command queue, so let it return before we queue anything.
        settle()
        if want_voice != voice:
            errors.clear()
            # An unknown voice only fires an 'error' event (trap 7), synchronously here
            # because the engine is idle.
            engine.setProperty("voice", want_voice)
            if errors:
                voice = None
                conn.send(("bad-voice", job_id, want_voice))
                continue
            voice = want_voice
            rate = None  # a voice change may reset the rate: always set it again
        if want_rate != rate:
            engine.setProperty("rate", want_rate)
            rate = want_rate
        problem = synth(text, path)
        conn.send(("done", job_id) if problem is None else ("failed", job_id, problem))


@dataclass
class _Job:
    id: int
    text: str
    raw: Path  # where the worker writes the engine's own WAV


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    #: Sent, not yet answered, in order.
    jobs: deque[_Job] = field(default_factory=deque)
    #: Monotonic time at which its oldest unanswered job became the one it works on.
    since: float = 0.0


def _cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _check_hint() -> str:
    if _driver_name() == "espeak":
        return "check that `espeak-ng -w /tmp/test.wav hello` works"
    return "check that the system's text-to-speech works"


class Synthesizer:
    """Makes sure clips are in a SpeechCache, synthesizing missing ones in worker processes.

    ``workers`` fixes the number of processes (never more than there are clips to make);
    None picks it from the amount of work. ``timeout`` bounds, in seconds, how long any one
    clip may take (the first also includes its worker's start-up); past it the workers are
    terminated and SpeechError is raised.
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
        """How many processes ``ensure`` starts for this many missing clips."""
        if missing <= 0:
            return 0
        if self.workers is not None:
            return min(self.workers, missing)
        k = 1
        while k < _cpu_count() and missing >= (k + 1) * k * _STARTUP_IN_CUES:
            k += 1
        return k

    def _synthesize(
        self,
        texts: list[str],
        settings: SpeechSettings,
        progress: Callable[[int, int], None] | None,
    ) -> dict[str, Samples]:
        import multiprocessing
        from multiprocessing.connection import wait

        ctx = multiprocessing.get_context("spawn")
        # Post-processing needs numpy and soxr; import them while the workers start up
        # rather than when the first clip is already waiting.
        threading.Thread(target=_import_post_processing, daemon=True).start()
        driver = _driver_name()
        try:
            self.cache.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SpeechError(
                f"cannot create the speech cache {self.cache.directory}: {e.strerror}"
            ) from e
        tag = uuid.uuid4().hex
        jobs = [
            _Job(i, t, self.cache.directory / f".raw-{tag}-{i}.wav") for i, t in enumerate(texts)
        ]
        todo = deque(jobs)
        total = len(jobs)
        lengths: dict[str, Samples] = {}
        workers: list[_Worker] = []
        ok = False

        def feed(w: _Worker) -> None:
            while todo and len(w.jobs) < _IN_FLIGHT:
                job = todo.popleft()
                if not w.jobs:
                    w.since = time.monotonic()
                w.jobs.append(job)
                w.conn.send((job.id, job.text, settings.voice, settings.rate, str(job.raw)))

        def handle(w: _Worker, msg: tuple[Any, ...]) -> None:
            kind = msg[0]
            if kind == "no-engine":
                raise SpeechError(NO_ENGINE)
            job = w.jobs.popleft()
            w.since = time.monotonic()
            feed(w)  # before post-processing, so the worker does not wait for us
            if kind == "bad-voice":
                raise SpeechError(
                    f"unknown voice {settings.voice!r}: the text-to-speech "
                    "engine rejected it; pick one of its installed voices"
                )
            if kind == "failed":
                raise SpeechError(
                    f"text-to-speech failed on {_short(job.text)}: {msg[2]}; {_check_hint()}"
                )
            pcm = _finish_clip(job.raw, job.text)
            job.raw.unlink(missing_ok=True)
            lengths[job.text] = self.cache._store(job.text, settings, pcm)
            self.synthesized += 1
            if progress is not None:
                progress(len(lengths), total)

        try:
            if progress is not None:
                progress(0, total)
            for _ in range(self.worker_count(total)):
                parent_end, child_end = ctx.Pipe()
                process = ctx.Process(
                    target=_worker_main,
                    name="coach-tts",
                    daemon=True,
                    args=(child_end, driver, self.timeout),
                )
                process.start()
                child_end.close()
                worker = _Worker(process, parent_end)
                workers.append(worker)
                feed(worker)
            while len(lengths) < total:
                busy = [w for w in workers if w.jobs]
                late = min(busy, key=lambda w: w.since)
                left = late.since + self.timeout - time.monotonic()
                if left <= 0:
                    raise SpeechError(
                        f"text-to-speech took over {self.timeout:g} s on "
                        f"{_short(late.jobs[0].text)}; {_check_hint()}"
                    )
                wait([w.conn for w in busy] + [w.process.sentinel for w in busy], left)
                for w in busy:
                    try:
                        while w.jobs and w.conn.poll():
                            handle(w, w.conn.recv())
                    except (EOFError, OSError):
                        pass  # the pipe broke: the process is gone, reported just below
                    if w.jobs and not w.process.is_alive():
                        raise SpeechError(
                            f"text-to-speech stopped (exit code {w.process.exitcode}) on "
                            f"{_short(w.jobs[0].text)}; {_check_hint()}"
                        )
            ok = True
        finally:
            _stop(workers, graceful=ok)
            for job in jobs:
                job.raw.unlink(missing_ok=True)
        return lengths


def _stop(workers: list[_Worker], *, graceful: bool) -> None:
    """End the worker processes: politely when they are idle, else terminate them."""
    for w in workers:
        if graceful:
            with contextlib.suppress(OSError):
                w.conn.send(None)
        else:
            w.process.terminate()
    for w in workers:
        w.process.join(1.0)
        if w.process.is_alive():
            w.process.kill()
            w.process.join()
        w.process.close()
        w.conn.close()
