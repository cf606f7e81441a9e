"""`coach run --listen` end to end, through a real PulseAudio server.

The microphone is a second null sink, ``micsink``: `coach run` records its monitor (the
``PULSE_SOURCE`` it is given), and the test speaks commands into it with espeak-ng and
paplay, at moments when the coach has been quiet. Both sinks' monitors are recorded, so
each command's end (in the microphone) and its effect (in the speakers) are on one clock.
A second test loops the speakers back into the microphone for a whole session whose
cues say the command words, and nothing may be obeyed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from audio_checks import heard

from coach.session import Options, prepare
from coach.timeline import CHIME_LEAD
from coach.voicepack import load_pack

pytest_plugins = ["pulse"]
pytestmark = pytest.mark.tts

MIC = "micsink"
QUIET = 0.005  # below this the speakers are taken to be silent

# calm-en (espeak-ng), whose phrases hold no long pauses between their sentences: the
# checks below take a phrase to end at its first half-second of quiet.
ROUTINE = """\
routine: 1
title: Listen test
voice: calm-en
steps:
  - title: Warm the oil
    say: Rub your hands together to warm the oil.
    time: 16s
    pressure:
      more: Lean in with the heel of your hand.
      less: Let your hands float over the skin.
  - title: Knead the shoulders
    say: Knead the shoulders like soft dough.
    time: 16s
  - title: Long strokes
    say: Finish with long strokes down the back.
    time: 8s
"""

# Every cue says command words; the coach must not obey any of them.
ECHO_ROUTINE = """\
routine: 1
title: Echo test
steps:
  - title: One
    say: Pause.
    time: 4s
  - title: Two
    say: Next, go back to the shoulders.
    time: 5s
  - title: Three
    say: Slower. Lighter. Repeat this on the other side.
    time: 7s
  - title: Four
    say: Faster now. Resume the circles.
    time: 6s
  - title: Five
    say: More time here, with more pressure.
    time: 7s
"""


@pytest.fixture(scope="module")
def mic(pulse):
    """A null sink whose monitor is the microphone, with a faint hiss like a real one."""
    out = subprocess.run(
        ["pactl", "load-module", "module-null-sink", f"sink_name={MIC}", "rate=48000"],
        capture_output=True,
        text=True,
        check=True,
    )
    hiss = subprocess.Popen(
        [
            "pacat",
            "--playback",
            "-d",
            MIC,
            "--format=s16le",
            "--rate=16000",
            "--channels=1",
            "--raw",
        ],
        stdin=subprocess.PIPE,
    )
    stop = threading.Event()

    def feed() -> None:
        rng = np.random.default_rng(0)
        while not stop.is_set():
            hiss.stdin.write((rng.normal(0, 20, 1600)).astype("<i2").tobytes())
            hiss.stdin.flush()
            time.sleep(0.09)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    yield MIC
    stop.set()
    feeder.join()
    hiss.stdin.close()
    hiss.kill()
    hiss.wait()
    subprocess.run(["pactl", "unload-module", out.stdout.strip()], check=False)


def spoken(folder: Path, text: str, voice: str = "en-us", rate: int = 160) -> Path:
    path = folder / f"{text.replace(' ', '_')}-{voice}-{rate}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-w", str(path), text], check=True)
    return path


def written(recorder) -> np.ndarray:
    """What a running recorder has written so far, float32 (frames, 2)."""
    data = recorder.path.read_bytes()[44:]
    data = data[: len(data) // 4 * 4]
    return np.frombuffer(data, dtype="<i2").reshape(-1, 2).astype(np.float32) / 32768


def wait_sound(recorder, since: float, timeout: float = 5.0) -> None:
    """Until the speakers have sounded after monotonic time `since`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        x = written(recorder)[recorder.frame_at(since) :]
        if len(x) and np.abs(x).max() >= QUIET:
            return
        time.sleep(0.05)
    raise AssertionError("the speakers stayed quiet")


def wait_quiet(recorder, seconds: float = 2.0, timeout: float = 20.0) -> None:
    """Until the speakers have been silent for `seconds` (more than the 1.5 s of quiet
    the halfway cue waits for, so that it does not start under a command)."""
    deadline = time.monotonic() + timeout
    n = round(seconds * 48000)
    while time.monotonic() < deadline:
        x = written(recorder)
        if len(x) > n and np.abs(x[-n:]).max() < QUIET:
            return
        time.sleep(0.1)
    raise AssertionError("the speakers never fell quiet")


class Coach:
    """`coach run` in the background, its output lines gathered."""

    def __init__(self, *args: str) -> None:
        env = dict(os.environ, PULSE_SOURCE=f"{MIC}.monitor")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "coach", "run", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(stream, into), daemon=True)
            for stream, into in (
                (self.process.stdout, self.lines),
                (self.process.stderr, self.errors),
            )
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in {self.lines}; stderr: {self.errors}")
            time.sleep(0.05)

    def finish(self, timeout: float = 90.0) -> str:
        self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join()
        err = "\n".join(self.errors)
        assert self.process.returncode == 0, err
        return err


def say(path: Path) -> None:
    subprocess.run(["paplay", "-d", MIC, str(path)], check=True)


def spoken_span(mic_recording: np.ndarray, after: int) -> tuple[int, int]:
    """First and last loud frame of the command said after frame `after`."""
    loud = np.flatnonzero(np.abs(mic_recording[after:, 0]) > 0.02) + after
    assert len(loud), "the command is not in the microphone's recording"
    gaps = np.flatnonzero(np.diff(loud) > 48000 * 0.4)
    end = loud[gaps[0]] if len(gaps) else loud[-1]
    return int(loud[0]), int(end)


def first_sound(recording: np.ndarray, after: int) -> int:
    loud = np.flatnonzero(np.abs(recording[after:]).max(axis=1) > QUIET)
    assert len(loud), "nothing followed"
    return after + int(loud[0])


def test_spoken_commands_steer_a_live_session(pulse, mic, tmp_path):
    routine = tmp_path / "listen.yaml"
    routine.write_text(ROUTINE)
    commands = ["more pressure", "next", "pause", "resume"]
    voices = {"more pressure": "en-us", "next": "en", "pause": "en-us+f3", "resume": "en-029"}
    clips = {c: spoken(tmp_path, c, voices[c]) for c in commands}
    said: dict[str, float] = {}
    with (
        pulse.record(tmp_path / "out.wav") as out,
        pulse.record(tmp_path / "mic.wav", source=f"{MIC}.monitor") as heard_by_mic,
    ):
        coach = Coach(str(routine), "--listen")
        coach.wait_for("voice commands: listening")
        for command in commands:
            wait_quiet(out)
            if command == "resume":
                time.sleep(2.0)  # paused: the coach stays quiet however long it is held
            said[command] = time.monotonic()
            say(clips[command])
            wait_sound(out, said[command])  # its effect, before the next command
        err = coach.finish()
    assert coach.lines[-1].startswith(
        "voice commands heard: more pressure, next, pause, resume ("
    ), (coach.lines, err)

    rec = out.samples
    mono = rec.mean(axis=1)
    effects = {}
    for command in commands:
        start, end = spoken_span(heard_by_mic.samples, heard_by_mic.frame_at(said[command]))
        # The speakers were quiet when the command began; its effect is the next sound.
        at = first_sound(rec, out.frame_at(heard_by_mic.started + start / 48000))
        effects[command] = at
        delay = (at - out.frame_at(heard_by_mic.started + end / 48000)) / 48000
        assert delay < 1.0, f"{command}: {delay:.2f} s from its end to its effect"
        assert at > out.frame_at(heard_by_mic.started + end / 48000) - 48000 * 0.05, command

    def says(at: int, text: str, seconds: float, gap: float = 0.5) -> bool:
        """Whether the sound from `at` to its first pause (of `gap`; `seconds` at most)
        says `text`."""
        part = mono[at : at + round(seconds * 48000)]
        loud = np.abs(part) > QUIET
        run = np.convolve(loud, np.ones(round(gap * 48000)), mode="valid")
        gaps = np.flatnonzero(run == 0)
        end = gaps[0] if len(gaps) else len(part)
        return heard(part[:end], 48000, text)

    clips = prepare(str(routine), Options(), live=True).clips()

    def plays(at: int, text: str, within: float = 1.0) -> bool:
        """Whether the phrase's own samples (past the tap that starts with it) sound
        within `within` seconds of `at`: another cue (the halfway cue, which waits for a
        silence) may have begun just before the command took effect and been cut."""
        clip = clips.load(text)
        template = clip[round(0.3 * 48000) : round(1.3 * 48000)].astype(np.float64)
        part = mono[at : at + round((within + 2.0) * 48000)].astype(np.float64)
        n = len(template)
        size = 1 << (len(part) + n).bit_length()
        corr = np.fft.irfft(np.fft.rfft(part, size) * np.conj(np.fft.rfft(template, size)), size)
        corr = corr[: len(part) - n + 1]
        energy = np.concatenate([[0], np.cumsum(part**2)])
        local = energy[n:] - energy[:-n]
        norm = float(np.dot(template, template))
        score = np.where(local > 1e-4 * norm, corr / np.sqrt(np.maximum(local, 1e-30) * norm), 0)
        lag = int(np.argmax(score))
        return score[lag] > 0.9 and lag < (within + 0.3) * 48000

    # more pressure: this step's own hint, at once.
    assert says(effects["more pressure"], "Lean in with the heel of your hand.", 4.0)
    # next: the second step starts at once (it was due 16 s into the session): its
    # chime with the tap, its title after the chime's lead.
    title = effects["next"] + CHIME_LEAD - 2400  # samples at 48 kHz, 50 ms early
    assert says(title, "Knead the shoulders.", 3.0, gap=0.3)
    # pause: the coach says so, then nothing sounds until "resume" is heard.
    phrases = load_pack("calm-en").phrases
    assert plays(effects["pause"], phrases.paused)
    paused_end = effects["pause"] + 48000 * 3
    quiet = rec[paused_end : effects["resume"]]
    assert len(quiet) > 48000 and np.abs(quiet).max() < QUIET
    assert plays(effects["resume"], phrases.resumed)


def test_the_coach_does_not_obey_its_own_voice(pulse, mic, tmp_path):
    routine = tmp_path / "echo.yaml"
    routine.write_text(ECHO_ROUTINE)
    loop = subprocess.run(
        [
            "pactl",
            "load-module",
            "module-loopback",
            f"source={pulse.monitor}",
            f"sink={MIC}",
            "latency_msec=60",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        with pulse.record(tmp_path / "mic.wav", source=f"{MIC}.monitor") as heard_by_mic:
            coach = Coach(str(routine), "--listen")
            coach.wait_for("voice commands: listening")
            coach.finish()
    finally:
        subprocess.run(["pactl", "unload-module", loop], check=False)
    summary = coach.lines[-1]
    assert summary.startswith("voice commands heard: none ("), coach.lines
    ignored = int(summary.split("(")[1].split()[0])
    assert ignored >= 5, summary  # every cue reached the microphone and was ignored
    assert "session finished" in coach.lines[-2]
    # The coach's voice really was in the microphone: every cue, loud.
    loud = np.flatnonzero(np.abs(heard_by_mic.samples).max(axis=1) > 0.1)
    bursts = 1 + np.count_nonzero(np.diff(loud) > 48000 * 0.5) if len(loud) else 0
    assert bursts >= 5, bursts
