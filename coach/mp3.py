"""MP3 through lameenc (LAME): settings for speech and bells, pieces encoded apart and
joined, and the Info frame that tells players the exact length.

A session is mostly silence between cues, which lets it be encoded in pieces on several
cores: a piece starts on the frame grid inside a stretch of digital silence (the caller
picks where, see ``coach.render``), so a fresh encoder there produces the very frames the
whole stream would carry around that point (silence encodes as silence, and a fresh
encoder's first frame uses no bit reservoir). Each piece is resampled and encoded on its
own; ``join`` keeps each piece's frames up to the next piece's start and writes them
after an Info frame (Xing header with a LAME tag: the frame count, a seek table, the
encoder delay and padding), so decoders trim to the session's exact length. A centred
stretch (the same in both channels: all but the side chimes) is encoded as mono, half
the work, and carried in stereo frames (``coach.mp3stereo``); one already encoded by this
process (the rhythm's pulses repeat on the frame grid) is not encoded again.

numpy, soxr and lameenc are imported inside functions so that importing this module
stays cheap.
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

from coach.units import RATE, Samples

if TYPE_CHECKING:
    import numpy as np

    from coach.encoders import Metadata, Piece

Quality = Literal["low", "normal", "high"]

#: LAME's encoder delay, in samples at the output rate: the first frame starts this
#: many samples before the input does.
ENCODER_DELAY = 576
#: The lowest LAME quality setting that still sounds clean for speech (0 best, 9 fastest).
LAME_QUALITY = 7
#: Digital silence an encoder gets on each side of a cut before it is finished or after
#: it starts: more than it looks ahead or back (about 2,000 samples at 24 kHz, and the
#: resampler's few hundred).
SILENCE_MARGIN: Samples = RATE // 10
#: The most of a centred stretch kept to be encoded as mono (one channel at RATE, 5.8
#: MB): a longer one, as under an ambient track, is encoded as stereo as it comes.
MONO_LIMIT: Samples = 30 * RATE


def preload() -> None:
    """Import the libraries encoding needs, ahead of the first file (ImportError if
    one is missing)."""
    import lameenc  # noqa: F401
    import soxr  # noqa: F401


@dataclass(frozen=True)
class Mp3Settings:
    """How a session is encoded: the output sample rate (24 kHz is MPEG-2, which holds
    speech and bells and halves the work), and either a VBR quality (0 best .. 9) or a
    constant bitrate in kb/s."""

    rate: int
    vbr: int | None = None
    kbps: int | None = None

    @property
    def frame(self) -> int:
        """Samples a frame holds, at the output rate."""
        return 1152 if self.rate >= 32_000 else 576

    @property
    def grid(self) -> Samples:
        """Samples at RATE between frame starts: pieces start on this grid."""
        return self.frame * RATE // self.rate

    @property
    def key(self) -> bytes:
        """These settings in a few bytes (for `ENCODED`)."""
        return f"{self.rate}/{self.vbr}/{self.kbps}".encode()


#: The settings a --quality name gives. normal: about 64-96 kb/s while sound plays
#: (VBR, so the silence between cues costs almost nothing), a 36-minute session in 6-8 MB.
QUALITIES: dict[str, Mp3Settings] = {
    "low": Mp3Settings(rate=24_000, vbr=7),
    "normal": Mp3Settings(rate=24_000, vbr=5),
    "high": Mp3Settings(rate=48_000, vbr=3),
}

#: Constant bitrates one may ask for, by sample rate (MPEG-2 at 24 kHz, MPEG-1 at 48 kHz).
_BITRATES = {
    24_000: (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    48_000: (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
}


def settings_for(quality: str | int) -> Mp3Settings:
    """A --quality name, or a constant bitrate in kb/s (24 kHz up to 80 kb/s, 48 kHz from
    96). Raises ValueError for a bitrate MP3 cannot have."""
    if isinstance(quality, str):
        return QUALITIES[quality]
    rate = 24_000 if quality <= 80 else 48_000
    if quality not in _BITRATES[rate]:
        legal = sorted(set(_BITRATES[24_000][:9]) | set(_BITRATES[48_000][5:]))
        raise ValueError(f"MP3 has no {quality} kb/s; use one of {', '.join(map(str, legal))}")
    return Mp3Settings(rate=rate, kbps=quality)


class _Encoded:
    """The frames that centred stretches of sound were encoded to, by a digest of the
    samples and the settings, the most recently used kept up to `budget` bytes: a
    session's rhythm pulses repeat on the frame grid (one every 1.2 s is one every 50
    frames), so most are the same stretch, and the paces of a batch share them too.
    Shared by the threads that encode pieces at once."""

    def __init__(self, budget: int) -> None:
        import threading

        self.budget = budget
        self._lock = threading.Lock()
        self._frames: dict[bytes, bytes] = {}  # in the order last used
        self._bytes = 0
        self.hits = 0  # stretches found here
        self.misses = 0  # stretches encoded (as mono) for want of them

    def get(self, key: bytes) -> bytes | None:
        with self._lock:
            frames = self._frames.pop(key, None)
            if frames is None:
                self.misses += 1
            else:
                self._frames[key] = frames
                self.hits += 1
            return frames

    def put(self, key: bytes, frames: bytes) -> None:
        with self._lock:
            if len(frames) > self.budget // 8 or key in self._frames:
                return
            self._frames[key] = frames
            self._bytes += len(frames)
            while self._bytes > self.budget:
                self._bytes -= len(self._frames.pop(next(iter(self._frames))))


#: 4 MB: the pulses and bells of any session, and a few of its cues.
ENCODED = _Encoded(4 << 20)


class Mp3Piece:
    """One piece of a session: float32 blocks at RATE in, MP3 frames out (kept in memory:
    a 36-minute session is a few MB).

    Most of a session is digital silence between cues, and LAME spends as long on a frame
    of silence as on one of speech. So a long silence (``skip``) is not encoded: the
    encoder is given SILENCE_MARGIN of it and finished, the middle of the silence becomes
    copies of one silent frame, and a fresh encoder starts SILENCE_MARGIN before the next
    sound, on the frame grid: the same joins as between pieces, within one."""

    def __init__(self, settings: Mp3Settings, channels: int) -> None:
        self.settings = settings
        self.channels = channels
        self.frames_in: Samples = 0
        self._data = bytearray()  # finished frames
        self.sizes: array[int] = array("I")  # their byte lengths, for the join
        self._start: Samples = 0  # where the encoder under way started
        self._silent_from: Samples | None = None  # where the silence not yet fed began
        self._open()

    def _open(self) -> None:
        """Start an encoder: while what it is given is centred (the same in both
        channels), it is only kept (as one channel at RATE), to be encoded as mono and
        rewritten as joint stereo (``coach.mp3stereo``) when the encoder is finished;
        the first sound that is not centred, or more than MONO_LIMIT of it, turns it into
        a stereo encoder, which is given what was kept first."""
        self._encoded = bytearray()
        self._centred: list[np.ndarray] | None = None
        self._centred_frames: Samples = 0
        if self.channels == 2 and self.settings.vbr is not None:
            self._centred = []  # a constant bitrate leaves no room for stereo's side info
        else:
            self._open_lame(self.channels)

    def _open_lame(self, channels: int) -> None:
        import lameenc
        import soxr

        enc = lameenc.Encoder()
        enc.silence()  # LAME prints nothing on our stdout
        enc.set_channels(channels)
        enc.set_in_sample_rate(self.settings.rate)
        enc.set_out_sample_rate(self.settings.rate)  # else LAME may pick a lower one for VBR
        enc.set_quality(LAME_QUALITY)
        if self.settings.vbr is not None:
            enc.set_vbr(4)  # LAME's default VBR method (mtrh)
            enc.set_vbr_quality(self.settings.vbr)
        else:
            enc.set_bit_rate(self.settings.kbps)
        self._enc = enc
        # Medium quality is soxr's 16-bit one: the samples go to LAME as 16 bits.
        self._resampler = (
            soxr.ResampleStream(RATE, self.settings.rate, channels, dtype="float32", quality="MQ")
            if self.settings.rate != RATE
            else None
        )

    def _go_stereo(self) -> None:
        """Encode as stereo from the encoder's start on: what was kept, then the rest."""
        import numpy as np

        kept, self._centred = self._centred or [], None
        self._open_lame(self.channels)
        for part in kept:
            self._feed(np.repeat(part[:, None], 2, axis=1))

    def skip(self, frames: int) -> None:
        """Append `frames` of digital silence."""
        if self._silent_from is None:
            self._silent_from = self.frames_in
        self.frames_in += frames

    def write(self, block: np.ndarray) -> None:
        """Append float32 samples at RATE, shape (frames, channels), within [-1, 1]."""
        self._settle()
        self.frames_in += len(block)
        self._feed(block)

    def finish(self) -> bytearray:
        """The piece's frames: its whole input, and LAME's delay and padding after it."""
        if self._silent_from is not None:
            self._zeros(self.frames_in - self._silent_from)
            self._silent_from = None
        tail = self._close()
        self.sizes.extend(frame_sizes(tail))
        self._data += tail
        return self._data

    def _settle(self) -> None:
        """Deal with the silence since `_silent_from`, now that sound follows it."""
        if self._silent_from is None:
            return
        grid = self.settings.grid
        begin, end = self._silent_from, self.frames_in
        self._silent_from = None
        close = -(-(begin + SILENCE_MARGIN) // grid) * grid
        reopen = (end - SILENCE_MARGIN) // grid * grid
        if reopen - close < grid or close <= self._start:
            self._zeros(end - begin)
            return
        self._zeros(close - begin)
        frames = self._close()
        keep = (close - self._start) // grid
        sizes = frame_sizes(frames, keep)
        if len(sizes) < keep:
            raise ValueError(f"LAME made {len(sizes)} frames, fewer than {keep}")
        self._data += memoryview(frames)[: sum(sizes)]
        self.sizes.extend(sizes)
        silent = silent_frame(self.settings, self.channels)
        self._data += silent * ((reopen - close) // grid)
        self.sizes.extend(array("I", [len(silent)]) * ((reopen - close) // grid))
        self._start = reopen
        self._open()
        self._zeros(end - reopen)

    def _zeros(self, frames: int) -> None:
        import numpy as np

        for done in range(0, frames, RATE):
            self._feed(np.zeros((min(RATE, frames - done), self.channels), dtype=np.float32))

    def _feed(self, block: np.ndarray) -> None:
        if self._centred is not None:
            import numpy as np

            if self._centred_frames + len(block) <= MONO_LIMIT and np.array_equal(
                block[:, 0], block[:, 1]
            ):
                self._centred.append(block[:, 0].copy())
                self._centred_frames += len(block)
                return
            self._go_stereo()
        if self._resampler is not None:
            block = self._resampler.resample_chunk(block)
        self._encode(block)

    def _close(self) -> bytearray:
        """Finish the encoder under way; its frames."""
        if self._centred is not None:
            mono = self._mono_frames()
            if mono is not None:
                self._encoded = mono
                return mono
            self._go_stereo()  # LAME made what cannot be rewritten: encode it as stereo
        if self._resampler is not None:
            import numpy as np

            empty = np.zeros((0, self.channels), dtype=np.float32)
            self._encode(self._resampler.resample_chunk(empty, last=True))
        self._encoded += self._enc.flush()
        return self._encoded

    def _mono_frames(self) -> bytearray | None:
        """What was kept, encoded as mono and rewritten as joint stereo (or the frames
        the same sound made before, see `_Encoded`); None if LAME made frames that
        `joint_stereo` cannot rewrite (it has not, in any test)."""
        import hashlib

        import numpy as np

        from coach.mp3stereo import joint_stereo

        kept = self._centred or []
        channel = np.concatenate(kept) if kept else np.zeros(0, dtype=np.float32)
        key = hashlib.blake2b(channel.tobytes(), digest_size=16, person=self.settings.key)
        known = ENCODED.get(key.digest())
        if known is not None:
            return bytearray(known)
        self._open_lame(1)
        if self._resampler is not None:
            channel = self._resampler.resample_chunk(channel[:, None], last=True)
        self._encode(channel)
        self._encoded += self._enc.flush()
        try:
            frames = joint_stereo(self._encoded)[0]
        except ValueError:
            self._encoded = bytearray()
            self._centred = kept
            return None
        ENCODED.put(key.digest(), bytes(frames))
        return frames

    def _encode(self, block: np.ndarray) -> None:
        import numpy as np

        if not len(block):
            return
        scaled = np.multiply(block, 32768, dtype=np.float32)
        np.rint(scaled, out=scaled)
        np.clip(scaled, -32768, 32767, out=scaled)
        self._encoded += self._enc.encode(scaled.astype("<i2").tobytes())


def silent_frame(settings: Mp3Settings, channels: int) -> bytes:
    """One frame of digital silence: a header, side information of zeros (no bits for
    any granule, no bit reservoir), at the stream's rate and bitrate (the least, for VBR)."""
    version = 3 if settings.frame == 1152 else 2
    rate_index = SAMPLE_RATES[version].index(settings.rate)
    index = KBPS[version].index(settings.kbps) if settings.kbps else 1
    mode = 0b01 if channels == 2 else 0b11  # joint stereo, as LAME writes; or mono
    header = bytes([0xFF, 0xE0 | version << 3 | 0b011, index << 4 | rate_index << 2, mode << 6])
    return header + bytes(_frame_size(header) - 4)


# -- frames ---------------------------------------------------------------------------

KBPS = {  # bitrate index -> kb/s, by MPEG version (3: MPEG-1, 2: MPEG-2), layer III
    3: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
SAMPLE_RATES = {3: (44_100, 48_000, 32_000), 2: (22_050, 24_000, 16_000)}


def _frame_size(header: bytes) -> int:
    """The byte length of the layer III frame starting with `header` (0 if it is none)."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE6 != 0xE2:
        return 0
    version = (header[1] >> 3) & 3
    index, rate_index = header[2] >> 4, (header[2] >> 2) & 3
    if version not in KBPS or index in (0, 15) or rate_index == 3:
        return 0
    per_frame = 144 if version == 3 else 72
    return per_frame * KBPS[version][index] * 1000 // SAMPLE_RATES[version][rate_index] + (
        (header[2] >> 1) & 1
    )


def frame_sizes(data: bytes | bytearray, limit: int | None = None) -> array[int]:
    """The byte length of each frame of an MP3 stream (frames only, no tags), of its
    first `limit` frames if given."""
    sizes = array("I")
    known: dict[bytes, int] = {}  # a frame's size by its header's first three bytes
    pos, end = 0, len(data)
    while pos < end and (limit is None or len(sizes) < limit):
        key = bytes(data[pos : pos + 3])
        size = known.get(key)
        if size is None:
            size = known[key] = _frame_size(bytes(data[pos : pos + 4]))
        if size == 0:
            raise ValueError(f"not an MP3 frame at byte {pos}")
        sizes.append(size)
        pos += size
    return sizes


def frame_offsets(data: bytes | bytearray) -> list[int]:
    """Where each frame of an MP3 stream (frames only, no tags) starts."""
    return [0, *itertools.accumulate(frame_sizes(data))][:-1]


def join(
    pieces: Sequence[tuple[bytes | bytearray, Samples, Sequence[int]]],
    settings: Mp3Settings,
    out: IO[bytes],
) -> None:
    """Write the pieces (each its frames, its length in samples at RATE, all but the
    last's a multiple of ``settings.grid``, and its frames' sizes as the encoder kept
    them) as one stream to `out`, after an Info frame."""
    sizes: array[int] = array("I")
    kept: list[memoryview] = []
    total = 0
    for i, (data, frames, own_sizes) in enumerate(pieces):
        keep = None
        if i + 1 < len(pieces):
            if frames % settings.grid:
                raise ValueError(f"piece {i} of {frames} samples is not on the frame grid")
            keep = frames // settings.grid
        if sum(own_sizes) != len(data):
            raise ValueError(f"piece {i}: its frame sizes do not add up to its bytes")
        own = array("I", own_sizes[:keep])
        if keep is not None and len(own) < keep:
            raise ValueError(f"piece {i} has {len(own)} frames, fewer than {keep}")
        kept.append(memoryview(data)[: sum(own)])
        sizes.extend(own)
        total += frames
    if not sizes:
        raise ValueError("an MP3 stream needs at least one frame")
    samples = -(-total * settings.rate // RATE)  # as many as the resampler makes
    first = next(bytes(k[:4]) for k in kept if len(k))
    out.write(_info_frame(first, sizes, samples, settings))
    for part in kept:
        out.write(part)


def _info_frame(first: bytes, sizes: Sequence[int], samples: int, settings: Mp3Settings) -> bytes:
    """A Xing/Info frame with a LAME tag for a stream whose first frame header is
    `first`, whose frames have `sizes` bytes and which holds `samples` at its rate."""
    version = (first[1] >> 3) & 3
    mono = (first[3] >> 6) == 3
    side_info = (17 if mono else 32) if version == 3 else (9 if mono else 17)
    xing_at = 4 + side_info
    needed = xing_at + 120 + 36  # Xing header with seek table, then the LAME tag
    index = next(
        i
        for i in range(1, 15)
        if _frame_size(bytes([0xFF, first[1] | 1, i << 4 | (first[2] & 0x0C), first[3]])) >= needed
    )
    header = bytes([0xFF, first[1] | 1, index << 4 | (first[2] & 0x0C), first[3] & 0xCF])
    size = _frame_size(header)
    frames = len(sizes)
    padding = frames * settings.frame - ENCODER_DELAY - samples
    if not 0 <= padding < 4096:
        raise ValueError(f"{frames} frames cannot hold {samples} samples after the delay")
    stream_bytes = size + sum(sizes)
    # The seek table: where (in 256ths of the stream) each percent of its frames starts.
    targets = [min(frames - 1, i * frames // 100) for i in range(100)]
    wanted, starts, pos = set(targets), {}, size
    for k, s in enumerate(sizes):
        if k in wanted:
            starts[k] = pos
        pos += s
    toc = bytes(min(255, starts[t] * 256 // stream_bytes) for t in targets)
    vbr = settings.vbr is not None
    frame = bytearray(size)
    frame[:4] = header
    frame[xing_at : xing_at + 4] = b"Xing" if vbr else b"Info"
    fields = (0x0F).to_bytes(4, "big") + frames.to_bytes(4, "big") + stream_bytes.to_bytes(4, "big")
    quality = 100 - 10 * (settings.vbr or 0) - LAME_QUALITY
    fields += bytes(toc) + quality.to_bytes(4, "big")
    frame[xing_at + 4 : xing_at + 120] = fields
    tag = bytearray(36)
    tag[:9] = b"LAME3.100"
    tag[9] = 4 if vbr else 1  # tag revision 0; VBR method: 4 VBR (mtrh), 1 CBR
    tag[20] = min(255, settings.kbps or 0)
    tag[21:24] = (ENCODER_DELAY << 12 | padding).to_bytes(3, "big")
    tag[28:32] = stream_bytes.to_bytes(4, "big")
    at = xing_at + 120
    frame[at : at + 34] = tag[:34]
    frame[at + 34 : at + 36] = _crc16(bytes(frame[: at + 34])).to_bytes(2, "big")
    return bytes(frame)


def _crc16(data: bytes) -> int:
    """CRC-16 (polynomial 0x8005, reflected: CRC-16/ARC), as the LAME tag's own CRC."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


class Mp3Encoder:
    """The MP3 encoder coach.writer drives: pieces encoded at the same time, joined into
    `path` at ``finish``, then tagged (ID3v2.3: tags and chapters)."""

    pcm16 = False

    def __init__(self, path: Path, channels: int, quality: str | int, meta: Metadata) -> None:
        self.path = path
        self.channels = channels
        self.meta = meta
        self.settings = settings_for(quality)
        self.grid: Samples | None = self.settings.grid

    def piece(self, start: Samples) -> Mp3Piece:
        return Mp3Piece(self.settings, self.channels)

    def finish(self, pieces: Sequence[Piece], lengths: Sequence[Samples]) -> None:
        from coach.encoders import EncodeError, embed

        encoded = []
        for piece, length in zip(pieces, lengths, strict=True):
            assert isinstance(piece, Mp3Piece)
            encoded.append((piece.finish(), length, piece.sizes))
        try:
            with open(self.path, "wb") as out:
                join(encoded, self.settings, out)
        except OSError as e:
            raise EncodeError(e.strerror or str(e)) from e
        embed(self.path, ".mp3", self.meta)

    def abort(self) -> None:
        pass
