"""The live player's control logic, driven block by block: no clock, no device.

Speech here is made-up tones of made-up lengths (the logic does not care what is said);
the end-to-end tests through a real audio server are in test_live_e2e.py.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from test_timeline import PACK, sounds_for

from coach.controls import QUIT_WINDOW
from coach.live import (
    AHEAD,
    BACK_GRACE,
    FADE,
    MORE_TIME,
    PACE_STEP,
    PRESSURE_BEAT,
    TAIL,
    LivePlan,
    Player,
)
from coach.mixer import Mixer, SoundBank
from coach.routine import Pressure, Routine, Step, Tip
from coach.script import write_script
from coach.speakers import BlockQueue
from coach.timeline import PULSE, SPEECH, Pacing, build
from coach.units import RATE, to_samples

STEPS = (
    Step(
        title="Warm",
        say="Warm the oil in your hands.",
        time=8.0,
        tips=(Tip(say="Breathe.", after=5.0),),
    ),
    Step(
        title="Circles",
        say="Circles on the {side} side.",
        time=6.0,
        sides=("right", "left"),
        pressure=Pressure(more="Lean in.", less="Lighter now."),
    ),
    Step(title="Knead", say="Knead the shoulders.", time=7.0, countdown=3.0),
)
GAIN = 0.9


class ToneClips:
    """A smooth, distinct sound for each text (two tones whose pitch glides, faded in and
    out like real clips), as long as the timeline says it is: smooth, so that any click
    stands out; distinct, so that each can be found again."""

    def __init__(self, lengths: dict[str, int]) -> None:
        self.lengths = lengths

    def load(self, text: str) -> np.ndarray:
        seed = sum(map(ord, text))
        n = self.lengths[text]
        t = np.arange(n) / RATE
        f = 150 + seed % 200
        x = 0.2 * np.sin(2 * np.pi * (f * t + 40 * t * t)) + 0.1 * np.sin(2 * np.pi * 1.5 * f * t)
        edge = min(240, n // 2)
        ramp = np.linspace(0, 1, edge)
        x[:edge] *= ramp
        x[n - edge :] *= ramp[::-1]
        return x.astype(np.float32)


@pytest.fixture
def session():
    script = write_script(Routine(title="live", steps=STEPS), PACK)
    sounds = sounds_for(script, 0.05)
    extra = {
        "Paused.": to_samples(0.5),
        "Resuming.": to_samples(0.6),
        "Lean in.": 24000,
        "Lighter now.": 22000,
        "More.": 20000,
        "Less.": 18000,
    }
    sounds = type(sounds)({**sounds.speech, **extra}, sounds.chimes, sounds.pulse)
    timeline = build(script, sounds, Pacing())
    bank = SoundBank(ToneClips(dict(sounds.speech)), channels=2)
    plan = LivePlan(script, sounds, timeline)
    out = BlockQueue(2)
    player = Player(plan, bank, out, gain=GAIN)
    return player, out, bank, timeline


def play(player: Player, out: BlockQueue, frames: int, chunk: int = 777) -> np.ndarray:
    """The fake output stream: pump, then let the 'callback' take `frames`."""
    got = []
    while frames > 0:
        player.pump()
        buf = np.zeros((min(chunk, frames), 2), dtype=np.float32)
        out.fill(buf)
        got.append(buf)
        frames -= len(buf)
    return np.concatenate(got)


def play_to_end(player: Player, out: BlockQueue) -> np.ndarray:
    got = []
    while player.pump() or out.queued_frames():
        got.append(play(player, out, 4096))
    return np.concatenate(got)


def mix(timeline, bank, start: int, n: int) -> np.ndarray:
    return Mixer(timeline, bank, gain=GAIN, start=start).read(n)


def test_an_untouched_live_session_is_the_render_to_the_sample(session):
    player, out, bank, timeline = session
    heard = play_to_end(player, out)
    expected = mix(timeline, bank, 0, timeline.total)
    assert np.array_equal(heard[: timeline.total], expected)
    assert not heard[timeline.total :].any()
    assert len(heard) - timeline.total < TAIL + 4096 + AHEAD


def test_the_player_stays_only_a_little_ahead_of_the_speakers(session):
    player, out, _, _ = session
    play(player, out, RATE)
    assert out.queued_frames() <= AHEAD + 1024
    assert abs(player.position() - RATE) <= 1


def test_pause_holds_the_clock_and_resumes_at_the_start_of_the_cue(session):
    player, out, bank, timeline = session
    cue = next(e for e in timeline.events if e.kind == SPEECH and e.role == "say")
    play(player, out, cue.start + 4000)  # in the middle of the instruction
    player.control("pause")
    held = play(player, out, 3 * RATE)
    at = player.position()
    assert player.paused and at == cue.start
    # After the block already playing and a short fade, only the "paused" phrase sounds.
    quiet_from = 1024 + FADE + 1024
    phrase = bank.clips.load("Paused.")
    assert np.abs(held[quiet_from + len(phrase) :]).max() == 0
    player.control("pause")
    after = play(player, out, 4 * RATE)
    resumed = len(bank.clips.load("Resuming."))
    start = np.flatnonzero(np.abs(after).sum(axis=1) > 0)[0]
    # The resumed phrase, a pause, then the session from the cue's start, the same samples.
    gap = to_samples(player.plan.script.title_pause)
    assert np.abs(after[start + resumed + 1024 : start + resumed + gap]).max() == 0
    session_part = after[start + resumed + gap + 1024 :]  # skip the pause's last block
    n = len(session_part) - 2048
    expected = mix(timeline, bank, cue.start, n + 4096)
    offset = _find(session_part[:n], expected)
    assert offset is not None and offset < 2048


def _find(needle: np.ndarray, haystack: np.ndarray) -> int | None:
    """Where `needle` (after its first FADE frames) starts in `haystack`, exactly."""
    probe = needle[FADE : FADE + 256]
    for i in range(len(haystack) - len(needle) + 1):
        if np.array_equal(haystack[i + FADE : i + FADE + 256], probe) and np.array_equal(
            haystack[i + FADE : i + len(needle)], needle[FADE:]
        ):
            return i
    return None


def test_a_control_cuts_short_what_the_coach_says_about_the_last_one(session):
    """'next' while the coach is still saying "Resuming." goes on at once: the phrase
    fades out and the session's clock moves again within a block or two."""
    player, out, _, _ = session
    play(player, out, RATE)
    player.control("pause")
    play(player, out, RATE)
    player.control("pause")  # resume: "Resuming." (0.6 s) and a pause, clock held
    play(player, out, 3000)
    assert player.hold is not None
    held_at = player.position()
    player.control("next")
    play(player, out, 8192)
    assert player.hold is None
    assert player.position() > held_at + 4096  # the clock moved on: not held 1.3 s more


def test_a_paused_player_reports_paused_without_a_message(session):
    player, out, _, _ = session
    play(player, out, RATE)
    player.control("pause")
    play(player, out, 1000)
    status = player.status()
    assert status.paused and status.message == ""


def test_next_jumps_to_the_next_step_from_now(session):
    player, out, _, timeline = session
    play(player, out, 2 * RATE)
    player.control("next")
    play(player, out, 3000)
    now = player.plan.timeline.segments[0].start
    assert abs(now - 2 * RATE) <= 2 * 1024 + 777
    assert [s.step for s in player.plan.timeline.segments][:1] == [1]
    first = next(e for e in player.plan.timeline.events if e.kind == SPEECH)
    assert (first.text, first.start) == ("Circles.", now + to_samples(0.8))
    assert player.plan.timeline.total < timeline.total


class RacingQueue(BlockQueue):
    """An output that moves on at the worst moment: once armed, the callback finishes
    the block it is in and starts the next one just as the player clears the queue."""

    armed = False

    def clear(self) -> object:
        if self.armed:
            self.armed = False
            left = len(self._block) - self._offset if self._block is not None else 0
            self.fill(np.zeros((left + 1, self.channels), dtype=np.float32))
        return super().clear()


@pytest.mark.parametrize("control", ["next", "more", "slower", "faster"])
def test_a_control_goes_on_from_where_the_output_really_is(session, control):
    """The output moving into the next block while a control clears the queue must not
    make that block play twice: the session's clock never steps back."""
    player, _, bank, _timeline = session
    out = RacingQueue(2)
    player = Player(player.plan, bank, out, gain=GAIN)
    play(player, out, 2 * RATE)
    out.armed = True
    player.control(control)
    positions = []
    for _ in range(400):
        player.pump()
        out.fill(np.zeros((64, 2), dtype=np.float32))
        positions.append(player.position())
    assert not out.armed  # the race did happen
    assert all(b >= a for a, b in itertools.pairwise(positions)), (
        "the session clock stepped back: a block played twice"
    )


def test_back_restarts_the_step_or_goes_to_the_one_before(session):
    player, out, _, timeline = session
    second = timeline.segments[1].start
    play(player, out, second + RATE)  # one second into step 2
    player.control("back")
    play(player, out, 100)
    assert player.plan.timeline.segments[0].step == 0  # within the grace: the step before


def test_next_on_a_two_sided_step_goes_to_its_other_side(session):
    player, out, _, timeline = session
    right = timeline.segments[1]
    assert (right.step, right.side) == (1, "right")
    play(player, out, right.start + 2 * RATE)
    assert player.status().next_title == "Circles, partner's left side"
    player.control("next")
    play(player, out, 3000)
    first = player.plan.timeline.segments[0]
    assert (first.step, first.side) == (1, "left")
    assert player.status().side == "left"
    switch = next(e for e in player.plan.timeline.events if e.kind == SPEECH)
    assert switch.role == "switch" and "left" in switch.text


def test_back_early_in_the_second_side_goes_to_the_first_side(session):
    player, out, _, timeline = session
    left = timeline.segments[2]
    assert (left.step, left.side) == (1, "left")
    play(player, out, left.start + RATE)  # within the grace
    player.control("back")
    play(player, out, 3000)
    first = player.plan.timeline.segments[0]
    assert (first.step, first.side) == (1, "right")


def test_back_later_in_the_second_side_restarts_that_side(session):
    player, out, _, timeline = session
    left = timeline.segments[2]
    play(player, out, left.start + 5 * RATE + 2000)  # past the grace
    player.control("back")
    play(player, out, 3000)
    first = player.plan.timeline.segments[0]
    assert (first.step, first.side) == (1, "left")


@pytest.mark.parametrize(
    ("control", "at_run", "hint"),
    [
        ("more_pressure", 1, "Lean in."),
        ("less_pressure", 2, "Lighter now."),
        ("more_pressure", 0, "More."),  # a step without its own: the pack's
        ("less_pressure", 3, "Less."),
    ],
)
def test_pressure_keys_speak_the_right_hint(session, control, at_run, hint):
    player, out, bank, timeline = session
    play(player, out, timeline.segments[at_run].start + RATE)
    player.control(control)
    heard = play(player, out, 2 * RATE)
    clip = bank.clips.load(hint) * np.float32(bank.speech_gain * GAIN)
    assert _find_mono(heard[:, 0], clip)
    assert player.status().message == ("more pressure" if control == "more_pressure" else "lighter")


def test_more_pressure_slows_the_rhythm_of_the_step_and_lighter_restores_it():
    step = Step(title="Rock", say="Rock.", time=60.0, rhythm=60.0)
    script = write_script(Routine(title="t", steps=(step,)), PACK)
    sounds = sounds_for(script)
    plan = LivePlan(script, sounds, build(script, sounds, Pacing()))

    def periods(tl, after):
        beats = [e.start for e in tl.events if e.kind == PULSE and e.start >= after]
        return {b - a for a, b in itertools.pairwise(beats)}

    now = 20 * RATE
    assert periods(plan.timeline, now) <= {RATE, RATE + 1, RATE - 1}
    slower = plan.pressure(now, "more")
    assert slower is not None
    p = periods(slower, now)
    assert p and all(abs(x - RATE * PRESSURE_BEAT) <= 1 for x in p), p
    assert plan.pressure(now + RATE, "more") is None  # already slower: no change
    back = plan.pressure(now + 2 * RATE, "less")
    assert back is not None and periods(back, now + 3 * RATE) <= {RATE, RATE + 1, RATE - 1}


def test_back_later_in_a_step_restarts_it(session):
    player, out, _, _timeline = session
    assert 6 * RATE > BACK_GRACE
    play(player, out, 6 * RATE)  # 6 s into step 1 (8 s long)
    player.control("back")
    play(player, out, 100)
    segs = player.plan.timeline.segments
    assert segs[0].step == 0 and segs[0].start >= 6 * RATE


def test_slower_and_faster_repace_the_rest_keeping_what_is_done(session):
    player, out, _, timeline = session
    play(player, out, 4 * RATE)  # half of step 1
    player.control("slower")
    play(player, out, 100)
    plan = player.plan
    assert plan.factor == pytest.approx(PACE_STEP)
    seg = plan.timeline.segments[0]
    now = 4 * RATE + 2048
    assert abs((now - seg.start) / (seg.end - seg.start) - 0.5) < 0.05
    assert seg.end - seg.start == to_samples(8.0 * PACE_STEP)
    assert plan.timeline.total > timeline.total
    player.control("faster")
    player.control("faster")
    play(player, out, 100)
    assert plan.factor == pytest.approx(1 / PACE_STEP)


def test_more_time_adds_30_seconds_to_this_step_only(session):
    player, out, _, timeline = session
    play(player, out, 2 * RATE)
    player.control("more")
    play(player, out, 100)
    seg = player.plan.timeline.segments[0]
    assert (seg.start, seg.end) == (0, timeline.segments[0].end + MORE_TIME)
    later = [s.end - s.start for s in player.plan.timeline.segments[1:]]
    assert later == [s.end - s.start for s in timeline.segments[1:]]


def test_repeat_says_the_last_cue_again(session):
    player, out, bank, timeline = session
    cue = next(e for e in timeline.events if e.role == "tip")
    play(player, out, cue.end + RATE // 2)  # just after the tip
    player.control("repeat")
    heard = play(player, out, 2 * RATE)
    clip = bank.clips.load(cue.text) * np.float32(bank.speech_gain * GAIN)
    assert _find_mono(heard[:, 0], clip)


def _find_mono(signal: np.ndarray, clip: np.ndarray) -> bool:
    corr = np.correlate(signal, clip[:2000], mode="valid")
    return corr.max() > 0.9 * float(np.dot(clip[:2000], clip[:2000]))


def test_pressure_speaks_the_steps_own_hint(session):
    player, out, bank, timeline = session
    play(player, out, timeline.segments[2].start + RATE)
    player.control("more_pressure")
    heard = play(player, out, 2 * RATE)
    hint = bank.clips.load("Lean in.") * np.float32(bank.speech_gain * GAIN)
    assert _find_mono(heard[:, 0], hint)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_quit_twice_fades_out_and_ends_within_a_moment(session):
    player, out, _, _ = session
    play(player, out, 3 * RATE)
    player.control("quit")
    player.control("quit")
    rest = play_to_end(player, out)
    assert len(rest) <= 1024 + TAIL + 4096 + AHEAD
    assert np.abs(rest[-TAIL // 2 :]).max() == 0
    assert player.quit and player.finished


def test_one_quit_asks_for_another_and_a_late_second_asks_again(session):
    """A pedal's misfire does not end the session: one q asks for a second within 3 s."""
    player, out, bank, timeline = session
    clock = FakeClock()
    player = Player(player.plan, bank, out, gain=GAIN, clock=clock)
    play(player, out, 2 * RATE)
    player.control("quit")
    heard = play(player, out, RATE)
    assert not player.quit and player.status().message == "press q again to quit"
    # Nothing changed in what is heard: the session went on, sample for sample.
    assert np.array_equal(heard, mix(timeline, bank, 2 * RATE, RATE))
    clock.now += QUIT_WINDOW + 0.1
    player.control("quit")  # too late to count as the second: it asks again
    play(player, out, 1000)
    assert not player.quit and player.status().message == "press q again to quit"
    clock.now += 1.0
    player.control("quit")
    play_to_end(player, out)
    assert player.quit


def test_a_first_quit_then_another_control_does_not_quit(session):
    player, out, _, _ = session
    play(player, out, RATE)
    player.control("quit")
    player.control("more")
    player.control("quit")
    play(player, out, 1000)
    assert not player.quit


def test_stop_ends_at_once(session):
    player, out, _, _ = session
    play(player, out, RATE)
    player.control("stop")
    play_to_end(player, out)
    assert player.quit and player.finished


def test_controls_never_click(session):
    """At every control the sound changes through a fade: no jump larger than the
    material's own largest step."""
    player, out, bank, timeline = session
    heard = [play(player, out, 3 * RATE)]
    for name in ("next", "slower", "pause", "pause", "more", "back", "faster"):
        player.control(name)
        heard.append(play(player, out, RATE))
    audio = np.concatenate(heard)[:, 0]
    own = np.abs(np.diff(mix(timeline, bank, 0, timeline.total)[:, 0])).max()
    assert np.abs(np.diff(audio)).max() <= own * 1.05


@pytest.mark.parametrize("control", ["slower", "faster", "more"])
def test_a_change_of_pace_or_time_keeps_every_cue_not_yet_said(session, control):
    """Pressed between a step's title and its instruction: the instruction was wanted at
    the step's start (it was only pushed back by the title) and must still be said."""
    player, out, _, timeline = session
    announce = next(e for e in timeline.events if e.role == "announce" and e.step == 1)
    play(player, out, announce.end - 2048)
    player.control(control)
    play(player, out, 100)
    now = announce.end
    said_before = [e.text for e in timeline.events if e.kind == SPEECH and e.start < now]
    to_come = [
        e.text
        for e in timeline.events
        if e.kind == SPEECH and e.start >= now and e.role not in ("halfway", "countdown")
    ]
    new = [
        e.text
        for e in player.plan.timeline.events
        if e.kind == SPEECH and e.role not in ("halfway", "countdown")
    ]
    assert new == to_come
    assert not set(new) & {t for t in said_before if said_before.count(t) == 1} - set(to_come)


def test_a_packs_volume_sets_the_voice_against_the_chimes(session):
    _, _, bank, timeline = session
    quiet = SoundBank(bank.clips, channels=2, volume=0.5)
    spoken = next(e for e in timeline.events if e.kind == SPEECH)
    chime = next(e for e in timeline.events if e.kind == "chime")
    assert quiet.gains(spoken) == pytest.approx(tuple(g * 0.5 for g in bank.gains(spoken)))
    assert quiet.gains(chime) == bank.gains(chime)
