"""The speakers (and the microphone): the one module that imports sounddevice (PortAudio).

Four things. ``output_devices`` and ``find_device`` turn what the user typed after
``--device`` (nothing, an index, or part of a name) into a ``Device``, or into an
``AudioDeviceError`` that lists what this machine has. ``Output`` is one output stream
whose callback only copies samples that are already made: it asks a ``BlockSource`` to
fill PortAudio's buffer and counts the times it could not. ``BlockQueue`` is the
``BlockSource`` of live playback: a producer thread puts blocks in, the callback takes
them out, and the producer reads back which block is sounding. ``Input`` is the
microphone for voice commands (``find_input`` picks it, for ``--mic``): its callback
hands each block of 16-bit samples, with the time it was captured, to a function that
must not wait.

sounddevice is imported inside functions, so that importing this module (and
``coach --help``) never loads PortAudio. PortAudio reads the list of devices once, when
sounddevice is first imported; a device that appears later (a PulseAudio server started
afterwards, a USB headset plugged in) is seen by the next process.
"""

from __future__ import annotations

import collections
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from coach.errors import CoachError
from coach.units import RATE

if TYPE_CHECKING:
    import numpy as np

#: No device at all: PortAudio sees neither a sound card nor an audio server.
NO_SERVER = "no sound card and no audio server (PulseAudio or PipeWire) is running here"
NO_DEVICE = f"no audio output device: {NO_SERVER}; start one, or use `coach render` to make a file"


class AudioDeviceError(CoachError):
    """No usable audio output: PortAudio missing, no such device, a device that will not
    open."""

    exit_code = 1


class DeviceChoiceError(AudioDeviceError):
    """--device or --mic names no device, or several: a usage error, like a wrong --voice."""

    exit_code = 2


@dataclass(frozen=True)
class Device:
    """An output-capable device as PortAudio lists it."""

    index: int
    name: str
    channels: int
    default_rate: float
    is_default: bool

    def __str__(self) -> str:
        return f"{self.index} {self.name}"


def _sounddevice() -> Any:
    """The sounddevice module, or an AudioDeviceError that says what to install."""
    try:
        import sounddevice
    except OSError as e:  # "PortAudio library not found"
        raise AudioDeviceError(
            f"cannot play audio: {e}; install PortAudio: "
            "apt install libportaudio2 (or use `coach render` to make a "
            "file)"
        ) from e
    except ImportError as e:
        raise AudioDeviceError(
            "cannot play audio: the sounddevice package is missing; "
            "install it: pip install sounddevice"
        ) from e
    except Exception as e:  # sounddevice.PortAudioError from Pa_Initialize
        raise AudioDeviceError(f"cannot start PortAudio: {_one_line(e)}") from e
    return sounddevice


def _one_line(error: BaseException) -> str:
    return re.sub(r"\s+", " ", str(error)).strip()


def output_devices() -> list[Device]:
    """Every device that can play, in PortAudio's order (its index)."""
    return _devices("output")


def input_devices() -> list[Device]:
    """Every device that can record."""
    return _devices("input")


def _devices(kind: str) -> list[Device]:
    sd = _sounddevice()
    try:
        default = sd.default.device[0 if kind == "input" else 1]
        found = sd.query_devices()
    except sd.PortAudioError as e:
        raise AudioDeviceError(f"cannot list audio devices: {_one_line(e)}") from e
    return [
        Device(
            index=info["index"],
            name=info["name"],
            channels=info[f"max_{kind}_channels"],
            default_rate=float(info["default_samplerate"]),
            is_default=info["index"] == default,
        )
        for info in found
        if info[f"max_{kind}_channels"] > 0
    ]


def _close(stream: Any) -> None:
    """Stop and close a PortAudio stream (None: nothing to do), ignoring its errors."""
    if stream is not None:
        try:
            stream.stop(ignore_errors=True)
        finally:
            stream.close(ignore_errors=True)


def _listing(devices: list[Device]) -> str:
    return ", ".join(str(d) for d in devices)


def find_device(spec: str | None) -> Device:
    """The output device ``spec`` names.

    None is the default output device; a string of digits is a device index; anything
    else is a case-insensitive part of a device's name, which must fit exactly one device
    (a name typed in full wins over longer names that contain it). Raises AudioDeviceError
    (exit 1), listing the devices, when none fits or several do.
    """
    devices = output_devices()
    if not devices:
        raise AudioDeviceError(NO_DEVICE)
    return _pick(spec, devices, "output", "--device")


def find_input(spec: str | None) -> Device:
    """The input device ``spec`` names (for ``--mic``), as ``find_device`` does for
    outputs."""
    devices = input_devices()
    if not devices:
        raise AudioDeviceError(f"no microphone: {NO_SERVER}")
    return _pick(spec, devices, "input", "--mic")


def _pick(spec: str | None, devices: list[Device], kind: str, option: str) -> Device:
    choices = f"this machine has: {_listing(devices)} (use {option} NAME or INDEX)"
    if spec is None:
        for device in devices:
            if device.is_default:
                return device
        raise AudioDeviceError(f"no default audio {kind} device; {choices}")
    wanted = spec.strip()
    if wanted.isascii() and wanted.isdigit():
        for device in devices:
            if device.index == int(wanted):
                return device
        raise DeviceChoiceError(f"no {kind} device has the index {wanted}; {choices}")
    key = wanted.casefold()
    matches = [d for d in devices if key and key in d.name.casefold()]
    exact = [d for d in matches if d.name.casefold() == key]
    if len(exact) == 1:
        return exact[0]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise DeviceChoiceError(f"no {kind} device matches {spec!r}; {choices}")
    raise DeviceChoiceError(
        f"{spec!r} matches several devices: {_listing(matches)}; use more of the name or the index"
    )


class BlockSource(Protocol):
    """What an ``Output`` plays. ``fill`` runs in PortAudio's callback thread: it must only
    copy samples that are ready, without waiting, allocating audio buffers or taking locks."""

    def fill(self, out: np.ndarray) -> bool:
        """Copy the next len(out) frames into ``out`` (float32, shape (frames, channels)),
        padding with silence if fewer are ready; return False if it had to pad because
        nothing was ready (an underrun)."""
        ...


class Output:
    """One output stream whose callback only copies ready samples.

    ::

        out = Output(find_device(spec), queue)
        out.start()          # AudioDeviceError (exit 1) if the device will not open
        ...                  # a producer keeps `queue` ahead of the callback
        out.stop()

    ``latency`` is the stream's output latency in seconds as PortAudio reports it after
    ``start()``: roughly how long a sample handed to the callback takes to be heard.
    ``underruns`` counts the output underflows PortAudio reports plus the callbacks whose
    source had nothing ready. ``stop()`` may drop the last ``latency`` seconds of sound,
    so let a session end with at least that much silence before stopping.

    Through PulseAudio, "low" gave 8.7 ms in callbacks of 104 frames and an underflow
    every minute or so on a two-core machine; "high" gave 35 ms (417 frames) and none.
    """

    def __init__(
        self,
        device: Device,
        source: BlockSource,
        *,
        rate: int = RATE,
        channels: int = 2,
        latency: float | str = "low",
    ) -> None:
        self.device = device
        self.source = source
        self.rate = rate
        self.channels = channels
        self.latency: float = 0.0
        self.underruns: int = 0
        self._requested_latency = latency
        self._stream: Any = None

    def start(self) -> None:
        """Open the stream (float32) and start it; a no-op if it is running."""
        if self._stream is not None:
            return
        sd = _sounddevice()
        stream = None
        try:
            stream = sd.OutputStream(
                device=self.device.index,
                samplerate=self.rate,
                channels=self.channels,
                dtype="float32",
                latency=self._requested_latency,
                callback=self._callback,
            )
            stream.start()
        except (sd.PortAudioError, ValueError) as e:
            if stream is not None:
                stream.close(ignore_errors=True)
            raise AudioDeviceError(
                f"cannot play on audio device {self.device} ({_one_line(e)}); close programs "
                "that use it, or pick another with --device"
            ) from e
        self._stream = stream
        self.latency = float(stream.latency)

    def stop(self) -> None:
        """Stop and close the stream. Safe to call twice, or before start()."""
        stream, self._stream = self._stream, None
        _close(stream)

    @property
    def active(self) -> bool:
        return self._stream is not None and self._stream.active

    def __enter__(self) -> Output:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _callback(self, outdata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        if status and status.output_underflow:
            self.underruns += 1
        if not self.source.fill(outdata):
            self.underruns += 1


class BlockQueue:
    """Blocks of samples from a producer thread to the output callback, in order.

    The producer thread calls ``put``, ``clear``, ``finish`` and ``queued_frames``; the
    callback calls only ``fill``. They share a ``collections.deque``, whose append, pop
    and popleft are atomic, so neither side locks or waits; each counter has one writer.

    A block's ``tag`` is the producer's own (say, the session position of its first
    frame). ``played`` is ``(tag, offset)``: the block the callback is in and how many
    of its frames it has handed to the stream, so the producer can tell what is being
    played (heard about ``Output.latency`` later). After the last block it stays at that
    block's end.

    Running out of blocks pads with silence and counts as an underrun, unless the
    producer said with ``finish()`` that no more are coming (the end of a session).
    """

    def __init__(self, channels: int = 2) -> None:
        self.channels = channels
        # (block, tag, tag of the block put before it); the callback takes from the left.
        self._blocks: collections.deque[tuple[np.ndarray, object, object]] = collections.deque()
        # Callback side.
        self._block: np.ndarray | None = None
        self._tag: object = None
        self._offset = 0
        self._played: tuple[object, int] = (None, 0)
        self._taken_frames = 0
        self._padded = 0  # frames of silence the stream played for want of blocks
        # Producer side.
        self._put_frames = 0
        self._last_tag: object = None
        self._finishing = False

    def put(self, block: np.ndarray, tag: object = None) -> None:
        """Queue a block, shape (frames, channels), float32 (converted if not). The queue
        keeps the array itself: do not write into it afterwards. Empty blocks are
        ignored. Putting a block takes back an earlier ``finish()``."""
        import numpy as np

        data = np.ascontiguousarray(block, dtype=np.float32)
        if data.ndim != 2 or data.shape[1] != self.channels:
            raise ValueError(
                f"expected a block of shape (frames, {self.channels}), got {data.shape}"
            )
        if not len(data):
            return
        self._finishing = False
        self._put_frames += len(data)
        self._blocks.append((data, tag, self._last_tag))
        self._last_tag = tag

    def clear(self) -> object:
        """Drop every block the callback has not started. The block being played is
        played to its end, so the producer continues from that block's end: its tag is
        returned (None if the callback has started no block)."""
        while True:
            try:
                block, _, before = self._blocks.pop()
            except IndexError:  # the callback may take the last one meanwhile: it plays
                break
            self._put_frames -= len(block)
            self._last_tag = before
        return self._last_tag

    def finish(self) -> None:
        """No more blocks are coming: once the queue runs out, pad with silence without
        counting underruns."""
        self._finishing = True

    @property
    def put_frames(self) -> int:
        """Frames put so far, less those ``clear()`` dropped, plus the silence the
        stream played when it ran out: the stream frame at which the next block put will
        play (for the echo canceller's reference, which an underrun would otherwise
        leave behind the sound by as much)."""
        return self._put_frames + self._padded

    def queued_frames(self) -> int:
        """Frames put but not yet handed to the stream."""
        return max(0, self._put_frames - self._taken_frames)

    @property
    def finished(self) -> bool:
        """``finish()`` was called and every frame has been handed to the stream."""
        return self._finishing and self.queued_frames() == 0

    @property
    def played(self) -> tuple[object, int]:
        """(tag, offset) of the block being played, read together."""
        return self._played

    @property
    def played_tag(self) -> object:
        return self._played[0]

    @property
    def played_offset(self) -> int:
        return self._played[1]

    def fill(self, out: np.ndarray) -> bool:
        """The callback side (see ``BlockSource.fill``): copy from the current block on,
        moving to the next block as needed; pad with zeros when none is left."""
        frames = len(out)
        done = 0
        block, offset = self._block, self._offset
        while done < frames:
            if block is None or offset == len(block):
                try:
                    block, self._tag, _ = self._blocks.popleft()
                except IndexError:
                    break
                offset = 0
            n = min(frames - done, len(block) - offset)
            out[done : done + n] = block[offset : offset + n]
            done += n
            offset += n
        self._block, self._offset = block, offset
        self._played = (self._tag, offset)
        self._taken_frames += done
        if done < frames:
            out[done:] = 0
            self._padded += frames - done
            return self._finishing
        return True


class Input:
    """One input stream, mono, 16-bit, for voice commands.

    ::

        mic = Input(find_input(spec), on_audio)
        mic.start()   # AudioDeviceError if it will not open
        ...           # on_audio(samples: bytes, captured: float) runs in PortAudio's thread
        mic.stop()

    ``captured`` is the time.monotonic() at which the block's last sample reached the
    microphone, reckoned from the stream's input latency. The stream runs at ``rate``
    when the device takes it (PulseAudio takes any rate), else at the device's own rate:
    ``Input.rate`` says which. ``on_audio`` must not wait (put the block in a queue).
    ``last_audio`` is the monotonic time of the latest block, so a caller can tell a
    microphone that has stopped (unplugged) from one in a quiet room.
    """

    def __init__(
        self, device: Device, on_audio: Any, *, rate: int = 16000, block: float = 0.03
    ) -> None:
        self.device = device
        self.on_audio = on_audio
        self.rate = rate
        self.block = block
        self.latency = 0.0
        self.overflows = 0
        self.last_audio = 0.0
        self._stream: Any = None

    def start(self) -> None:
        if self._stream is not None:
            return
        sd = _sounddevice()
        error: Exception | None = None
        for rate in dict.fromkeys((self.rate, round(self.device.default_rate))):
            stream = None
            try:
                stream = sd.RawInputStream(
                    device=self.device.index,
                    samplerate=rate,
                    channels=1,
                    dtype="int16",
                    blocksize=round(rate * self.block),
                    callback=self._callback,
                )
                stream.start()
            except (sd.PortAudioError, ValueError) as e:
                if stream is not None:
                    stream.close(ignore_errors=True)
                error = e
                continue
            self._stream, self.rate = stream, rate
            self.latency = float(stream.latency)
            self.last_audio = time.monotonic()
            return
        raise AudioDeviceError(
            f"cannot record from {self.device} ({_one_line(error) if error else 'no stream'})"
        )

    def stop(self) -> None:
        """Stop and close the stream. Safe to call twice, or before start()."""
        stream, self._stream = self._stream, None
        _close(stream)

    def _callback(self, indata: Any, frames: int, time_info: Any, status: Any) -> None:
        now = time.monotonic()
        if status and status.input_overflow:
            self.overflows += 1
        self.last_audio = now
        self.on_audio(bytes(indata), now - self.latency)
