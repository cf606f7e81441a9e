"""Units of time. Inside the engine every time is an integer count of samples at RATE,
so that nothing drifts; seconds appear only at the edges (files, screens, JSON)."""

from typing import TypeAlias

Samples: TypeAlias = int
Seconds: TypeAlias = float

#: The one sample rate of the timeline, the mixer and every output.
RATE: Samples = 48_000


def to_samples(seconds: Seconds) -> Samples:
    """The nearest whole sample to a time in seconds."""
    return round(seconds * RATE)


def to_seconds(samples: Samples) -> Seconds:
    return samples / RATE
