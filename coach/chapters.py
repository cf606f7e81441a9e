"""Chapters: one a step, named by its title, and how each format stores them.

``step_chapters`` cuts a timeline into its steps; ``write_chapters`` embeds chapters in a
finished file and ``read_chapters`` reads them back. MP3 gets ID3v2.3 ``CHAP`` frames
listed by a top-level, ordered ``CTOC`` frame; FLAC and Ogg Vorbis get the Vorbis-comment
pair ``CHAPTER001=HH:MM:SS.mmm`` and ``CHAPTER001NAME=title`` (what ffmpeg and many
players read), and so does Opus (FFmpeg's own Ogg muxer rounds such a time's seconds, so
1.5 s would read 2.5 s); WAV gets none. M4A/M4B files get MP4 chapters from their muxer
(coach.avfiles), read back here.
The split into one file a step uses the same chapters.

mutagen is imported inside functions so that importing this module stays cheap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from coach.errors import InputError
from coach.tags import vorbis_file, vorbis_save_options
from coach.timeline import Timeline
from coach.timetext import milliseconds, stamp
from coach.units import Samples

#: The formats that hold chapters, by extension.
CHAPTER_FORMATS = (".mp3", ".flac", ".ogg", ".opus", ".m4a", ".m4b")
#: Those whose chapters are written here, into the finished file.
WRITTEN_HERE = (".mp3", ".flac", ".ogg", ".opus")


@dataclass(frozen=True)
class Chapter:
    """A named part of a session, in samples at ``RATE`` (``end`` exclusive)."""

    title: str
    start: Samples
    end: Samples

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise ValueError(
                f"chapter {self.title!r}: need 0 <= start <= end, got {self.start}, {self.end}"
            )


def step_chapters(timeline: Timeline) -> list[Chapter]:
    """One chapter a step, from its first run's start to the next step's start; the last
    also holds the closing, so the chapters tile the whole session."""
    firsts: dict[int, tuple[Samples, str]] = {}
    for seg in timeline.segments:
        firsts.setdefault(seg.step, (seg.start, seg.title))
    starts = sorted(firsts.values())
    chapters = []
    for i, (start, title) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else timeline.total
        chapters.append(Chapter(title, start, end))
    return chapters


def chapter_support(ext: str) -> bool:
    """Whether files with this extension can carry chapters (all but WAV)."""
    return ext.lower() in CHAPTER_FORMATS


def write_chapters(path: Path, ext: str, chapters: list[Chapter]) -> None:
    """Embed `chapters` (in any order) in the finished MP3, FLAC, Ogg Vorbis or Opus file at
    `path`, whose format is that of `ext` (the path may be a temporary name). Raises
    OSError, or mutagen's own errors for a file that is not what `ext` says."""
    ordered = sorted(chapters, key=lambda c: (c.start, c.end))
    if ext == ".mp3":
        _write_id3_chapters(path, ordered)
    else:
        _write_vorbis_chapters(path, ext, ordered)


def _write_id3_chapters(path: Path, chapters: list[Chapter]) -> None:
    from mutagen.id3 import CHAP, CTOC, ID3, TIT2, CTOCFlags, ID3NoHeaderError

    try:
        tags = ID3(path)
    except ID3NoHeaderError:
        tags = ID3()
    tags.delall("CHAP")
    tags.delall("CTOC")
    ids = [f"chp{i}" for i in range(len(chapters))]
    tags.add(
        CTOC(
            element_id="toc",
            flags=CTOCFlags.TOP_LEVEL | CTOCFlags.ORDERED,
            child_element_ids=ids,
            sub_frames=[],
        )
    )
    for element_id, chapter in zip(ids, chapters, strict=True):
        tags.add(
            CHAP(
                element_id=element_id,
                start_time=milliseconds(chapter.start),
                end_time=milliseconds(chapter.end),
                # 0xFFFFFFFF: no byte offsets, the times are what counts.
                start_offset=0xFFFFFFFF,
                end_offset=0xFFFFFFFF,
                sub_frames=[TIT2(encoding=3, text=[chapter.title])],
            )
        )
    # ID3v2.3: what the most players read (mutagen turns the UTF-8 text into UTF-16).
    tags.save(path, v2_version=3)
    _sort_chap_frames(path)


def _sort_chap_frames(path: Path) -> None:
    """Put the tag's CHAP frames in order of start time, in place.

    mutagen writes frames ordered by their size (quodlibet/mutagen#506), and ffmpeg (5.1)
    lists ID3 chapters in file order, so a longer title would come out of order there
    (and in what ffmpeg converts the file to). Swapping whole frames keeps the tag's size.
    Anything unexpected (unsynchronisation, an extended header, flagged frames) leaves the
    tag as mutagen wrote it: still valid, with the CTOC frame giving the order."""
    with open(path, "r+b") as f:
        header = f.read(10)
        if len(header) < 10 or header[:3] != b"ID3" or header[3] not in (3, 4) or header[5] & 0xC0:
            return
        body = f.read(_syncsafe(header[6:10]))
        frames: list[bytes] = []
        pos = 0
        while pos + 10 <= len(body) and body[pos] != 0:  # a zero byte starts the padding
            raw = body[pos + 4 : pos + 8]
            size = _syncsafe(raw) if header[3] == 4 else int.from_bytes(raw, "big")
            frame = body[pos : pos + 10 + size]
            if len(frame) < 10 + size:
                return
            if frame[:4] == b"CHAP" and (frame[8:10] != b"\0\0" or b"\0" not in frame[10:]):
                return
            frames.append(frame)
            pos += len(frame)

        def start(frame: bytes) -> int:
            end_of_id = frame.index(b"\0", 10)
            return int.from_bytes(frame[end_of_id + 1 : end_of_id + 5], "big")

        ordered = iter(sorted((fr for fr in frames if fr[:4] == b"CHAP"), key=start))
        new = b"".join(next(ordered) if fr[:4] == b"CHAP" else fr for fr in frames)
        if new != body[:pos]:
            f.seek(10)
            f.write(new)


def _syncsafe(raw: bytes) -> int:
    return (raw[0] & 0x7F) << 21 | (raw[1] & 0x7F) << 14 | (raw[2] & 0x7F) << 7 | raw[3] & 0x7F


def _write_vorbis_chapters(path: Path, ext: str, chapters: list[Chapter]) -> None:
    audio = vorbis_file(path, ext)
    if audio.tags is None:
        audio.add_tags()
    # Iterating a Vorbis comment gives (key, value) pairs; deleting a key is case-blind.
    for key in {k.upper() for k, _ in audio.tags if _VORBIS_CHAPTER.fullmatch(k.upper())}:
        del audio.tags[key]
    # ffmpeg reads at most three digits (CHAPTER001..CHAPTER999).
    for number, chapter in enumerate(chapters[:999], start=1):
        audio.tags[f"CHAPTER{number:03d}"] = stamp(chapter.start)
        audio.tags[f"CHAPTER{number:03d}NAME"] = chapter.title
    audio.save(**vorbis_save_options(ext))


_VORBIS_CHAPTER = re.compile(r"CHAPTER(\d+)(NAME)?")
_VORBIS_TIME = re.compile(r"(\d+):(\d{1,2}):(\d{1,2})(?:\.(\d+))?")


def read_chapters(path: Path) -> list[tuple[str, float]]:
    """The chapters stored in an audio file written by ``AudioWriter``, as (title, start
    in seconds), in order. Files of a format without chapters (WAV), and files without
    chapters, give ``[]``."""
    path = Path(path)
    ext = path.suffix.lower()
    if not path.is_file():
        raise InputError("no such file", file=str(path))
    if not chapter_support(ext):
        return []
    try:
        if ext == ".mp3":
            return _read_id3_chapters(path)
        if ext in (".m4a", ".m4b"):
            return _read_mp4_chapters(path)
        return _read_vorbis_chapters(path, ext)
    except OSError as e:
        raise InputError(f"cannot read it: {e.strerror or e}", file=str(path)) from e
    except Exception as e:  # mutagen.MutagenError: not the format its name says
        raise InputError(f"not a valid {ext} file ({e})", file=str(path)) from e


def _read_id3_chapters(path: Path) -> list[tuple[str, float]]:
    from mutagen.id3 import ID3, CTOCFlags, ID3NoHeaderError

    try:
        tags = ID3(path)
    except ID3NoHeaderError:
        return []
    chaps = {frame.element_id: frame for frame in tags.getall("CHAP")}
    order = sorted(chaps, key=lambda i: chaps[i].start_time)
    for toc in tags.getall("CTOC"):
        if toc.flags & CTOCFlags.TOP_LEVEL and all(i in chaps for i in toc.child_element_ids):
            order = list(toc.child_element_ids)
            break
    result = []
    for element_id in order:
        frame = chaps[element_id]
        titles = [str(sub.text[0]) for sub in frame.sub_frames.getall("TIT2") if sub.text]
        result.append((titles[0] if titles else element_id, frame.start_time / 1000))
    return result


def _read_mp4_chapters(path: Path) -> list[tuple[str, float]]:
    from mutagen.mp4 import MP4

    chapters = MP4(path).chapters or []
    return [(c.title, c.start) for c in chapters]


def _read_vorbis_chapters(path: Path, ext: str) -> list[tuple[str, float]]:
    audio = vorbis_file(path, ext)
    starts: dict[int, float] = {}
    names: dict[int, str] = {}
    for key, value in audio.tags or []:
        match = _VORBIS_CHAPTER.fullmatch(key.upper())
        if not match:
            continue
        number = int(match.group(1))
        if match.group(2):
            names[number] = value
        elif time := _VORBIS_TIME.fullmatch(value.strip()):
            h, m, s, frac = time.groups()
            starts[number] = (
                int(h) * 3600
                + int(m) * 60
                + int(s)
                + (int(frac) / 10 ** len(frac) if frac else 0.0)
            )
    return [(names.get(n, f"Chapter {n}"), starts[n]) for n in sorted(starts)]
