"""The vocabulary of a live session's controls, shared by the keys, the voice commands,
the player and the screen: one `Command` enum, the keys and spoken words that give each
command, and the `Status` the player reports for the screen. No I/O, no audio."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Command(StrEnum):
    """Every control a live Player takes."""

    PAUSE = "pause"  # toggles: a key
    HOLD = "hold"  # only pauses: the spoken "pause", which must not undo itself when
    RESUME = "resume"  # heard twice; "resume" only resumes, for the same reason
    NEXT = "next"
    BACK = "back"
    REPEAT = "repeat"
    FASTER = "faster"
    SLOWER = "slower"
    MORE_TIME = "more"
    MORE_PRESSURE = "more_pressure"
    LESS_PRESSURE = "less_pressure"
    QUIT = "quit"  # asks for a second QUIT within QUIT_WINDOW: a pedal misfire is no end
    STOP = "stop"  # ends at once (Ctrl-C)


#: A second QUIT within this many seconds of the first ends the session.
QUIT_WINDOW = 3.0


#: Every key the live session knows, and its command. Letters also work in upper case
#: (caps lock); any other key is ignored.
KEYS: dict[str, Command] = {
    " ": Command.PAUSE,  # pause, and resume
    "n": Command.NEXT,
    "b": Command.BACK,
    "r": Command.REPEAT,  # repeat the last cue
    "+": Command.FASTER,
    "=": Command.FASTER,  # + without shift
    "-": Command.SLOWER,
    "_": Command.SLOWER,  # - with shift
    "m": Command.MORE_TIME,  # more time on this step
    "p": Command.MORE_PRESSURE,  # say the step's advice for more pressure
    "l": Command.LESS_PRESSURE,  # ... and for a lighter touch
    "q": Command.QUIT,
    "\x04": Command.QUIT,  # Ctrl-D: in cbreak mode the terminal passes it on instead of an EOF
}

#: The keys, as the screen shows them (while paused, space resumes).
KEY_HELP = "space pause  n/b next/back  r repeat  +/- pace  m +30s  p/l pressure  q quit"
KEY_HELP_PAUSED = KEY_HELP.replace("space pause", "space resume")

#: The keys, as `coach run --help` lists them.
KEY_TABLE = """\
keys (single presses, no Enter; a USB foot pedal that types keys works too):
  space   pause / resume (a cue cut by the pause starts again from its beginning)
  n / b   next / back, by one side of a step at a time: to the next run, or to the
          start of this one (the one before, within its first 5 seconds)
  r       repeat the last cue
  + / -   faster / slower: re-paces the rest of the session
  m       30 seconds more on this step
  p / l   more pressure / lighter: the step's own advice, spoken
  q       quit (press it twice within 3 seconds; Ctrl-C quits at once)"""

#: What a user says before a command, by default ("coach, next"; `--wake-word`): one
#: syllable, which with the command makes the 2-4 syllable phrase a recognizer spots
#: reliably in a room where people talk; `--listen=direct` takes bare commands.
WAKE_WORD = "coach"

#: What a user says -> the command. "pause" and "resume" only pause and only resume (a
#: key toggles), so a command heard twice does not undo itself.
WORDS: dict[str, Command] = {
    "pause": Command.HOLD,
    "resume": Command.RESUME,
    "next": Command.NEXT,
    "back": Command.BACK,
    "repeat": Command.REPEAT,
    "faster": Command.FASTER,
    "slower": Command.SLOWER,
    "more time": Command.MORE_TIME,
    "more pressure": Command.MORE_PRESSURE,
    "lighter": Command.LESS_PRESSURE,
}


@dataclass(frozen=True)
class Status:
    """Everything the live screen shows, in plain values (seconds, strings)."""

    title: str  # the routine's title
    step: int | None  # the current step, 1-based; None before the first or after the last
    steps: int
    step_title: str
    side: str | None
    step_left: float  # seconds left in the current step (one side of it)
    session_left: float
    session_total: float
    next_title: str | None  # the next run ("Circles, partner's left side"); None: the end
    pace: float  # the pace factor: 1.25 slow, 1.0 normal, 0.8 brisk
    paused: bool
    message: str = ""  # e.g. "slower: 1.10x the time", 'heard "next": next step'
    voice: str = ""  # voice commands: "listening", "off: no microphone"; "" without --listen
    stutters: int = 0  # times the sound ran dry (the machine was too busy)
