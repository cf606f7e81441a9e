"""Independent checks of audio the project made: real decoders (soundfile, ffprobe,
ffmpeg), a real loudness meter (ffmpeg's ebur128) and a real speech recognizer
(pocketsphinx, forced alignment)."""

from __future__ import annotations

import functools
import json
import re
import subprocess
from pathlib import Path

import numpy as np

NUMBERS = {
    "0": "zero",
    "1": "one",
    "2": "two",
    "3": "three",
    "4": "four",
    "5": "five",
    "6": "six",
    "7": "seven",
    "8": "eight",
    "9": "nine",
    "10": "ten",
    "12": "twelve",
    "15": "fifteen",
    "20": "twenty",
    "30": "thirty",
}


def ffprobe(path: Path) -> dict:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_streams",
            "-show_format",
            "-show_chapters",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def ebur128(path: Path) -> tuple[float, float]:
    """(integrated loudness in LUFS, sample peak in dBFS) as ffmpeg measures them."""
    out = subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-nostats",
            "-i",
            str(path),
            "-af",
            "ebur128=peak=sample",
            "-f",
            "null",
            "-",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    summary = out[out.rindex("Summary:") :]
    loud = float(re.search(r"I:\s+(-?[\d.]+) LUFS", summary).group(1))
    peak = float(re.search(r"Peak:\s+(-?[\d.]+) dBFS", summary).group(1))
    return loud, peak


def spoken_words(text: str) -> str:
    """A cue's text as the recognizer's dictionary spells it."""
    words = re.findall(r"[A-Za-z']+|\d+", text)
    return " ".join(NUMBERS.get(w, w).lower() for w in words)


@functools.cache
def _decoder():
    from pocketsphinx import Decoder

    return Decoder(samprate=16000, loglevel="FATAL")


def heard(samples: np.ndarray, rate: int, text: str) -> bool:
    """Whether `samples` (mono) say `text`, by forced alignment: the text must align, and
    its words must cover the sound (a short wrong text can otherwise be forced onto a
    long cue, the rest taken for silence). espeak-ng's exact digital silence upsets the
    recognizer, so the audio is padded and given a little noise."""
    import soxr

    y = soxr.resample(samples.astype(np.float64), rate, 16000)
    pad = np.zeros(4800)
    y = np.concatenate([pad, y, pad])
    y = y + np.random.default_rng(0).normal(0, 2 / 32768, len(y))
    pcm = np.clip(np.round(y * 32768), -32768, 32767).astype("<i2").tobytes()
    d = _decoder()
    d.set_align_text(spoken_words(text))
    d.start_utt()
    d.process_raw(pcm, full_utt=True)
    d.end_utt()
    if d.hyp() is None:
        return False
    words = [(s.start_frame, s.end_frame) for s in d.seg() if not s.word.startswith(("<", "["))]
    if not words:
        return False
    frame = 160  # 10 ms at 16 kHz, the frames the decoder counts in
    energy = np.array([np.mean(y[i : i + frame] ** 2) for i in range(0, len(y) - frame, frame)])
    voiced = np.flatnonzero(energy > energy.max() * 1e-3)
    sound = voiced[-1] - voiced[0] + 1
    said = words[-1][1] - words[0][0] + 1
    return said >= 0.7 * sound


def onset_by_correlation(signal: np.ndarray, template: np.ndarray, around: int, search: int) -> int:
    """Where `template` starts in `signal`, searching +-search samples around `around`."""
    lo = max(0, around - search)
    seg = signal[lo : around + search + len(template)]
    corr = np.correlate(seg, template, mode="valid")
    return lo + int(np.argmax(corr))
