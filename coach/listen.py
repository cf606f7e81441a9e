"""Voice commands: what the microphone hears becomes a live session's controls.

The one module that imports pocketsphinx (inside functions: `coach run` without
`--listen` never loads it). Three parts, innermost first:

- `Recognizer` (pocketsphinx, offline): one utterance of 16 kHz audio -> the command
  it says, or None. A grammar of the ten commands, not free dictation: docs/audio-devices.md
  has open transcription of espeak-ng speech at ~85% word errors. A grammar
  forces any sound onto some command, so an utterance is also rejected when it holds
  no voice (rhythm pulses), when it is too long to be a command, or when its sound
  fits a free loop of phones far better than the command. These are weak checks: what
  the coach itself says is kept out by the gate, below.
- `Listener` (no threads): a stream of microphone samples -> utterances, cut by
  pocketsphinx's voice activity endpointer -> `Heard` commands. An utterance during
  which the coach could be heard in the room (`gate`) is dropped unheard, so the coach
  never obeys its own voice, however much of it reaches the microphone.
- `VoiceControl`: the microphone (`speakers.Input`), a thread running the Listener, and
  the Player the commands go to. With no microphone, or one that fails, the session
  goes on with keys, and the screen says so.

Measured figures are printed by scripts/bench_listen.py.
"""

from __future__ import annotations

import importlib.resources
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from coach.controls import WORDS, Command

if TYPE_CHECKING:
    import numpy as np

#: The microphone's sample rate: what the acoustic model was trained on (the session
#: itself plays at coach.units.RATE).
MIC_RATE = 16000
#: An utterance whose words take longer than this is talk, not a command (the slowest
#: espeak-ng voice in bench_listen says "more pressure" in 1.1 s).
MAX_COMMAND = 1.6
#: Longer stretches of sound are never decoded at all.
MAX_UTTERANCE = 4.0
#: An utterance is rejected when the grammar's score falls this far below a free loop
#: of phones, per 10 ms frame (in pocketsphinx's log units x 1e4). bench_listen.py
#: measures what it costs in right commands and what it rejects.
MIN_FIT = -15.0
#: The endpointer: this much of a 0.3 s window must be speech, or silence, to start
#: or end an utterance; so an utterance is decided some 0.3 s after the voice stops.
WINDOW = 0.3
RATIO = 0.9
#: Noise added to what is decoded, about -60 dBFS: digital silence (a virtual source,
#: the gaps of espeak-ng) upsets the recognizer (docs/audio-devices.md), and real rooms
#: have this.
DITHER = 30.0
#: What lies below this frequency is left out when judging whether an utterance holds a
#: voice at all: the rhythm's soft pulses (75-180 Hz) and room rumble, which the
#: endpointer takes for speech. (The recognizer gets the whole sound: filtering it cost
#: 2% of the commands in bench_listen.)
LOW_CUT = 250.0
#: An utterance with no 30 ms stretch louder than this (RMS, above LOW_CUT) is no voice.
MIN_VOICE = 0.004
#: A microphone that has sent nothing for this long has stopped.
SILENT_MIC = 2.0


class ListenError(Exception):
    """Voice commands cannot work here (no recognizer, no microphone)."""


@dataclass(frozen=True)
class Heard:
    """A command heard: the words, the Player's control, and when they were said (by
    time.monotonic(), from the microphone's clock)."""

    phrase: str
    control: Command
    start: float
    end: float


def _pocketsphinx() -> Any:
    try:
        import pocketsphinx
    except ImportError as e:
        raise ListenError("the pocketsphinx package is missing (pip install pocketsphinx)") from e
    return pocketsphinx


class Recognizer:
    """One utterance of 16 kHz mono int16 audio -> the command it says, or None."""

    def __init__(self) -> None:
        ps = _pocketsphinx()
        words = importlib.resources.files("coach") / "listen.dict"
        with importlib.resources.as_file(words) as path:
            self._decoder = ps.Decoder(
                samprate=MIC_RATE, dict=str(path), fsgusefiller=False, topn=32, loglevel="FATAL"
            )
        d = self._decoder
        d.add_fsg("commands", d.create_fsg("commands", 0, 1, self._transitions()))
        phones = f"{ps.get_model_path()}/en-us-phone.lm.bin"
        d.add_allphone_file("phones", phones)

    def _transitions(self) -> list[tuple]:
        """A finite-state grammar: silence, one command, silence."""
        start, final = 0, 1
        trans: list[tuple] = [(start, start, 0.5, "<sil>"), (final, final, 0.5, "<sil>")]
        state = 2
        first = start
        for phrase in WORDS:
            words = phrase.split()
            at = first
            for i, word in enumerate(words):
                to = final if i == len(words) - 1 else state
                if to == state:
                    state += 1
                trans.append((at, to, 1.0 / len(WORDS) if i == 0 else 1.0, word))
                at = to
        return trans

    def _decode(self, search: str, pcm: bytes) -> Any:
        d = self._decoder
        d.activate_search(search)
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        return d.hyp()

    def recognize(self, pcm: bytes) -> str | None:
        """The command `pcm` says ("more time"), or None: nothing that fits a command,
        words too long for one, or a poor fit."""
        hyp = self._decode("commands", pcm)
        if hyp is None:
            return None
        phrase = " ".join(hyp.hypstr.split())
        if phrase not in WORDS:  # the search ended before the grammar did
            return None
        spans = [
            (s.start_frame, s.end_frame) for s in self._decoder.seg() if not s.word.startswith("<")
        ]
        if not spans:
            return None
        if (spans[-1][1] - spans[0][0] + 1) / 100 > MAX_COMMAND:
            return None
        frames = self._decoder.n_frames()
        score = hyp.score
        free = self._decode("phones", pcm)  # after the checks that need no second search
        if free is None or frames <= 0:
            return None
        return phrase if (score - free.score) / frames * 1e4 >= MIN_FIT else None


def to_pcm(samples: np.ndarray, rate: int, *, dither: float = DITHER, seed: int = 0) -> bytes:
    """Float samples in [-1, 1] (mono) at `rate` -> 16 kHz int16 bytes, with a little
    noise (for tests and the benchmark; the live path gets int16 from the microphone)."""
    import numpy as np

    y = np.asarray(samples, dtype=np.float64)
    if rate != MIC_RATE:
        import soxr

        y = soxr.resample(y, rate, MIC_RATE)
    return _dithered(y * 32768, seed, dither)


@dataclass
class Counts:
    utterances: int = 0  # stretches of sound the endpointer found
    during_coach: int = 0  # dropped: the coach could be heard meanwhile
    too_long: int = 0  # dropped: longer than any command
    rejected: int = 0  # decoded, but no command (or a poor fit)
    heard: int = 0  # commands


class Listener:
    """Microphone samples -> the commands they say, utterance by utterance.

    ``feed(pcm, captured)`` takes int16 mono bytes at ``rate`` and the monotonic time
    their last sample was captured; it returns the commands whose utterances ended in
    them. ``gate(start, end)`` says whether the coach could be heard between two such
    times; those utterances are dropped before decoding.
    """

    def __init__(
        self,
        recognizer: Recognizer,
        *,
        rate: int = MIC_RATE,
        gate: Callable[[float, float], bool] | None = None,
    ) -> None:
        ps = _pocketsphinx()
        self.recognizer = recognizer
        self.gate = gate or (lambda start, end: False)
        self.counts = Counts()
        self._endpointer = ps.Endpointer(window=WINDOW, ratio=RATIO, sample_rate=MIC_RATE)
        self._frame = self._endpointer.frame_bytes
        self._resample: Any = None
        if rate != MIC_RATE:
            import soxr

            self._resample = soxr.ResampleStream(rate, MIC_RATE, 1, dtype="int16")
        self._pending = bytearray()
        self._utterance = bytearray()
        self._samples = 0  # 16 kHz samples given to the endpointer
        self._offset: float | None = None  # monotonic time of sample 0
        self._seed = 0

    def feed(self, pcm: bytes, captured: float) -> list[Heard]:
        if self._resample is not None:
            import numpy as np

            pcm = self._resample.resample_chunk(np.frombuffer(pcm, dtype="<i2")).tobytes()
        self._pending += pcm
        # The stream's clock: the time of its sample 0, from the newest block's capture.
        waiting = len(self._pending) // 2
        self._offset = captured - (self._samples + waiting) / MIC_RATE
        heard: list[Heard] = []
        ep = self._endpointer
        while len(self._pending) >= self._frame:
            frame = bytes(self._pending[: self._frame])
            del self._pending[: self._frame]
            self._samples += self._frame // 2
            was_in_speech = ep.in_speech
            speech = ep.process(frame)
            if speech is None:
                continue
            if not was_in_speech:
                self._utterance.clear()
            if len(self._utterance) < MAX_UTTERANCE * MIC_RATE * 2:
                self._utterance += speech
            if not ep.in_speech:
                command = self._finish(ep.speech_start, ep.speech_end)
                if command is not None:
                    heard.append(command)
        return heard

    def _finish(self, start: float, end: float) -> Heard | None:
        import numpy as np

        counts = self.counts
        counts.utterances += 1
        assert self._offset is not None
        t0, t1 = self._offset + start, self._offset + end
        pcm, self._utterance = bytes(self._utterance), bytearray()
        if self.gate(t0, t1):
            counts.during_coach += 1
            return None
        if end - start > MAX_UTTERANCE:
            counts.too_long += 1
            return None
        x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
        if not _has_voice(x):
            counts.rejected += 1
            return None
        phrase = self.recognizer.recognize(_dithered(x, self._seed))
        self._seed += 1
        if phrase is None:
            counts.rejected += 1
            return None
        counts.heard += 1
        return Heard(phrase, WORDS[phrase], t0, t1)


def _has_voice(x: np.ndarray) -> bool:
    """Whether some 30 ms of `x` (int16 scale) is loud enough above LOW_CUT to be a voice."""
    import numpy as np

    spectrum = np.fft.rfft(x)
    spectrum[: int(LOW_CUT * len(x) / MIC_RATE) + 1] = 0
    y = np.fft.irfft(spectrum, len(x))
    frame = round(0.03 * MIC_RATE)
    frames = len(y) // frame
    if frames == 0:
        return False
    rms = np.sqrt(np.mean(y[: frames * frame].reshape(frames, frame) ** 2, axis=1))
    return bool(rms.max() >= MIN_VOICE * 32768)


def _dithered(x: np.ndarray, seed: int, dither: float = DITHER) -> bytes:
    """Samples at int16 scale, with `dither` of noise, as int16 bytes."""
    import numpy as np

    x = x + np.random.default_rng(seed).normal(0, dither, len(x))
    return np.clip(np.round(x), -32768, 32767).astype("<i2").tobytes()


class VoiceControl:
    """The microphone, a Listener in a thread of its own, and the Player it steers.

    ::

        voice = VoiceControl(player, mic=None)
        voice.start()   # False (and player.voice says why) when there is no microphone
        ...
        voice.stop()

    `heard` lists every command heard, in order. Should the microphone stop sending
    sound mid-session, listening ends and the screen says so; the keys still work.
    """

    def __init__(self, player: Any, *, mic: str | None = None) -> None:
        self.player = player
        self.mic_spec = mic
        self.heard: list[Heard] = []
        self.problem = ""  # why voice commands are off, if they are
        self.listener: Listener | None = None
        self._mic: Any = None
        self._blocks: queue.SimpleQueue[tuple[bytes, float]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        from coach import speakers

        try:
            device = speakers.find_input(self.mic_spec)  # cheap: before loading the model
            recognizer = Recognizer()
            mic = speakers.Input(device, self._on_audio, rate=MIC_RATE)
            mic.start()
        except (ListenError, speakers.AudioDeviceError) as e:
            self._off(str(e))
            return False
        self._mic = mic
        self.listener = Listener(recognizer, rate=mic.rate, gate=self.player.audible.during)
        self.player.voice = "listening"
        self._thread = threading.Thread(target=self._run, name="coach-listener", daemon=True)
        self._thread.start()
        return True

    def _off(self, why: str) -> None:
        self.problem = why
        self.player.voice = f"off ({why}); keys only"

    def _on_audio(self, pcm: bytes, captured: float) -> None:  # PortAudio's thread
        self._blocks.put((pcm, captured))

    def _run(self) -> None:
        assert self.listener is not None and self._mic is not None
        while not self._stop.is_set():
            try:
                pcm, captured = self._blocks.get(timeout=0.25)
            except queue.Empty:
                if time.monotonic() - self._mic.last_audio > SILENT_MIC:
                    self._off("the microphone stopped")
                    return
                continue
            for command in self.listener.feed(pcm, captured):
                self.heard.append(command)
                self.player.control(command.control, command.phrase)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        if self._mic is not None:
            self._mic.stop()
