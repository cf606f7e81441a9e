"""A real, private PulseAudio server for tests, and a recorder of what it plays.

A test module asks for it with ``pytest_plugins = ["pulse"]``, which makes the session
fixture ``pulse`` available; ``pulse.record(path)`` gives a ``Recorder``. (Importing this
module yourself before pytest registers it makes pytest warn that it cannot rewrite its
asserts, and a fixture imported by name trips ruff's F811, hence the plugin.)

The ``pulse`` fixture starts ``pulseaudio`` as docs/audio-devices.md describes: its own
runtime and config folders, a native-protocol socket, and one null sink ``vsink`` at
48 kHz with ``norewinds=1``, made the default sink (its monitor the default source).
It points ``XDG_RUNTIME_DIR`` and ``PULSE_SERVER`` at it in ``os.environ``, so this
process (sounddevice through ALSA's pulse plugin) and child processes (``coach run``)
play there, and it stops the daemon by its PID at the end of the session. Running as
root works (pulseaudio only warns that it is not meant to).

PortAudio reads the device list once, when sounddevice is imported; a process that
imported it before the server was up sees no "pulse" device. So the fixture restarts
PortAudio if sounddevice is already loaded; no stream may be open at that moment.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

SINK = "vsink"
MONITOR = "vsink.monitor"
RATE = 48_000

_SCRIPT = f"""\
.fail
load-module module-native-protocol-unix
load-module module-null-sink sink_name={SINK} rate={RATE} norewinds=1
set-default-sink {SINK}
set-default-source {MONITOR}
"""
# libpulse must never start a server of its own while we wait for ours.
_CLIENT_CONF = "autospawn = no\n"
_WAV_HEADER = 44  # parecord writes a plain 44-byte RIFF header


@dataclass(frozen=True)
class PulseServer:
    folder: Path
    pid: int
    env: dict[str, str]  # what the fixture put into os.environ
    sink: str = SINK
    monitor: str = MONITOR

    def record(self, path: Path, source: str | None = None, **options: int) -> Recorder:
        """A ``Recorder`` of this server's null sink (or of another `source`), writing
        ``path``."""
        return Recorder(path, source=source or self.monitor, **options)


def _pactl_answers(env: dict[str, str]) -> bool:
    try:
        return (
            subprocess.run(["pactl", "info"], env=env, capture_output=True, timeout=5).returncode
            == 0
        )
    except subprocess.TimeoutExpired:
        return False


@contextlib.contextmanager
def pulse_server() -> Iterator[PulseServer]:
    """A private PulseAudio server with a null sink, while the block lasts (also for
    scripts/bench_live.py). Raises RuntimeError if it cannot be started."""
    exe = shutil.which("pulseaudio")
    missing = [t for t in ("pulseaudio", "pactl", "parecord") if shutil.which(t) is None]
    if exe is None or missing:
        raise RuntimeError(
            f"{', '.join(missing)} not installed (apt install pulseaudio "
            "pulseaudio-utils); these tests play through a real audio server"
        )
    folder = Path(tempfile.mkdtemp(prefix="coach-pulse-"))  # short: a socket path lives here
    run, config = folder / "run", folder / "config"
    for sub in (run, config, config / "pulse"):
        sub.mkdir(mode=0o700)
    (config / "pulse" / "client.conf").write_text(_CLIENT_CONF)
    script = folder / "ci.pa"
    script.write_text(_SCRIPT)
    env = {
        "XDG_RUNTIME_DIR": str(run),
        "XDG_CONFIG_HOME": str(config),
        "PULSE_SERVER": f"unix:{run}/pulse/native",
    }
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    log_path = folder / "pulseaudio.log"
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen(
            [exe, "-n", "-F", str(script), "--daemonize=no", "--exit-idle-time=-1"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
    try:
        deadline = time.monotonic() + 15
        while not _pactl_answers(dict(os.environ)):
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pulseaudio did not start; its log:\n{log_path.read_text()}")
            time.sleep(0.05)
        _restart_portaudio()
        yield PulseServer(folder=folder, pid=daemon.pid, env=env)
    finally:
        os.kill(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(daemon.pid, signal.SIGKILL)
            daemon.wait()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pulse() -> Iterator[PulseServer]:
    """A private PulseAudio server with a null sink, for the whole test session."""
    if shutil.which("pulseaudio") is None:
        pytest.skip(
            "PulseAudio is not installed (apt install pulseaudio pulseaudio-utils); "
            "these tests play through a real audio server"
        )
    with pulse_server() as server:
        yield server


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """A test that records the server runs once more if its recording lost frames
    (RecordingLost: on a loaded machine parecord can stall); it says so in a warning.
    A failure of what the test measures fails it at once."""
    if "pulse" not in pyfuncitem.fixturenames:
        return None
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    try:
        pyfuncitem.obj(**args)
    except RecordingLost as e:
        import warnings

        warnings.warn(f"{e}; the test runs once more", stacklevel=1)
        pyfuncitem.obj(**args)
    return True


def _die_with_parent() -> None:
    """In the child, on Linux: be sent SIGTERM if pytest itself is killed, so that no
    daemon outlives a test run that never reached the fixture's teardown."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _restart_portaudio() -> None:
    sd = sys.modules.get("sounddevice")
    if sd is not None:
        sd._terminate()
        sd._initialize()


class RecordingLost(RuntimeError):
    """The recorder did not record all the time it ran: the test's instrument failed,
    not what it measures."""


class RoomJumped(RecordingLost):
    """The room's loopback jumped in mid-session: the test's instrument (a room is a
    fixed path), not what it measures, so the test runs once more."""


class MachineBusy(RecordingLost):
    """The coach reported that its sound stuttered because the machine was busy (an
    underrun, which a loaded test machine causes now and then): what the test compares
    sample by sample is then not there to compare, so the test runs once more."""


class Recorder:
    """Records the null sink's monitor with ``parecord`` into a WAV file.

    ::

        with pulse.record(tmp_path / "rec.wav") as rec:
            ...  # play
        rec.samples      # float32, shape (frames, 2), at 48 kHz
        rec.started      # time.monotonic() of the recording's first frame
        rec.frame_at(t)  # the recording's frame for a time.monotonic() value

    ``__enter__`` returns once parecord has written its first frames, so everything
    played afterwards is in the recording. ``started`` is the tightest bound seen while
    recording: over polls of the file's length, the least of (poll time - frames in the
    file / rate).

    How well that relates recorded frames to events, measured on the null sink (16 runs,
    ``Output`` latency "low" and "high" alike): if ``Output.start()`` is called at
    monotonic time t, a sound q frames into its queue starts at recorded frame
    ``frame_at(t) + q``, give or take -2.1 to +1.3 ms. (Counted from the first callback
    instead, it is 1.6 to 5.2 ms early: ``started`` runs a little late.) A test should
    allow some 10 ms early and 25 ms late for a busy machine.
    """

    def __init__(
        self,
        path: Path,
        *,
        source: str = MONITOR,
        rate: int = RATE,
        channels: int = 2,
        latency_msec: int = 20,
    ) -> None:
        self.path = Path(path)
        self.rate = rate
        self.channels = channels
        self.command = [
            "parecord",
            "-d",
            source,
            "--file-format=wav",
            f"--channels={channels}",
            f"--rate={rate}",
            f"--latency-msec={latency_msec}",
            str(self.path),
        ]
        self.samples: np.ndarray = np.zeros((0, channels), dtype=np.float32)
        self.started = float("inf")
        self.errors = ""  # what parecord printed
        self._process: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def _frames_written(self) -> int:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return 0
        return max(0, size - _WAV_HEADER) // (2 * self.channels)

    def _watch(self) -> None:
        frames_seen = 0
        while not self._stop.is_set():
            now = time.monotonic()
            frames = self._frames_written()
            if frames > frames_seen:
                frames_seen = frames
                self.started = min(self.started, now - frames / self.rate)
            time.sleep(0.002)

    def __enter__(self) -> Recorder:
        self._process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._watcher = threading.Thread(target=self._watch, name="recorder", daemon=True)
        self._watcher.start()
        deadline = time.monotonic() + 5
        while self._frames_written() == 0:
            if self._process.poll() is not None or time.monotonic() > deadline:
                self._finish()
                raise RuntimeError(f"parecord recorded nothing: {self.errors}")
            time.sleep(0.002)
        return self

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        stopped = time.monotonic()
        killed = self._finish()
        if exc_type is not None:
            return
        # The frames as written, whatever the header says (a parecord that had to be
        # killed never wrote its final sizes).
        data = self.path.read_bytes()[_WAV_HEADER:]
        data = data[: len(data) // (2 * self.channels) * (2 * self.channels)]
        pcm = np.frombuffer(data, dtype="<i2").reshape(-1, self.channels)
        self.samples = pcm.astype(np.float32) / 32768
        # Everything from `started` until the block ended must be there: a recording
        # that is short lost frames (parecord stalled or died), and no test can read
        # times off it.
        expected = (stopped - self.started) * self.rate
        if len(self.samples) < expected - 0.5 * self.rate:
            raise RecordingLost(
                f"parecord recorded {len(self.samples) / self.rate:.2f} s of the "
                f"{expected / self.rate:.2f} s it ran"
                f"{' (it had to be killed)' if killed else ''}; it said: {self.errors!r}"
            )

    def _finish(self) -> bool:
        """Stop parecord; whether it had to be killed."""
        killed = False
        process = self._process
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)  # parecord then completes the WAV header
            else:
                self.errors = f"(it had ended by itself, exit code {process.returncode}) "
            try:
                _, stderr = process.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                killed = True
                _, stderr = process.communicate()
            self.errors += stderr.decode(errors="replace").strip()
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()
        return killed

    def frame_at(self, t: float) -> int:
        """The recording's frame for monotonic time t (by the recorder's clock)."""
        return round((t - self.started) * self.rate)

    def span(self, threshold: float = 0.01) -> tuple[int, int] | None:
        """(first, last + 1): the frames whose magnitude exceeds ``threshold`` on either
        channel, or None for a silent recording."""
        loud = np.flatnonzero(np.abs(self.samples).max(axis=1) > threshold)
        if not len(loud):
            return None
        return int(loud[0]), int(loud[-1]) + 1
