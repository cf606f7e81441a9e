"""Mono MP3 frames rewritten as joint-stereo frames: the same sound in both channels, for
a fraction of the work of encoding it as stereo.

Almost all of a session is centred (the words, the pulses, the step bell: the same
samples in both channels); only the side chimes are panned. LAME encodes a centred
stretch as stereo at less than half the speed it encodes it as mono, for a larger file.
So ``coach.mp3`` encodes such a stretch as mono, and this module turns each mono frame
into a mid/side stereo frame of the same stream (players do not take a stream whose
channels change): the mid channel carries the mono frame's own coded data, untouched,
2 steps (a factor of sqrt 2) louder by its global gain, and the side channel is empty.
A decoder makes left = (mid + side) / sqrt 2 = the mono sound, and right the same.

A frame's coded data (its main data) may begin in earlier frames (the bit reservoir),
and stereo side information is 8 or 15 bytes longer than mono, so the data is laid out
again: each frame takes the smallest bitrate whose room, with what the frames before it
left free, holds its data (the stream is VBR either way). The layout follows ISO/IEC
11172-3 and 13818-3, layer III, as written by LAME (no CRC).
"""

from __future__ import annotations

import bisect
from array import array
from dataclasses import dataclass
from functools import cache

from coach.mp3 import KBPS, SAMPLE_RATES

#: Bytes of the decoder's input buffer (7680 bits) a frame's data may reach back into,
#: with the frame itself.
_BUFFER = 960


@dataclass(frozen=True)
class _Layout:
    """Layer III side information of one MPEG version: field widths in bits."""

    granules: int
    begin_bits: int  # main_data_begin
    private_mono: int
    private_stereo: int
    scfsi: int  # scfsi bits, per channel
    channel_bits: int  # one granule of one channel
    compress_bits: int  # scalefac_compress

    def side_bytes(self, channels: int) -> int:
        private = self.private_mono if channels == 1 else self.private_stereo
        bits = self.begin_bits + private + self.scfsi * channels
        return (bits + self.granules * channels * self.channel_bits) // 8


_LAYOUTS = {
    3: _Layout(2, begin_bits=9, private_mono=5, private_stereo=3, scfsi=4, channel_bits=59,
               compress_bits=4),
    2: _Layout(1, begin_bits=8, private_mono=1, private_stereo=2, scfsi=0, channel_bits=63,
               compress_bits=9),
}  # fmt: skip


@cache
def _rooms(version: int, rate_index: int) -> tuple[list[int], list[int]]:
    """For bitrate indexes 1..14 of a stereo frame: (its bytes of main data room, its
    bytes), the rooms in rising order."""
    per_frame = 144 if version == 3 else 72
    sizes = [per_frame * k * 1000 // SAMPLE_RATES[version][rate_index] for k in KBPS[version][1:]]
    side = 4 + _LAYOUTS[version].side_bytes(2)
    return [size - side for size in sizes], sizes


def joint_stereo(mono: bytes | bytearray) -> tuple[bytearray, array[int]]:
    """The frames of a mono layer III stream (frames only, no tags, as LAME makes them:
    no CRC, no padding) as joint-stereo frames that decode to it in both channels; and
    their byte lengths. Raises ValueError for a stream it cannot rewrite."""
    heads: list[bytes] = []  # each new frame's header and side information
    rooms: list[int] = []  # its bytes of main data
    area = bytearray()  # the new frames' main data, one frame's room after another
    free = 0  # bytes at the end of `area` that no frame's data uses
    old = bytearray()  # the mono frames' main data areas, one after another
    pos, end = 0, len(mono)
    while pos < end:
        h = mono[pos : pos + 4]
        if len(h) < 4 or h[0] != 0xFF or h[1] & 0xE7 != 0xE3 or h[3] >> 6 != 3:
            raise ValueError(f"not a mono layer III frame without a CRC at byte {pos}")
        version, index, rate_index = (h[1] >> 3) & 3, h[2] >> 4, (h[2] >> 2) & 3
        if version not in _LAYOUTS or index in (0, 15) or rate_index == 3 or h[2] & 2:
            raise ValueError(f"a frame this module does not rewrite at byte {pos}")
        layout = _LAYOUTS[version]
        new_rooms, new_sizes = _rooms(version, rate_index)
        size = new_sizes[index - 1]  # (a frame's size is its bitrate's, mono or stereo)
        side_len = layout.side_bytes(1)
        side = int.from_bytes(mono[pos + 4 : pos + 4 + side_len], "big")
        # The mono side information, last field first.
        n = layout.channel_bits
        granules = []
        for _ in range(layout.granules):
            granules.append(side & ((1 << n) - 1))
            side >>= n
        granules.reverse()
        scfsi = side & ((1 << layout.scfsi) - 1)
        side >>= layout.scfsi + layout.private_mono
        begin = side
        start = len(old) - begin
        old += mono[pos + 4 + side_len : pos + size]
        bits = sum(g >> (n - 12) for g in granules)  # part2_3_length
        data = old[start : start + (bits + 7) // 8]
        if start < 0 or len(data) * 8 < bits:
            raise ValueError(f"a frame's data lies outside the stream, at byte {pos}")
        del old[: max(0, len(old) - 512)]  # no later frame reaches back further
        # The new frame: the smallest bitrate whose room, with what the frames before it
        # left free (up to what main_data_begin and the decoder's buffer allow), holds
        # the data.
        limit = (1 << layout.begin_bits) - 1
        k = bisect.bisect_left(new_rooms, len(data) - min(free, limit))
        while k < len(new_rooms):
            begin = min(free, limit, _BUFFER - new_sizes[k])
            if begin >= 0 and begin + new_rooms[k] >= len(data):
                break
            k += 1
        else:
            raise ValueError("a frame's data does not fit a stereo frame")
        value, width = _stereo_side(layout, scfsi, granules)
        # Joint stereo with mid/side on and intensity off; copyright, original and
        # emphasis as they were.
        header = bytes([0xFF, h[1], (k + 1) << 4 | rate_index << 2, 0b0110 << 4 | h[3] & 0x0F])
        heads.append(header + ((begin << width) | value).to_bytes(layout.side_bytes(2), "big"))
        at = len(area) - begin
        area += bytes(new_rooms[k])
        area[at : at + len(data)] = data
        free = len(area) - at - len(data)
        rooms.append(new_rooms[k])
        pos += size
    out = bytearray()
    sizes: array[int] = array("I")
    at = 0
    for head, room in zip(heads, rooms, strict=True):
        out += head
        out += area[at : at + room]
        at += room
        sizes.append(len(head) + room)
    return out, sizes


def _stereo_side(layout: _Layout, scfsi: int, granules: list[int]) -> tuple[int, int]:
    """Stereo side information after main_data_begin, as (its value, its bits): the
    left channel, used as mid, is the mono granule 2 gain steps (a factor of sqrt 2)
    louder; the right channel, used as side, codes nothing (no scalefactors, no values)
    with the mid channel's window (both channels of a mid/side frame are transformed
    alike)."""
    n = layout.channel_bits
    value = (scfsi << layout.scfsi) if layout.scfsi else 0  # after the private bits
    gain_at = n - 12 - 9 - 8  # part2_3_length and big_values come before global_gain
    window_at = gain_at - layout.compress_bits - 1  # the window switching flag
    for g in granules:
        if g >> (n - 12):  # coded data, so a gain to raise
            if (g >> gain_at) & 0xFF > 253:
                raise ValueError("a granule too loud to raise its gain")
            g += 2 << gain_at
        empty = g & (0b1111 << (window_at - 3)) if (g >> window_at) & 1 else 0
        value = (value << 2 * n) | (g << n) | empty
    return value, layout.private_stereo + 2 * layout.scfsi + layout.granules * 2 * n
