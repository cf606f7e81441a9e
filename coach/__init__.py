"""coach: an offline, voice-guided audio coach for giving a massage.

The flow, one module a stage: routine (YAML file) -> timeline (every cue, chime and
pulse with its start and end) -> audio (speech, chimes, mixing) -> speakers or file.
"""

__version__ = "0.1.0"
