"""Captions: the spoken cues of a session (or of a part of it) as a WebVTT file.

Made from the timeline alone, so they say what the audio says at the times it says it.
"""

from __future__ import annotations

from coach.timeline import SPEECH, Event
from coach.timetext import stamp
from coach.units import Samples


def webvtt(events: tuple[Event, ...], start: Samples, end: Samples) -> str:
    """WebVTT captions of the spoken cues between start and end, timed from start."""
    lines = ["WEBVTT", ""]
    n = 0
    for e in events:
        if e.kind != SPEECH or e.start < start or e.start >= end:
            continue
        n += 1
        text = e.text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        lines += [str(n), f"{stamp(e.start - start)} --> {stamp(e.end - start)}", text, ""]
    return "\n".join(lines)
