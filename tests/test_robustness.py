"""Issue #11, the parts that belong to reading input and to the command line: whatever a
hostile user writes or does, `coach` answers in one or two lines with an exit code, within
sane limits, and leaves nothing behind. None of these needs a speech engine."""

from __future__ import annotations

import errno
import os
import pty
import shutil
import signal
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from coach import cli
from coach.voicepack import user_pack_dir

ROOT = Path(__file__).parent.parent
CALM = (ROOT / "voice_packs" / "calm-en" / "pack.yaml").read_text()

TINY = """\
routine: 1
title: Tiny
steps:
  - title: Warm the oil
    say: Rub your hands together.
    time: 20s
  - title: Circles
    say: Circles on the {side} side.
    time: 30s
    sides: [right, left]
"""


def step(time: str = "1m", say: str = "Press gently.", extra: str = "", sides: str = "") -> str:
    text = f"  - title: Press\n    say: {say}\n    time: {time}\n"
    if sides:
        text += f"    sides: {sides}\n"
    return text + extra


def routine(*steps: str, head: str = "routine: 1\ntitle: Hostile\n") -> str:
    return head + "steps:\n" + "".join(steps)


@pytest.fixture
def validate(run_cli, tmp_path, monkeypatch):
    """`coach validate r.yaml` on a routine's text: (exit code, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)

    def run(text: str) -> tuple[int, str, str]:
        Path("r.yaml").write_text(text, encoding="utf-8")
        return run_cli("validate", "r.yaml")

    return run


def refused(result: tuple[int, str, str], expected: str) -> None:
    """Exit 2, one line on stderr, starting with `expected` (file:line:column: field: ...)."""
    code, out, err = result
    assert code == 2, (out, err)
    assert err.startswith(expected), err
    assert err.count("\n") == 1 and "Traceback" not in err


# -- Item 5: sane limits, refused at the line that crosses them ---------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            routine(step(time="3h")),
            'r.yaml:6:11: steps[0].time: "3h" is longer than the longest step (2h)',
        ),
        (
            routine(step(time="24h", extra="    tips:\n      - every: 0.01s\n        say: Tip.\n")),
            'r.yaml:6:11: steps[0].time: "24h" is longer than the longest step (2h)',
        ),
        (
            routine(step(time="2h", extra="    tips:\n      - every: 0.01s\n        say: Tip.\n")),
            'r.yaml:8:16: steps[0].tips[0].every: "0.01s" is more often than a tip may repeat '
            "(every 5s at most)",
        ),
        (
            routine(step(time="2h", sides="[right, left]"), step(time="2h", sides="[left, right]")),
            "r.yaml:8:5: steps[1]: with this step the session lasts 8h (each side counted), "
            "longer than the longest session (6h)",
        ),
        (
            routine(step(time="2h", extra="    rhythm: 200\n")),
            "r.yaml:4:5: steps[0]: with this step the session makes 96,008 events (cues, chimes "
            "and rhythm beats at the slowest pace, 4x), more than 50,000",
        ),
        (
            routine(
                step(
                    time="2h",
                    extra="    tips:\n" + "      - every: 5s\n        say: Again.\n" * 40,
                )
            ),
            "r.yaml:4:5: steps[0]: with this step the session makes 57,567 events",
        ),
    ],
    ids=["long step", "24 h step, 0.01 s tip", "tiny every", "long session", "beats", "tips"],
)
def test_a_routine_beyond_the_sanity_limits_is_refused_with_its_line_and_the_limit(
    validate, text, expected
):
    refused(validate(text), expected)


def test_a_long_but_real_routine_is_within_the_limits(validate):
    steps = [step(time="2h", extra="    rhythm: 100\n"), step(time="1h59m", sides="[right, left]")]
    steps.append(step(time="1m", extra="    tips:\n      - every: 5s\n        say: Breathe.\n"))
    code, _, err = validate(routine(*steps))
    assert (code, err) == (0, ""), err


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--length", "99999h", "'99999h' is longer than the longest session (6h)"),
        ("--length", "1e308", "'1e308' is longer than the longest session (6h)"),
        ("--length", "nan", "'nan' is not a duration"),
        ("--length", "inf", "'inf' is not a duration"),
        ("--length", "-1m", "'-1m' is not a duration"),
        ("--countdown", "nan", "'nan' is not a number of seconds"),
        ("--countdown", "inf", "'inf' is not a number of seconds"),
        ("--countdown", "-5", "'-5' is not a number of seconds"),
        ("--countdown", "1e308", "'1e308' is longer than the longest step (2h)"),
        ("--voice", "", "needs a voice pack's name or folder"),
        ("--voice", "  ", "needs a voice pack's name or folder"),
        ("--pace", "nan", "'nan' is not a pace"),
    ],
)
@pytest.mark.parametrize("command", ["preview", "render", "run"])
def test_absurd_option_values_are_refused_before_any_work(
    run_cli, tmp_path, command, option, value, expected
):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    extra = ["-o", str(tmp_path / "out.wav")] if command == "render" else []
    start = time.perf_counter()
    code, _, err = run_cli(command, str(path), *extra, f"{option}={value}")
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"usage: coach {command} ROUTINE")
    assert lines[1].startswith(f"coach {command}: error: argument {option}: ")
    assert expected in lines[1]
    assert time.perf_counter() - start < 1.0
    assert list(tmp_path.iterdir()) == [path]


def test_record_list_refuses_a_countdown_of_nan(run_cli):
    code, out, err = run_cli("record-list", "upper-back-basics", "--countdown", "nan")
    assert code == 2 and out == ""
    assert "'nan' is not a number of seconds" in err and "nan seconds left" not in err


def _fake_prepare(routine_ref, options, *, progress=None, live=False):  # type: ignore[no-untyped-def]
    """session.prepare with made-up speech lengths: the timeline's fit, no speech engine."""
    from coach.chimes import SYNTH_CHIMES
    from coach.routine import load_routine
    from coach.script import write_script
    from coach.session import choose_pack
    from coach.timeline import Pacing, Sounds, build
    from coach.units import to_samples

    routine = load_routine(routine_ref)
    pack = choose_pack(routine, options.voice)
    script = write_script(routine, pack)
    sounds = Sounds(
        speech={text: to_samples(2.0) for text in script.texts()},
        chimes={name: to_samples(s) for name, s in SYNTH_CHIMES.items()},
        pulse=to_samples(0.2),
    )
    length = to_samples(options.length) if options.length else None
    timeline = build(script, sounds, Pacing(length=length))
    return SimpleNamespace(
        routine=routine,
        pack=pack,
        script=script,
        sounds=sounds,
        timeline=timeline,
        chimes=True,
        warnings=(),
        voice_id="fake",
        rate=pack.rate,
        measured_rate=pack.rate,
    )


def test_a_length_no_pace_can_stretch_to_is_refused_with_the_most_it_can_be(
    run_cli, tmp_path, monkeypatch
):
    monkeypatch.setattr("coach.session.prepare", _fake_prepare)
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    code, out, err = run_cli("preview", str(path), "--length", "5h")
    assert code == 2 and out == ""
    assert err.startswith("--length 5h would need a pace of ")
    assert "slower than the slowest (4x); ask for at most 5m" in err
    assert err.count("\n") == 1
    code, out, err = run_cli("preview", str(path), "--length", "3m")
    assert (code, err) == (0, "")
    assert "pace 2." in out and "total 3:00.0" in out


# -- Item 7's rule: what a cue may say ----------------------------------------------


@pytest.mark.parametrize(
    ("say", "expected"),
    [
        ("'...'", 'r.yaml:5:10: steps[0].say: "..." has no words to speak'),
        ("'  '", "r.yaml:5:10: steps[0].say: must not be empty"),
        ('""', "r.yaml:5:10: steps[0].say: must not be empty"),
        (
            "word" + " word" * 200,
            "r.yaml:5:10: steps[0].say: 1004 characters is too long for a spoken cue "
            "(at most 1000; split it into tips or steps)",
        ),
    ],
    ids=["dots", "spaces", "empty", "1004 characters"],
)
def test_a_cue_that_cannot_be_spoken_is_refused_at_validate(validate, say, expected):
    refused(validate(routine(step(say=say))), expected)


def test_a_cue_of_the_longest_length_passes(validate):
    assert validate(routine(step(say="w" * 999 + ".")))[0] == 0


def test_tips_and_pressure_hints_are_cues_too(validate):
    tip = "    tips:\n      - after: 10s\n        say: '?!'\n"
    refused(validate(routine(step(extra=tip))), 'r.yaml:9:14: steps[0].tips[0].say: "?!" has no')
    hint = "    pressure:\n      more: " + "x" * 1001 + "\n"
    refused(validate(routine(step(extra=hint))), "r.yaml:8:13: steps[0].pressure.more: 1001 ch")


# -- Item 8: numbers as YAML 1.2 writes them, finite, or a one-line error -----------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("routine: 1", "routine: 017", "r.yaml:1:10: routine: format version 017 is not supp"),
        ("routine: 1", "routine: 0x1", 'r.yaml:1:10: routine: "0x1" is not a whole number written'),
        ("routine: 1", "routine: 0o1", 'r.yaml:1:10: routine: "0o1" is not a whole number'),
        ("routine: 1", "routine: 1_0", 'r.yaml:1:10: routine: "1_0" is not a whole number'),
        ("routine: 1", "routine: '1'", 'r.yaml:1:10: routine: "1" is not a whole number'),
        ("routine: 1", "routine: 1" + "0" * 5000, 'r.yaml:1:10: routine: "10000'),
        ("time: 1m\n", "time: 1m\n    rhythm: 0x10\n", 'r.yaml:7:13: steps[0].rhythm: "0x10" is'),
        ("time: 1m\n", "time: 1m\n    rhythm: .nan\n", 'r.yaml:7:13: steps[0].rhythm: ".nan" is'),
        ("time: 1m\n", "time: 1m\n    rhythm: .inf\n", 'r.yaml:7:13: steps[0].rhythm: ".inf" is'),
        ("time: 1m\n", "time: 1m\n    rhythm: 1:30\n", 'r.yaml:7:13: steps[0].rhythm: "1:30" is'),
        (
            "time: 1m\n",
            "time: 1m\n    rhythm: 1e308\n",
            "r.yaml:7:13: steps[0].rhythm: 1e308 is ou",
        ),
    ],
)
def test_numbers_other_than_plain_decimal_are_refused_in_one_line(validate, old, new, expected):
    text = routine(step())
    assert old in text
    refused(validate(text.replace(old, new, 1)), expected)


@pytest.mark.parametrize("rhythm", ["60", "+60", "60.0", "6e1", "6.0e+1", "600e-1"])
def test_decimal_numbers_are_read_as_yaml_1_2_reads_them(validate, rhythm):
    code, _, err = validate(routine(step(extra=f"    rhythm: {rhythm}\n")))
    assert (code, err) == (0, "")
    from coach.routine import load_routine

    assert load_routine("r.yaml").steps[0].rhythm == 60


def test_a_leading_zero_is_decimal_as_in_yaml_1_2(validate):
    assert validate(routine(step(), head="routine: 01\ntitle: T\n"))[0] == 0


def test_a_date_where_text_belongs_names_the_field_and_says_to_quote_it(validate):
    refused(
        validate(routine(step(), head="routine: 1\ntitle: 2024-01-01\n")),
        "r.yaml:2:8: title: 2024-01-01 is read as a date (YAML tag timestamp); put it in quotes "
        'to mean text: "2024-01-01"',
    )
    refused(
        validate(routine(step(say="2024-01-01"))),
        "r.yaml:5:10: steps[0].say: 2024-01-01 is read as a date",
    )


# -- Item 11: control characters never reach a terminal or a speech engine ---------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "title: Hostile",
            r'title: "Hostile\e]0;pwned\a"',
            "r.yaml:2:8: title: contains ESC (U+001B) at character 8; text may not hold control",
        ),
        ("title: Hostile", r'title: "Bell\a"', "r.yaml:2:8: title: contains BEL (U+0007)"),
        (
            "say: Press gently.",
            r'say: "Press\0 gently."',
            "r.yaml:5:10: steps[0].say: contains NUL",
        ),
        ("say: Press gently.", r'say: "Press\x9b2J"', "r.yaml:5:10: steps[0].say: contains a con"),
        ("say: Press gently.", r'say: "Press\x7f"', "r.yaml:5:10: steps[0].say: contains a contr"),
        ("say: Press gently.", r'say: "Press\rnow"', "r.yaml:5:10: steps[0].say: contains CR"),
        ("say: Press gently.", r'say: "\ud800"', "r.yaml:5:10: steps[0].say: contains a control"),
        ("title: Press", r'title: "Press\tnow"', "r.yaml:4:12: steps[0].title: must be one line"),
        (
            "title: Press",
            "title: |\n      Press\n      now",
            "r.yaml:4:12: steps[0].title: must be",
        ),
        (
            "    time: 1m\n",
            '    time: 1m\n    "\\e[2J": 1\n',
            r"r.yaml:7:5: steps[0].\x1b[2J: unknown key '\x1b[2J'",
        ),
        ("time: 1m", r'time: "\e[2J"', r'r.yaml:6:11: steps[0].time: "\x1b[2J" is not a duration'),
    ],
    ids=["ESC", "BEL", "NUL", "C1 CSI", "DEL", "CR", "surrogate", "tab", "newline", "key", "raw"],
)
def test_control_characters_are_refused_with_their_place(validate, old, new, expected):
    text = routine(step())
    assert old in text
    result = validate(text.replace(old, new, 1))
    refused(result, expected)
    assert "\x1b" not in result[2] and "\x07" not in result[2]


def test_a_say_block_may_hold_paragraphs_and_tabs(validate):
    say = "|\n      Press gently.\n\n      Then\tslowly let go."
    assert validate(routine(step(say=say)))[0] == 0


# -- The smaller ones -----------------------------------------------------------------


@pytest.fixture
def user_packs() -> Iterator[Path]:
    root = user_pack_dir()
    root.mkdir(parents=True, exist_ok=True)
    before = set(root.iterdir())
    yield root
    for made in set(root.iterdir()) - before:
        made.chmod(0o755)
        shutil.rmtree(made)


def _pack(root: Path, name: str, text: str) -> Path:
    (root / name).mkdir()
    (root / name / "pack.yaml").write_text(text)
    return root / name / "pack.yaml"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("rate: 122", "rate: 0x7a", ':6:7: rate: "0x7a" is not a whole number written in decimal'),
        ("volume: 0.9", "volume: .nan", ':7:9: volume: ".nan" is not a number written in decimal'),
        ('paused: "Paused.', 'paused: "Paused.\\e[2J', ":13:11: phrases.paused: contains ESC"),
        ('paused: "Paused. Take your time."', 'paused: "..."', ':13:11: phrases.paused: "..." has'),
        ("name: Calm English", 'name: "Calm\\nEnglish"', ":2:7: name: must be one line"),
    ],
)
def test_one_broken_user_pack_is_warned_about_and_the_others_are_listed(
    run_cli, user_packs, old, new, expected
):
    assert old in CALM
    broken = _pack(user_packs, "aa-broken", CALM.replace(old, new, 1))
    _pack(user_packs, "zz-fine", CALM.replace("name: Calm English", "name: Fine voice"))
    code, out, err = run_cli("list")
    assert code == 0
    assert "calm-en" in out and "zz-fine" in out and "Fine voice" in out
    assert "aa-broken" not in out
    assert err.startswith(f"warning: {broken}{expected}") and err.count("\n") == 1
    assert err.rstrip().endswith("(pack aa-broken is left out)")


def test_a_leading_zero_in_a_pack_rate_is_decimal(user_packs):
    from coach.voicepack import load_pack

    _pack(user_packs, "zero-en", CALM.replace("rate: 122", "rate: 0150"))
    assert load_pack("zero-en").rate == 150


@pytest.mark.parametrize(
    "args",
    [
        ["render", "upper-back-basics"],
        ["render", "upper-back-basics", "-o"],
        ["preview"],
        ["preview", "upper-back-basics", "--no-such-option"],
        ["validate"],
        [],
        ["nonsense"],
    ],
)
def test_argparse_complaints_are_a_usage_line_and_the_error(run_cli, args):
    code, out, err = run_cli(*args)
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith("usage: coach") and lines[0].endswith("--help)")
    assert ": error: " in lines[1]


def test_the_short_usage_names_what_a_command_needs():
    from coach.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["render"]
    assert sub._short_usage() == (
        "coach render ROUTINE... -o OUT [options]  (see coach render --help)"
    )


def test_a_fifo_given_as_a_routine_is_refused_at_once(tmp_path):
    fifo = tmp_path / "r.yaml"
    os.mkfifo(fifo)
    done = subprocess.run(
        [sys.executable, "-m", "coach", "validate", str(fifo)],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert done.stderr == f"{fifo}: not a regular file (a pipe or a device?); give a file\n"


# -- Paths a user may not read, names too long: one line, exit 2 --------------------


@pytest.fixture
def as_another_user() -> Iterator[tuple[Path, object]]:
    """A folder in /tmp that others can enter, and a runner of `coach ARGS` as a user who
    is not root (nobody, when the tests run as root): root reads everything."""
    base = Path(tempfile.mkdtemp(prefix="coach-perm-"))
    base.chmod(0o755)
    env = {**os.environ, "XDG_CACHE_HOME": str(base / "cache"), "XDG_DATA_HOME": str(base)}
    prefix: list[str] = []
    if os.geteuid() == 0:
        # setpriv, not subprocess's user=: the interpreter may live under /root, which
        # nobody may not enter, and setpriv keeps the right to reach it until the exec.
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        probe = [*prefix, sys.executable, "-c", "import coach.cli"]
        try:
            subprocess.run(probe, check=True, capture_output=True, cwd=ROOT, timeout=30)
        except (OSError, subprocess.SubprocessError):
            shutil.rmtree(base)
            pytest.skip("running as root and cannot run coach as the user nobody")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*prefix, sys.executable, "-m", "coach", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env=env,
        )

    locked = base / "locked"
    (locked / "pack").mkdir(parents=True)
    shutil.copy(ROOT / "coach" / "routines" / "upper-back-basics.yaml", locked / "r.yaml")
    shutil.copy(locked / "r.yaml", locked / "r.txt")
    (locked / "pack" / "pack.yaml").write_text(CALM)
    locked.chmod(0)
    try:
        yield base, run
    finally:
        locked.chmod(0o755)
        shutil.rmtree(base)


LONG_NAME = "a" * 300


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["validate", "{base}/locked/r.yaml"], "{base}/locked/r.yaml: cannot read (Permission de"),
        (["validate", "{base}/locked/r.txt"], "{base}/locked/r.txt: cannot read (Permission deni"),
        (["validate", "{base}/locked/no/r"], "{base}/locked/no/r: cannot read (Permission denied"),
        (["validate", LONG_NAME], f"{LONG_NAME}: cannot read (File name too long)"),
        (["validate", LONG_NAME + ".yaml"], f"{LONG_NAME}.yaml: cannot read (File name too long)"),
        (
            ["record-list", "upper-back-basics", "--voice", "{base}/locked/pack"],
            "{base}/locked/pack/pack.yaml: cannot read (Permission denied)",
        ),
        (
            ["preview", "upper-back-basics", "--voice", "{base}/locked/pack"],
            "{base}/locked/pack/pack.yaml: cannot read (Permission denied)",
        ),
        (
            ["record-list", "upper-back-basics", "--voice", LONG_NAME],
            f"no voice pack named '{LONG_NAME}'",
        ),
    ],
)
def test_a_path_that_cannot_be_read_is_one_line_and_exit_2(as_another_user, args, expected):
    base, run = as_another_user
    done = run(*(a.format(base=base) for a in args))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(expected.format(base=base)), done.stderr
    assert done.stderr.count("\n") == 1


def test_a_pack_folder_of_a_user_that_cannot_be_read_is_warned_about_in_list(as_another_user):
    base, run = as_another_user
    packs = base / "coach" / "voice_packs"
    (packs / "mine").mkdir(parents=True)
    (packs / "mine" / "pack.yaml").write_text(CALM)
    (packs / "mine").chmod(0)
    try:
        done = run("list")
    finally:
        (packs / "mine").chmod(0o755)
    assert done.returncode == 0 and "calm-en" in done.stdout
    assert done.stderr == (
        f"warning: {packs}/mine/pack.yaml: cannot read (Permission denied) "
        "(pack mine is left out)\n"
    )


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (PermissionError(errno.EACCES, "Permission denied", "/x/y.wav"), 2, "coach: /x/y.wav: "),
        (OSError(errno.ENAMETOOLONG, "File name too long", "b" * 300), 2, "coach: bbbbbbbbbbbb"),
        (OSError(errno.ENOSPC, "No space left on device", "/x/y.wav"), 1, "coach: /x/y.wav: No "),
        (OSError(errno.EIO, "Input/output error"), 1, "coach: Input/output error"),
    ],
)
def test_any_os_error_from_a_command_is_one_line_never_a_traceback(
    run_cli, monkeypatch, error, code, line
):
    def fail(args):  # type: ignore[no-untyped-def]
        raise error

    monkeypatch.setitem(cli.COMMANDS, "list", fail)
    got, _, err = run_cli("list")
    assert got == code
    assert err.startswith(line) and err.count("\n") == 1 and len(err) < 200


# -- Item 10: SIGTERM and SIGHUP end a command as Ctrl-C does -----------------------


HOLD = """\
import sys, time
from pathlib import Path
from coach import cli

def hold(args):
    scratch = Path(sys.argv[1])
    scratch.write_text("partial")
    try:
        print("ready", flush=True)
        time.sleep(60)
    finally:
        scratch.unlink()
    return 0

cli.COMMANDS["list"] = hold
sys.exit(cli.main(["list"]))
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_runs_the_clean_up_and_exits_with_one_line(tmp_path, signum):
    scratch = tmp_path / ".out.coach-1234.tmp"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(scratch)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    assert scratch.exists()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 128 + signum
    assert err == f"coach: stopped by {signal.Signals(signum).name}\n"
    assert not scratch.exists()


KEYS = """\
import sys, time
from coach import cli
from coach.terminal import Keys

def hold(args):
    with Keys():
        print("ready", flush=True)
        time.sleep(60)
    return 0

cli.COMMANDS["list"] = hold
sys.exit(cli.main(["list"]))
"""


def test_a_live_session_killed_by_sigterm_gives_the_terminal_back():
    master, slave = pty.openpty()
    try:
        before = termios.tcgetattr(slave)
        proc = subprocess.Popen(
            [sys.executable, "-c", KEYS],
            cwd=ROOT,
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        during = termios.tcgetattr(slave)
        assert not during[3] & (termios.ECHO | termios.ICANON)  # cbreak, as `coach run` sets
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        after = termios.tcgetattr(slave)
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 128 + signal.SIGTERM
    assert err == "coach: stopped by SIGTERM\n"
    assert after[3] & (termios.ECHO | termios.ICANON) == before[3] & (termios.ECHO | termios.ICANON)
    assert after == before


def test_a_stop_signal_ignored_at_start_stays_ignored(tmp_path):
    """Under nohup SIGHUP is ignored; coach must not take it back."""
    scratch = tmp_path / "x.tmp"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(scratch)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)
    assert proc.returncode == 128 + signal.SIGTERM and not scratch.exists()
