"""Rendering: a prepared session written to audio files, with captions and chapters.

The mixer makes the samples block by block and the writer streams them to a temporary
file that is moved into place only when complete, so memory does not grow with the
session's length and an interrupted render leaves nothing behind. Captions (WebVTT),
chapters (one a step), tags and the split into one file a step all come from the
timeline.

A format whose encoder joins pieces (MP3) is rendered on every core at once: the session
is cut where the timeline is silent (``quiet_cuts``), and each piece is mixed and encoded
on a thread of its own, from its own mixer. The session's gain is applied by the writer,
on the way to the encoder.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from coach import __version__, temporary
from coach.ambient import AmbientTrack
from coach.captions import captions, webvtt
from coach.chapters import Chapter, chapter_support, step_chapters
from coach.children import cores
from coach.encoders import Metadata, Quality
from coach.errors import CoachError, UsageError
from coach.mixer import Mixer, SoundBank, session_gain
from coach.session import Prepared, pace_label
from coach.tags import Tags
from coach.timeline import SPEECH, Event, Timeline
from coach.units import RATE, Samples, to_samples
from coach.writer import TAGGED, AudioWriter, check_output

if TYPE_CHECKING:
    import numpy as np

#: Frames the mixer makes at a time while rendering (a second: larger blocks cost less
#: per sample, and a second of stereo float is only 384 kB).
BLOCK: Samples = RATE
FADE_IN: Samples = to_samples(3.0)
FADE_OUT: Samples = to_samples(5.0)
#: Silence a cut between pieces keeps on each side: more than an encoder looks ahead or
#: back (LAME: about 2,000 samples at 24 kHz; the resampler: a few hundred).
QUIET_MARGIN: Samples = to_samples(0.25)


#: Told (frames done, frames in all) as a render goes.
Progress = Callable[[Samples, Samples], None] | None


@dataclass(frozen=True)
class RenderOptions:
    captions: bool = False
    chapters: bool = False
    split: bool = False
    ambient: Path | None = None
    quality: Quality = "normal"
    #: Threads a render may use (None: one a core).
    threads: int | None = None


@dataclass
class RenderResult:
    written: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


#: Something a render reads, to be kept from being written over: (what it is, where).
Input = tuple[str, Path]


def check_request(out: Path, options: RenderOptions, inputs: Sequence[Input] = ()) -> str:
    """Everything about a render request that can be checked before any work: the output
    (its format and folder), that no output is one of the `inputs` (nor, for a split,
    holds one), the ambient track, and that a split's folder is one coach may replace."""
    ext = check_output(out, options.quality)
    if options.ambient is not None:
        inputs = [*inputs, ("the --ambient track", options.ambient)]
    for target in _outputs(out, options):
        for what, path in inputs:
            if _same(path, target) or (options.split and _inside(path, target)):
                where = "is" if _same(path, target) else "holds"
                raise UsageError(
                    f"{target}: {where} {what}; a render never writes over its inputs, "
                    "so choose another -o"
                )
    if options.ambient is not None:
        with AmbientTrack(options.ambient, 1, 0, 0):
            pass  # opening it checks that it is there and is audio
    if options.split:
        folder = split_folder(out)
        if folder.exists() and not _is_our_split(folder):
            raise UsageError(
                f"{folder}: a folder coach did not write (or one changed since); remove it "
                "or choose another -o"
            )
    return ext


def routine_input(routine: str) -> list[Input]:
    """The routine file a render reads, as an input (none for one that is not a file)."""
    from coach.routine import find_routine

    try:
        path, _ = find_routine(routine)
    except CoachError:
        return []
    return [("the routine file", path)]


def _outputs(out: Path, options: RenderOptions) -> list[Path]:
    if options.split:
        return [split_folder(out)]
    return [out, out.with_suffix(".vtt")] if options.captions else [out]


def _same(a: Path, b: Path) -> bool:
    with contextlib.suppress(OSError):
        if os.path.samefile(a, b):
            return True
    return Path(a).resolve() == Path(b).resolve()


def _inside(path: Path, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def session_tags(
    prepared: Prepared, title: str | None = None, track: tuple[int, int] | None = None
) -> Tags:
    """The tags of a session's file: its title (the routine's, or `title`), artist
    "coach", the routine as album, the settings in the comment (and a track number)."""
    routine = prepared.routine.title
    comment = (
        f"pace {pace_label(prepared.timeline.factor)}, voice {prepared.pack.id} "
        f"({prepared.voice_id}, {prepared.rate} words a minute); made by coach {__version__}"
    )
    return Tags(title=title or routine, album=routine, comment=comment, track=track)


def render(
    prepared: Prepared,
    out: Path,
    options: RenderOptions = RenderOptions(),
    *,
    progress: Progress = None,
) -> RenderResult:
    """Write the session. Raises CoachError subclasses; on any error or interruption
    nothing new is left at `out` (or its split folder, captions). Stale temporaries of
    earlier renders in `out`'s folder (a process killed outright) are removed first."""
    ext = check_request(out, options, routine_input(prepared.routine.source))
    temporary.sweep(out.parent)
    tl = prepared.timeline
    bank = SharedBank(prepared)
    gain = session_gain(tl, bank)
    result = RenderResult()
    parts = step_chapters(tl)
    if options.split:
        _render_split(prepared, bank, gain, out, ext, parts, options, result, progress)
        return result
    vtt = out.with_suffix(".vtt") if options.captions else None
    chapters: list[Chapter] = []
    if options.chapters:
        if chapter_support(ext):
            chapters = parts
            result.notes.append(f"{len(parts)} chapters, one a step")
        else:
            result.notes.append(f"{ext} files cannot hold chapters; use .mp3, .m4b or .opus")
    tags = session_tags(prepared) if ext in TAGGED else None
    with (
        AudioWriter(out, quality=options.quality, meta=Metadata(tags, chapters), gain=gain) as w,
        _pending_text(vtt) as pending,
    ):
        _write_span(prepared, bank, w, 0, tl.total, options, progress)
        if pending is not None:
            pending.write_text(_captions(prepared, 0, tl.total), encoding="utf-8")
        w.commit()
        if pending is not None and vtt is not None:
            os.replace(pending, vtt)
    result.written.append(out)
    if vtt is not None:
        result.written.append(vtt)
    return result


def _write_span(
    prepared: Prepared,
    bank: SoundBank,
    writer: AudioWriter,
    start: Samples,
    end: Samples,
    options: RenderOptions,
    progress: Progress,
) -> None:
    """Mix [start, end) of the session into the writer: in pieces on several threads
    when its encoder joins them, else block after block."""
    tl = prepared.timeline
    threads = options.threads or cores()
    cuts = [start]
    if writer.grid is not None and threads > 1 and options.ambient is None:
        cuts = quiet_cuts(tl, threads, writer.grid, start, end)
    if len(cuts) > 1:
        bounds = [*cuts, end]
        sources = [_blocks(tl, bank, a, b) for i, (a, b) in enumerate(itertools.pairwise(bounds))]
        report = None if progress is None else (lambda done: progress(start + done, tl.total))
        writer.write_pieces(sources, [cut - start for cut in cuts], report)
        return
    ambient = None
    if options.ambient is not None:
        ambient = AmbientTrack(options.ambient, tl.total, FADE_IN, FADE_OUT)
    with contextlib.closing(ambient) if ambient is not None else contextlib.nullcontext():
        _pump(Mixer(tl, bank, under=ambient, start=start), writer, end, progress)


def _pump(mixer: Mixer, writer: AudioWriter, end: Samples, progress: Progress) -> None:
    """Mix up to `end` into the writer, reporting progress through the whole session."""
    for block in _mixed(mixer, end):
        writer.write(block)
        if progress is not None:
            progress(mixer.position, mixer.total)


def _mixed(mixer: Mixer, end: Samples) -> Iterator[np.ndarray | int]:
    """The mix up to `end`, a block at a time; a block of digital silence (most of a
    session) as its number of frames, which is not mixed at all."""
    while mixer.position < end:
        silent, frames = mixer.next_run(min(BLOCK, end - mixer.position))
        if silent:
            mixer.skip(frames)
            yield frames
        else:
            yield mixer.read(frames)


class SharedBank(SoundBank):
    """A sound bank the threads that mix pieces at once share: one copy of each clip in
    memory (a bank each would hold its own), its cache behind a lock. A clip is loaded
    outside the lock, so the other threads mix on meanwhile."""

    def __init__(self, prepared: Prepared) -> None:
        super().__init__(prepared.clips(), channels=2, volume=prepared.pack.volume)
        self._lock = threading.Lock()

    def samples(self, event: Event) -> np.ndarray:
        if event.kind == SPEECH:
            return self.speech(event.text)
        with self._lock:
            return super().samples(event)

    def speech(self, text: str) -> np.ndarray:
        with self._lock:
            clip = self._recall(text)
        if clip is None:
            clip = self.clips.load(text)
            with self._lock:
                self._keep(text, clip)
        return clip


def _blocks(
    tl: Timeline, bank: SoundBank, start: Samples, end: Samples
) -> Iterator[np.ndarray | int]:
    """The mix of [start, end), a block at a time, from a mixer of its own (`_mixed`)."""
    return _mixed(Mixer(tl, bank, start=start), end)


def quiet_cuts(
    timeline: Timeline,
    pieces: int,
    grid: Samples,
    start: Samples = 0,
    end: Samples | None = None,
    margin: Samples = QUIET_MARGIN,
) -> list[Samples]:
    """Where to cut [start, end) into about `pieces` pieces of similar length: `start`,
    then points on `grid` that no event comes within `margin` of (the mix is exact
    digital silence around them). Fewer points when the timeline has no such silence."""
    end = timeline.total if end is None else end
    spans = sorted((e.start, e.end) for e in timeline.events if e.end > start and e.start < end)
    quiet: list[tuple[Samples, Samples]] = []  # ranges a cut may fall in
    edge = start
    for a, b in [*spans, (end, end)]:
        lo = -(-(edge + margin) // grid) * grid
        hi = (min(a, end) - margin) // grid * grid
        if start < lo <= hi:
            quiet.append((lo, hi))
        edge = max(edge, b)
    cuts = [start]
    for k in range(1, pieces):
        ideal = start + (end - start) * k // pieces
        best = None
        for lo, hi in quiet:
            point = min(max(ideal // grid * grid, lo), hi)
            if point > cuts[-1] and (best is None or abs(point - ideal) < abs(best - ideal)):
                best = point
        if best is not None:
            cuts.append(best)
    return cuts


def _captions(prepared: Prepared, start: Samples, end: Samples) -> str:
    english = prepared.pack.language.split("-")[0] == "en"
    sides = {s: prepared.pack.phrases.side(s) for s in ("left", "right")} if english else None
    return webvtt(captions(prepared.timeline.events, start, end, sides=sides))


@contextlib.contextmanager
def _pending_text(final: Path | None) -> Iterator[Path | None]:
    """A temporary path beside `final` that is removed unless it was moved into place."""
    if final is None:
        yield None
        return
    name = temporary.new_file(final)
    try:
        yield name
    finally:
        name.unlink(missing_ok=True)


def split_folder(out: Path) -> Path:
    return out.with_suffix("")


#: The list a split folder keeps of the files coach wrote into it.
MANIFEST = ".coach-split"
_MANIFEST_HEADER = "# coach split session: the files coach wrote here, with their sizes"


def _is_our_split(folder: Path) -> bool:
    """Whether `folder` holds exactly what a split render wrote there: every file its
    manifest lists, at the size listed, and nothing else."""
    try:
        lines = (folder / MANIFEST).read_text(encoding="utf-8").splitlines()
        present = {
            p.name: p.stat().st_size
            for p in folder.iterdir()
            if p.name != MANIFEST and not p.is_symlink()
        }
        if any(p.is_dir() or p.is_symlink() for p in folder.iterdir()):
            return False
    except (OSError, UnicodeDecodeError):
        return False
    if not lines or lines[0] != _MANIFEST_HEADER:
        return False
    listed = {}
    for line in lines[1:]:
        size, _, name = line.partition("\t")
        if not size.isdigit() or not name:
            return False
        listed[name] = int(size)
    return listed == present


def _write_manifest(folder: Path) -> None:
    files = sorted(p for p in folder.iterdir() if p.name != MANIFEST)
    lines = [_MANIFEST_HEADER, *(f"{p.stat().st_size}\t{p.name}" for p in files)]
    (folder / MANIFEST).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _slug(title: str) -> str:
    return re.sub(r"[^\w\- ]+", "", title).strip()[:60] or "step"


def _render_split(
    prepared: Prepared,
    bank: SoundBank,
    gain: float,
    out: Path,
    ext: str,
    parts: list[Chapter],
    options: RenderOptions,
    result: RenderResult,
    progress: Progress,
) -> None:
    """One file a step in a folder named after OUT, with an .m3u playlist; the folder is
    made under a temporary name and moved into place whole."""
    folder = split_folder(out)
    ambient = None
    if options.ambient is not None:
        ambient = AmbientTrack(options.ambient, prepared.timeline.total, FADE_IN, FADE_OUT)
    mixer = Mixer(prepared.timeline, bank, under=ambient)
    staging = temporary.new_folder(folder)
    try:
        playlist = ["#EXTM3U"]
        for i, part in enumerate(parts):
            name = f"{i + 1:02d} {_slug(part.title)}{ext}"
            track = (i + 1, len(parts))
            tags = session_tags(prepared, part.title, track) if ext in TAGGED else None
            with AudioWriter(
                staging / name, quality=options.quality, meta=Metadata(tags), gain=gain
            ) as writer:
                _pump(mixer, writer, part.end, progress)
                writer.commit()
            if options.captions:
                text = _captions(prepared, part.start, part.end)
                (staging / name).with_suffix(".vtt").write_text(text, encoding="utf-8")
            seconds = round((part.end - part.start) / RATE)
            playlist += [f"#EXTINF:{seconds},{part.title}", name]
        (staging / f"{out.stem}.m3u").write_text("\n".join(playlist) + "\n", encoding="utf-8")
        _write_manifest(staging)
        if options.chapters:
            result.notes.append("--chapters is not needed with --split: each step is a file")
        old = None
        if folder.exists():
            # Checked again now: the folder may have changed while we rendered.
            if not _is_our_split(folder):
                raise UsageError(
                    f"{folder}: a folder coach did not write (or one changed since); "
                    "remove it or choose another -o"
                )
            old = temporary.name_for(folder)
            os.replace(folder, old)
        os.replace(staging, folder)
        if old is not None:
            temporary.remove(old)
    except OSError as exc:
        raise CoachError(f"cannot write {folder}: {exc.strerror or exc}") from None
    finally:
        temporary.remove(staging)
        if ambient is not None:
            ambient.close()
    result.written += [folder / f"{out.stem}.m3u"]
    result.notes.append(f"{len(parts)} files, one a step, in {folder}")
