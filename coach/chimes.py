"""The chimes and the rhythm pulse the project makes itself.

The timeline needs only their lengths, so those are plain numbers here; the samples are
made by the audio stage from the same table.
"""

from __future__ import annotations

from coach.units import Seconds

#: Synthesized chime sounds by name, with their length.
SYNTH_CHIMES: dict[str, Seconds] = {
    "bell": 2.5,
    "bell-bright": 2.0,
    "bell-low": 3.5,
    "wood": 0.6,
}

#: The soft low pulse of a step's rhythm.
PULSE_SECONDS: Seconds = 0.18
