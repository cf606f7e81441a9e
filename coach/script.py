"""The script: every text a session may speak, decided before any sound is made.

`write_script(routine, pack)` turns a routine and a voice pack into runs (a step, or one
side of a step that has sides) with their spoken opening, tips and countdown, and also
holds what the coach says about live controls (paused, resumed, the pressure hints). So
the speech stage can synthesize and measure everything a session says, preview, render
and live alike, and `coach record-list` can list it, before the timeline places it.
Pure: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from coach.routine import Routine
from coach.timetext import format_duration
from coach.units import Seconds
from coach.voicepack import VoicePack

#: Which pressure hint: "more" pressure, or lighter ("less").
Hint = Literal["more", "less"]


@dataclass(frozen=True)
class TipCue:
    """A tip as a run says it: its text, `offset` seconds from the run's start at pace 1."""

    offset: Seconds
    text: str


@dataclass(frozen=True)
class Run:
    """One run of a step: the whole step, or one side of it."""

    step: int
    side: str | None
    title: str
    time: Seconds  # at pace 1, spoken opening included
    chime: str  # the chime sound that opens the run
    switch: bool  # a later side of its step: opens with the switch cue and side chime
    opening: tuple[str, ...]  # spoken back to back at the start
    tips: tuple[TipCue, ...]  # in order of offset
    countdown: Seconds | None
    countdown_text: str
    rhythm: float | None
    more_pressure: str | None = None  # the step's own hints, its {side} filled in
    less_pressure: str | None = None


@dataclass(frozen=True)
class Script:
    title: str
    runs: tuple[Run, ...]
    halfway: str
    finished: str
    end_chime: str
    warnings: tuple[str, ...] = ()
    #: The pause between a run's title (or side switch) and its instructions.
    title_pause: Seconds = 0.7
    # What the coach says about live controls.
    paused: str = ""
    resumed: str = ""
    more_pressure: str = ""  # the pack's general hints, for a step without its own
    less_pressure: str = ""

    def texts(self) -> set[str]:
        """Every distinct text the timeline may place."""
        out = {self.halfway, self.finished}
        for run in self.runs:
            out.update(run.opening)
            out.update(t.text for t in run.tips)
            if run.countdown is not None:
                out.add(run.countdown_text)
        return out

    def control_texts(self) -> set[str]:
        """Every distinct text a live session may say about its controls."""
        out = {self.paused, self.resumed, self.more_pressure, self.less_pressure}
        for run in self.runs:
            out.update(h for h in (run.more_pressure, run.less_pressure) if h)
        return out - {""}

    def pressure_hint(self, run: int | None, which: Hint) -> str:
        """What to say when more (or less) pressure is asked for during run `run` (None:
        outside every run): the step's own hint, else the pack's general one."""
        if run is not None:
            r = self.runs[run]
            own = r.more_pressure if which == "more" else r.less_pressure
            if own:
                return own
        return self.more_pressure if which == "more" else self.less_pressure


def _announce(template: str, title: str) -> str:
    return template.format(title=title.rstrip(".!?;: "))


def write_script(routine: Routine, pack: VoicePack, *, countdown: Seconds | None = None) -> Script:
    """What the session says and sounds, run by run.

    `countdown` overrides every step's countdown (0 turns countdowns off); a countdown
    longer than half a run is left out for that run, with a warning.
    """
    p = pack.phrases
    runs: list[Run] = []
    warnings: list[str] = []
    for index, step in enumerate(routine.steps):
        cd = step.countdown if countdown is None else (countdown or None)
        if countdown and cd is not None and cd * 2 > step.time:
            warnings.append(
                f'step {index + 1} "{step.title}": no {format_duration(cd)} countdown '
                f"in a {format_duration(step.time)} step"
            )
            cd = None
        for n, side in enumerate(step.sides or (None,)):
            words = {"side": p.side(side)} if side else {}
            first = _announce(p.next_step, step.title)
            opening = (
                (first, step.say.format(**words))
                if n == 0
                else (p.switch_sides.format(**words), step.say.format(**words))
            )
            tips: list[TipCue] = []
            for tip in step.tips:
                text = tip.say.format(**words)
                if tip.after is not None:
                    tips.append(TipCue(tip.after, text))
                elif tip.every is not None:
                    k = 1
                    while k * tip.every < step.time:
                        tips.append(TipCue(k * tip.every, text))
                        k += 1
            tips.sort(key=lambda t: t.offset)  # stable: equal offsets keep file order
            more, less = step.pressure.more, step.pressure.less
            runs.append(
                Run(
                    step=index,
                    side=side,
                    title=step.title,
                    time=step.time,
                    chime=pack.chimes["step"] if n == 0 else pack.chimes["side"],
                    switch=n > 0,
                    opening=opening,
                    tips=tuple(tips),
                    countdown=cd,
                    countdown_text=p.countdown.format(seconds=f"{cd:g}") if cd else "",
                    rhythm=step.rhythm,
                    more_pressure=more.format(**words) if more else None,
                    less_pressure=less.format(**words) if less else None,
                )
            )
    return Script(
        title=routine.title,
        runs=tuple(runs),
        halfway=p.halfway,
        finished=p.finished,
        end_chime=pack.chimes["end"],
        warnings=tuple(warnings),
        title_pause=pack.title_pause,
        paused=p.paused,
        resumed=p.resumed,
        more_pressure=p.more_pressure,
        less_pressure=p.less_pressure,
    )
