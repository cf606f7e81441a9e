"""Sound files a user or a voice pack brings: opened, checked and read through soundfile.

``open_sound`` opens any such file (a recorded clip, a chime, an ambient track) or says
in one line what is wrong with it; ``probe_sound`` checks a voice pack's clip without
reading its samples, ``read_sound`` reads a short one as mono samples at ``RATE``.

numpy, soundfile and soxr are imported inside functions so that importing this module
stays cheap (validating a voice pack probes its clips).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coach.errors import InputError
from coach.units import RATE

if TYPE_CHECKING:
    import numpy as np

#: What a sound file must be, in every message about one that is not.
AUDIO_EXPECTED = "an audio file soundfile can read (WAV, FLAC, OGG, MP3)"

#: The longest a recorded clip or chime in a voice pack may be.
CLIP_MAX_SECONDS = 120


def open_sound(path: Path) -> Any:
    """The file opened with soundfile (a ``soundfile.SoundFile``), or an InputError that
    says what is wrong. Only a regular file is opened: a FIFO or a device would block,
    or never end."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise InputError(f"no such file; expected {AUDIO_EXPECTED}", file=str(path)) from None
    except OSError as e:
        raise InputError(f"cannot read it: {e.strerror or e}", file=str(path)) from e
    if stat.S_ISDIR(mode):
        raise InputError(f"is a folder; expected {AUDIO_EXPECTED}", file=str(path))
    if not stat.S_ISREG(mode):
        raise InputError(f"is not a regular file; expected {AUDIO_EXPECTED}", file=str(path))
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise InputError(f"cannot read it: {e.strerror or e}", file=str(path)) from e
    import soundfile

    try:
        return soundfile.SoundFile(path)
    except (RuntimeError, OSError, TypeError, ValueError) as e:
        raise InputError(f"not {AUDIO_EXPECTED}", file=str(path)) from e


def probe_sound(path: Path) -> float:
    """Check that `path` is a readable audio file of at most CLIP_MAX_SECONDS; return its
    length in seconds. Raises InputError saying what is wrong."""
    with open_sound(path) as f:
        if f.frames == 0:
            raise InputError("holds no samples", file=str(path))
        seconds: float = f.frames / f.samplerate
    if seconds > CLIP_MAX_SECONDS:
        raise InputError(
            f"is {seconds:.0f} s long; a clip is at most {CLIP_MAX_SECONDS} s", file=str(path)
        )
    return seconds


def read_sound(path: Path) -> np.ndarray:
    """A short audio file (a recorded clip, a chime) as float32 mono samples at RATE."""
    import numpy as np
    import soxr

    probe_sound(path)
    with open_sound(path) as f:
        data = finite(f.read(dtype="float32", always_2d=True))
        rate = f.samplerate
    mono = data.mean(axis=1, dtype=np.float32)
    if rate != RATE:
        mono = soxr.resample(mono, rate, RATE, quality="HQ").astype(np.float32)
    return mono


def finite(data: np.ndarray) -> np.ndarray:
    """Float samples read from a file, with any NaN made silence and any infinity full
    scale, in place: a float WAV may hold them, and every later step (levelling, the
    mix, the writer) takes finite samples."""
    import numpy as np

    return np.nan_to_num(data, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)


def to_stereo(data: np.ndarray) -> np.ndarray:
    """Frames of any channel count as two channels: mono on both sides, more than two
    down-mixed to their average (channel orders differ between formats)."""
    import numpy as np

    channels = data.shape[1]
    if channels == 2:
        return data
    mono = data[:, 0] if channels == 1 else data.mean(axis=1, dtype=np.float32)
    return np.repeat(mono[:, None], 2, axis=1)
