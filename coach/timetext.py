"""Time as people read and write it: durations in routine files and options, clocks on
the screen and in tables, stamps in captions and chapters. Every formatter of time lives
here, so a time reads the same wherever it is shown."""

from __future__ import annotations

import math
import re

from coach.units import RATE, Samples, Seconds, to_seconds

_DURATION = re.compile(
    r"^\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*(?:(\d+(?:\.\d+)?)\s*m)?\s*(?:(\d+(?:\.\d+)?)\s*s)?\s*$"
)


def parse_duration(text: str) -> Seconds | None:
    """`45s`, `1m`, `1m30s`, `2m`, `1h`, `90` -> seconds; None when it is not a duration."""
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    m = _DURATION.match(text)
    if not m or not any(m.groups()):
        return None
    h, mins, s = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mins * 60 + s


def format_duration(seconds: Seconds) -> str:
    """The inverse of parse_duration, for messages: 90 -> '1m30s'."""
    if seconds < 60:
        return f"{seconds:g}s"
    m, s = divmod(seconds, 60)
    return f"{int(m)}m{s:g}s" if s else f"{int(m)}m"


def clock(samples: Samples) -> str:
    """m:ss.s, for tables and messages."""
    m, s = divmod(to_seconds(samples), 60)
    return f"{int(m)}:{s:04.1f}"


def countdown_clock(seconds: Seconds) -> str:
    """m:ss, or h:mm:ss from an hour on, for a time left on the live screen; rounded up
    (0.2 s left is 0:01), so it reaches 0:00 only at the end."""
    total = max(0, math.ceil(seconds - 0.001)) if math.isfinite(seconds) else 0
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def milliseconds(samples: Samples) -> int:
    return round(samples * 1000 / RATE)


def stamp(samples: Samples) -> str:
    """HH:MM:SS.mmm, as WebVTT captions and Vorbis chapters write a time."""
    s, ms = divmod(milliseconds(samples), 1000)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"
