"""A session: a routine with its settings, prepared down to its timeline.

This is the glue every command shares (preview, render, run): pick the voice pack (or
its fallback where this machine lacks the pack's engine or model), match the machine's TTS
voice, synthesize (or find in the cache) every text the session speaks, and build the
timeline from the measured lengths.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from coach.chimes import PULSE_SECONDS, SYNTH_CHIMES
from coach.errors import SpeechError, UsageError, VoicePackError
from coach.routine import Routine, load_routine, pace_name
from coach.script import Script, write_script
from coach.timeline import Pacing, Sounds, Timeline, build
from coach.units import Seconds, to_samples
from coach.voicepack import (
    VoicePack,
    check_language,
    default_pack,
    load_pack,
    resolve_voice,
    usable_pack,
)

if TYPE_CHECKING:
    import numpy as np

    from coach.loudness import Summary
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
    #: Words a minute of the session's synthesized cues, measured on their clips.
    measured_rate: int = 0

    @property
    def voice_id(self) -> str:
        """The machine's TTS voice that speaks the session (a Piper model's name)."""
        return self.settings.voice

    @property
    def rate(self) -> int:
        """Words a minute: the rate pyttsx3 is asked for; for Piper, which has no rate
        setting, the rate measured on the session's clips."""
        return self.settings.rate if self.settings.engine == "pyttsx3" else self.measured_rate

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
        """A chime the pack brings as a file, else one of the project's own, kept in the
        speech cache once synthesized (it takes a tenth of a second to make)."""
        own = self.recorded.get(name)
        return own if own is not None else self.cache.chime(name)

    def summary(self, text: str) -> Summary:
        """A clip's loudness summary: kept in the speech cache beside the clip."""
        from coach import loudness

        clip = self.recorded.get(text)
        if clip is not None:
            return loudness.summarize(clip)
        return self.cache.summary(text, self.settings)


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
    """The pack the options or the routine name, else the machine's default (gentle-en
    where Piper is installed, calm-en otherwise). Its engine is not checked here."""
    name = voice or routine.voice or default_pack()
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
    pack, warning = usable_pack(choose_pack(routine, options.voice))
    warnings = [warning] if warning else []
    check_language(pack, routine)
    settings, warning = speech_settings(pack, options.rate)
    if warning:
        warnings.append(warning)
    script = write_script(routine, pack, countdown=options.countdown)
    cache = speech.SpeechCache()
    synth = speech.Synthesizer(cache)
    texts = script.texts()
    if live:
        texts |= script.control_texts()
    recorded = load_recordings(pack, texts)
    # The project's chimes it plays are made meanwhile where the cache lacks them (a
    # tenth of a second each), while the speech engine works, not later by the render.
    wanted = sorted(n for n in set(pack.chimes.values()) if n in SYNTH_CHIMES)
    chiming = threading.Thread(
        target=lambda: [cache.chime(n) for n in wanted if options.chimes], daemon=True
    )
    chiming.start()
    lengths = synth.ensure(sorted(texts - recorded.keys()), settings, progress=progress)
    chiming.join()
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
    synthesized = {text: n for text, n in lengths.items() if text not in recorded}
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
        measured_rate(synthesized),
    )


def speech_settings(pack: VoicePack, rate: int | None = None) -> tuple[SpeechSettings, str | None]:
    """How the pack speaks on this machine (its engine is installed: see `usable_pack`),
    and a warning when its pyttsx3 voice had to be replaced. `rate` (words a minute)
    overrides the pack's rate, or for Piper sets the length scale that gives about it."""
    from coach import speech

    if pack.engine == "piper":
        from coach import speech_piper

        model = speech_piper.find_model(pack.voice)
        if model is None:  # usable_pack checked it: gone since
            raise SpeechError(
                f"the Piper voice {pack.voice} is not installed "
                f"({speech_piper.missing_model_hint(pack.voice)})"
            )
        scale = speech_piper.length_scale_for(rate) if rate else pack.length_scale
        settings = speech.SpeechSettings(
            voice=model.name,
            rate=round(speech_piper.WPM_AT_SCALE_1 / scale),
            engine="piper",
            model=str(model.model),
            length_scale=scale,
            sentence_silence=pack.sentence_silence,
            lexicon=pack.lexicon,
        )
        return settings, None
    voice, warning = resolve_voice(pack, speech.list_voices())
    settings = speech.SpeechSettings(voice=voice.id, rate=rate or pack.rate, lexicon=pack.lexicon)
    return settings, warning


def measured_rate(lengths: Mapping[str, int]) -> int:
    """Words a minute of these clips (text -> samples at RATE), margins left out."""
    from coach.speech import LEAD, TAIL
    from coach.units import RATE

    words = sum(len(text.split()) for text in lengths)
    seconds = sum(n / RATE - LEAD - TAIL for n in lengths.values())
    return round(60 * words / seconds) if seconds > 0 else 0


def pace_label(factor: float) -> str:
    name = pace_name(factor)
    return f"{name} ({factor:.2f}x)" if name else f"{factor:.2f}x"
