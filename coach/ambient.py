"""A user's background track (``--ambient``), streamed at ``RATE`` under the session.

``AmbientTrack`` reads the file in blocks, loops it with a crossfade, resamples it, makes
it stereo and fades it in and out, in constant memory whatever the lengths; it also
measures the level the mixer plays it at. The mixer lowers it under speech.

numpy and soxr are imported inside functions so that importing this module stays cheap;
the file itself is opened through coach.soundfiles.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from coach.dsp import falling_cosine, raised_cosine, rising
from coach.errors import InputError
from coach.soundfiles import AUDIO_EXPECTED, finite, open_sound, to_stereo
from coach.units import RATE, Samples

if TYPE_CHECKING:
    import numpy as np

# Read in blocks of this many frames (at the file's own rate); loop with a CROSSFADE-second
# sum-to-one crossfade; estimate the level over the first LEVEL_WINDOW seconds; bring that
# RMS to LEVEL_TARGET dBFS with at most LEVEL_MAX_BOOST dB of gain.
_BLOCK = 8192
CROSSFADE = 0.05
LEVEL_WINDOW = 30.0
LEVEL_TARGET = -30.0
LEVEL_MAX_BOOST = 20.0
#: The least a track must be to loop as a background: shorter, or at a lower rate, it
#: would be a buzz, and reading it would cost a file pass every few samples.
MIN_SECONDS = 1.0
MIN_RATE = 8000


class AmbientTrack:
    """A user's background track as a stream at ``RATE``, stereo, ``total`` samples long.

    The file is read in blocks and resampled on the fly, so memory stays small whatever the
    lengths. When the file ends it starts again, its last ``CROSSFADE`` seconds crossfaded
    into its first (no click). The stream fades in over ``fade_in`` samples, out over the
    last ``fade_out`` samples before ``total``, and is silent after ``total``.

    ``level`` is the linear gain that brings the track's RMS over its first
    ``LEVEL_WINDOW`` seconds to ``LEVEL_TARGET`` dBFS (20·log10 RMS, so a full-scale sine
    is -3 dBFS), at most ``LEVEL_MAX_BOOST`` dB, 1.0 for digital silence: roughly -30 LUFS
    for typical ambience. ``read()`` does not apply it; the mixer does, with its ducking.

    Mono files play on both sides; files with more than two channels are down-mixed to
    their average on both sides (channel orders differ between formats).
    Raises InputError (exit 2) for a missing, unreadable or empty file, and for one too
    short (under MIN_SECONDS) or too coarse (under MIN_RATE) to loop.
    """

    def __init__(self, path: Path, total: Samples, fade_in: Samples, fade_out: Samples) -> None:
        if total < 0 or fade_in < 0 or fade_out < 0:
            raise ValueError("total, fade_in and fade_out must not be negative")
        self.path = Path(path)
        self.total = total
        self.fade_in = fade_in
        self.fade_out = fade_out
        self._pos: Samples = 0
        self._file = open_sound(self.path)
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        import numpy as np

        self.samplerate: int = self._file.samplerate
        if self.samplerate < MIN_RATE:
            raise InputError(
                f"its sample rate is {self.samplerate} Hz; an ambient track needs at least "
                f"{MIN_RATE} Hz",
                file=str(self.path),
            )
        # Level, over the first LEVEL_WINDOW seconds; that pass also tells whether the file
        # is empty, and its exact length when it is shorter than the window.
        window = round(LEVEL_WINDOW * self.samplerate)
        seen, energy = 0, 0.0
        while seen < window:
            block = self._read_file(min(_BLOCK, window - seen))
            if len(block) == 0:
                break
            seen += len(block)
            energy += float(np.square(block, dtype=np.float64).sum())
        if seen == 0:
            raise InputError(
                f"the file has no samples; expected {AUDIO_EXPECTED} with sound",
                file=str(self.path),
            )
        if seen < MIN_SECONDS * self.samplerate:
            raise InputError(
                f"it is {seen / self.samplerate:.2f} s long; an ambient track must be at "
                f"least {MIN_SECONDS:g} s to loop",
                file=str(self.path),
            )
        rms = (energy / (2 * seen)) ** 0.5
        if rms > 0:
            gain_db = min(LEVEL_TARGET - 20 * np.log10(rms), LEVEL_MAX_BOOST)
            self.level: float = float(10 ** (gain_db / 20))
        else:
            self.level = 1.0
        # The loop: the first _xfade frames are kept, to crossfade the file's end into.
        self._xfade = min(round(CROSSFADE * self.samplerate), seen // 2)
        self._seek_start()
        self._head = self._read_exact(self._xfade)
        self._ramp = rising(len(self._head))
        self._pending = self._head  # the first pass plays the head as it is
        self._pass_frames = 0  # frames read in this pass after the head
        self._resampler: Any = None
        if self.samplerate != RATE:
            import soxr

            self._resampler = soxr.ResampleStream(
                self.samplerate, RATE, 2, dtype="float32", quality="HQ"
            )
        self._out: list[np.ndarray] = []  # resampled frames at RATE, not yet returned
        self._out_frames = 0

    def read(self, frames: int) -> np.ndarray:
        """The next ``frames`` samples, shape (frames, 2), float32 (without ``level``)."""
        import numpy as np

        if frames < 0:
            raise ValueError("frames must not be negative")
        out = np.zeros((frames, 2), dtype=np.float32)
        active = max(0, min(frames, self.total - self._pos))
        if active:
            out[:active] = self._take(active)
            gain = self._fade_gain(self._pos, active)
            if gain is not None:
                out[:active] *= gain[:, None]
        self._pos += frames
        if self._pos >= self.total:
            self.close()
        return out

    def close(self) -> None:
        """Close the file (reading past ``total`` needs no file). Safe to call twice."""
        file, self._file = self._file, None
        if file is not None:
            file.close()

    def __enter__(self) -> AmbientTrack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------

    def _fade_gain(self, start: Samples, n: int) -> np.ndarray | None:
        """Fade gains for output samples start .. start+n, or None if all are 1."""
        import numpy as np

        gain = None
        if start < self.fade_in:
            i = np.arange(start, start + n, dtype=np.float64)
            gain = np.where(i < self.fade_in, raised_cosine(np.pi * i / self.fade_in), 1.0)
        fade_from = self.total - self.fade_out
        if self.fade_out and start + n > fade_from:
            i = np.arange(start, start + n, dtype=np.float64)
            # 1 just before the fade, exactly 0 at the last sample (total - 1).
            down = np.where(
                i < fade_from, 1.0, falling_cosine(np.pi * (i - fade_from + 1) / self.fade_out)
            )
            gain = down if gain is None else gain * down
        return None if gain is None else gain.astype(np.float32)

    def _take(self, n: int) -> np.ndarray:
        import numpy as np

        while self._out_frames < n:
            block = self._next_source_block()
            if self._resampler is not None:
                block = self._resampler.resample_chunk(block)
            if len(block):
                self._out.append(block)
                self._out_frames += len(block)
        result = np.concatenate(self._out) if len(self._out) > 1 else self._out[0]
        rest = result[n:]
        self._out = [rest] if len(rest) else []
        self._out_frames = len(rest)
        return result[:n]

    def _next_source_block(self) -> np.ndarray:
        """The looped file at its own rate, a block at a time: each pass holds back its
        last _xfade frames, which are crossfaded into the kept head at the end of the file."""
        import numpy as np

        block = self._read_file(_BLOCK)
        if len(block):
            self._pass_frames += len(block)
            data = np.concatenate([self._pending, block])
            keep = min(self._xfade, len(data))
            self._pending = data[len(data) - keep :]
            return data[: len(data) - keep]
        # End of file: the held-back tail fades out while the head fades in (sum to one),
        # then the file goes on right after the head.
        if self._pass_frames == 0 and not len(self._pending):
            # A pass that gave nothing: the file was emptied or cut while we played it.
            raise InputError(
                "the audio file could no longer be read (was it changed?)", file=str(self.path)
            )
        tail = self._pending
        n = min(len(tail), len(self._head))
        ramp = self._ramp if n == len(self._ramp) else rising(n)
        joint = (
            tail[len(tail) - n :] * (1 - ramp)[:, None] + self._head[:n] * ramp[:, None]
        ).astype(np.float32)
        self._seek_start()
        self._read_exact(self._xfade)  # skip the head, already played in the crossfade
        self._pending = joint[:0]
        self._pass_frames = 0
        return np.concatenate([tail[: len(tail) - n], joint])

    def _read_file(self, frames: int) -> np.ndarray:
        """Up to ``frames`` frames as float32 stereo; fewer (or none) at the end of file."""
        try:
            data = self._file.read(frames, dtype="float32", always_2d=True)
        except (RuntimeError, OSError) as e:  # soundfile's LibsndfileError is a RuntimeError
            raise InputError(f"cannot read it as audio ({e})", file=str(self.path)) from e
        return to_stereo(finite(data))

    def _read_exact(self, frames: int) -> np.ndarray:
        import numpy as np

        parts, got = [], 0
        while got < frames:
            block = self._read_file(frames - got)
            if not len(block):
                break
            parts.append(block)
            got += len(block)
        return np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.float32)

    def _seek_start(self) -> None:
        try:
            self._file.seek(0)
        except (RuntimeError, OSError) as e:
            raise InputError(f"cannot read it as audio ({e})", file=str(self.path)) from e
