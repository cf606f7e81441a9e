"""A session: a routine with its settings, prepared down to its timeline.

This is the glue every command shares (preview, render, run): pick the voice pack,
match the machine's TTS voice, synthesize (or find in the cache) every text the session
speaks, and build the timeline from the measured lengths.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from coach.chimes import PULSE_SECONDS, SYNTH_CHIMES
from coach.errors import UsageError, VoicePackError
from coach.routine import Routine, load_routine, pace_name
from coach.script import Script, write_script
from coach.timeline import Pacing, Sounds, Timeline, build
from coach.units import Seconds, to_samples
from coach.voicepack import DEFAULT_PACK, VoicePack, check_language, load_pack, resolve_voice

if TYPE_CHECKING:
    import numpy as np

    from coach.speech import SpeechCache, SpeechSettings


@dataclass(frozen=True)
class Options:
    """The options preview, run and render share."""

    pace: float | None = None
    length: Seconds | None = None
    voice: str | None = None
    rate: int | None = None
    chimes: bool = True
    countdown: Seconds | None = None


@dataclass(frozen=True)
class Prepared:
    routine: Routine
    pack: VoicePack
    script: Script
    timeline: Timeline
    warnings: tuple[str, ...]  # about the machine (voice fallback), not the timeline
    settings: SpeechSettings
    cache: SpeechCache
    sounds: Sounds
    chimes: bool
    recorded: Mapping[str, np.ndarray]  # the pack's recorded clips and chime files

    @property
    def voice_id(self) -> str:
        """The machine's TTS voice that speaks the session."""
        return self.settings.voice

    @property
    def rate(self) -> int:
        return self.settings.rate

    def clips(self) -> CachedClips:
        """Where the mixer finds this session's speech samples (and pack chimes)."""
        return CachedClips(self.cache, self.settings, self.recorded)


@dataclass(frozen=True)
class CachedClips:
    """Speech from the voice pack's recordings where it has them, else from the cache."""

    cache: SpeechCache
    settings: SpeechSettings
    recorded: Mapping[str, np.ndarray]

    def load(self, text: str) -> np.ndarray:
        clip = self.recorded.get(text)
        return clip if clip is not None else self.cache.load(text, self.settings)

    def chime(self, name: str) -> np.ndarray | None:
        """A chime the pack brings as a file (None: one of the project's own)."""
        return self.recorded.get(name)


def load_recordings(pack: VoicePack, wanted: Iterable[str]) -> dict[str, np.ndarray]:
    """The pack's recorded clips for the texts a session says, levelled like synthesized
    speech, and its chime files, as float32 mono at RATE."""
    from coach import loudness
    from coach.soundfiles import read_sound

    out = {}
    for text in wanted:
        if text in pack.clips:
            out[text] = loudness.level_speech(read_sound(pack.clips[text]))
    for name, path in pack.sound_files.items():
        out[name] = read_sound(path)
    return out


def choose_pack(routine: Routine, voice: str | None) -> VoicePack:
    name = voice or routine.voice or DEFAULT_PACK
    try:
        pack = load_pack(name)
    except UsageError as exc:
        w = routine.voice_where
        if voice is None and w is not None:
            raise VoicePackError(
                str(exc), file=w.file, line=w.line, column=w.column, field="voice"
            ) from None
        raise
    check_language(pack, routine)
    return pack


def prepare(
    routine_ref: str | Routine,
    options: Options = Options(),
    *,
    progress: Callable[[int, int], None] | None = None,
    live: bool = False,
) -> Prepared:
    """Load, synthesize and lay out a session. Raises CoachError subclasses only.
    `live` also synthesizes what a live session may say on request (paused, resumed,
    the pressure hints)."""
    from coach import speech  # heavy-ish: pyttsx3, numpy; only when a session is made

    routine = load_routine(routine_ref) if isinstance(routine_ref, str) else routine_ref
    pack = choose_pack(routine, options.voice)
    warnings: list[str] = []
    voice, warning = resolve_voice(pack, speech.list_voices())
    if warning:
        warnings.append(warning)
    settings = speech.SpeechSettings(voice=voice.id, rate=options.rate or pack.rate)
    script = write_script(routine, pack, countdown=options.countdown)
    cache = speech.SpeechCache()
    synth = speech.Synthesizer(cache)
    texts = script.texts()
    if live:
        texts |= script.control_texts()
    recorded = load_recordings(pack, texts)
    lengths = synth.ensure(sorted(texts - recorded.keys()), settings, progress=progress)
    lengths.update({text: len(recorded[text]) for text in texts & recorded.keys()})
    chimes = {name: to_samples(s) for name, s in SYNTH_CHIMES.items()}
    chimes.update({name: len(recorded[name]) for name in pack.sound_files})
    sounds = Sounds(speech=lengths, chimes=chimes, pulse=to_samples(PULSE_SECONDS))
    pace = options.pace if options.pace is not None else (routine.pace or 1.0)
    pacing = Pacing(
        pace=pace,
        length=to_samples(options.length) if options.length is not None else None,
        chimes=options.chimes,
    )
    timeline = build(script, sounds, pacing)
    return Prepared(
        routine,
        pack,
        script,
        timeline,
        tuple(warnings),
        settings,
        cache,
        sounds,
        options.chimes,
        recorded,
    )


def pace_label(factor: float) -> str:
    name = pace_name(factor)
    return f"{name} ({factor:.2f}x)" if name else f"{factor:.2f}x"
