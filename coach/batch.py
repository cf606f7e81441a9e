"""Batches: every combination of routines, paces and voices rendered to its own file.

``plan`` turns the lists and an output template naming ``{routine}``, ``{pace}`` and
``{voice}`` into jobs, refusing (before any work) a template that would give two jobs
one file. ``run`` prepares each session in this process (so speech the jobs share is
synthesized once, into the cache), then renders them in worker processes, one a core,
telling one progress callback how the whole batch goes. A job that fails is reported in
its outcome; the others still finish.

The workers start, and import what rendering needs, while the sessions are prepared;
the longest sessions go first, so that no core is left idle at the end while another
renders a long one alone.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coach.children import cores
from coach.errors import CoachError, UsageError

if TYPE_CHECKING:
    from concurrent.futures import Future

    from coach.render import RenderOptions
    from coach.routine import Routine
    from coach.session import Options, Prepared

PLACEHOLDERS = ("{routine}", "{pace}", "{voice}")


@dataclass(frozen=True)
class Job:
    routine: str  # as the user named it: a built-in routine or a file
    pace: float | None  # None: the routine's own
    voice: str | None  # None: the routine's or the default pack
    out: Path
    #: The routine as read when the job was planned (so it is not read twice).
    loaded: Routine | None = field(default=None, compare=False, repr=False)


@dataclass
class Outcome:
    job: Job
    written: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    length: int = 0  # the session's length, samples


@dataclass(frozen=True)
class Status:
    """How a batch goes: jobs in all, finished, failed, and the share of the work done."""

    jobs: int
    done: int
    failed: int
    fraction: float


def plan(
    routines: Sequence[str],
    paces: Sequence[tuple[str, float]] | None,
    voices: Sequence[str] | None,
    template: str,
) -> list[Job]:
    """Every combination, in order: routines, then paces, then voices. `paces` are (as
    written, factor). Raises UsageError if two jobs would write one file, or a voice
    pack is unknown."""
    from coach.routine import load_routine
    from coach.session import choose_pack

    jobs = []
    pace_list: list[tuple[str, float | None]] = [("", None)]
    if paces:
        pace_list = [(label, factor) for label, factor in paces]
    for ref in routines:
        routine = load_routine(ref)
        for label, factor in pace_list:
            for voice in [*voices] if voices else [None]:
                pack = choose_pack(routine, voice)
                name = template.replace("{routine}", Path(ref).stem)
                name = name.replace("{pace}", label or _pace_name(routine.pace))
                name = name.replace("{voice}", pack.id)
                jobs.append(Job(ref, factor, voice, Path(name), routine))
    seen: dict[Path, Job] = {}
    for job in jobs:
        key = Path(os.path.abspath(job.out))
        if key in seen:
            missing = [p for p in PLACEHOLDERS if p not in template]
            raise UsageError(
                f"-o {template}: {len(jobs)} renders would share {job.out}; name "
                f"{' and '.join(missing) or 'each setting'} in it, e.g. "
                "-o 'out/{routine}-{pace}-{voice}.mp3'"
            )
        seen[key] = job
    return jobs


def make_folders(template: str, jobs: Sequence[Job]) -> list[Path]:
    """Make the folders a template's fields name (``out/{routine}/{pace}.mp3`` makes
    ``out/upper-back-basics``): a user cannot make them before knowing the names. The
    template's fixed folders (``out``) must be there already, as for a single file, and
    are not made (a typo there is refused, not followed). Returns the folders made,
    parents first, for `remove_empty` to take back what no render filled."""
    parts = Path(template).parent.parts
    named = (i for i, part in enumerate(parts) if any(p in part for p in PLACEHOLDERS))
    fixed = next(named, len(parts))
    base = Path(*parts[:fixed]) if fixed else Path(".")
    if fixed == len(parts) or not base.is_dir():
        return []  # nothing of ours to make (check_output says what is missing)
    made: list[Path] = []
    for job in jobs:
        folder = job.out.parent
        below = folder.relative_to(base).parts
        for depth in range(1, len(below) + 1):
            step = base.joinpath(*below[:depth])
            try:
                step.mkdir()
            except FileExistsError:
                continue
            except OSError as e:
                remove_empty(made)
                raise CoachError(f"{job.out}: cannot make the folder {step}: {e.strerror}") from e
            made.append(step)
    return made


def remove_empty(folders: Sequence[Path]) -> None:
    """Remove those of `folders` (made by `make_folders`) that hold nothing, deepest first."""
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if empty: a render's file keeps its folder


def _pace_name(factor: float | None) -> str:
    from coach.routine import pace_name

    if factor is None:
        return "normal"
    return pace_name(factor) or f"{factor:g}"


def run(
    jobs: Sequence[Job],
    session: Options,
    render_options: RenderOptions,
    *,
    progress: Callable[[Status], None] | None = None,
    on_prepared: Callable[[Job, Prepared], None] | None = None,
    workers: int | None = None,
) -> list[Outcome]:
    """Render every job; outcomes in the jobs' order. Ctrl-C stops the batch (and the
    renders under way, which leave nothing behind)."""
    from coach.session import prepare

    outcomes = [Outcome(job) for job in jobs]
    prepared: dict[int, Prepared] = {}
    done_work: dict[int, int] = {}
    available = workers or cores()
    pool_size = max(1, min(available, len(jobs)))
    # Every render may use every core: while all workers render, the threads share the
    # cores; when the last job is left alone, it does not leave the other cores idle.
    options = replace(render_options, threads=available)

    def report() -> None:
        if progress is not None:
            finished = sum(1 for o in outcomes if o.written or o.error)
            failed = sum(1 for o in outcomes if o.error)
            total_work = sum(p.timeline.total for p in prepared.values()) or 1
            progress(Status(len(jobs), finished, failed, sum(done_work.values()) / total_work))

    # Imported here: a single render (which plans a batch of one) does without them.
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")
    messages: Any = ctx.Queue()
    futures: dict[Future[Any], int] = {}
    formats = sorted({job.out.suffix.lower() for job in jobs})
    with ProcessPoolExecutor(
        pool_size, mp_context=ctx, initializer=_start_worker, initargs=(messages, formats)
    ) as pool:
        try:
            # Every worker starts now (a process is started for each task waiting), and
            # imports the render stack while the sessions are prepared here.
            for _ in range(pool_size):
                pool.submit(_ready)
            for i, job in enumerate(jobs):
                try:
                    p = prepare(
                        job.loaded or job.routine, replace(session, pace=job.pace, voice=job.voice)
                    )
                except CoachError as e:
                    outcomes[i].error = str(e)
                    continue
                prepared[i], done_work[i] = p, 0
                outcomes[i].length = p.timeline.total
                if on_prepared is not None:
                    on_prepared(job, p)
            # Longest first: the last to finish are short, and end close together.
            for i in sorted(prepared, key=lambda i: -prepared[i].timeline.total):
                futures[pool.submit(_render_job, i, prepared[i], jobs[i].out, options)] = i
            report()
            pending = set(futures)
            while pending:
                with contextlib.suppress(queue.Empty):
                    while True:
                        i, frames = messages.get(timeout=0.1)
                        done_work[i] = frames
                for future in [f for f in pending if f.done()]:
                    pending.discard(future)
                    i = futures[future]
                    done_work[i] = prepared[i].timeline.total
                    try:
                        written, notes, error = future.result()
                    except Exception as e:  # a worker that died: report it, go on
                        written, notes, error = [], [], f"the render stopped ({e})"
                    outcomes[i].written, outcomes[i].notes = written, notes
                    outcomes[i].warnings = list(prepared[i].timeline.warnings)
                    outcomes[i].error = error
                report()
        except BaseException:
            # Stop the renders under way too (they leave nothing behind), then wait.
            for future in futures:
                future.cancel()
            for child in multiprocessing.active_children():
                with contextlib.suppress(OSError):
                    os.kill(child.pid, signal.SIGTERM)  # type: ignore[arg-type]
            raise
    return outcomes


_messages: Any = None


def _start_worker(messages: Any, formats: Sequence[str]) -> None:
    """A worker's start: where to send progress, Ctrl-C or SIGTERM (from the batch
    stopping) raise KeyboardInterrupt once, so a render under way cleans up; then the
    modules that rendering to these formats (extensions) needs are imported."""
    global _messages
    _messages = messages
    stopping: list[int] = []

    def stop(signum: int, frame: object) -> None:
        if not stopping:
            stopping.append(signum)
            raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    from coach import encoders, render  # noqa: F401

    for ext in formats:
        encoders.preload(ext)


def _ready() -> None:
    """A task that only has a worker started (see `run`)."""


def _render_job(
    index: int, prepared: Prepared, out: Path, options: RenderOptions
) -> tuple[list[Path], list[str], str | None]:
    """In a worker process: render one job; (written, notes, error)."""
    from coach.render import render

    last = [0.0]

    def tell(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.2:
            last[0] = now
            _messages.put((index, done))

    try:
        result = render(prepared, out, options, progress=tell)
    except CoachError as e:
        return [], [], str(e)
    except KeyboardInterrupt:
        return [], [], "interrupted"
    return result.written, result.notes, None
