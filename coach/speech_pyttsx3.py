"""pyttsx3, the system's voices (espeak-ng on Linux, SAPI5 on Windows, NSSpeechSynthesizer
on macOS): with its workers' body, coach/speech_pyttsx3_worker.py, the one module that
imports it.

Synthesis runs in worker processes ("spawn", so it behaves the same on every OS), each
holding one pyttsx3 engine in its main thread. That gives parallelism and a real timeout:
a worker that hangs is terminated. A program that synthesizes from a script must guard its
entry point with ``if __name__ == "__main__":`` (spawn re-imports it).

pyttsx3 2.99's espeak driver has traps (lost rates, early returns, swallowed errors); each
workaround below names its trap as docs/speech-engines.md does, which tells them in full.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
import uuid
import wave
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coach.children import cores, sigint_ignored
from coach.errors import SpeechError
from coach.speech import Deliver, SpeechSettings, Voice, import_post_processing, short
from coach.speech_pyttsx3_worker import worker_main

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    import numpy as np

#: What the CLI prints when there is no engine at all.
NO_ENGINE = "no text-to-speech engine: install espeak-ng (apt install espeak-ng)"

# Worker count. A worker is ready ~0.1 s after it is started (spawn, imports, engine,
# warm-up) and then makes a short cue in ~11 ms, so its start-up costs about
# _STARTUP_IN_CUES cues. The k-th worker saves n/(k-1) - n/k cue-times of n cues, so it
# pays once n >= k*(k-1)*_STARTUP_IN_CUES: one worker below 18 cues, two from 18, ...
_STARTUP_IN_CUES = 9

# Jobs sent ahead to each worker, so it never idles while the parent post-processes.
_IN_FLIGHT = 2


@functools.cache
def driver_name() -> str:
    """The pyttsx3 driver this platform uses; part of the cache key, and the worker asks
    pyttsx3 for exactly this driver so key and clip always agree."""
    try:
        from pyttsx3.engine import default_engine_by_sys_platform
    except ImportError as e:
        raise SpeechError(NO_ENGINE) from e
    return default_engine_by_sys_platform()


@functools.cache
def engine_version(driver: str) -> str:
    """The synthesizer's own version behind the driver, part of the cache key: a new
    espeak-ng speaks the same text differently. On espeak it is the library's (the one
    pyttsx3 loads); elsewhere the OS release, which carries SAPI5's and NSSpeech's."""
    if driver == "espeak":
        try:
            from pyttsx3.drivers import _espeak

            return "espeak-ng " + _espeak.Info(None).decode("ascii", "replace")
        except Exception:  # no library: synthesis will say so; the key stays usable
            return "espeak-ng unknown"
    import platform

    return f"{platform.system()} {platform.release()} {platform.version()}"


def _init_engine(driver: str) -> Any:
    try:
        import pyttsx3

        return pyttsx3.init(driver)
    except (ImportError, RuntimeError, OSError) as e:
        raise SpeechError(NO_ENGINE) from e


def list_voices() -> list[Voice]:
    """The pyttsx3 voices this machine has. Raises SpeechError if there is no engine."""
    engine = _init_engine(driver_name())
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


def read_wav(raw: Path, text: str) -> tuple[np.ndarray, int]:
    """The engine's 16-bit WAV as float32 mono samples and its sample rate."""
    import numpy as np

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
    return x, rate


def worker_count(missing: int, fixed: int | None = None) -> int:
    """How many processes make this many missing clips (`fixed`: that many, at most)."""
    if missing <= 0:
        return 0
    if fixed is not None:
        return min(fixed, missing)
    k = 1
    while k < cores() and missing >= (k + 1) * k * _STARTUP_IN_CUES:
        k += 1
    return k


#: A cue longer than this many words is more than espeak-ng speaks reliably in one go
#: (3,000 words time out, 4,000 crash it): a failure on one is blamed on its length.
LONG_CUE_WORDS = 400


def _hint(text: str, done: int, scratch: Path) -> str:
    """What to do about a failure on `text` after `done` clips of this run came out well:
    the likely cause, not a reinstall when the engine plainly works."""
    import shutil

    from coach.speech import cache_write_error

    words = len(text.split())
    if words > LONG_CUE_WORDS:
        return f"the cue has {words} words, too long to speak in one go: split it into shorter cues"
    with contextlib.suppress(OSError):
        if shutil.disk_usage(scratch).free < 1 << 20:
            return cache_write_error(scratch, OSError(28, "No space left on device"))
    if done:
        return f"{done} other cues were spoken, so the engine works: check this text"
    if driver_name() == "espeak":
        return "check that `espeak-ng -w /tmp/test.wav hello` works"
    return "check that the system's text-to-speech works"


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


class Pyttsx3Engine:
    """The system's voices through pyttsx3, in worker processes."""

    name = "pyttsx3"

    def identity(self, settings: SpeechSettings) -> tuple[str, ...]:
        """What besides the text decides the samples: the driver, the voice, the rate, and
        the synthesizer's version (`engine_version`)."""
        driver = driver_name()
        return (driver, settings.voice, str(settings.rate), engine_version(driver))

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
        """Speak each text in worker processes; `deliver` gets each one's samples (in the
        order they come back). Raises SpeechError on any failure or a timeout."""
        import multiprocessing
        from multiprocessing.connection import wait

        ctx = multiprocessing.get_context("spawn")
        driver = driver_name()
        # Named as SpeechCache.sweep knows them, so a killed run's files are removed later.
        tag = f"{os.getpid()}-{uuid.uuid4().hex}"
        jobs = [_Job(i, t, scratch / f".raw-{tag}-{i}.wav") for i, t in enumerate(texts)]
        todo = deque(jobs)
        total = len(jobs)
        done = 0
        pool: list[_Worker] = []
        ok = False

        def feed(w: _Worker) -> None:
            while todo and len(w.jobs) < _IN_FLIGHT:
                job = todo.popleft()
                if not w.jobs:
                    w.since = time.monotonic()
                w.jobs.append(job)
                w.conn.send((job.id, job.text, settings.voice, settings.rate, str(job.raw)))

        def handle(w: _Worker, msg: tuple[Any, ...]) -> None:
            nonlocal done
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
                    f"text-to-speech failed on {short(job.text)}: {msg[2]}; "
                    f"{_hint(job.text, done, scratch)}"
                )
            samples, rate = read_wav(job.raw, job.text)
            job.raw.unlink(missing_ok=True)
            done += 1
            deliver(job.text, samples, rate)

        try:
            for _ in range(worker_count(total, workers)):
                parent_end, child_end = ctx.Pipe()
                process = ctx.Process(
                    target=worker_main,
                    name="coach-tts",
                    daemon=True,
                    args=(child_end, driver, timeout),
                )
                with sigint_ignored():
                    process.start()
                child_end.close()
                worker = _Worker(process, parent_end)
                pool.append(worker)
                feed(worker)
            # Post-processing needs numpy and soxr; import them while the workers start
            # up rather than when the first clip is already waiting.
            threading.Thread(target=import_post_processing, daemon=True).start()
            while done < total:
                busy = [w for w in pool if w.jobs]
                late = min(busy, key=lambda w: w.since)
                left = late.since + timeout - time.monotonic()
                if left <= 0:
                    text = late.jobs[0].text
                    raise SpeechError(
                        f"text-to-speech took over {timeout:g} s on "
                        f"{short(text)}; {_hint(text, done, scratch)}"
                    )
                wait([w.conn for w in busy] + [w.process.sentinel for w in busy], left)
                for w in busy:
                    try:
                        while w.jobs and w.conn.poll():
                            handle(w, w.conn.recv())
                    except (EOFError, OSError):
                        pass  # the pipe broke: the process is gone, reported just below
                    if w.jobs and not w.process.is_alive():
                        text = w.jobs[0].text
                        raise SpeechError(
                            f"text-to-speech stopped (exit code {w.process.exitcode}) on "
                            f"{short(text)}; {_hint(text, done, scratch)}"
                        )
            ok = True
        finally:
            _stop(pool, graceful=ok)
            for job in jobs:
                job.raw.unlink(missing_ok=True)


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
