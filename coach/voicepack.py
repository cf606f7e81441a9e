"""Voice packs: how the coach sounds (the README's "Voice packs").

A pack is a folder with a pack.yaml: the speech engine (pyttsx3, the default, or piper
with its model) and that engine's settings (pyttsx3: voice and rate; piper: length scale
and sentence silence), volume, a pronunciation lexicon, the language, the phrases the coach
itself says, and the chimes. Packs ship in voice_packs/ (inside the package once
installed) and users add their own under $XDG_DATA_HOME/coach/voice_packs. This module
reads and checks packs, picks the pack to use where an engine or model is missing
(`usable_pack`), and the machine's voice for one; it does not synthesize anything.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from coach import yamlfile
from coach.chimes import SYNTH_CHIMES
from coach.errors import UsageError, VoicePackError
from coach.routine import MAX_CUE_CHARS, Routine, Where
from coach.yamlfile import Field

FORMAT_VERSION = 1
#: The default pack where Piper and its voice are installed, and the one otherwise.
NEURAL_PACK = "gentle-en"
FALLBACK_PACK = "calm-en"
RATE_RANGE = (80, 450)
#: The pause between a run's title and its instructions (`title_pause:` in a pack), and
#: the range a pack may set.
TITLE_PAUSE = 0.7
TITLE_PAUSE_RANGE = (0.35, 3.0)
ENGINE_NAMES = ("pyttsx3", "piper")
#: The rate of a pyttsx3 voice that stands in for a pack whose engine is missing.
FALLBACK_RATE = 150

#: Phrase name -> the placeholders it may use.
PHRASES: dict[str, tuple[str, ...]] = {
    "next_step": ("title",),
    "switch_sides": ("side",),
    "countdown": ("seconds",),
    "halfway": (),
    "paused": (),
    "resumed": (),
    "finished": (),
    "more_pressure": (),
    "less_pressure": (),
    "left": (),
    "right": (),
}
CHIME_ROLES = ("step", "side", "end")


@dataclass(frozen=True)
class Phrases:
    next_step: str
    switch_sides: str
    countdown: str
    halfway: str
    paused: str
    resumed: str
    finished: str
    more_pressure: str
    less_pressure: str
    left: str
    right: str

    def side(self, side: str) -> str:
        return self.left if side == "left" else self.right


@dataclass(frozen=True)
class VoicePack:
    id: str
    name: str
    language: str
    voice: str  # pyttsx3: the voice id, name or language; piper: the model's name
    rate: int  # pyttsx3: words a minute (piper: none, 0)
    volume: float
    phrases: Phrases
    title_pause: float = TITLE_PAUSE  # seconds between a run's title and its instructions
    chimes: dict[str, str] = field(default_factory=dict)  # role -> synth name or file
    clips: dict[str, Path] = field(default_factory=dict)  # exact text -> recorded clip
    sound_files: dict[str, Path] = field(default_factory=dict)  # chime name -> its WAV
    folder: Path | None = None
    source: str = "<pack>"
    language_where: Where | None = None
    engine: str = "pyttsx3"
    length_scale: float = 1.0  # piper
    sentence_silence: float = 0.0  # piper, seconds between sentences
    lexicon: tuple[tuple[str, str], ...] = ()  # written word -> spoken form
    fallback: str | None = None  # the pack to use where this one's engine is missing

    def describe(self) -> str:
        """Engine, voice and speed in a few words, for `coach list`."""
        if self.engine == "piper":
            pause = f", {self.sentence_silence:g} s between sentences" * bool(self.sentence_silence)
            return f"piper {self.voice}, length scale {self.length_scale:g}{pause}"
        # The engine's own rate setting: espeak-ng speaks faster than it says (calm-en's
        # 122 measures about 145 words a minute), so it is not called words a minute.
        return f"pyttsx3 {self.voice}, rate {self.rate}"


def default_pack() -> str:
    """gentle-en where Piper and its voice are installed, else calm-en."""
    if NEURAL_PACK in available_packs():
        try:
            pack = load_pack(NEURAL_PACK)
        except (UsageError, VoicePackError):
            return FALLBACK_PACK
        if engine_missing(pack) is None:
            return NEURAL_PACK
    return FALLBACK_PACK


def engine_missing(pack: VoicePack) -> str | None:
    """None when this machine has the pack's engine and model, else what is missing and
    how to install it (for a warning). pyttsx3 itself is a dependency: its voices are
    matched later (`resolve_voice`)."""
    if pack.engine != "piper":
        return None
    from coach import speech_piper

    if not speech_piper.piper_installed():
        return f"Piper is not installed ({speech_piper.INSTALL_HINT})"
    if speech_piper.find_model(pack.voice) is None:
        return (
            f"the Piper voice {pack.voice} is not installed "
            f"({speech_piper.missing_model_hint(pack.voice)})"
        )
    return None


def usable_pack(pack: VoicePack) -> tuple[VoicePack, str | None]:
    """The pack itself where this machine has its engine and model; else its `fallback`
    pack, or the pack's own words spoken by the language's pyttsx3 voice; with a one-line
    warning saying what is missing and how to install it."""
    missing = engine_missing(pack)
    if missing is None:
        return pack, None
    if pack.fallback:
        other = load_pack(pack.fallback)
        if engine_missing(other) is None:
            return other, f"voice pack {pack.id}: {missing}; using {other.id}"
    stand_in = replace(
        pack, engine="pyttsx3", voice=primary_language(pack.language), rate=FALLBACK_RATE
    )
    return stand_in, (
        f"voice pack {pack.id}: {missing}; using the system voice for {pack.language}"
    )


def builtin_pack_dir() -> Path:
    """voice_packs/ inside the installed package, or at the top of a source checkout."""
    inside = Path(__file__).parent / "voice_packs"
    return inside if inside.is_dir() else Path(__file__).parent.parent / "voice_packs"


def user_pack_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "coach" / "voice_packs"


def available_packs() -> dict[str, Path]:
    """Pack id -> folder. A user's pack of the same name overrides a built-in one.

    A folder we may not look into is listed, so that loading it says why it cannot be
    read; a packs folder we may not list is skipped."""
    packs: dict[str, Path] = {}
    for root in (builtin_pack_dir(), user_pack_dir()):
        try:
            folders = sorted(root.iterdir()) if root.is_dir() else []
        except OSError:
            continue
        for folder in folders:
            if _has_pack_file(folder):
                packs[folder.name] = folder
    return packs


def _has_pack_file(folder: Path) -> bool:
    try:
        return (folder / "pack.yaml").is_file()
    except PermissionError:
        return True
    except OSError:
        return False


def load_pack(name: str) -> VoicePack:
    if not name.strip():
        raise UsageError("an empty voice pack name; give a pack's name (see `coach list`)")
    packs = available_packs()
    if name in packs:
        folder = packs[name]
    elif _has_pack_file(Path(name)):
        folder = Path(name)
    else:
        raise UsageError(
            f"no voice pack named {name!r} (available: {', '.join(packs) or 'none'}; "
            "see `coach list`)"
        )
    pack_file = folder / "pack.yaml"
    root = yamlfile.load(pack_file, str(pack_file), VoicePackError)
    return read_pack(root, folder)


def read_pack(root: Field, folder: Path) -> VoicePack:
    top = root.mapping(
        required=("pack", "language", "phrases"),
        optional=(
            "name",
            "engine",
            "voice",
            "rate",
            "model",
            "length_scale",
            "sentence_silence",
            "lexicon",
            "fallback",
            "volume",
            "title_pause",
            "chimes",
            "clips",
        ),
    )
    if top["pack"].integer(low=0, high=10**6) != FORMAT_VERSION:
        top["pack"].fail(
            f"format version {top['pack'].node.value} is not supported "
            f"(write `pack: {FORMAT_VERSION}`)"
        )
    given = top["phrases"].mapping(required=tuple(PHRASES))
    phrases = Phrases(
        **{k: given[k].cue(PHRASES[k], max_chars=MAX_CUE_CHARS, multiline=False) for k in PHRASES}
    )
    chimes = {role: "bell" for role in CHIME_ROLES}
    sound_files: dict[str, Path] = {}
    if "chimes" in top:
        for role, value in top["chimes"].mapping(optional=CHIME_ROLES).items():
            chime = value.text()
            if chime.lower().endswith((".wav", ".flac", ".ogg")):
                sound_files[chime] = _sound_file(value, folder)
            elif chime not in SYNTH_CHIMES:
                value.fail(
                    f"{value.raw} is not a chime (expected one of: {', '.join(SYNTH_CHIMES)}, "
                    "or a .wav file in the pack's folder)"
                )
            chimes[role] = chime
    clips: dict[str, Path] = {}
    if "clips" in top:
        for key, value in top["clips"].entries():
            clips[key.text(multiline=True)] = _sound_file(value, folder)
    lang = top["language"]
    language = lang.text()
    engine = top["engine"].text() if "engine" in top else "pyttsx3"
    if engine not in ENGINE_NAMES:
        top["engine"].fail(
            f"{top['engine'].raw} is not a speech engine (expected one of: "
            f"{', '.join(ENGINE_NAMES)})"
        )
    engine_fields = _engine_fields(root, top, engine)
    lexicon: list[tuple[str, str]] = []
    if "lexicon" in top:
        for key, value in top["lexicon"].entries():
            word, said = key.text(), value.text()
            if not word.strip() or not said.strip():
                value.fail("a lexicon entry needs a word and its spoken form")
            lexicon.append((word, said))
    return VoicePack(
        id=folder.name,
        name=top["name"].text() if "name" in top else folder.name,
        language=language,
        **engine_fields,
        lexicon=tuple(lexicon),
        fallback=top["fallback"].text() if "fallback" in top else None,
        volume=top["volume"].number(low=0.0, high=1.0) if "volume" in top else 1.0,
        title_pause=top["title_pause"].number(low=TITLE_PAUSE_RANGE[0], high=TITLE_PAUSE_RANGE[1])
        if "title_pause" in top
        else TITLE_PAUSE,
        phrases=phrases,
        chimes=chimes,
        clips=clips,
        sound_files=sound_files,
        folder=folder,
        source=root.src.label,
        language_where=Where(
            root.src.label, lang.node.start_mark.line + 1, lang.node.start_mark.column + 1
        ),
    )


def _engine_fields(root: Field, top: dict[str, Field], engine: str) -> dict[str, Any]:
    """The pack's engine settings: pyttsx3 needs voice and rate, piper its model and takes
    a length scale and sentence silence; the other engine's settings are refused."""
    if engine == "pyttsx3":
        for name in ("model", "length_scale", "sentence_silence"):
            if name in top:
                top[name].fail("is a setting of the piper engine (write `engine: piper`)")
        for name in ("voice", "rate"):
            if name not in top:
                root.fail(f"a pyttsx3 pack needs `{name}:`")
        return {
            "engine": "pyttsx3",
            "voice": top["voice"].text(),
            "rate": top["rate"].integer(low=RATE_RANGE[0], high=RATE_RANGE[1]),
        }
    from coach.speech_piper import LENGTH_SCALE_RANGE, SENTENCE_SILENCE_RANGE

    for name in ("voice", "rate"):
        if name in top:
            top[name].fail(
                "is a setting of the pyttsx3 engine (a piper pack names its `model:` and "
                "sets `length_scale:`)"
            )
    if "model" not in top:
        root.fail("a piper pack needs `model:` (a voice such as en_US-joe-medium)")
    model = top["model"].text()
    if "/" in model or "\\" in model:
        top["model"].fail(
            f"{top['model'].raw} is a path; name the voice (a file in the voices folder "
            "or an installed voice package's name)"
        )
    return {
        "engine": "piper",
        "voice": model[: -len(".onnx")] if model.endswith(".onnx") else model,
        "rate": 0,
        "length_scale": top["length_scale"].number(
            low=LENGTH_SCALE_RANGE[0], high=LENGTH_SCALE_RANGE[1]
        )
        if "length_scale" in top
        else 1.0,
        "sentence_silence": top["sentence_silence"].number(
            low=SENTENCE_SILENCE_RANGE[0], high=SENTENCE_SILENCE_RANGE[1]
        )
        if "sentence_silence" in top
        else 0.0,
    }


def _sound_file(value: Field, folder: Path) -> Path:
    """A recording named in a pack: a path inside the pack's folder to a readable audio
    file. Checked when the pack is read, so a bad one is reported at its line."""
    from coach.errors import InputError
    from coach.soundfiles import probe_sound

    relative = value.text()
    path = (folder / relative).resolve()
    if Path(relative).is_absolute() or not path.is_relative_to(folder.resolve()):
        value.fail(f"{value.raw} leaves the pack's folder; clips and chimes live inside it")
    try:
        probe_sound(path)
    except InputError as exc:
        value.fail(f"{value.raw}: {exc.message}")
    return path


def primary_language(code: str) -> str:
    return code.replace("_", "-").split("-")[0].lower()


def check_language(pack: VoicePack, routine: Routine) -> None:
    """A routine in one language is not read by a voice pack of another."""
    if routine.language is None or primary_language(routine.language) == primary_language(
        pack.language
    ):
        return
    w = pack.language_where
    raise VoicePackError(
        f'"{pack.language}" does not match the language of {routine.source} '
        f'("{routine.language}"); pick a {routine.language} pack with --voice',
        file=w.file if w else pack.source,
        line=w.line if w else None,
        column=w.column if w else None,
        field="language",
    )


class VoiceLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def languages(self) -> tuple[str, ...]: ...


def resolve_voice(pack: VoicePack, voices: Sequence[VoiceLike]) -> tuple[VoiceLike, str | None]:
    """The machine's voice for a pack, and a warning when it had to fall back.

    The pack's `voice` is matched by id, then by name, then as a language; failing all
    three, the first voice of the pack's language is used, with a warning.
    """
    want = pack.voice.lower()
    for match in (
        lambda v: v.id.lower() == want,
        lambda v: v.name.lower() == want,
        lambda v: any(lang.lower() == want for lang in v.languages),
    ):
        for v in voices:
            if match(v):
                return v, None
    lang = primary_language(pack.language)
    for exact in (True, False):
        for v in voices:
            for code in v.languages:
                if (code.lower() == lang) if exact else (primary_language(code) == lang):
                    return v, (
                        f"voice pack {pack.id}: this machine has no voice {pack.voice!r}; "
                        f"using {v.id} ({v.name}) for language {pack.language}"
                    )
    raise VoicePackError(
        f"this machine has no voice {pack.voice!r} and none for language {pack.language!r} "
        "(see `coach voices`)",
        file=pack.source,
    )
