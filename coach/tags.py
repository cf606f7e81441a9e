"""Tags: what a compressed file says about itself in a phone's library.

Every compressed file gets a title (the routine's title), an artist ("coach"), an album
(the routine) and a comment with the settings it was made with (pace, voice). MP3 holds
them as ID3v2.3 frames (TIT2, TPE1, TALB, COMM), FLAC and Ogg Vorbis as Vorbis comments
(TITLE, ARTIST, ALBUM, COMMENT), written here after the audio; M4A/M4B and Opus get the
same four through their muxer (coach.avfiles). The files of a split session also get
their track number. WAV gets none.

mutagen is imported inside functions so that importing this module stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The formats whose tags are written here, after the audio.
TAGGED_HERE = (".mp3", ".flac", ".ogg")


@dataclass(frozen=True)
class Tags:
    title: str
    album: str
    comment: str
    artist: str = "coach"
    #: (this file's number, files in all), for the files of a split session.
    track: tuple[int, int] | None = None

    def as_dict(self) -> dict[str, str]:
        """The tags under the names ffmpeg (and so PyAV) uses for every format."""
        tags = {
            "title": self.title,
            "artist": self.artist,
            "album": self.album,
            "comment": self.comment,
        }
        if self.track is not None:
            tags["track"] = f"{self.track[0]}/{self.track[1]}"
        return tags


def write_tags(path: Path, ext: str, tags: Tags) -> None:
    """Put `tags` into the finished MP3, FLAC or Ogg Vorbis file at `path` (whose format is
    `ext`'s). Raises OSError, or mutagen's errors for a file that is not that format."""
    if ext == ".mp3":
        _write_id3(path, tags)
    else:
        audio = vorbis_file(path, ext)
        if audio.tags is None:
            audio.add_tags()
        for key, value in tags.as_dict().items():
            audio.tags["TRACKNUMBER" if key == "track" else key.upper()] = value
        audio.save(**vorbis_save_options(ext))


def _write_id3(path: Path, tags: Tags) -> None:
    from mutagen.id3 import COMM, ID3, TALB, TIT2, TPE1, TRCK, ID3NoHeaderError

    try:
        id3 = ID3(path)
    except ID3NoHeaderError:
        id3 = ID3()
    id3.setall("TIT2", [TIT2(encoding=3, text=[tags.title])])
    id3.setall("TPE1", [TPE1(encoding=3, text=[tags.artist])])
    id3.setall("TALB", [TALB(encoding=3, text=[tags.album])])
    id3.setall("COMM", [COMM(encoding=3, lang="eng", desc="", text=[tags.comment])])
    if tags.track is not None:
        id3.setall("TRCK", [TRCK(encoding=3, text=[f"{tags.track[0]}/{tags.track[1]}"])])
    id3.save(path, v2_version=3)


def vorbis_file(path: Path, ext: str) -> Any:
    """The FLAC, Ogg Vorbis or Opus file, opened with mutagen."""
    if ext == ".flac":
        from mutagen.flac import FLAC

        return FLAC(path)
    if ext == ".opus":
        from mutagen.oggopus import OggOpus

        return OggOpus(path)
    from mutagen.oggvorbis import OggVorbis

    return OggVorbis(path)


def vorbis_save_options(ext: str) -> dict[str, Any]:
    """How to save a Vorbis comment: Ogg gets no padding after it, which ffmpeg would
    otherwise report as "bytes of comment header remain" (FLAC pads in a block of its
    own, which every reader expects)."""
    return {"padding": lambda info: 0} if ext in (".ogg", ".opus") else {}
