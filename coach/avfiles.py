"""AAC in MP4 (.m4a, .m4b) and Opus in Ogg (.opus), through PyAV (FFmpeg's libraries).

The codec is fed its own sample format (AAC planar float, Opus interleaved float), so no
conversion runs on every frame. The muxer writes the tags and the chapters: MP4 gets a
QuickTime chapter track and a Nero ``chpl`` list (Apple Books and iOS read the first,
most Android players the second); Opus gets its ``CHAPTER001=`` comments afterwards from
coach.chapters. An .m4b is marked as an audiobook.

PyAV is imported inside functions so that importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coach.encoders import Metadata
from coach.units import RATE, Samples

if TYPE_CHECKING:
    import numpy as np

    from coach.encoders import Piece


def preload() -> None:
    """Import the libraries encoding needs, ahead of the first file (ImportError if
    one is missing)."""
    import av  # noqa: F401


@dataclass(frozen=True)
class AvSettings:
    container: str  # FFmpeg's muxer
    codec: str
    sample_format: str  # what the codec takes natively
    kbps: int
    options: tuple[tuple[str, str], ...] = ()


# AAC: FFmpeg's own encoder with its fast coder (a third of the default's time; at these
# bitrates speech sounds the same). Opus: complexity 5, a quarter of the time of 10.
_AAC_FAST = (("aac_coder", "fast"),)
_OPUS_FAST = (("compression_level", "5"),)
_SETTINGS: dict[str, dict[str, AvSettings]] = {
    "aac": {
        "low": AvSettings("ipod", "aac", "fltp", 48, _AAC_FAST),
        "normal": AvSettings("ipod", "aac", "fltp", 64, _AAC_FAST),
        "high": AvSettings("ipod", "aac", "fltp", 96),
    },
    "opus": {
        "low": AvSettings("ogg", "libopus", "flt", 24, _OPUS_FAST),
        "normal": AvSettings("ogg", "libopus", "flt", 32, _OPUS_FAST),
        "high": AvSettings("ogg", "libopus", "flt", 64),
    },
}


def settings_for(ext: str, quality: str | int) -> AvSettings:
    family = _SETTINGS["opus" if ext == ".opus" else "aac"]
    if isinstance(quality, str):
        return family[quality]
    return AvSettings(**{**family["normal"].__dict__, "kbps": quality, "options": ()})


class AvEncoder:
    """AAC or Opus streamed into `path` through PyAV (one piece)."""

    pcm16 = False
    grid: Samples | None = None

    def __init__(
        self, path: Path, ext: str, channels: int, quality: str | int, meta: Metadata
    ) -> None:
        import av

        from coach.encoders import EncodeError

        self.settings = settings_for(ext, quality)
        self.path, self.ext, self.meta = path, ext, meta
        self.channels = channels
        self._layout = "stereo" if channels == 2 else "mono"
        self._pts = 0
        try:
            self._out: Any = av.open(str(path), "w", format=self.settings.container)
        except (OSError, av.FFmpegError) as e:
            raise EncodeError(_why(e)) from e
        try:
            stream: Any = self._out.add_stream(self.settings.codec, rate=RATE, layout=self._layout)
            stream.bit_rate = self.settings.kbps * 1000
            ctx = stream.codec_context
            ctx.format = self.settings.sample_format
            ctx.options = dict(self.settings.options)
            stream.time_base = Fraction(1, RATE)
            if meta.tags is not None:
                self._out.metadata.update(meta.tags.as_dict())
            if ext == ".m4b":
                self._out.metadata["media_type"] = "2"  # iTunes' "stik" atom: audiobook
            if meta.chapters and self.settings.container != "ogg":
                self._out.set_chapters(
                    [
                        {
                            "id": i + 1,
                            "start": c.start,
                            "end": c.end,
                            "time_base": Fraction(1, RATE),
                            "metadata": {"title": c.title},
                        }
                        for i, c in enumerate(sorted(meta.chapters, key=lambda c: c.start))
                    ]
                )
        except BaseException:
            self._out.close()
            raise
        self._stream = stream

    def piece(self, start: Samples) -> AvEncoder:
        return self

    def write(self, data: np.ndarray) -> None:
        import av

        from coach.encoders import EncodeError

        planar = self.settings.sample_format.endswith("p")
        array = data.T.copy() if planar else data.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(
            array, format=self.settings.sample_format, layout=self._layout
        )
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = Fraction(1, RATE)
        self._pts += len(data)
        try:
            self._out.mux(self._stream.encode(frame))
        except (OSError, av.FFmpegError) as e:
            raise EncodeError(_why(e)) from e

    def skip(self, frames: int) -> None:
        import numpy as np

        self.write(np.zeros((frames, self.channels), dtype=np.float32))

    def finish(self, pieces: Sequence[Piece], lengths: Sequence[Samples]) -> None:
        import av

        from coach.encoders import EncodeError

        # AAC: a last frame much shorter than the codec's 1024 samples was dropped (a
        # session ending 3 samples past a whole frame lost them); it is filled out with
        # silence, so the file holds the whole session (and up to a frame more).
        size = self._stream.codec_context.frame_size if self.settings.codec == "aac" else 0
        if size and self._pts % size:
            self.skip(size - self._pts % size)
        try:
            self._out.mux(self._stream.encode(None))
            self._out.close()
        except (OSError, av.FFmpegError) as e:
            raise EncodeError(_why(e)) from e
        if self.meta.chapters and self.settings.container == "ogg":
            from coach.encoders import embed

            embed(self.path, self.ext, Metadata(None, self.meta.chapters))

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._out.close()


def _why(error: BaseException) -> str:
    text = getattr(error, "strerror", None) or str(error)
    return str(text).rstrip(".")
