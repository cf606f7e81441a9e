"""The speakers: device lookup and an output stream, through a real PulseAudio server
(tests/pulse.py) and PortAudio; the block queue on its own, with no audio at all."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coach.errors import CoachError
from coach.speakers import (
    NO_DEVICE,
    AudioDeviceError,
    BlockQueue,
    Output,
    find_device,
    output_devices,
)
from coach.units import RATE

pytest_plugins = ["pulse"]


def frames(values) -> np.ndarray:
    """Stereo float32 frames whose left and right channels are ``values`` and -``values``."""
    mono = np.asarray(values, dtype=np.float32)
    return np.stack([mono, -mono], axis=1)


def numbered(n: int, first: int = 1) -> np.ndarray:
    """n frames numbered first, first + 1, ...: every frame can be told apart."""
    return frames(np.arange(first, first + n))


def silence(seconds: float) -> np.ndarray:
    return np.zeros((round(seconds * RATE), 2), dtype=np.float32)


def tone(seconds: float, hz: float) -> np.ndarray:
    """A cosine at half scale: its first frame is already loud, so its onset is exact."""
    t = np.arange(round(seconds * RATE)) / RATE
    return frames(0.5 * np.cos(2 * np.pi * hz * t))


def fill(queue: BlockQueue, n: int) -> tuple[np.ndarray, bool]:
    out = np.full((n, 2), np.nan, dtype=np.float32)  # anything not written stays NaN
    return out, queue.fill(out)


# -- BlockQueue ------------------------------------------------------------------------------


def test_fill_across_block_boundaries_with_odd_sizes_gives_exactly_the_blocks():
    queue = BlockQueue()
    blocks, start = [], 1
    for length in (7, 1, 300, 64, 13, 1000):
        blocks.append(numbered(length, start))
        queue.put(blocks[-1], tag=start)
        start += length
    whole = np.concatenate(blocks)
    got, remaining = [], len(whole)
    for n in itertools.cycle((5, 3, 104, 1, 417, 2, 250)):
        n = min(n, remaining)
        out, ready = fill(queue, n)
        assert ready
        got.append(out)
        remaining -= n
        if not remaining:
            break
    assert np.array_equal(np.concatenate(got), whole)
    assert queue.queued_frames() == 0
    assert queue.played == (start - 1000, 1000)


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 500), min_size=1, max_size=8),
    requests=st.lists(st.integers(1, 700), min_size=1, max_size=12),
)
def test_any_blocks_and_any_requests_give_the_concatenation_then_silence(lengths, requests):
    queue = BlockQueue()
    starts = list(itertools.accumulate(lengths, initial=0))
    for start, length in zip(starts, lengths, strict=False):
        queue.put(numbered(length, start + 1), tag=start)
    whole = numbered(starts[-1])
    length_of = {
        start: length for start, length in zip(starts, lengths, strict=False) if length
    }  # empty blocks are dropped
    taken = 0
    for n in requests:
        out, ready = fill(queue, n)
        have = min(n, len(whole) - taken)
        assert np.array_equal(out[:have], whole[taken : taken + have])
        assert not out[have:].any()
        assert ready == (have == n)
        taken += have
        assert queue.queued_frames() == len(whole) - taken
        if taken:  # the block holding frame `taken`, and how far into it
            tag, offset = queue.played
            assert tag + offset == taken and 0 < offset <= length_of[tag]


def test_an_empty_queue_fills_silence_and_reports_an_underrun():
    out, ready = fill(BlockQueue(), 256)
    assert not ready
    assert not out.any()


def test_a_queue_that_ran_out_pads_with_silence_after_its_last_block():
    queue = BlockQueue()
    queue.put(numbered(10), tag="only")
    out, ready = fill(queue, 16)
    assert not ready
    assert np.array_equal(out[:10], numbered(10)) and not out[10:].any()
    assert queue.played == ("only", 10)


def test_after_finish_running_out_is_the_end_not_an_underrun():
    queue = BlockQueue()
    queue.put(numbered(10))
    queue.finish()
    assert not queue.finished
    out, ready = fill(queue, 16)
    assert ready and not out[10:].any()
    assert queue.finished
    queue.put(numbered(4))  # more after all: finish() no longer holds
    assert not queue.finished
    fill(queue, 4)
    _, ready = fill(queue, 4)
    assert not ready


def test_played_tag_and_offset_follow_the_callback():
    queue = BlockQueue()
    assert queue.played == (None, 0)
    queue.put(numbered(10), tag="a")
    queue.put(numbered(5, 11), tag="b")
    steps = [(4, ("a", 4)), (6, ("a", 10)), (3, ("b", 3)), (2, ("b", 5)), (9, ("b", 5))]
    for n, played in steps:
        fill(queue, n)
        assert (queue.played_tag, queue.played_offset) == played == queue.played


def test_clear_drops_the_blocks_not_started_and_finishes_the_one_playing():
    queue = BlockQueue()
    for tag in ("a", "b", "c"):
        queue.put(numbered(10), tag=tag)
    fill(queue, 13)  # all of a, 3 frames of b
    assert queue.clear() == "b"  # the producer goes on from the end of b
    assert queue.queued_frames() == 7
    out, ready = fill(queue, 10)
    assert not ready
    assert np.array_equal(out[:7], numbered(7, 4)) and not out[7:].any()
    assert queue.played == ("b", 10)
    queue.put(numbered(3, 100), tag="d")
    out, _ = fill(queue, 3)
    assert np.array_equal(out, numbered(3, 100))


def test_clear_at_a_block_boundary_or_before_anything_played():
    queue = BlockQueue()
    queue.put(numbered(10), tag="a")
    queue.put(numbered(10), tag="b")
    assert queue.clear() is None  # nothing started: everything goes
    assert queue.queued_frames() == 0
    queue.put(numbered(10), tag="c")
    queue.put(numbered(10), tag="d")
    fill(queue, 10)  # exactly all of c
    assert queue.clear() == "c"
    _, ready = fill(queue, 1)
    assert not ready


def test_put_takes_float32_frames_of_its_channels_and_ignores_empty_blocks():
    queue = BlockQueue(channels=2)
    queue.put(np.ones((4, 2), dtype=np.float64), tag="converted")
    queue.put(np.zeros((0, 2), dtype=np.float32), tag="empty")
    assert queue.queued_frames() == 4
    out, _ = fill(queue, 4)
    assert out.dtype == np.float32 and (out == 1).all()
    assert queue.played_tag == "converted"
    with pytest.raises(ValueError, match=r"expected a block of shape \(frames, 2\), got \(4,\)"):
        queue.put(np.ones(4, dtype=np.float32))
    with pytest.raises(ValueError, match=r"got \(4, 1\)"):
        queue.put(np.ones((4, 1), dtype=np.float32))


def test_importing_the_module_does_not_load_portaudio():
    code = "import sys, coach.speakers; print('sounddevice' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- Devices, through PulseAudio ---------------------------------------------------------------


def listing(devices) -> str:
    return ", ".join(f"{d.index} {d.name}" for d in devices)


def test_no_device_is_the_default_one_and_it_reaches_pulseaudio(pulse):
    device = find_device(None)
    defaults = [d for d in output_devices() if d.is_default]
    assert defaults == [device]
    # ALSA's pulse plugin gives PortAudio "pulse" and "default"; the default is one of them
    # (the playing test below hears it on the server's sink).
    assert device.name in ("default", "pulse")
    assert device.channels >= 2 and device.default_rate > 0


def test_a_number_picks_the_device_with_that_index(pulse):
    for device in output_devices():
        assert find_device(str(device.index)) == device
        assert find_device(f" {device.index} ") == device


def test_a_name_picks_the_device_whatever_its_case(pulse):
    for device in output_devices():
        assert find_device(device.name.upper()) == device


def test_an_unknown_name_or_index_lists_the_devices(pulse):
    devices = output_devices()
    choices = f"this machine has: {listing(devices)} (use --device NAME or INDEX)"
    with pytest.raises(AudioDeviceError) as caught:
        find_device("no-such-speaker")
    assert str(caught.value) == f"no output device matches 'no-such-speaker'; {choices}"
    # A name that fits no device is a usage error (exit 2), as a wrong --voice is.
    assert isinstance(caught.value, CoachError) and caught.value.exit_code == 2
    unused = max(d.index for d in devices) + 1
    with pytest.raises(AudioDeviceError) as caught:
        find_device(str(unused))
    assert str(caught.value) == f"no output device has the index {unused}; {choices}"


def shared_part(names: list[str]) -> str | None:
    """The longest piece of text that two names share and that is no whole name."""
    whole = {n.casefold() for n in names}
    best = None
    for a, b in itertools.combinations(whole, 2):
        for i, j in itertools.combinations(range(len(a) + 1), 2):
            part = a[i:j]
            fits = part in b and part not in whole and part.strip() == part
            if fits and (best is None or len(part) > len(best)):
                best = part
    return best


def test_a_name_that_fits_several_devices_lists_the_candidates(pulse):
    devices = output_devices()
    part = shared_part([d.name for d in devices])
    if part is None:
        pytest.skip(f"no two device names share text: {listing(devices)}")
    fitting = [d for d in devices if part in d.name.casefold()]
    with pytest.raises(AudioDeviceError) as caught:
        find_device(part.upper())
    assert str(caught.value) == (
        f"{part.upper()!r} matches several devices: "
        f"{listing(fitting)}; use more of the name or the index"
    )


def test_a_machine_without_any_output_says_what_to_do(pulse):
    # A process that cannot reach any audio server sees no device at all, here.
    code = (
        "from coach.speakers import find_device, AudioDeviceError\n"
        "try:\n    print('FOUND', find_device(None))\n"
        "except AudioDeviceError as e:\n    print('ERROR', e, e.exit_code)\n"
    )
    env = {**os.environ, "PULSE_SERVER": f"unix:{pulse.folder}/nothing-here"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout
    if out.startswith("FOUND"):
        pytest.skip(f"this machine has audio outputs besides PulseAudio: {out}")
    assert out == f"ERROR {NO_DEVICE} 1\n"


# -- Output, through PulseAudio -------------------------------------------------------------


def test_a_queued_tone_is_played_whole_in_tune_and_on_time(pulse, tmp_path):
    sound = tone(1.0, 440)
    session = np.concatenate([silence(0.5), sound, silence(0.5)])
    queue = BlockQueue()
    for start in range(0, len(session), 4801):  # blocks that do not line up with callbacks
        queue.put(session[start : start + 4801], tag=start)
    queue.finish()
    # "high" (35 ms here): at "low" (8.7 ms, 104-frame callbacks) PortAudio reported about
    # one underflow a minute on a 2-core machine, and this test asserts none.
    output = Output(find_device(None), queue, latency="high")
    with pulse.record(tmp_path / "monitor.wav") as recording:
        called = time.monotonic()
        output.start()
        try:
            while not queue.finished:
                time.sleep(0.01)
            time.sleep(output.latency + 0.1)  # stop() may drop what is still buffered
        finally:
            output.stop()
    assert output.underruns == 0
    last = (len(session) - 1) // 4801 * 4801
    assert queue.played == (last, len(session) - last)

    first, end = recording.span()
    assert abs((end - first) - len(sound)) <= 0.010 * RATE
    heard = recording.samples[first : first + len(sound)]
    assert np.abs(heard - sound).max() < 1e-3  # every frame, none lost or repeated
    spectrum = np.abs(np.fft.rfft(heard[:, 0] * np.hanning(len(heard)), n=8 * RATE))
    assert np.argmax(spectrum) / 8 == pytest.approx(440, abs=0.5)
    late = (first - recording.frame_at(called) - RATE // 2) / RATE
    assert -0.010 <= late <= 0.025


def test_low_latency_is_the_default_and_reported_after_start(pulse):
    queue = BlockQueue()
    queue.put(silence(0.1))
    queue.finish()
    output = Output(find_device(None), queue)
    assert output.latency == 0.0
    with output:
        assert 0 < output.latency <= 0.030
        assert output.active
        while not queue.finished:
            time.sleep(0.01)
    assert not output.active
    output.stop()  # stopping again does nothing


def test_a_device_that_will_not_open_names_itself(pulse):
    device = find_device(None)
    output = Output(device, BlockQueue(channels=64), channels=64)
    with pytest.raises(AudioDeviceError) as caught:
        output.start()
    message = str(caught.value)
    assert message.startswith(f"cannot play on audio device {device.index} {device.name} (")
    assert "Invalid number of channels" in message and "\n" not in message
    assert caught.value.exit_code == 1
    assert not output.active
    output.stop()


def test_a_recording_that_lost_its_frames_is_refused_not_read_off(pulse, tmp_path):
    # The harness's own check (tests/pulse.py): had parecord stopped early, every time
    # read off the recording would be wrong, and a test would fail on what it measures.
    from pulse import RecordingLost

    with pytest.raises(RecordingLost, match="recorded"), pulse.record(tmp_path / "r.wav") as rec:
        time.sleep(0.3)
        assert rec._process is not None
        rec._process.kill()
        time.sleep(1.5)
    with pulse.record(tmp_path / "whole.wav") as rec:
        time.sleep(1.0)
    assert len(rec.samples) >= 0.95 * RATE
