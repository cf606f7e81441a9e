"""Rendering: a prepared session written to audio files, with captions and chapters.

The mixer makes the samples block by block and the writer streams them to a temporary
file that is moved into place only when complete, so memory does not grow with the
session's length and an interrupted render leaves nothing behind. Captions (WebVTT),
chapters (one a step) and the split into one file a step all come from the timeline.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from coach.ambient import AmbientTrack
from coach.captions import webvtt
from coach.chapters import Chapter, chapter_support, step_chapters
from coach.errors import CoachError, UsageError
from coach.mixer import Mixer, SoundBank, session_gain
from coach.session import Prepared
from coach.units import RATE, Samples, to_samples
from coach.writer import FORMATS, AudioWriter, check_output

#: Frames the mixer makes at a time while rendering (a second: larger blocks cost less
#: per sample, and a second of stereo float is only 384 kB).
BLOCK: Samples = RATE
FADE_IN: Samples = to_samples(3.0)
FADE_OUT: Samples = to_samples(5.0)


#: Told (frames done, frames in all) as a render goes.
Progress = Callable[[Samples, Samples], None] | None


@dataclass(frozen=True)
class RenderOptions:
    captions: bool = False
    chapters: bool = False
    split: bool = False
    ambient: Path | None = None


@dataclass
class RenderResult:
    written: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_request(out: Path, options: RenderOptions) -> str:
    """Everything about a render request that can be checked before any work."""
    ext = check_output(out)
    if options.ambient is not None:
        with AmbientTrack(options.ambient, 1, 0, 0):
            pass  # opening it checks that it is there and is audio
    if options.split:
        folder = split_folder(out)
        if folder.exists() and not _is_our_split(folder, out):
            raise UsageError(
                f"{folder} already exists and is not a split session made by coach; "
                "remove it or choose another -o"
            )
    return ext


def render(
    prepared: Prepared,
    out: Path,
    options: RenderOptions = RenderOptions(),
    *,
    progress: Progress = None,
) -> RenderResult:
    """Write the session. Raises CoachError subclasses; on any error or interruption
    nothing new is left at `out` (or its split folder, captions)."""
    ext = check_request(out, options)
    tl = prepared.timeline
    bank = SoundBank(prepared.clips(), channels=2, volume=prepared.pack.volume)
    ambient = None
    if options.ambient is not None:
        ambient = AmbientTrack(options.ambient, tl.total, FADE_IN, FADE_OUT)
    with contextlib.closing(ambient) if ambient is not None else contextlib.nullcontext():
        mixer = Mixer(tl, bank, under=ambient, gain=session_gain(tl, bank))
        return _render(mixer, out, ext, options, progress)


def _render(
    mixer: Mixer, out: Path, ext: str, options: RenderOptions, progress: Progress
) -> RenderResult:
    tl = mixer.timeline
    result = RenderResult()
    parts = step_chapters(tl)
    if options.split:
        _render_split(mixer, out, ext, parts, options, result, progress)
    else:
        vtt = out.with_suffix(".vtt") if options.captions else None
        with AudioWriter(out, channels=2) as writer, _pending_text(vtt) as pending:
            _pump(mixer, writer, tl.total, progress)
            if options.chapters:
                if chapter_support(ext):
                    writer.add_chapters(parts)
                    result.notes.append(f"{len(parts)} chapters, one a step")
                else:
                    result.notes.append(
                        f"{ext} files cannot hold chapters; use .mp3, .flac or .ogg for them"
                    )
            if pending is not None:
                pending.write_text(webvtt(tl.events, 0, tl.total), encoding="utf-8")
            writer.commit()
            if pending is not None and vtt is not None:
                os.replace(pending, vtt)
        result.written.append(out)
        if vtt is not None:
            result.written.append(vtt)
    return result


def _pump(mixer: Mixer, writer: AudioWriter, end: Samples, progress: Progress) -> None:
    """Mix up to `end` into the writer, reporting progress through the whole session."""
    while mixer.position < end:
        writer.write(mixer.read(min(BLOCK, end - mixer.position)))
        if progress is not None:
            progress(mixer.position, mixer.total)


@contextlib.contextmanager
def _pending_text(final: Path | None) -> Iterator[Path | None]:
    """A temporary path beside `final` that is removed unless it was moved into place."""
    if final is None:
        yield None
        return
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".coach-tmp", dir=final.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)  # mkstemp makes it private; the result is an ordinary file
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def split_folder(out: Path) -> Path:
    return out.with_suffix("")


def _is_our_split(folder: Path, out: Path) -> bool:
    return (
        folder.is_dir()
        and (folder / f"{out.stem}.m3u").is_file()
        and all(p.suffix in (*FORMATS, ".m3u", ".vtt") for p in folder.iterdir())
    )


def _slug(title: str) -> str:
    return re.sub(r"[^\w\- ]+", "", title).strip()[:60] or "step"


def _render_split(
    mixer: Mixer,
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
    staging = Path(
        tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".coach-tmp", dir=folder.parent)
    )
    try:
        playlist = ["#EXTM3U"]
        for i, part in enumerate(parts):
            name = f"{i + 1:02d} {_slug(part.title)}{ext}"
            with AudioWriter(staging / name, channels=2) as writer:
                _pump(mixer, writer, part.end, progress)
                writer.commit()
            if options.captions:
                text = webvtt(mixer.timeline.events, part.start, part.end)
                (staging / name).with_suffix(".vtt").write_text(text, encoding="utf-8")
            seconds = round((part.end - part.start) / RATE)
            playlist += [f"#EXTINF:{seconds},{part.title}", name]
        (staging / f"{out.stem}.m3u").write_text("\n".join(playlist) + "\n", encoding="utf-8")
        if options.chapters:
            result.notes.append("--chapters is not needed with --split: each step is a file")
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.coach-old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(staging, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise CoachError(f"cannot write {folder}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result.written += [folder / f"{out.stem}.m3u"]
    result.notes.append(f"{len(parts)} files, one a step, in {folder}")
