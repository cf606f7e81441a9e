"""The timeline's promises, checked over random routines with made-up speech lengths.

Speech lengths are invented here (the timeline is a pure function of them); the
end-to-end test with the real engine is in test_preview_tts.py.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from coach.routine import PACE_RANGE, Pressure, Routine, Step, Tip
from coach.script import write_script
from coach.timeline import (
    ACCENT_EVERY,
    CHIME_LEAD,
    END_SILENCE,
    GAP,
    HALFWAY_QUIET,
    PULSE,
    SPEECH,
    TAIL,
    Pacing,
    Sounds,
    Timeline,
    TimelineError,
    build,
    paced_beat,
)
from coach.units import RATE, to_samples
from coach.voicepack import Phrases, VoicePack

PACK = VoicePack(
    id="test",
    name="test",
    language="en",
    voice="gmw/en",
    rate=150,
    volume=1.0,
    phrases=Phrases(
        next_step="{title}.",
        switch_sides="Now the {side} side.",
        countdown="{seconds} seconds left.",
        halfway="Halfway.",
        paused="Paused.",
        resumed="Resuming.",
        finished="Finished.",
        more_pressure="More.",
        less_pressure="Less.",
        left="left",
        right="right",
    ),
    chimes={"step": "bell", "side": "bell-bright", "end": "bell-low"},
)
CHIMES = {"bell": to_samples(2.5), "bell-bright": to_samples(2.0), "bell-low": to_samples(3.5)}


def sounds_for(script, seconds_per_char: float = 0.06) -> Sounds:
    return Sounds(
        speech={t: max(1, to_samples(len(t) * seconds_per_char)) for t in script.texts()},
        chimes=CHIMES,
        pulse=to_samples(0.18),
    )


words = st.text(alphabet="abcdefgh ", min_size=1, max_size=80).map(lambda s: "w" + s.strip())


@st.composite
def steps(draw) -> Step:
    time = draw(st.integers(min_value=5, max_value=300))
    sides = draw(st.sampled_from([(), ("right", "left"), ("left",)]))
    tips = []
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(1, time - 1))
        say = draw(words)
        tips.append(Tip(say=say, after=at) if draw(st.booleans()) else Tip(say=say, every=at))
    countdown = draw(st.one_of(st.none(), st.integers(1, max(1, time - 1))))
    rhythm = draw(st.one_of(st.none(), st.integers(20, 200)))
    return Step(
        title=draw(words),
        say=draw(words),
        time=float(time),
        sides=sides,
        tips=tuple(tips),
        countdown=float(countdown) if countdown and countdown < time else None,
        rhythm=float(rhythm) if rhythm else None,
        pressure=Pressure(),
    )


routines = st.lists(steps(), min_size=1, max_size=6).map(
    lambda s: Routine(title="random", steps=tuple(s))
)
speeds = st.floats(min_value=0.005, max_value=0.12)
paces = st.floats(min_value=0.25, max_value=4.0)
common = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def speech_of(tl: Timeline):
    return [e for e in tl.events if e.kind == SPEECH]


@common
@given(routines, speeds, paces, st.booleans())
def test_spoken_cues_never_overlap_and_keep_a_gap(routine, speed, pace, chimes):
    script = write_script(routine, PACK)
    tl = build(script, sounds_for(script, speed), Pacing(pace=pace, chimes=chimes))
    spoken = sorted(speech_of(tl), key=lambda e: e.start)
    for a, b in itertools.pairwise(spoken):
        assert b.start >= a.end + GAP, (a, b)


@common
@given(routines, speeds, paces, st.booleans())
def test_a_title_and_its_instructions_keep_the_packs_pause(routine, speed, pace, chimes):
    script = write_script(routine, PACK)
    tl = build(script, sounds_for(script, speed), Pacing(pace=pace, chimes=chimes))
    pause = to_samples(script.title_pause)
    assert pause >= to_samples(0.7)
    spoken = speech_of(tl)
    for a, b in itertools.pairwise(spoken):
        if a.role in ("announce", "switch") and b.role == "say" and a.step == b.step:
            assert b.start >= a.end + pause, (a, b)


@common
@given(routines, speeds, paces, st.booleans())
def test_the_halfway_cue_has_quiet_on_both_sides(routine, speed, pace, chimes):
    script = write_script(routine, PACK)
    tl = build(script, sounds_for(script, speed), Pacing(pace=pace, chimes=chimes))
    halfway = [e for e in speech_of(tl) if e.role == "halfway"]
    if not halfway:
        assert any("halfway cue is left out" in w for w in tl.warnings)
        return
    (cue,) = halfway
    assert cue.start >= tl.segments[-1].end // 2
    for e in tl.events:
        if e is cue or e.kind == PULSE:
            continue
        loud_end = e.end if e.kind == SPEECH else e.start + CHIME_LEAD
        assert loud_end + HALFWAY_QUIET <= cue.start or e.start >= cue.end + HALFWAY_QUIET, e


@common
@given(routines, speeds, paces, st.booleans())
def test_events_are_ordered_and_inside_the_session(routine, speed, pace, chimes):
    script = write_script(routine, PACK)
    tl = build(script, sounds_for(script, speed), Pacing(pace=pace, chimes=chimes))
    keys = [(e.start, e.order, e.seq) for e in tl.events]
    assert keys == sorted(keys)
    assert all(0 <= e.start < e.end <= tl.total for e in tl.events)


@common
@given(routines, speeds, paces, st.booleans())
def test_every_step_lasts_its_time_and_holds_its_speech(routine, speed, pace, chimes):
    script = write_script(routine, PACK)
    tl = build(script, sounds_for(script, speed), Pacing(pace=pace, chimes=chimes))
    assert len(tl.segments) == sum(max(1, len(s.sides)) for s in routine.steps)
    for seg in tl.segments:
        assert seg.end - seg.start >= seg.nominal
        assert seg.nominal == to_samples(script.runs[seg.run].time * pace)
        for e in tl.events:
            if (
                e.kind == SPEECH
                and e.role != "finished"
                and (e.step, e.side)
                == (
                    seg.step,
                    seg.side,
                )
            ):
                assert seg.start <= e.start and e.end + TAIL <= seg.end


@common
@given(routines, speeds, paces, st.booleans())
def test_total_is_the_sum_of_the_steps_and_the_closing(routine, speed, pace, chimes):
    script = write_script(routine, PACK)
    sounds = sounds_for(script, speed)
    tl = build(script, sounds, Pacing(pace=pace, chimes=chimes))
    assert tl.segments[0].start == 0
    for a, b in zip(tl.segments, tl.segments[1:], strict=False):
        assert a.end == b.start
    closing = sounds.speech[script.finished] + END_SILENCE
    if chimes:
        closing += GAP + CHIMES["bell-low"]
    assert tl.total == sum(s.end - s.start for s in tl.segments) + closing


@common
@given(routines, speeds, paces, st.booleans())
def test_nothing_planned_is_dropped(routine, speed, pace, chimes):
    script = write_script(routine, PACK)
    tl = build(script, sounds_for(script, speed), Pacing(pace=pace, chimes=chimes))
    planned = Counter()
    for run in script.runs:
        planned.update(run.opening)
        planned.update(t.text for t in run.tips)
        if run.countdown:
            planned[run.countdown_text] += 1
    planned[script.finished] += 1
    said = Counter(e.text for e in speech_of(tl) if e.role != "halfway")
    assert said == planned
    halfway = [e for e in speech_of(tl) if e.role == "halfway"]
    assert len(halfway) == 1 or any("halfway" in w for w in tl.warnings)


@common
@given(routines, speeds, paces, st.booleans())
def test_a_countdown_starts_exactly_its_seconds_before_its_step_ends(routine, speed, pace, chimes):
    script = write_script(routine, PACK)
    tl = build(script, sounds_for(script, speed), Pacing(pace=pace, chimes=chimes))
    for seg in tl.segments:
        run = script.runs[seg.run]
        cues = [
            e
            for e in speech_of(tl)
            if e.role == "countdown" and (e.step, e.side) == (seg.step, seg.side)
        ]
        if run.countdown is None:
            assert cues == []
        else:
            (cue,) = cues
            if cue.end + TAIL <= cue.start + to_samples(run.countdown):
                assert seg.end - cue.start == to_samples(run.countdown)


@common
@given(routines, paces)
def test_pace_scales_steps_and_tips_when_speech_fits(routine, pace):
    # Speech so short that nothing needs to move: every run lasts exactly its scaled
    # time, and every tip sits exactly at its scaled offset.
    script = write_script(routine, PACK)
    tiny = sounds_for(script, 0.0)
    tl = build(script, tiny, Pacing(pace=pace, chimes=False))
    for seg in tl.segments:
        run = script.runs[seg.run]
        assume(run.countdown is None)
        tips = [
            e for e in speech_of(tl) if e.role == "tip" and (e.step, e.side) == (seg.step, seg.side)
        ]
        offsets = [to_samples(t.offset * pace) for t in run.tips]
        if (
            all(b - a > 2 * GAP for a, b in itertools.pairwise(offsets))
            and (not offsets or offsets[0] > 3 * GAP + CHIME_LEAD)
            and (not offsets or offsets[-1] + 2 * GAP + TAIL < seg.nominal)
        ):
            assert seg.end - seg.start == seg.nominal
            assert [t.start - seg.start for t in tips] == offsets


@common
@given(routines, speeds, st.floats(min_value=0.5, max_value=3.0))
def test_a_slower_pace_never_shortens_the_session(routine, speed, ratio):
    script = write_script(routine, PACK)
    sounds = sounds_for(script, speed)
    fast = build(script, sounds, Pacing(pace=1.0)).total
    slow = build(script, sounds, Pacing(pace=1.0 * ratio)).total
    assert (slow >= fast) if ratio >= 1 else (slow <= fast)


@common
@given(routines, speeds, st.floats(min_value=0.0, max_value=1.0), st.booleans())
def test_length_hits_its_target_to_the_sample(routine, speed, share, chimes):
    """Any length from the speech alone to the slowest pace's session is hit exactly."""
    script = write_script(routine, PACK)
    sounds = sounds_for(script, speed)
    floor = build(script, sounds, Pacing(pace=0.0, chimes=chimes)).total
    ceiling = build(script, sounds, Pacing(pace=PACE_RANGE[1], chimes=chimes)).total
    target = floor + round((ceiling - floor) * share)
    tl = build(script, sounds, Pacing(length=target, chimes=chimes))
    assert tl.total == target
    assert (
        tl.total - build(script, sounds, Pacing(pace=tl.factor, chimes=chimes)).total
        <= len(tl.segments) + 1
    )


@common
@given(routines, speeds, st.booleans())
def test_a_length_past_the_slowest_pace_is_refused(routine, speed, chimes):
    script = write_script(routine, PACK)
    sounds = sounds_for(script, speed)
    ceiling = build(script, sounds, Pacing(pace=PACE_RANGE[1], chimes=chimes)).total
    with pytest.raises(TimelineError, match="slower than the slowest") as refused:
        build(script, sounds, Pacing(length=ceiling + RATE, chimes=chimes))
    assert refused.value.longest == ceiling and refused.value.needed > PACE_RANGE[1]


@common
@given(routines, speeds)
def test_length_shorter_than_the_speech_alone_is_refused(routine, speed):
    script = write_script(routine, PACK)
    sounds = sounds_for(script, speed)
    floor = build(script, sounds, Pacing(pace=0.0)).total
    with pytest.raises(TimelineError, match="shorter than the speech alone") as refused:
        build(script, sounds, Pacing(length=floor - 1))
    assert refused.value.shortest == floor


def test_a_step_with_sides_runs_once_per_side_with_a_side_chime_and_a_switch_cue():
    step = Step(
        title="Circles", say="Circles on the {side} side.", time=60.0, sides=("right", "left")
    )
    script = write_script(Routine(title="t", steps=(step,)), PACK)
    tl = build(script, sounds_for(script))
    kinds = [(e.kind, e.role, e.side, e.text) for e in tl.events if e.kind != PULSE]
    assert kinds[:3] == [
        ("chime", "step", "right", "bell"),
        ("speech", "announce", "right", "Circles."),
        ("speech", "say", "right", "Circles on the right side."),
    ]
    second = [k for k in kinds if k[2] == "left"][:3]
    assert second == [
        ("chime", "side", "left", "bell-bright"),
        ("speech", "switch", "left", "Now the left side."),
        ("speech", "say", "left", "Circles on the left side."),
    ]
    assert tl.segments[1].start == to_samples(60.0)


def test_a_step_too_short_for_its_speech_is_lengthened_and_reported():
    step = Step(title="Quick", say="x" * 200, time=5.0)
    script = write_script(Routine(title="t", steps=(step,)), PACK)
    tl = build(script, sounds_for(script, 0.1))  # 20 s of speech in a 5 s step
    assert tl.segments[0].end - tl.segments[0].start > to_samples(20.0)
    assert any('step 1 "Quick" lengthened by' in w for w in tl.warnings)


def test_the_rhythm_follows_the_pace_within_40_to_120_beats_a_minute():
    step = Step(title="Rock", say="Rock.", time=60.0, rhythm=50.0)
    script = write_script(Routine(title="t", steps=(step,)), PACK)
    for pace, bpm in ((0.8, 62.5), (1.0, 50.0), (1.25, 40.0), (1.6, 40.0), (0.3, 120.0)):
        tl = build(script, sounds_for(script), Pacing(pace=pace))
        beats = [e.start for e in tl.events if e.kind == PULSE]
        gaps = {b - a for a, b in itertools.pairwise(beats)}
        period = RATE * 60 / bpm
        assert gaps <= {math.floor(period), math.ceil(period)}, (pace, gaps)
        assert len(beats) >= int((60 * pace - 4) * bpm / 60)  # the opening comes first


def test_every_fourth_beat_is_an_accent_starting_with_the_first():
    step = Step(title="Rock", say="Rock.", time=30.0, rhythm=60.0)
    script = write_script(Routine(title="t", steps=(step,)), PACK)
    tl = build(script, sounds_for(script))
    roles = [e.role for e in tl.events if e.kind == PULSE]
    assert len(roles) > 8
    assert roles == ["accent" if k % ACCENT_EVERY == 0 else "rhythm" for k in range(len(roles))]


def test_a_rhythm_written_outside_the_range_keeps_its_own_tempo():
    assert paced_beat(30.0, 1.0) == 30.0
    assert paced_beat(30.0, 1.25) == 30.0  # slower would leave the range: it stays
    assert paced_beat(150.0, 0.8) == 150.0
    assert paced_beat(150.0, 1.25) == 120.0
    assert paced_beat(60.0, 1.0, slower=1.1) == pytest.approx(60 / 1.1)


def test_the_countdown_option_overrides_and_turns_off_countdowns():
    step = Step(title="S", say="Say.", time=60.0, countdown=10.0)
    routine = Routine(title="t", steps=(step,))
    assert write_script(routine, PACK).runs[0].countdown_text == "10 seconds left."
    assert write_script(routine, PACK, countdown=15).runs[0].countdown_text == "15 seconds left."
    assert write_script(routine, PACK, countdown=0).runs[0].countdown is None
    short = write_script(routine, PACK, countdown=45)
    assert short.runs[0].countdown is None and "no 45s countdown" in short.warnings[0]
