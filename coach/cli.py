"""The `coach` command: a thin layer over the library.

Each command parses its options, calls the library, and prints. Every CoachError becomes
one line on stderr and its exit code (2 for bad usage or input, 1 for run-time
failures); so does any OSError (a path that cannot be read or written), and an argparse
complaint is a short usage line and the error. Nothing a user can do wrong ends in a
traceback. SIGTERM and SIGHUP end a command as Ctrl-C does, so its clean-up runs (its
temporary files go, the terminal is restored). Heavy modules are imported inside the
commands that need them, so `coach --help` and `coach validate` start fast.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from coach import __version__
from coach.errors import CoachError, UsageError
from coach.routine import MAX_SESSION, MAX_STEP, PACE_HINT, PACE_RANGE, format_hours, parse_pace
from coach.timetext import clock, parse_duration
from coach.units import RATE

if TYPE_CHECKING:
    from coach.batch import Job
    from coach.live import Player
    from coach.render import RenderOptions
    from coach.session import Prepared
    from coach.timeline import Event


class _Parser(argparse.ArgumentParser):
    """argparse with complaints of two lines (SPEC "Exit codes"): a short usage line that
    says where the rest is, and the error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"usage: {self._short_usage()}\n{self.prog}: error: {_one_line(message)}\n")

    def _short_usage(self) -> str:
        words = [self.prog]
        optional = False
        for action in self._actions:
            if action.help == argparse.SUPPRESS:
                continue
            if not action.option_strings:
                name = action.metavar if isinstance(action.metavar, str) else action.dest
                words.append(f"{name}..." if action.nargs in ("+", "*") else name)
            elif action.required:
                metavar = action.metavar if isinstance(action.metavar, str) else action.dest
                words.append(f"{action.option_strings[0]} {metavar.upper()}")
            elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                optional = True
        if optional:
            words.append("[options]")
        return f"{' '.join(words)}  (see {self.prog} --help)"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _pace(text: str) -> float:
    value = parse_pace(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a pace ({PACE_HINT})")
    return value


def _length(text: str) -> float:
    value = parse_duration(text)
    if value is None or not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (try 20m, 90s, 1m30s)")
    if value > MAX_SESSION:
        raise argparse.ArgumentTypeError(
            f"{text!r} is longer than the longest session ({format_hours(MAX_SESSION)})"
        )
    return value


def _seconds(text: str) -> float:
    value = parse_duration(text)
    if value is None or not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 turns it off)")
    if value > MAX_STEP:
        raise argparse.ArgumentTypeError(
            f"{text!r} is longer than the longest step ({format_hours(MAX_STEP)})"
        )
    return value


def _voice(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("needs a voice pack's name or folder (see `coach list`)")
    return text


def _rate(text: str) -> int:
    from coach.voicepack import RATE_RANGE

    try:
        value = int(text)
    except ValueError:
        value = -1
    if not RATE_RANGE[0] <= value <= RATE_RANGE[1]:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a speech rate (words per minute, {RATE_RANGE[0]} to {RATE_RANGE[1]})"
        )
    return value


def _session_options(lists: bool = False) -> _Parser:
    """The options every session command takes; with `lists` (render), --pace and
    --voice take comma-separated lists, each rendered."""
    common = _Parser(add_help=False)
    g = common.add_argument_group("session options")
    if lists:
        g.add_argument(
            "--pace",
            type=_paces,
            metavar="PACE[,PACE...]",
            help="slow, normal, brisk or a factor like 1.2; a list renders each",
        )
    else:
        g.add_argument("--pace", type=_pace, help="slow, normal, brisk or a factor like 1.2")
    g.add_argument(
        "--length",
        type=_length,
        metavar="TIME",
        help="fit the whole session to this length, e.g. 20m",
    )
    if lists:
        g.add_argument(
            "--voice",
            type=_voices,
            metavar="PACK[,PACK...]",
            help="voice pack (see `coach list`); a list renders each",
        )
    else:
        g.add_argument("--voice", type=_voice, metavar="PACK", help="voice pack (see `coach list`)")
    g.add_argument("--rate", type=_rate, metavar="WPM", help="speech rate in words per minute")
    g.add_argument(
        "--no-chimes", dest="chimes", action="store_false", help="no chimes between steps and sides"
    )
    g.add_argument(
        "--countdown",
        type=_seconds,
        metavar="SECONDS",
        help="a countdown cue this long before every step ends (0: none)",
    )
    return common


def _paces(text: str) -> list[tuple[str, float]]:
    """A comma-separated list of paces, each kept as written (for file names)."""
    return [(part.strip(), _pace(part)) for part in text.split(",")]


def _voices(text: str) -> list[str]:
    """A comma-separated list of voice packs, each one as `_voice` takes it."""
    if not text.strip():
        return [_voice(text)]
    voices = [part.strip() for part in text.split(",")]
    if not all(voices):
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of voice packs (A,B)")
    return voices


def _quality(text: str) -> str | int:
    text = text.strip().lower()
    if text in ("low", "normal", "high"):
        return text
    digits = text.removesuffix("k").removesuffix("kbps").removesuffix("kb/s")
    if digits.isdigit() and int(digits) > 0:
        return int(digits)
    raise argparse.ArgumentTypeError(f"{text!r} is not a quality (low, normal, high or 64k)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="coach",
        description="An offline, voice-guided audio coach for giving a massage.",
    )
    parser.add_argument("--version", action="version", version=f"coach {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    common = _session_options()

    sub.add_parser("list", help="built-in routines and voice packs")
    p = sub.add_parser("validate", help="check routine files; exit 0 when all are valid")
    p.add_argument("files", nargs="+", metavar="FILE")
    p = sub.add_parser(
        "preview", parents=[common], help="the timeline as a table, with total length and warnings"
    )
    p.add_argument("routine", metavar="ROUTINE", help="a built-in routine's name or a file")
    p.add_argument("--json", action="store_true", help="print the timeline as JSON")
    from coach.controls import KEY_TABLE, WAKE_WORD

    p = sub.add_parser(
        "run",
        parents=[common],
        help="live, hands-free narration on the speakers",
        description="Play the session live on the speakers, steered by single keys.",
        epilog=KEY_TABLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("routine", metavar="ROUTINE", help="a built-in routine's name or a file")
    p.add_argument(
        "--device",
        metavar="NAME|INDEX",
        help="the output device (default: the system's); a wrong one lists them",
    )
    p.add_argument(
        "--listen",
        nargs="?",
        const="wake",
        choices=("wake", "direct"),
        metavar="=direct",
        help='obey spoken commands after the wake word, offline: "coach, next" (pause, '
        "resume, next, back, repeat, faster, slower, more time, more pressure, lighter), "
        "also while the coach speaks; --listen=direct: bare commands, for a quiet room",
    )
    p.add_argument(
        "--mic",
        metavar="NAME|INDEX",
        help="the microphone for --listen (default: the system's); implies --listen",
    )
    p.add_argument(
        "--wake-word",
        metavar="WORDS",
        help=f'what to say before a command (default: {WAKE_WORD}; e.g. "hey coach", '
        "which chatter matches less); implies --listen",
    )
    p = sub.add_parser(
        "render",
        parents=[_session_options(lists=True)],
        help="write the session to an audio file (or a batch of them)",
        description="Write the session to an audio file. Several routines, and "
        "comma-separated --pace and --voice lists, render every combination in "
        "parallel, to files named by OUT's {routine}, {pace} and {voice}.",
    )
    p.add_argument(
        "routine", nargs="+", metavar="ROUTINE", help="a built-in routine's name or a file"
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="the file to write: .mp3, .m4b, .m4a, .opus, .ogg, .flac or .wav; for a "
        "batch a template such as 'out/{routine}-{pace}-{voice}.mp3'",
    )
    p.add_argument(
        "--quality",
        type=_quality,
        default="normal",
        metavar="low|normal|high|KBPS",
        help="for compressed files (default normal: speech and bells at a phone's "
        "size), or a bitrate in kb/s",
    )
    p.add_argument("--captions", action="store_true", help="also write OUT's name .vtt")
    p.add_argument(
        "--chapters", action="store_true", help="one chapter a step (all formats but .wav)"
    )
    p.add_argument(
        "--split",
        action="store_true",
        help="one file a step in a folder named after OUT, with an .m3u playlist",
    )
    p.add_argument(
        "--ambient",
        type=Path,
        metavar="FILE",
        help="a background track, looped or cut, lowered under speech",
    )
    p = sub.add_parser(
        "record-list", help="every phrase a routine needs, to record in your own voice"
    )
    p.add_argument("routine", metavar="ROUTINE", help="a built-in routine's name or a file")
    p.add_argument("--voice", type=_voice, metavar="PACK", help="the voice pack to record for")
    p.add_argument(
        "--countdown",
        type=_seconds,
        metavar="SECONDS",
        help="as for run and render: the countdown phrases change with it",
    )
    sub.add_parser("voices", help="the text-to-speech voices this machine has")
    sub.add_parser(
        "devices", help="the audio output and input devices (what --device and --mic take)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    received: list[int] = []
    try:
        with _signals_as_interrupts(received):
            return _run(args)
    except KeyboardInterrupt:  # outside _run too: a signal may come as it returns
        if received:
            _tell(f"coach: stopped by {signal.Signals(received[0]).name}")
            return 128 + received[0]
        _tell("coach: interrupted")
        return 130


def _run(args: argparse.Namespace) -> int:
    try:
        return COMMANDS[args.command](args)
    except CoachError as exc:
        _tell(str(exc))
        return exc.exit_code
    except BrokenPipeError:
        return 0
    except OSError as exc:
        _tell(_os_error_line(exc))
        return 2 if exc.errno in _PATH_ERRORS else 1


def _tell(line: str) -> None:
    """One line on stderr, if stderr is still there (after SIGHUP it may not be)."""
    with contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stderr, flush=True)


#: An OSError with one of these is about a path the user gave: bad usage (exit 2).
_PATH_ERRORS = {
    errno.ENOENT,
    errno.EACCES,
    errno.EPERM,
    errno.ENAMETOOLONG,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.ELOOP,
    errno.EEXIST,
    errno.EROFS,
}


def _os_error_line(exc: OSError) -> str:
    from coach.yamlfile import shown

    why = exc.strerror or _one_line(str(exc)) or type(exc).__name__
    if exc.filename is None:
        return f"coach: {why}"
    name = shown(str(exc.filename))
    if len(name) > 100:
        name = f"{name[:60]}...{name[-30:]}"
    hint = ""
    if exc.errno in (errno.EACCES, errno.EPERM):
        hint = " (check the permissions of the file and its folders)"
    elif exc.errno == errno.ENAMETOOLONG:
        hint = " (use a shorter name)"
    return f"coach: {name}: {why}{hint}"


_STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


@contextlib.contextmanager
def _signals_as_interrupts(received: list[int]) -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise KeyboardInterrupt where the program is,
    as Ctrl-C does, so `finally` blocks and `with` exits run; each signal is added to
    `received`. A live session's terminal is restored at once, before the exception
    unwinds. Further stop signals are ignored until the block ends, so they cannot cut
    the clean-up short. A signal ignored at start (nohup) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        received.append(signum)
        for s in _STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        terminal = sys.modules.get("coach.terminal")
        if terminal is not None:
            terminal.restore_terminals()
        raise KeyboardInterrupt

    old = {}
    for s in _STOP_SIGNALS:
        if signal.getsignal(s) is not signal.SIG_IGN:
            old[s] = signal.signal(s, stop)
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def cmd_list(args: argparse.Namespace) -> int:
    from coach.routine import builtin_routines, load_routine
    from coach.speech_piper import list_models
    from coach.timetext import format_duration
    from coach.voicepack import available_packs, default_pack, engine_missing, load_pack

    print("Routines:")
    for name in builtin_routines():
        r = load_routine(name)
        minutes = sum(s.time * max(1, len(s.sides)) for s in r.steps)
        lang = f", {r.language}" if r.language else ""
        print(
            f"  {name:<28} {r.title} ({len(r.steps)} steps, about "
            f"{format_duration(minutes)} at normal pace{lang})"
        )
    print("Voice packs:")
    default = default_pack()
    for name in available_packs():
        try:
            pack = load_pack(name)
        except CoachError as exc:  # one broken user pack does not hide the others
            _tell(f"warning: {exc} (pack {name} is left out)")
            continue
        notes = [pack.language, pack.describe()]
        if name == default:
            notes.append("the default")
        missing = engine_missing(pack)
        if missing:
            notes.append(
                f"not here: {missing}; falls back to {pack.fallback or 'the system voice'}"
            )
        print(f"  {name:<28} {pack.name} ({', '.join(notes)})")
    models = list_models()
    print("Piper voices:" if models else "Piper voices: none (see `coach voices`)")
    for m in models:
        print(f"  {m.name:<28} {m.language}, from {m.source}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from coach.errors import InputError
    from coach.routine import load_routine
    from coach.session import choose_pack

    failed = 0
    for name in args.files:
        try:
            routine = load_routine(name)
            choose_pack(routine, None)
        except (InputError, UsageError) as exc:
            print(str(exc), file=sys.stderr)
            failed += 1
        else:
            print(f"ok: {name}: {routine.title}, {len(routine.steps)} steps")
    return 2 if failed else 0


def _prepare(args: argparse.Namespace, *, live: bool = False) -> Prepared:
    """The session the options describe, with machine warnings shown."""
    from coach.session import Options, prepare

    if args.length is not None and args.pace is not None:
        raise UsageError("use --pace or --length, not both (--length sets the pace itself)")
    options = Options(
        pace=args.pace,
        length=args.length,
        voice=args.voice,
        rate=args.rate,
        chimes=args.chimes,
        countdown=args.countdown,
    )
    from coach.timeline import TimelineError

    try:
        progress = _progress("synthesizing", 1, noun=" cues")
        prepared = prepare(args.routine, options, progress=progress, live=live)
    except TimelineError as exc:
        asked = format_hours(args.length) if args.length is not None else clock(exc.asked)
        if exc.shortest is not None:
            why = (
                f"is shorter than the speech alone ({clock(exc.shortest)}); "
                f"ask for at least {math.ceil(exc.shortest / RATE)}s"
            )
        else:
            why = (
                f"would need a pace of {exc.needed:.1f}x, slower than the slowest "
                f"({PACE_RANGE[1]:g}x); ask for at most {format_hours((exc.longest or 0) / RATE)} "
                "or add steps to the routine"
            )
        raise UsageError(f"--length {asked} {why}") from None
    for warning in prepared.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return prepared


def cmd_preview(args: argparse.Namespace) -> int:
    prepared = _prepare(args)
    if args.json:
        data = prepared.timeline.as_json()
        data["steps"] = step_hints(prepared)
        print(json.dumps(data, ensure_ascii=False, indent=1))
    else:
        print(format_table(prepared))
    return 0


def _progress(
    what: str, minimum: int, unit: Callable[[int], str] = str, noun: str = ""
) -> Callable[[int, int], None] | None:
    """A one-line progress report on a terminal, for work of at least `minimum`:
    ``synthesizing 12 of 44 cues (27%)``."""
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        if total >= minimum:
            end = "\n" if done >= total else ""
            print(
                f"\r{what} {unit(done)} of {unit(total)}{noun} ({100 * done // max(total, 1)}%)",
                end=end,
                file=sys.stderr,
                flush=True,
            )

    return show


def cmd_run(args: argparse.Namespace) -> int:
    from coach.controls import WAKE_WORD
    from coach.live import run_live
    from coach.speakers import find_device
    from coach.terminal import KEYS_READ, Keys, Screen, render_status, stutter_text

    device = find_device(args.device)  # before the work: a wrong device fails at once
    prepared = _prepare(args, live=True)
    screen = Screen()
    title = prepared.routine.title

    def show(player: Player) -> None:
        screen.draw(render_status(player.status(), screen.width))

    listen = bool(args.listen) or args.mic is not None or args.wake_word is not None
    wake = None if args.listen == "direct" else args.wake_word or WAKE_WORD
    if not screen.interactive:
        print(f"playing {title} ({clock(prepared.timeline.total)}) on {device.name}", flush=True)
    said_voice = [""]

    def tick(player: Player) -> None:
        # Without a screen, say what becomes of voice commands (and of the microphone).
        if player.voice != said_voice[0]:
            said_voice[0] = player.voice
            if not screen.interactive:
                print(f"voice commands: {player.voice}", flush=True)

    if not KEYS_READ and screen.interactive:
        print("keys are not read on this system: the session plays through; Ctrl-C stops it")
    with Keys() as keys:
        try:
            result = run_live(
                prepared,
                device=str(device.index),
                keys=keys,
                screen=show if screen.interactive else None,
                on_tick=tick if listen else None,
                listen=listen,
                mic=args.mic,
                wake=wake,
            )
        finally:
            screen.close()
    ending = "stopped" if result.quit else "finished"
    stutters = stutter_text(result.underruns)
    print(f"session {ending} at {clock(result.played)}" + (f"; {stutters}" if stutters else ""))
    if listen:
        heard = ", ".join(h.phrase for h in result.heard) or "none"
        notes = [f"{result.ignored} sounds ignored while the coach spoke"]
        if not result.voice.startswith("listening"):
            notes.append(f"voice commands {result.voice}")
        print(f"voice commands heard: {heard} ({'; '.join(notes)})")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from coach.batch import make_folders, plan, remove_empty
    from coach.render import RenderOptions, check_request, routine_input

    if args.length is not None and args.pace is not None:
        raise UsageError("use --pace or --length, not both (--length sets the pace itself)")
    options = RenderOptions(
        captions=args.captions,
        chapters=args.chapters,
        split=args.split,
        ambient=args.ambient,
        quality=args.quality,
    )
    jobs = plan(args.routine, args.pace, args.voice, args.output)
    inputs = [i for routine in args.routine for i in routine_input(routine)]
    made = make_folders(args.output, jobs)
    try:
        for job in jobs:
            check_request(job.out, options, inputs)  # before the work, not after it
        with _signals_interrupt():
            if len(jobs) == 1:
                return _render_one(args, jobs[0], options)
            return _render_batch(args, jobs, options)
    finally:
        remove_empty(made)  # those no render filled: failed, refused or interrupted


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP stop a render as Ctrl-C does, so it cleans up after itself."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    names = ("SIGTERM", "SIGHUP")
    signals = [getattr(signal, n) for n in names if hasattr(signal, n)]
    before = {s: signal.signal(s, stop) for s in signals}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def _render_one(args: argparse.Namespace, job: Job, options: RenderOptions) -> int:
    from coach.render import render

    one = argparse.Namespace(**{**vars(args), "routine": job.loaded or job.routine})
    one.pace, one.voice = job.pace, job.voice
    prepared = _prepare(one)
    result = render(prepared, job.out, options, progress=_progress("rendering", 60 * RATE, clock))
    tl = prepared.timeline
    print(
        f"wrote {result.written[0]} ({clock(tl.total)}, {len(tl.segments)} runs of "
        f"{len(prepared.routine.steps)} steps)"
    )
    for extra in result.written[1:]:
        print(f"wrote {extra}")
    for note in result.notes:
        print(note)
    for warning in tl.warnings:
        print(f"warning: {warning}")
    return 0


def step_hints(prepared: Prepared) -> list[dict[str, object]]:
    """Each step with what `p` and `l` (or "more pressure", "lighter") say during it."""
    script = prepared.script
    steps: dict[int, dict[str, object]] = {}
    for i, run in enumerate(script.runs):
        if run.step not in steps:
            steps[run.step] = {
                "step": run.step,
                "title": run.title,
                "pressure": {
                    "more": script.pressure_hint(i, "more"),
                    "less": script.pressure_hint(i, "less"),
                },
            }
    return list(steps.values())


def _render_batch(args: argparse.Namespace, jobs: list[Job], options: RenderOptions) -> int:
    from coach import batch
    from coach.session import Options

    session = Options(
        length=args.length,
        rate=args.rate,
        chimes=args.chimes,
        countdown=args.countdown,
    )
    shown = sys.stderr.isatty()

    def show(status: batch.Status) -> None:
        if shown:
            failed = f", {status.failed} failed" if status.failed else ""
            print(
                f"\rrendering {status.jobs} sessions: {status.done} done{failed} "
                f"({100 * status.fraction:.0f}%)",
                end="\n" if status.done == status.jobs else "",
                file=sys.stderr,
                flush=True,
            )

    outcomes = batch.run(jobs, session, options, progress=show)
    failed = 0
    for outcome in outcomes:
        if outcome.error is not None:
            failed += 1
            print(f"failed: {outcome.job.out}: {outcome.error}", file=sys.stderr)
            continue
        print(f"wrote {outcome.written[0]} ({clock(outcome.length)})")
        for extra in outcome.written[1:]:
            print(f"wrote {extra}")
        for warning in outcome.warnings:
            print(f"warning: {outcome.job.out}: {warning}")
    if failed:
        print(f"{failed} of {len(jobs)} renders failed", file=sys.stderr)
    return 1 if failed else 0


def format_table(prepared: Prepared) -> str:
    """The timeline for people: one row a cue or chime, a row a run for its pulses."""
    from coach.session import pace_label
    from coach.timeline import PULSE, SPEECH

    tl = prepared.timeline
    hints = {h["step"]: h for h in step_hints(prepared)}
    lines = [
        tl.title,
        f"voice {prepared.pack.id} ({prepared.voice_id}, about {prepared.measured_rate} "
        "words a minute), "
        f"pace {pace_label(tl.factor)}, total {clock(tl.total)}",
        "",
        f"{'time':>8}  {'step':>4}  {'side':<5}  what",
    ]
    pulses: dict[tuple[int | None, str | None], list[Event]] = {}
    for e in tl.events:
        if e.kind == PULSE:
            pulses.setdefault((e.step, e.side), []).append(e)
    shown: set[tuple[int | None, str | None]] = set()
    for e in tl.events:
        step = "" if e.step is None else str(e.step + 1)
        side = e.side or ""
        if e.kind == PULSE:
            key = (e.step, e.side)
            if key in shown:
                continue
            shown.add(key)
            beats = pulses[key]
            what = f"~ pulse {e.text}, {len(beats)} beats to {clock(beats[-1].end)}"
        elif e.kind == "chime":
            what = f"* {e.text} chime"
        else:
            what = f'"{e.text}"'
        lines.append(f"{clock(e.start):>8}  {step:>4}  {side:<5}  {what}")
        if e.kind == SPEECH and e.role == "announce" and e.step is not None:
            # Under a step's title, what `p` and `l` say during it.
            hint = hints[e.step]["pressure"]
            assert isinstance(hint, dict)
            lines.append(f"{'':>8}  {'':>4}  {'':<5}    p: {hint['more']}")
            lines.append(f"{'':>8}  {'':>4}  {'':<5}    l: {hint['less']}")
    lines.append(f"{clock(tl.total):>8}  end")
    if tl.warnings:
        lines.append("")
        lines.extend(f"warning: {w}" for w in tl.warnings)
    return "\n".join(lines)


def cmd_record_list(args: argparse.Namespace) -> int:
    """What to record for a routine: needs no audio stack, only the routine and pack."""
    import re

    from coach.routine import load_routine
    from coach.script import write_script
    from coach.session import choose_pack

    routine = load_routine(args.routine)
    pack = choose_pack(routine, args.voice)
    script = write_script(routine, pack, countdown=args.countdown)
    texts = sorted(script.texts() | script.control_texts())
    done = [t for t in texts if t in pack.clips]
    folder = pack.folder or Path(pack.id)
    print(
        f"{routine.title}, voice pack {pack.id}: {len(texts)} phrases, {len(done)} "
        f"recorded, {len(texts) - len(done)} to record."
    )
    print(
        f"Record each as a WAV file in {folder} and list it under `clips:` in "
        f"{folder / 'pack.yaml'}, the text exactly as shown:"
    )
    print()
    for text in texts:
        if text in pack.clips:
            where = pack.clips[text].relative_to(folder.resolve())
            print(f'  recorded   "{text}": {where}')
        else:
            slug = "-".join(re.findall(r"[a-z0-9]+", text.lower())[:6]) or "clip"
            print(f'  to record  "{text}": clips/{slug}.wav')
    return 0


def cmd_voices(args: argparse.Namespace) -> int:
    from coach.errors import SpeechError
    from coach.speech import list_voices
    from coach.speech_piper import INSTALL_HINT, list_models, piper_installed, user_voice_dir
    from coach.voicepack import available_packs, load_pack

    def packs_using(engine: str, voice: str) -> str:
        names = []
        for name in available_packs():
            try:
                pack = load_pack(name)
            except CoachError:
                continue
            if pack.engine == engine and pack.voice.lower() == voice.lower():
                names.append(name)
        return f"  (packs: {', '.join(names)})" if names else ""

    try:
        voices = list_voices()
    except SpeechError as exc:
        voices = []
        print(f"pyttsx3: {exc}")
    if voices:
        width = max(len(v.id) for v in voices)
        print(f"pyttsx3 voices (the system's): {len(voices)}")
        print(f"  {'id':<{width}}  {'languages':<12}  name")
        for v in voices:
            langs = ",".join(v.languages)
            print(f"  {v.id:<{width}}  {langs:<12}  {v.name}{packs_using('pyttsx3', v.id)}")
    print()
    if not piper_installed():
        print(f"Piper voices: none, Piper is not installed ({INSTALL_HINT})")
        return 0
    models = list_models()
    print(f"Piper voices (neural): {len(models)}")
    for m in models:
        print(f"  {m.name:<24}  {m.language:<8}  {m.model}{packs_using('piper', m.name)}")
    print(f"  add your own: NAME.onnx and NAME.onnx.json in {user_voice_dir()}")
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    from coach.speakers import NO_SERVER, input_devices, output_devices

    outputs, inputs = output_devices(), input_devices()
    if not outputs and not inputs:
        print(f"no audio devices: {NO_SERVER}")
        return 0
    for kind, devices, option in (
        ("Output", outputs, "--device"),
        ("Input", inputs, "--mic"),
    ):
        print(f"{kind} devices (for {option} NAME or INDEX):")
        if not devices:
            print("  none")
        for d in devices:
            default = "  (the default)" if d.is_default else ""
            print(f"  {d.index:>3}  {d.name}  [{d.channels} ch, {d.default_rate:g} Hz]{default}")
    return 0


COMMANDS = {
    "list": cmd_list,
    "validate": cmd_validate,
    "preview": cmd_preview,
    "render": cmd_render,
    "run": cmd_run,
    "record-list": cmd_record_list,
    "voices": cmd_voices,
    "devices": cmd_devices,
}
