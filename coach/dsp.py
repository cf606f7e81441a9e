"""Small signal helpers shared by the chimes, the speech clips, the ambient track and the
live player: the one raised-cosine ramp every fade is made of."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


def raised_cosine(angle: np.ndarray) -> np.ndarray:
    """0.5 - 0.5 cos(angle): 0 at angle 0, 1 at pi, smooth at both ends. Callers choose
    where the ramp is sampled (whether it includes its end points) by the angles."""
    import numpy as np

    ramp: np.ndarray = 0.5 - 0.5 * np.cos(angle)
    return ramp


def falling_cosine(angle: np.ndarray) -> np.ndarray:
    """0.5 + 0.5 cos(angle): the same ramp going down, 1 at angle 0 and 0 at pi."""
    import numpy as np

    ramp: np.ndarray = 0.5 + 0.5 * np.cos(angle)
    return ramp


def rising(n: int) -> np.ndarray:
    """n float32 gains rising from near 0 to near 1, sampled at the middle of each of n
    equal parts (a crossfade's two halves then sum to one)."""
    import numpy as np

    return raised_cosine(np.pi * (np.arange(n) + 0.5) / max(n, 1)).astype(np.float32)
