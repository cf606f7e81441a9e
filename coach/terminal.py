"""The live session's terminal: single key presses in, one screen redrawn in place out.

The person giving the massage has oily hands on the receiver, so the controls are single
keys (a keyboard, or a USB foot pedal that types keys), never a line ended by Enter, and
the screen is read at a glance. Three parts, each usable alone:

- `Keys` puts the terminal in cbreak mode (no line editing, no echo, but Ctrl-C still
  interrupts) for the length of a `with` block and turns key presses into command names.
- `render_status` is pure: a `Status` of plain values becomes the lines of the screen.
- `Screen` draws those lines in place with ANSI cursor movement.

With no terminal attached (a pipe, a file, a test's capture), `Keys` reads nothing and
`Screen` draws nothing, so a session simply plays through.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import select
import signal
import sys
import threading
import time
import unicodedata
from types import FrameType, TracebackType
from typing import Any, TextIO

from coach.controls import KEY_HELP, KEY_HELP_PAUSED, KEYS, Command, Status
from coach.routine import pace_name
from coach.timetext import countdown_clock

try:  # POSIX terminals; Windows has neither, and reads no keys (KEYS_READ is False)
    import termios
    import tty
except ImportError:  # pragma: no cover - not on the machines the suite runs on
    termios = tty = None  # type: ignore[assignment]

#: Whether this platform reads single key presses (a POSIX terminal).
KEYS_READ = termios is not None

# -- Keys ---------------------------------------------------------------------------

_ESC = 0x1B
#: How long to wait for the rest of an escape sequence that arrived cut in two; after
#: that, a lone ESC is taken to be the Escape key (and ignored).
ESC_WAIT = 0.05
_INCOMPLETE = object()


def _command(byte: int) -> Command | None:
    if byte >= 0x80:  # a piece of a non-ASCII character: never a command
        return None
    key = chr(byte)
    return KEYS.get(key) or KEYS.get(key.lower())


def _escape_length(buf: bytes | bytearray) -> int | None:
    """The length of the escape sequence at the start of `buf` (which starts with ESC),
    or None when it may not have fully arrived yet."""
    if len(buf) < 2:
        return None
    second = buf[1]
    if second == ord("["):  # CSI: parameters and intermediates, then one final byte
        for i in range(2, len(buf)):
            b = buf[i]
            if 0x40 <= b <= 0x7E:
                return i + 1
            if not 0x20 <= b <= 0x3F or i >= 32:  # malformed: end it before this byte
                return i
        return None
    if second == ord("O"):  # SS3: F1-F4, and arrows in application mode
        return 3 if len(buf) >= 3 else None
    if second == _ESC:  # ESC ESC: the first is a lone Escape, the second starts anew
        return 1
    return 2  # Alt+key


#: The Keys inside their `with` block, so that a signal's handler can give their terminals
#: back at once (`restore_terminals`), whatever the main thread was doing.
_ACTIVE: list[Keys] = []


def restore_terminals() -> None:
    """Put every terminal that a `Keys` block has in cbreak mode back as it was. Safe in
    a signal handler; the blocks' own exits then have nothing left to restore."""
    for keys in list(_ACTIVE):
        keys._restore()


class Keys:
    """Single key presses from a terminal, without Enter; nothing when stdin is not a
    terminal.

    Use it as a context manager: inside the `with`, the terminal is in cbreak mode (keys
    arrive one by one, are not echoed, and Ctrl-C still raises KeyboardInterrupt); on the
    way out, however it is left, the terminal's attributes are restored exactly. Keys
    typed before the `with` or left unread after it are discarded, so they reach neither
    the session nor the shell. If the process is stopped (Ctrl-Z) and continued, cbreak
    mode is set again.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = sys.stdin if stream is None else stream
        self.fd = _terminal_fd(self.stream) if KEYS_READ else None
        self.interactive = self.fd is not None
        self._buf = bytearray()
        self._eof = False
        self._saved: list[Any] | None = None
        self._old_sigcont: Any = None
        self._sigcont_installed = False

    def __enter__(self) -> Keys:
        if self.fd is None:
            return self
        try:
            self._saved = termios.tcgetattr(self.fd)
            _ACTIVE.append(self)  # before cbreak: a signal from here on restores it
            self._cbreak()
        except termios.error:  # a terminal we cannot set up: play through without keys
            self._forget()
            self._saved = None
            self.interactive = False
            return self
        if threading.current_thread() is threading.main_thread():
            self._old_sigcont = signal.signal(signal.SIGCONT, self._on_sigcont)
            self._sigcont_installed = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._sigcont_installed:
            signal.signal(signal.SIGCONT, self._old_sigcont)
            self._sigcont_installed = False
        self._restore()
        self._forget()

    def _restore(self) -> None:
        if self._saved is not None and self.fd is not None:
            saved, self._saved = self._saved, None
            # termios.error: the terminal has gone away, and there is nothing to restore
            with contextlib.suppress(termios.error):
                termios.tcsetattr(self.fd, termios.TCSAFLUSH, saved)

    def _forget(self) -> None:
        with contextlib.suppress(ValueError):
            _ACTIVE.remove(self)

    def _cbreak(self) -> None:
        assert self.fd is not None
        tty.setcbreak(self.fd, termios.TCSAFLUSH)  # clears ICANON and ECHO, keeps ISIG

    def _on_sigcont(self, signum: int, frame: FrameType | None) -> None:
        if self._saved is not None and self.fd is not None and _in_foreground(self.fd):
            with contextlib.suppress(termios.error):
                self._cbreak()
        old = self._old_sigcont
        if callable(old):
            old(signum, frame)

    def read(self, timeout: float) -> Command | None:
        """The next command, waiting up to `timeout` seconds; None when no command came.

        Keys that arrive together (a pedal's burst) come out one per call, in order.
        Unknown keys and escape sequences (arrows, function keys) are skipped. The end of
        input (the terminal went away) reads as QUIT, every time.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        if not self.interactive or self.fd is None:
            time.sleep(max(0.0, timeout))
            return None
        while True:
            if self._eof:
                return Command.QUIT
            command = self._take()
            if command is _INCOMPLETE:
                # An escape sequence cut in two: wait a moment for its rest, whatever the
                # deadline, else take its ESC to be the Escape key.
                if not self._fill(ESC_WAIT):
                    del self._buf[:1]
                continue
            if command is not None:
                assert isinstance(command, Command)
                return command
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._fill(remaining):
                return Command.QUIT if self._eof else None

    def _take(self) -> Command | object | None:
        """Consume the buffer up to and including the first command; return it, or
        _INCOMPLETE when the buffer ends in part of an escape sequence, or None when the
        buffer held no command (it is then empty)."""
        buf = self._buf
        while buf:
            if buf[0] == _ESC:
                n = _escape_length(buf)
                if n is None:
                    return _INCOMPLETE
                del buf[:n]
                continue
            command = _command(buf[0])
            del buf[:1]
            if command is not None:
                return command
        return None

    def _fill(self, timeout: float) -> bool:
        """Wait up to `timeout` for input and add it to the buffer; False when none came
        (or the input ended, which sets _eof)."""
        assert self.fd is not None
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not ready:
            return False
        try:
            data = os.read(self.fd, 1024)
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno != errno.EIO:  # EIO: a pty's other side has closed
                raise
            data = b""
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True


def _in_foreground(fd: int) -> bool:
    """False only when `fd` is our controlling terminal and we are in the background,
    where changing its attributes would stop us (SIGTTOU)."""
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:  # not our controlling terminal
        return True


# -- What the screen shows ----------------------------------------------------------


#: The longest the progress bar gets, brackets and percentage included.
BAR_WIDTH = 60
ELLIPSIS = "…"


def pace_text(pace: float) -> str:
    """The pace in words a person reads the right way round: faster is shown as less
    time, not as a factor going down ("pace: slower (1.25x the time)")."""
    label = pace_name(pace, 2)
    if label == "normal":
        return "pace: normal"
    word = label or ("slower" if pace > 1 else "faster")
    return f"pace: {word} ({pace:.2f}x the time)"


def stutter_text(count: int) -> str:
    """What the screen says about underruns: nothing when there were none."""
    if count <= 0:
        return ""
    times = "once" if count == 1 else f"{count} times"
    return f"the sound stuttered {times}: the machine was busy"


def _char_width(ch: str) -> int:
    if unicodedata.combining(ch) or ch in "\u200b\u200c\u200d\ufeff":
        return 0
    return 2 if unicodedata.east_asian_width(ch) in "WF" else 1


def text_width(text: str) -> int:
    """The columns `text` takes on a terminal (wide East Asian characters take two)."""
    return sum(_char_width(ch) for ch in text)


def fit(text: str, width: int) -> str:
    """`text` cut to at most `width` columns, with an ellipsis where it was cut."""
    if text_width(text) <= width:
        return text
    if width <= 0:
        return ""
    out, used = [], 0
    for ch in text:
        w = _char_width(ch)
        if used + w > width - 1:
            break
        out.append(ch)
        used += w
    return "".join(out).rstrip() + ELLIPSIS


def _framed(prefix: str, middle: str, suffix: str, width: int) -> str:
    """prefix + middle + suffix in `width` columns, cutting the middle (a title) first."""
    room = width - text_width(prefix) - text_width(suffix)
    if room >= 4 or (room >= 1 and not middle):
        return prefix + fit(middle, room) + suffix
    return fit(prefix + middle + suffix, width)


def _bar(done: float, width: int) -> str:
    percent = f"{math.floor(done * 100):3d}%"
    inner = min(width, BAR_WIDTH) - len(percent) - 3  # "[", "] "
    if inner < 5:
        return fit(percent.strip(), width)
    filled = math.floor(done * inner)
    return f"[{'#' * filled}{'-' * (inner - filled)}] {percent}"


def _side(side: str | None) -> str:
    return f" (partner's {side} side)" if side else ""


def render_status(status: Status, width: int = 80) -> list[str]:
    """The lines of the live screen, each at most `width` columns. Always eight lines (the
    message line may be empty), so that the screen does not jump about."""
    s = status
    width = max(0, width)
    if s.step is None:
        step_line = _framed("", s.step_title, _side(s.side), width)
        times = (
            f"session {countdown_clock(s.session_left)} left of {countdown_clock(s.session_total)}"
        )
    else:
        step_line = _framed(
            f"Step {s.step} of {s.steps}: ",
            s.step_title,
            _side(s.side),
            width,
        )
        times = (
            f"step {countdown_clock(s.step_left):>5} left    "
            f"session {countdown_clock(s.session_left)} left of {countdown_clock(s.session_total)}"
        )
    if s.session_total > 0 and math.isfinite(s.session_left):
        done = min(1.0, max(0.0, 1.0 - s.session_left / s.session_total))
    else:
        done = 0.0
    nxt = _framed("next: ", s.next_title, "", width) if s.next_title else "next: end of the session"
    pace = pace_text(s.pace) + ("    PAUSED" if s.paused else "")
    if s.voice:
        pace += f"    voice: {s.voice}"
    return [
        fit(s.title, width),
        step_line,
        fit(times, width),
        _bar(done, width),
        fit(nxt, width),
        fit(pace, width),
        fit(s.message or stutter_text(s.stutters), width),
        fit(KEY_HELP_PAUSED if s.paused else KEY_HELP, width),
    ]


# -- Drawing it ---------------------------------------------------------------------

_UP = "\x1b[{}A"  # cursor up n lines
_CLEAR_LINE = "\x1b[2K"
_CLEAR_BELOW = "\x1b[J"  # from the cursor to the end of the screen
_CLEAR_SCREEN = "\x1b[H\x1b[2J"  # home, then clear everything


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else " " for ch in text)


class Screen:
    """Draws status lines in place on a terminal (ANSI: move the cursor up over the
    previous drawing and clear each line), or nothing when the stream is not a terminal.

    Lines are cut to the terminal's width less one column (so nothing wraps and the
    cursor arithmetic holds) and to its height less one line. The cursor rests at the end
    of the last line; `close` moves it below the drawing. When the terminal is resized
    between two drawings, the screen is cleared and the drawing starts at the top, since
    the old lines may have been rewrapped.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = sys.stdout if stream is None else stream
        self.fd = _terminal_fd(self.stream)
        self.interactive = self.fd is not None
        self._drawn = 0  # lines on the screen from the last drawing
        self._size: tuple[int, int] | None = None

    def size(self) -> tuple[int, int]:
        """(columns, lines) of the terminal; 80 columns when unknown, lines 0 when
        unknown. A fresh pseudo-terminal reports 0 x 0, which counts as unknown."""
        columns = lines = 0
        if self.fd is not None:
            with contextlib.suppress(OSError):
                columns, lines = os.get_terminal_size(self.fd)
        return (columns if columns > 0 else 80), max(0, lines)

    @property
    def width(self) -> int:
        """The columns a line may take: give this to `render_status`."""
        return max(1, self.size()[0] - 1)

    def draw(self, lines: list[str]) -> None:
        """Replace the previous drawing with `lines`."""
        if not self.interactive:
            return
        size = self.size()
        width = max(1, size[0] - 1)
        shown = [fit(_printable(line), width) for line in lines] or [""]
        if size[1] > 1:
            shown = shown[: size[1] - 1]
        out: list[str] = []
        if self._drawn:
            if size != self._size:
                out.append(_CLEAR_SCREEN)
            else:
                out.append("\r")
                if self._drawn > 1:  # never "up 0": terminals read it as "up 1"
                    out.append(_UP.format(self._drawn - 1))
        out.append("\n".join("\r" + _CLEAR_LINE + line for line in shown))
        out.append(_CLEAR_BELOW)
        self._write("".join(out))
        self._drawn = len(shown)
        self._size = size

    def close(self) -> None:
        """Leave the cursor on the line below the last drawing; drawing again after this
        starts a new drawing there."""
        if self.interactive and self._drawn:
            self._write("\n")
        self._drawn = 0
        self._size = None

    def _write(self, text: str) -> None:
        encoding = getattr(self.stream, "encoding", None) or "utf-8"
        text = text.encode(encoding, "replace").decode(encoding)
        self.stream.write(text)
        self.stream.flush()


def _terminal_fd(stream: TextIO) -> int | None:
    """The stream's file descriptor if it is a terminal, else None."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation, closed
        return None
    return fd if os.isatty(fd) else None
