"""The live session's terminal: the screen's lines, keys through a real pseudo-terminal,
and drawing in place. Keys and Screen are driven through `pty.openpty()`: the code under
test gets the slave side, the test types into and reads from the master side."""

from __future__ import annotations

import contextlib
import io
import os
import pty
import select
import signal
import termios
import time
from dataclasses import replace

import pytest

from coach.controls import KEY_HELP, KEY_HELP_PAUSED, KEYS, Status
from coach.terminal import (
    Keys,
    Screen,
    countdown_clock,
    fit,
    pace_text,
    render_status,
    stutter_text,
)

# -- render_status ------------------------------------------------------------------

BASE = Status(
    title="Upper back basics",
    step=3,
    steps=8,
    step_title="Circles beside the spine",
    side="right",
    step_left=41.3,
    session_left=730,
    session_total=900,
    next_title="Knead the shoulders",
    pace=1.0,
    paused=False,
)


@pytest.mark.parametrize(
    ("status", "width", "expected"),
    [
        pytest.param(
            BASE,
            80,
            [
                "Upper back basics",
                "Step 3 of 8: Circles beside the spine (partner's right side)",
                "step  0:42 left    session 12:10 left of 15:00",
                "[##########-------------------------------------------]  18%",
                "next: Knead the shoulders",
                "pace: normal",
                "",
                KEY_HELP,
            ],
            id="step with a side",
        ),
        pytest.param(
            replace(
                BASE,
                step=8,
                step_title="Long strokes",
                side=None,
                step_left=75,
                session_left=75,
                next_title=None,
                pace=1.25,
                paused=True,
                message="slower: 1.25x the time",
            ),
            80,
            [
                "Upper back basics",
                "Step 8 of 8: Long strokes",
                "step  1:15 left    session 1:15 left of 15:00",
                "[################################################-----]  91%",
                "next: end of the session",
                "pace: slow (1.25x the time)    PAUSED",
                "slower: 1.25x the time",
                KEY_HELP_PAUSED,
            ],
            id="last step, paused",
        ),
        pytest.param(
            replace(
                BASE,
                title="A very long routine title that will never fit in forty columns",
                step_title="Circles beside the spine, slowly, with the fingertips",
                side="left",
                next_title="Knead the shoulders and the top of the arms",
                pace=0.9,
                message="underruns: 2",
            ),
            40,
            [
                "A very long routine title that will nev…",
                "Step 3 of 8: Circ… (partner's left side)",
                "step  0:42 left    session 12:10 left o…",
                "[######---------------------------]  18%",
                "next: Knead the shoulders and the top o…",
                "pace: faster (0.90x the time)",
                "underruns: 2",
                "space pause  n/b next/back  r repeat  +…",
            ],
            id="truncated to 40 columns",
        ),
        pytest.param(
            replace(BASE, step_left=3725, session_left=5400, session_total=7200.2, pace=0.8),
            80,
            [
                "Upper back basics",
                "Step 3 of 8: Circles beside the spine (partner's right side)",
                "step 1:02:05 left    session 1:30:00 left of 2:00:01",
                "[#############----------------------------------------]  25%",
                "next: Knead the shoulders",
                "pace: brisk (0.80x the time)",
                "",
                KEY_HELP,
            ],
            id="over an hour",
        ),
    ],
)
def test_render_status(status: Status, width: int, expected: list[str]) -> None:
    assert render_status(status, width) == expected


def test_paused_shows_paused_once_and_space_resumes() -> None:
    lines = render_status(replace(BASE, paused=True))
    assert sum(line.count("PAUSED") for line in lines) == 1
    assert lines[-1].startswith("space resume")
    assert render_status(BASE)[-1].startswith("space pause")


def test_stutters_are_shown_only_when_there_were_some() -> None:
    assert all("stutter" not in line for line in render_status(BASE))
    assert render_status(replace(BASE, stutters=2))[6] == (
        "the sound stuttered 2 times: the machine was busy"
    )


def test_render_status_before_the_first_step() -> None:
    status = replace(BASE, step=None, step_title="Getting ready", side=None, session_left=900)
    lines = render_status(status)
    assert lines[1] == "Getting ready"
    assert lines[2] == "session 15:00 left of 15:00"
    assert lines[3].endswith("   0%")


@pytest.mark.parametrize("width", [*range(0, 90), 120, 200])
def test_every_line_fits_every_width(width: int) -> None:
    status = replace(
        BASE,
        title="T" * 150,
        step_title="日本語のタイトル" * 10,
        side="left",
        step_left=99999,
        session_left=0,
        message="m" * 150,
        paused=True,
    )
    lines = render_status(status, width)
    assert len(lines) == 8
    assert all(len(line) <= width for line in lines), lines
    # wide characters take two columns and are counted as such
    assert fit("日本語", 4) == "日…"


def test_formats() -> None:
    assert countdown_clock(0) == "0:00"
    assert countdown_clock(-3) == "0:00"
    assert countdown_clock(0.2) == "0:01"
    assert countdown_clock(60.0000001) == "1:00"
    assert countdown_clock(59.5) == "1:00"
    assert countdown_clock(3599) == "59:59"
    assert countdown_clock(3600) == "1:00:00"
    assert pace_text(1.0000000001) == "pace: normal"
    assert pace_text(1.1) == "pace: slower (1.10x the time)"
    assert pace_text(1 / 1.1) == "pace: faster (0.91x the time)"
    assert pace_text(1.25) == "pace: slow (1.25x the time)"
    assert stutter_text(0) == ""
    assert stutter_text(1) == "the sound stuttered once: the machine was busy"
    assert stutter_text(2) == "the sound stuttered 2 times: the machine was busy"


def test_keymap_covers_the_commands() -> None:
    assert set(KEYS.values()) == {
        "pause", "next", "back", "repeat", "faster", "slower", "more",
        "more_pressure", "less_pressure", "quit",
    }  # fmt: skip


# -- Keys through a pseudo-terminal -------------------------------------------------


@pytest.fixture
def tty_pair():
    """(master fd, a text stream on the slave side)."""
    master, slave = pty.openpty()
    stream = os.fdopen(slave, "r")
    yield master, stream
    stream.close()
    with contextlib.suppress(OSError):  # a test may have closed it
        os.close(master)


@pytest.mark.parametrize(
    ("key", "command"),
    [
        (b" ", "pause"),
        (b"n", "next"),
        (b"b", "back"),
        (b"r", "repeat"),
        (b"+", "faster"),
        (b"=", "faster"),
        (b"-", "slower"),
        (b"_", "slower"),
        (b"m", "more"),
        (b"q", "quit"),
        (b"N", "next"),  # caps lock
        (b"\x04", "quit"),  # Ctrl-D
    ],
)
def test_each_key(tty_pair, key: bytes, command: str) -> None:
    master, stream = tty_pair
    with Keys(stream) as keys:
        assert keys.interactive
        os.write(master, key)
        assert keys.read(2.0) == command
        assert keys.read(0) is None


def test_a_burst_comes_out_in_order_and_unknown_keys_and_escapes_are_ignored(tty_pair):
    master, stream = tty_pair
    with Keys(stream) as keys:
        os.write(master, b"nn m")
        assert [keys.read(1.0) for _ in range(4)] == ["next", "next", "pause", "more"]
        assert keys.read(0.05) is None
        # arrows (normal and application mode), a function key, Alt+n, then unknown keys
        os.write(master, b"\x1b[A\x1bOB\x1b[15~\x1bnxyz\r\xc3\xa9b")
        assert keys.read(1.0) == "back"
        assert keys.read(0.05) is None


def test_an_escape_sequence_cut_in_two_is_still_consumed_whole(tty_pair):
    master, stream = tty_pair
    with Keys(stream) as keys:
        os.write(master, b"\x1b[")
        time.sleep(0.01)
        os.write(master, b"1;5Cr")
        assert keys.read(1.0) == "repeat"
        # a lone Escape is ignored, and does not swallow the key after it
        os.write(master, b"\x1b")
        assert keys.read(0.2) is None
        os.write(master, b"n")
        assert keys.read(1.0) == "next"


def test_read_waits_for_its_timeout(tty_pair):
    master, stream = tty_pair
    with Keys(stream) as keys:
        t = time.monotonic()
        assert keys.read(0.2) is None
        assert 0.19 <= time.monotonic() - t < 0.35
        # unknown keys do not cut the wait short
        os.write(master, b"x")
        t = time.monotonic()
        assert keys.read(0.2) is None
        assert 0.19 <= time.monotonic() - t < 0.35


def test_a_key_ends_the_wait_at_once(tty_pair):
    master, stream = tty_pair
    with Keys(stream) as keys:
        os.write(master, b"m")
        t = time.monotonic()
        assert keys.read(5.0) == "more"
        assert time.monotonic() - t < 1.0


def test_the_end_of_input_is_quit(tty_pair):
    master, stream = tty_pair
    with Keys(stream) as keys:
        os.write(master, b"n")
        time.sleep(0.05)  # let it reach the slave before the master goes
        assert keys.read(1.0) == "next"
        os.close(master)
        assert keys.read(1.0) == "quit"
        assert keys.read(1.0) == "quit"


def test_cbreak_inside_and_exact_restore_after(tty_pair):
    _, stream = tty_pair
    fd = stream.fileno()
    before = termios.tcgetattr(fd)
    assert before[3] & termios.ICANON and before[3] & termios.ECHO
    with Keys(stream):
        lflag = termios.tcgetattr(fd)[3]
        assert not lflag & termios.ICANON
        assert not lflag & termios.ECHO
        assert lflag & termios.ISIG
    assert termios.tcgetattr(fd) == before


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_restore_on_exceptions(tty_pair, exc):
    _, stream = tty_pair
    fd = stream.fileno()
    before = termios.tcgetattr(fd)
    with pytest.raises(exc), Keys(stream):
        raise exc()
    assert termios.tcgetattr(fd) == before


def test_cbreak_is_set_again_after_a_stop(tty_pair):
    _, stream = tty_pair
    fd = stream.fileno()
    before = termios.tcgetattr(fd)
    handler = signal.getsignal(signal.SIGCONT)
    with Keys(stream):
        termios.tcsetattr(fd, termios.TCSANOW, before)  # as a shell may leave it
        os.kill(os.getpid(), signal.SIGCONT)
        deadline = time.monotonic() + 1
        while termios.tcgetattr(fd)[3] & termios.ICANON and time.monotonic() < deadline:
            time.sleep(0.001)
        assert not termios.tcgetattr(fd)[3] & termios.ICANON
    assert termios.tcgetattr(fd) == before
    assert signal.getsignal(signal.SIGCONT) == handler


# -- Without a terminal -------------------------------------------------------------


def test_no_terminal_string_stream() -> None:
    with Keys(io.StringIO("nnn")) as keys:
        assert not keys.interactive
        t = time.monotonic()
        assert keys.read(0.1) is None
        assert 0.09 <= time.monotonic() - t < 0.3
    out = io.StringIO()
    screen = Screen(out)
    assert not screen.interactive
    screen.draw(render_status(BASE))
    screen.close()
    assert out.getvalue() == ""


def test_no_terminal_pipe() -> None:
    r, w = os.pipe()
    with os.fdopen(r, "r") as rs, os.fdopen(w, "w") as ws:
        ws.write("n")
        ws.flush()
        with Keys(rs) as keys:
            assert not keys.interactive
            assert keys.read(0.05) is None
        screen = Screen(ws)
        assert not screen.interactive
        screen.draw(["hello"])
        screen.close()
        ws.close()
        assert rs.read() == "n"  # the pipe was neither read nor written


def test_default_streams_under_pytest_are_not_terminals() -> None:
    # pytest captures stdin and stdout; this must not blow up
    assert not Keys().interactive
    assert not Screen().interactive


# -- Screen on a pseudo-terminal ----------------------------------------------------


def _drain(fd: int) -> bytes:
    out = b""
    while select.select([fd], [], [], 0.03)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        out += chunk
    return out


@pytest.fixture
def screen_pair():
    master, slave = pty.openpty()
    stream = os.fdopen(slave, "w", encoding="utf-8")
    yield master, stream
    stream.close()
    os.close(master)


def test_screen_redraws_in_place(screen_pair):
    master, stream = screen_pair
    screen = Screen(stream)
    assert screen.interactive
    assert screen.width == 79  # a fresh pty is 0 x 0: unknown, so 80 columns
    first = render_status(BASE, screen.width)
    second = render_status(replace(BASE, step_left=40.5, paused=True), screen.width)
    screen.draw(first)
    one = _drain(master)
    screen.draw(second)
    two = _drain(master)
    screen.close()
    assert _drain(master) == b"\r\n"
    text = (one + two).decode()
    for line in first + second:
        assert line in text
    assert b"\x1b[" not in one.replace(b"\x1b[2K", b"").replace(b"\x1b[J", b"")
    assert two.startswith(f"\r\x1b[{len(first) - 1}A".encode())
    assert two.count(b"\x1b[2K") == len(second)
    assert b"PAUSED" in two and b"PAUSED" not in one
    screen.close()  # a second close writes nothing
    assert _drain(master) == b""


def test_screen_cuts_lines_to_the_terminal_and_clears_on_resize(screen_pair):
    master, stream = screen_pair
    termios.tcsetwinsize(stream.fileno(), (5, 20))
    screen = Screen(stream)
    assert screen.width == 19
    screen.draw([f"line {i} " + "x" * 30 for i in range(10)] + ["\x1b[31mred\tend"])
    out = _drain(master).decode()
    assert "line 3 xxxxxxxxxxx…" in out
    assert "line 4" not in out  # 5 rows: 4 lines, so the cursor never leaves the screen
    screen.draw(["a", "\x1b[31mred\tend"])  # control characters are not passed on
    out = _drain(master).decode()
    assert out.startswith("\r\x1b[3A") and " [31mred end" in out and out.endswith("\x1b[J")
    termios.tcsetwinsize(stream.fileno(), (24, 40))
    screen.draw(["b"])
    out = _drain(master).decode()
    assert out.startswith("\x1b[H\x1b[2J") and out.endswith("b\x1b[J")
    screen.draw(["c"])
    assert _drain(master).decode() == "\r\r\x1b[2Kc\x1b[J"  # one line: no "up 0"


def test_without_termios_keys_are_not_read_and_nothing_breaks(tmp_path) -> None:
    """On Windows there is no termios: the module still imports, Keys reads nothing and
    the session plays through (the README says so)."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['termios'] = None; sys.modules['tty'] = None\n"
        "from coach import terminal\n"
        "assert not terminal.KEYS_READ\n"
        "with terminal.Keys() as keys:\n"
        "    assert not keys.interactive and keys.read(0.01) is None\n"
        "print('ok')\n"
    )
    master, slave = pty.openpty()
    result = subprocess.run(
        [sys.executable, "-c", code], stdin=slave, capture_output=True, text=True, timeout=30
    )
    os.close(slave)
    os.close(master)
    assert result.stdout.strip() == "ok", result.stderr
