"""Captions: what a session says (and sounds), as WebVTT a person can read.

Made from the timeline alone, so they say what the audio says when it says it. Each
caption has at most two lines of at most 42 characters (the usual limits for subtitles);
a cue too long for one caption is split at its sentences (then at commas, then between
words), and each part gets a share of the cue's time in proportion to its characters:
the timeline knows when a cue starts and ends, not when each of its sentences does.
Chimes get a short bracketed caption ("[bell]", "[switch to your partner's left side]";
"[♪]" in sessions of other languages, which have no words of ours for sounds).

Whatever a routine's text holds, the file stays valid WebVTT: line breaks and blank
lines (a multi-paragraph ``say: |``) become spaces, control characters are dropped,
"-->" cannot appear in a cue, and &, < and > are escaped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from coach.timeline import CHIME, SPEECH, Event
from coach.timetext import stamp
from coach.units import Samples, to_samples

#: The longest line of a caption, in characters, and the most lines a caption has.
MAX_LINE = 42
MAX_LINES = 2
#: How long a chime's caption shows at most (less when speech follows sooner).
CHIME_CAPTION: Samples = to_samples(1.5)

_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")
_CLAUSE_END = re.compile(r"(?<=[,;:])\s+")


@dataclass(frozen=True)
class Caption:
    start: Samples
    end: Samples
    lines: tuple[str, ...]


def captions(
    events: Sequence[Event],
    start: Samples,
    end: Samples,
    *,
    sounds: bool = True,
    sides: Mapping[str, str] | None = None,
) -> list[Caption]:
    """The captions of the events that start in [start, end), timed from `start`: every
    spoken cue, and with `sounds` a bracketed caption for each chime. `sides` names the
    sides in English captions ({"left": "left", ...}): "[bell]", "[switch to your
    partner's left side]"; None, for sessions in other languages, gives a note without
    words, "[♪]" (the spoken switch cue, in the session's language, follows it)."""
    out: list[Caption] = []
    speech_starts = sorted(e.start for e in events if e.kind == SPEECH)
    for e in events:
        if e.start < start or e.start >= end:
            continue
        if e.kind == SPEECH:
            out += _speech_captions(e, start)
        elif e.kind == CHIME and sounds:
            later = [s for s in speech_starts if s > e.start]
            stop = min(e.start + CHIME_CAPTION, later[0] if later else e.end, end)
            out.append(Caption(e.start - start, stop - start, (_chime_text(e, sides),)))
    return sorted(out, key=lambda c: (c.start, c.end))


def webvtt(captions: Sequence[Caption]) -> str:
    """The captions as a WebVTT file."""
    lines = ["WEBVTT", ""]
    for n, c in enumerate(captions, start=1):
        lines += [str(n), f"{stamp(c.start)} --> {stamp(c.end)}", *map(_escape, c.lines), ""]
    return "\n".join(lines)


def _chime_text(event: Event, sides: Mapping[str, str] | None) -> str:
    if sides is None:
        return "[♪]"
    if event.role == "side" and event.side:
        return f"[switch to your partner's {sides.get(event.side, event.side)} side]"
    return "[bell]"


def _speech_captions(event: Event, origin: Samples) -> list[Caption]:
    chunks = _chunks(clean(event.text))
    if not chunks:
        return []
    weights = [len(c) + 1 for c in chunks]
    total, length = sum(weights), event.end - event.start
    out, done = [], 0
    for chunk, weight in zip(chunks, weights, strict=True):
        a = event.start + length * done // total
        done += weight
        b = event.start + length * done // total
        lines = _wrap(chunk)
        assert lines is not None
        out.append(Caption(a - origin, b - origin, tuple(lines)))
    return out


def clean(text: str) -> str:
    """A cue's text on one line: any run of whitespace (line breaks, blank lines) is one
    space, control characters are gone, and "-->" is an arrow."""
    printable = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(printable.split()).replace("-->", "→")


def _escape(line: str) -> str:
    return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _wrap(text: str) -> list[str] | None:
    """`text` in at most MAX_LINES balanced lines of at most MAX_LINE characters, or None
    when it does not fit."""
    if len(text) <= MAX_LINE:
        return [text]
    best: tuple[int, int] | None = None
    for i, ch in enumerate(text):
        if ch == " " and i <= MAX_LINE and len(text) - i - 1 <= MAX_LINE:
            longest = max(i, len(text) - i - 1)
            if best is None or longest < best[0]:
                best = (longest, i)
    if best is None:
        return None
    return [text[: best[1]], text[best[1] + 1 :]]


def _chunks(text: str) -> list[str]:
    """`text` in as few pieces as fit a caption each, in order, broken at sentences where
    it can, else at commas, else between words (a word too long for a line is cut)."""
    words: list[str] = []
    for word in text.split(" "):
        words += [word[i : i + MAX_LINE] for i in range(0, len(word), MAX_LINE)]
    return _split(" ".join(words), 0) if words else []


_BREAKS = (_SENTENCE_END, _CLAUSE_END, re.compile(" "))


def _split(text: str, level: int) -> list[str]:
    if _wrap(text) is not None or level == len(_BREAKS):
        return [text]
    pieces: list[str] = []
    for part in _BREAKS[level].split(text):
        pieces += _split(part, level + 1)
    return _merge(pieces)


def _merge(chunks: list[str]) -> list[str]:
    """Neighbouring pieces joined again where they fit one caption together."""
    merged: list[str] = []
    for chunk in chunks:
        if merged and _wrap(f"{merged[-1]} {chunk}") is not None:
            merged[-1] = f"{merged[-1]} {chunk}"
        else:
            merged.append(chunk)
    return merged
