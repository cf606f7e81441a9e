"""`coach run` end to end: a real process plays through a real PulseAudio server (a null
sink), its monitor is recorded, and the recording is held to the rendered file."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from coach.render import render
from coach.session import Options, prepare
from coach.timeline import SPEECH
from coach.units import RATE

pytest_plugins = ["pulse"]
pytestmark = [pytest.mark.tts, pytest.mark.slow]

ROUTINE = """\
routine: 1
title: Live test
steps:
  - title: Warm the oil
    say: Rub your hands together to warm the oil.
    time: 7s
  - title: Slow circles
    say: Press and make slow circles on the {side} side.
    time: 6s
    sides: [right, left]
    rhythm: 60
  - title: Knead the shoulders
    say: Knead the shoulders like soft dough.
    time: 6s
"""


@pytest.fixture(scope="module")
def routine_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("live") / "live.yaml"
    path.write_text(ROUTINE)
    return path


def rendered_as(routine_file: Path, folder: Path, chimes: bool = True):
    """The session as a file; the live session must sound the same."""
    prepared = prepare(str(routine_file), Options(chimes=chimes), live=True)
    out = folder / "live.wav"
    render(prepared, out)
    audio, _ = sf.read(str(out), dtype="float32")
    return prepared, audio


@pytest.fixture(scope="module")
def rendered(routine_file, tmp_path_factory):
    return rendered_as(routine_file, tmp_path_factory.mktemp("render"))


def locate(recording: np.ndarray, reference: np.ndarray) -> int:
    """Where `reference` begins in `recording`, by cross-correlation of the left channel."""
    size = 1 << (len(recording) + len(reference)).bit_length()
    spectrum = np.fft.rfft(recording[:, 0], size) * np.conj(np.fft.rfft(reference[:, 0], size))
    corr = np.fft.irfft(spectrum, size)[: len(recording) - len(reference) + 1]
    return int(np.argmax(corr))


def coach_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "coach", *args]


def test_a_live_session_sounds_exactly_like_its_rendered_file(
    pulse, routine_file, rendered, tmp_path
):
    prepared, reference = rendered
    with pulse.record(tmp_path / "rec.wav") as rec:
        done = subprocess.run(
            coach_command("run", str(routine_file)),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        time.sleep(0.3)
    assert done.returncode == 0, done.stderr
    assert "session finished" in done.stdout, done.stdout
    if "stuttered" in done.stdout:  # an underrun: the comparison below would fail on it
        from pulse import MachineBusy

        raise MachineBusy(done.stdout.strip().replace("\n", "; "))
    recording = rec.samples
    at = locate(recording, reference)
    heard = recording[at : at + len(reference)]
    assert len(heard) == len(reference)
    # 16-bit both ways: the same samples, to one step of quantization, all session long,
    # so every cue, chime and pulse is at its timeline offset to the sample.
    assert np.abs(heard - reference).max() <= 2 / 32768
    spoken = [e for e in prepared.timeline.events if e.kind == SPEECH]
    for e in spoken:
        assert np.abs(heard[e.start : e.end]).max() > 0.05, e.text


class Terminal:
    """A pseudo-terminal running `coach run`: keys go in, the screen is read and kept."""

    def __init__(self, args: list[str]) -> None:
        master, slave = pty.openpty()
        termios.tcsetwinsize(slave, (24, 80))
        self.master = master
        self.proc = subprocess.Popen(
            args,
            stdin=slave,
            stdout=slave,
            stderr=subprocess.PIPE,
            close_fds=True,
            start_new_session=True,
        )
        os.close(slave)
        self.screen = bytearray()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            if not data:
                return
            self.screen += data

    def press(self, key: str) -> float:
        os.write(self.master, key.encode())
        return time.monotonic()

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.screen:
            assert self.proc.poll() is None, (self.proc.returncode, self.screen[-500:])
            assert time.monotonic() < deadline, self.screen[-500:]
            time.sleep(0.02)

    def close(self) -> int:
        code = self.proc.wait(timeout=30)
        os.close(self.master)
        return code


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-12)


def test_keys_pause_next_slow_down_and_quit_a_running_session(pulse, routine_file, tmp_path):
    prepared, reference = rendered_as(routine_file, tmp_path, chimes=False)
    clips = prepared.clips()
    with pulse.record(tmp_path / "rec.wav") as rec:
        # No chimes: a bell rings on under the first words of a step, and the check
        # below looks for those words' exact samples.
        term = Terminal(coach_command("run", str(routine_file), "--no-chimes"))
        term.wait_for("Step 1 of 3")
        time.sleep(3.0)
        paused_at = term.press(" ")
        term.wait_for("PAUSED")
        time.sleep(3.0)
        resumed_at = term.press(" ")
        time.sleep(2.0)
        next_at = term.press("n")
        term.wait_for("Step 2 of 3")
        time.sleep(4.0)
        term.press("-")
        term.wait_for("1.10x the time")
        time.sleep(1.0)
        term.press("q")  # a first q only asks for a second
        term.wait_for("press q again to quit")
        quit_at = term.press("q")
        code = term.close()
        time.sleep(0.5)
    assert code == 0, term.proc.stderr.read() if term.proc.stderr else ""
    recording = rec.samples
    audio = recording.mean(axis=1)
    start = locate(recording, reference[: 2 * RATE])
    # Until the pause, exactly the session as rendered.
    p = rec.frame_at(paused_at)
    assert np.abs(recording[start:p] - reference[: p - start]).max() <= 2 / 32768
    # Paused: the session stops at once; only the "paused" phrase sounds, then silence.
    phrase = len(clips.load(prepared.pack.phrases.paused))
    r = rec.frame_at(resumed_at)
    assert rms(audio[p + round(0.2 * RATE) + phrase : r]) < 1e-4
    # Next: step 2 begins at once: its instruction, which follows its title and the
    # pause after it, is heard within half a second of when they allow.
    n = rec.frame_at(next_at)
    title = prepared.script.runs[1].opening
    allowed = len(clips.load(title[0])) + round(prepared.script.title_pause * RATE) + RATE // 2
    instruction = clips.load(title[1])[:RATE]
    lag, similarity = best_match(audio[n : n + allowed + 2 * RATE], instruction)
    assert similarity > 0.9 and lag < allowed, (lag, similarity, allowed)
    # Quit: silence within half a second of the key.
    q = rec.frame_at(quit_at)
    assert rms(audio[q + RATE // 2 :]) < 1e-4
    assert b"pace: slower (1.10x the time)" in term.screen


def best_match(signal: np.ndarray, template: np.ndarray) -> tuple[int, float]:
    """(lag, normalized correlation) of the best fit of `template` inside `signal`."""
    n = len(template)
    size = 1 << (len(signal) + n).bit_length()
    corr = np.fft.irfft(np.fft.rfft(signal, size) * np.conj(np.fft.rfft(template, size)), size)
    corr = corr[: len(signal) - n + 1]
    energy = np.concatenate([[0], np.cumsum(signal.astype(np.float64) ** 2)])
    local = energy[n:] - energy[:-n]
    norm = float(np.dot(template.astype(np.float64), template))
    # Where the signal is (nearly) silent the ratio means nothing: score it 0.
    score = np.where(local > 1e-4 * norm, corr / np.sqrt(np.maximum(local, 1e-30) * norm), 0.0)
    lag = int(np.argmax(score))
    return lag, float(score[lag])


SIDED = """\
routine: 1
title: Sides test
steps:
  - title: Warm the oil
    say: Rub your hands together to warm the oil.
    time: 6s
  - title: Slow circles
    say: Press and make slow circles on the {side} side.
    time: 30s
    sides: [right, left]
    pressure:
      more: Lean in slowly with your body weight.
      less: Lighten up and glide.
  - title: Knead the shoulders
    say: Knead the shoulders like soft dough.
    time: 6s
"""


def test_next_on_a_two_sided_step_goes_to_its_other_side_and_q_needs_a_second_press(
    pulse, tmp_path
):
    from audio_checks import heard

    routine = tmp_path / "sides.yaml"
    routine.write_text(SIDED)
    prepared = prepare(str(routine), Options(chimes=False), live=True)
    clips = prepared.clips()
    runs = prepared.script.runs
    assert [(r.step, r.side) for r in runs][1:3] == [(1, "right"), (1, "left")]
    switch = runs[2].opening[0]  # "Now the left side"-like, from the pack
    hint = prepared.script.pressure_hint(2, "more")
    with pulse.record(tmp_path / "rec.wav") as rec:
        term = Terminal(coach_command("run", str(routine), "--no-chimes"))
        term.wait_for("(partner's right side)")
        term.wait_for("next: Slow circles, partner's left side")
        time.sleep(2.0)
        next_at = term.press("n")
        term.wait_for("(partner's left side)")
        time.sleep(4.0)
        p_at = term.press("p")
        time.sleep(len(clips.load(hint)) / RATE + 1.0)
        term.press("q")
        term.wait_for("press q again to quit")
        time.sleep(1.0)
        assert term.proc.poll() is None, "one q ended the session"
        term.press("q")
        code = term.close()
        time.sleep(0.3)
    assert code == 0, term.proc.stderr.read() if term.proc.stderr else ""
    audio = rec.samples.mean(axis=1)
    # n: the left side begins at once with its switch cue (no chime: --no-chimes).
    n = rec.frame_at(next_at)
    length = len(clips.load(switch))
    assert heard(audio[n : n + length + round(0.45 * RATE)], RATE, switch), switch
    # p: the step's own hint is spoken.
    p = rec.frame_at(p_at)
    length = len(clips.load(hint))
    assert heard(audio[p : p + length + round(0.45 * RATE)], RATE, hint), hint
