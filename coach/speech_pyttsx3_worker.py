"""The body of a pyttsx3 synthesis process (coach/speech_pyttsx3.py starts them).

A module of its own so that a worker imports only it, coach.children and pyttsx3: spawn
imports the module its target is in, and coach.speech_pyttsx3 with coach.speech and
what they import took 40 ms of a worker's 60 ms start-up, which a cold render waits
for before its first clip. The traps named here are told in docs/speech-engines.md.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING

from coach.children import jobs

if TYPE_CHECKING:
    from multiprocessing.connection import Connection


def worker_main(conn: Connection, driver: str, timeout: float) -> None:
    """Body of a synthesis process: one pyttsx3 engine, used from this main thread only.

    Receives jobs ``(id, text, voice, rate, path)`` and answers each, in order, with
    ``("done", id)``, ``("failed", id, why)`` or ``("bad-voice", id, voice)``; ``None`` or
    a closed pipe ends it. Sends ``("no-engine", why)`` and ends if pyttsx3 cannot start.
    """
    from coach.children import as_worker

    as_worker()
    # pyttsx3 prints "Audio saved to ..." on stdout for every save ("swallowed errors and chatter").
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
            # cancels espeak's queue if it is still busy, so the rate is lost ("a lost rate"). The
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
        # One save per runAndWait: of several queued saves only the last is written
        # ("queued saves are lost").
        engine.save_to_file(text, path)
        engine.runAndWait()
        # On espeak runAndWait can return before the file is written ("an early return"); the
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
    for job_id, text, want_voice, want_rate, path in jobs(conn):
        if not warm:
            # A new engine holds setProperty back until its first runAndWait, which then
            # cancels it ("a lost rate"), and its first save returns early ("an early
            # return"). One throw-away save leaves it idle, so later setProperty calls take
            # effect at once.
            synth("warm up", path)
            warm = True
        # espeak calls back from its own thread; the finished-utterance callback goes on to
        # touch pyttsx3's command queue, so let it return before we queue anything.
        settle()
        if want_voice != voice:
            errors.clear()
            # An unknown voice only fires an 'error' event ("swallowed errors and
            # chatter"), synchronously here because the engine is idle.
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
