"""Routine files: finding them, reading them, and refusing what is wrong with them.

A routine is a YAML file of steps (the README's "Writing a routine"). `load_routine` returns frozen
data or raises `RoutineError` naming file, line, column, field and what was expected.
Built-in routines live in coach/routines/ and are addressed by name; anything else is a
path.

The sanity limits (SPEC "Timing rules") keep every routine that validates computable in
bounded time and memory, at any pace: MAX_STEP, MIN_EVERY, MAX_SESSION, MAX_EVENTS and
MAX_CUE_CHARS are far beyond any real massage, and refused at the line that crosses them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from coach import yamlfile
from coach.errors import RoutineError, UsageError
from coach.timetext import format_duration
from coach.units import Seconds
from coach.yamlfile import Field

FORMAT_VERSION = 1
SIDES = ("left", "right")
PACES = {"slow": 1.25, "normal": 1.0, "brisk": 0.8}
PACE_RANGE = (0.25, 4.0)
RHYTHM_RANGE = (20.0, 200.0)

#: The longest step, the shortest repeat of an `every` tip, the longest session (its
#: steps' times, each side counted, at pace 1) and of a --length.
MAX_STEP: Seconds = 2 * 3600
MIN_EVERY: Seconds = 5
MAX_SESSION: Seconds = 6 * 3600
#: The most events (cues, chimes, rhythm beats) a session may make, counted at the
#: slowest pace, where a rhythm beats longest: 2 h of 100 bpm beats at 4x stay below it.
MAX_EVENTS = 50_000
#: The longest text one cue may speak (about 70 s at a calm rate).
MAX_CUE_CHARS = 1000

BUILTIN_DIR = Path(__file__).parent / "routines"


@dataclass(frozen=True)
class Tip:
    """Spoken during a step: once `after` a time, or `every` so often."""

    say: str
    after: Seconds | None = None
    every: Seconds | None = None


@dataclass(frozen=True)
class Pressure:
    more: str | None = None
    less: str | None = None


@dataclass(frozen=True)
class Step:
    title: str
    say: str
    time: Seconds
    sides: tuple[str, ...] = ()
    tips: tuple[Tip, ...] = ()
    countdown: Seconds | None = None
    rhythm: float | None = None
    pressure: Pressure = Pressure()


@dataclass(frozen=True)
class Where:
    """A place in a file, so later checks (voice pack, language) can point at it."""

    file: str
    line: int
    column: int


@dataclass(frozen=True)
class Routine:
    title: str
    steps: tuple[Step, ...]
    description: str = ""
    language: str | None = None
    voice: str | None = None
    pace: float | None = None
    source: str = "<routine>"
    voice_where: Where | None = None
    language_where: Where | None = None


def pace_name(factor: float, places: int = 6) -> str | None:
    """slow, normal or brisk when the factor is one of theirs (to `places` decimals)."""
    return next(
        (name for name, value in PACES.items() if round(value, places) == round(factor, places)),
        None,
    )


def parse_pace(text: str) -> float | None:
    """slow | normal | brisk | a factor like 1.2 -> the factor; None if it is none of those."""
    text = text.strip().lower()
    if text in PACES:
        return PACES[text]
    try:
        value = float(text.rstrip("x"))
    except ValueError:
        return None
    return value if PACE_RANGE[0] <= value <= PACE_RANGE[1] else None


PACE_HINT = f"slow, normal, brisk or a factor from {PACE_RANGE[0]:g} to {PACE_RANGE[1]:g} like 1.2"


def builtin_routines() -> dict[str, Path]:
    """Built-in routines by name. Translations live in subfolders named by language
    and are addressed as `name-LANG` (e.g. upper-back-basics-es)."""
    found = {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.yaml"))}
    for sub in sorted(p for p in BUILTIN_DIR.iterdir() if p.is_dir()):
        for p in sorted(sub.glob("*.yaml")):
            found[f"{p.stem}-{sub.name}"] = p
    return found


def find_routine(name_or_path: str) -> tuple[Path, str]:
    """A built-in routine's name or a file path -> (path to read, label for messages)."""
    builtins = builtin_routines()
    if name_or_path in builtins:
        return builtins[name_or_path], name_or_path
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or "/" in name_or_path or _exists(path):
        return path, name_or_path
    raise UsageError(
        f"no built-in routine named {name_or_path!r} and no such file "
        f"(built-in: {', '.join(builtins)}; see `coach list`)"
    )


def _exists(path: Path) -> bool:
    """Whether something is there; a path we may not look at (EACCES, ENAMETOOLONG) is
    taken to be meant as a file, so reading it reports what is wrong with it."""
    try:
        return path.exists()
    except OSError:
        return True


def load_routine(name_or_path: str) -> Routine:
    path, label = find_routine(name_or_path)
    root = yamlfile.load(path, label, RoutineError)
    return read_routine(root)


def _where(field: Field) -> Where:
    mark = field.node.start_mark
    return Where(field.src.label, mark.line + 1, mark.column + 1)


def read_routine(root: Field) -> Routine:
    top = root.mapping(
        required=("routine", "title", "steps"),
        optional=("description", "language", "voice", "pace"),
    )
    version = top["routine"]
    if version.integer(low=0, high=10**6) != FORMAT_VERSION:
        version.fail(
            f"format version {version.node.value} is not supported (this coach reads "
            f"version {FORMAT_VERSION}: write `routine: {FORMAT_VERSION}`)"
        )
    pace = None
    if "pace" in top:
        value = top["pace"]
        pace = (
            parse_pace(str(value.node.value))
            if value.node.tag.endswith((":str", ":int", ":float"))
            else None
        )
        if pace is None:
            value.fail(f"{value.raw} is not a pace ({PACE_HINT})")
    language = None
    if "language" in top:
        language = top["language"].text()
        if not language.replace("-", "").isalpha() or len(language) > 12:
            top["language"].fail(f"{top['language'].raw} is not a language code (like en or es)")
    return Routine(
        title=top["title"].cue((), max_chars=MAX_CUE_CHARS, multiline=False),
        description=top["description"].text(multiline=True) if "description" in top else "",
        language=language,
        voice=top["voice"].text() if "voice" in top else None,
        pace=pace,
        steps=_read_steps(top["steps"]),
        source=root.src.label,
        voice_where=_where(top["voice"]) if "voice" in top else None,
        language_where=_where(top["language"]) if "language" in top else None,
    )


def _read_steps(field: Field) -> tuple[Step, ...]:
    """The steps, within the session's limits: each is checked as it is added, so the
    error points at the step that crosses one."""
    steps: list[Step] = []
    length: Seconds = 0.0
    events = 3  # the closing cue, the end chime, the halfway cue
    for item in field.items(min_len=1):
        step = _read_step(item)
        length += step.time * max(1, len(step.sides))
        if length > MAX_SESSION:
            item.fail(
                f"with this step the session lasts {format_hours(length)} (each side counted), "
                f"longer than the longest session ({format_hours(MAX_SESSION)})"
            )
        events += _events_at_slowest(step)
        if events > MAX_EVENTS:
            item.fail(
                f"with this step the session makes {events:,} events (cues, chimes and "
                f"rhythm beats at the slowest pace, {PACE_RANGE[1]:g}x), more than "
                f"{MAX_EVENTS:,}; use fewer or rarer tips, a shorter time or no rhythm"
            )
        steps.append(step)
    return tuple(steps)


def _events_at_slowest(step: Step) -> int:
    """At least as many events as the step makes at any pace: per run its chime, its two
    opening cues, a countdown (--countdown may add one), its tips, and its rhythm's
    beats over the run's time at the slowest pace."""
    per_run = 4
    for tip in step.tips:
        per_run += 1 if tip.every is None else math.ceil(step.time / tip.every) - 1
    if step.rhythm:
        per_run += math.floor(step.rhythm / 60 * step.time * PACE_RANGE[1]) + 1
    return per_run * max(1, len(step.sides))


def format_hours(seconds: Seconds) -> str:
    """6h, 2h30m, 1h0m15s, 45s: a long time in whole seconds (rounded down), for the
    limits' messages."""
    h, rest = divmod(int(max(0.0, seconds)), 3600)
    m, s = divmod(rest, 60)
    text = (f"{h}h" if h else "") + (f"{m}m" if m or (h and s) else "") + (f"{s}s" if s else "")
    return text or "0s"


def _read_step(field: Field) -> Step:
    keys = field.mapping(
        required=("title", "say", "time"),
        optional=("sides", "tips", "countdown", "rhythm", "pressure"),
    )
    time = keys["time"].duration()
    if time > MAX_STEP:
        keys["time"].fail(
            f"{keys['time'].raw} is longer than the longest step ({format_hours(MAX_STEP)})"
        )
    sides: tuple[str, ...] = ()
    if "sides" in keys:
        names = []
        for item in keys["sides"].items(min_len=1):
            side = item.text()
            if side not in SIDES:
                item.fail(f"{item.raw} is not a side (expected left or right)")
            if side in names:
                item.fail(f"side {side!r} is listed twice")
            names.append(side)
        sides = tuple(names)
    placeholders = ("side",) if sides else ()

    def spoken(f: Field) -> str:
        if not sides and "{side}" in str(f.node.value):
            f.fail("{side} is only allowed in a step with sides (add sides: [right, left])")
        return f.cue(placeholders, max_chars=MAX_CUE_CHARS)

    tips = tuple(_read_tip(f, time, spoken) for f in keys["tips"].items()) if "tips" in keys else ()
    countdown = None
    if "countdown" in keys:
        countdown = keys["countdown"].duration()
        if countdown >= time:
            keys["countdown"].fail(
                f"{keys['countdown'].raw} is not shorter than the step ({format_duration(time)})"
            )
    rhythm = None
    if "rhythm" in keys:
        rhythm = keys["rhythm"].number(
            low=RHYTHM_RANGE[0], high=RHYTHM_RANGE[1], what="a rhythm in beats per minute"
        )
    pressure = Pressure()
    if "pressure" in keys:
        p = keys["pressure"].mapping(optional=("more", "less"))
        pressure = Pressure(
            more=spoken(p["more"]) if "more" in p else None,
            less=spoken(p["less"]) if "less" in p else None,
        )
    return Step(
        title=keys["title"].cue((), max_chars=MAX_CUE_CHARS, multiline=False),
        say=spoken(keys["say"]),
        time=time,
        sides=sides,
        tips=tips,
        countdown=countdown,
        rhythm=rhythm,
        pressure=pressure,
    )


def _read_tip(field: Field, step_time: Seconds, spoken: Callable[[Field], str]) -> Tip:
    keys = field.mapping(required=("say",), optional=("after", "every"))
    if ("after" in keys) == ("every" in keys):
        field.fail("a tip needs exactly one of `after: TIME` or `every: TIME`")
    which = "after" if "after" in keys else "every"
    at = keys[which].duration()
    if which == "every" and at < MIN_EVERY:
        keys[which].fail(
            f"{keys[which].raw} is more often than a tip may repeat (every {MIN_EVERY:g}s at most)"
        )
    if at >= step_time:
        keys[which].fail(
            f"{keys[which].raw} falls outside its step (the step lasts "
            f"{format_duration(step_time)}; a tip must come before the end)"
        )
    say = spoken(keys["say"])
    return Tip(
        say=say, after=at if which == "after" else None, every=at if which == "every" else None
    )
