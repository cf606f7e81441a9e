"""Child processes that a Ctrl-C does not interrupt: the speech workers
(coach.speech_pyttsx3) and the recognizer of voice commands (coach.listen) are started
through `sigint_ignored()`, and the parent decides when they end; each takes its work
from a pipe with `jobs()`."""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any


def cores() -> int:
    """How many cores this process may run on (its affinity, where the system has one):
    how many threads or processes share out parallel work."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """Start a child with SIGINT ignored, so that a Ctrl-C while the worker is still
    importing prints no traceback there (the parent decides, and terminates it); a
    Ctrl-C for this process meanwhile is held, then acted on.

    The child's Python is started through a two-line shell launcher that ignores SIGINT
    and execs it: an ignored disposition survives exec, and Python then installs no
    KeyboardInterrupt handler. Ignoring SIGINT in this process instead, while the child
    is started, can lose a Ctrl-C meant for us: the kernel may hand a process-wide
    signal to another thread (espeak-ng and PortAudio run some), where it is dropped.
    Without a shell (Windows), children start as they are; their first line ignores
    SIGINT."""
    import signal
    from multiprocessing import spawn

    launcher = _launcher()
    if launcher is None:
        yield
        return
    # A Ctrl-C for us while the child is being started is held until it has its
    # instructions: cut short, it would die reading them, with a traceback.
    held: list[int] = []
    main = threading.current_thread() is threading.main_thread()
    handler = signal.signal(signal.SIGINT, lambda n, _: held.append(n)) if main else None
    before = spawn.get_executable()
    spawn.set_executable(launcher)
    try:
        yield
    finally:
        spawn.set_executable(before)
        if main:
            signal.signal(signal.SIGINT, handler)
            if held and callable(handler):
                handler(signal.SIGINT, None)


@functools.cache
def _launcher() -> str | None:
    """The path of the launcher (made once per process, removed at exit), or None."""
    import atexit
    import shlex
    import shutil
    import sys
    import tempfile

    sh = shutil.which("sh")
    if os.name != "posix" or sh is None or not sys.executable:
        return None
    try:
        folder = tempfile.mkdtemp(prefix="coach-child-")
        path = os.path.join(folder, "python")
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"#!{sh}\ntrap '' INT\nexec {shlex.quote(sys.executable)} \"$@\"\n")
        os.chmod(path, 0o700)
    except OSError:
        return None
    atexit.register(shutil.rmtree, folder, True)
    return path


def jobs(conn: Any) -> Iterator[Any]:
    """A child's jobs from its end of a pipe, until the parent sends None or closes it."""
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        yield job


class Answers:
    """Jobs sent down a pipe to a child that answers each in turn (as `jobs()` gives
    them): `send(job)` sends it at once, and gives a callable that waits for its answer.
    Answers are asked for in the order sent, and some never are (the asker no longer
    needs them): an answer before the one asked for is read past and dropped. The
    pipe's own errors (OSError on send, EOFError or OSError on receive) reach the
    caller."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._sent = 0
        self._received = 0

    def send(self, job: Any) -> Callable[[], Any]:
        self._conn.send(job)
        self._sent += 1
        number = self._sent
        answer: list[Any] = []

        def result() -> Any:
            while not answer:
                if self._received >= number:
                    raise RuntimeError("an answer asked for after a later one")
                got = self._conn.recv()
                self._received += 1
                if self._received == number:
                    answer.append(got)
            return answer[0]

        return result


#: How much lower than the session a background decoder runs: with two decoders busy on
#: a two-core machine, the process that feeds the speakers must still get its turn.
BACKGROUND_NICENESS = 10


def as_worker(*, background: bool = False) -> None:
    """The first step of a worker process's body: Ctrl-C reaches the whole process
    group, and the parent decides and terminates us, so SIGINT is ignored (the launcher
    of `start` ignores it already, so one during start-up is no traceback either; this
    covers a worker started without it). `background`: lower its CPU priority too (a
    no-op where that is not possible)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if background:
        with contextlib.suppress(AttributeError, OSError):
            os.nice(BACKGROUND_NICENESS)
