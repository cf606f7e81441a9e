"""Voice packs: how the coach sounds (the README's "Voice packs").

A pack is a folder with a pack.yaml: the TTS voice, rate and volume, the language, the
phrases the coach itself says, and the chimes. Packs ship in voice_packs/ (inside the
package once installed) and users add their own under $XDG_DATA_HOME/coach/voice_packs.
This module reads and checks packs and picks the machine's voice for one; it does not
synthesize anything.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from coach import yamlfile
from coach.chimes import SYNTH_CHIMES
from coach.errors import UsageError, VoicePackError
from coach.routine import Routine, Where
from coach.yamlfile import Field

FORMAT_VERSION = 1
DEFAULT_PACK = "calm-en"
RATE_RANGE = (80, 450)

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
    voice: str
    rate: int
    volume: float
    phrases: Phrases
    chimes: dict[str, str] = field(default_factory=dict)  # role -> synth name or file
    clips: dict[str, Path] = field(default_factory=dict)  # exact text -> recorded clip
    sound_files: dict[str, Path] = field(default_factory=dict)  # chime name -> its WAV
    folder: Path | None = None
    source: str = "<pack>"
    language_where: Where | None = None


def builtin_pack_dir() -> Path:
    """voice_packs/ inside the installed package, or at the top of a source checkout."""
    inside = Path(__file__).parent / "voice_packs"
    return inside if inside.is_dir() else Path(__file__).parent.parent / "voice_packs"


def user_pack_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "coach" / "voice_packs"


def available_packs() -> dict[str, Path]:
    """Pack id -> folder. A user's pack of the same name overrides a built-in one."""
    packs: dict[str, Path] = {}
    for root in (builtin_pack_dir(), user_pack_dir()):
        if root.is_dir():
            for folder in sorted(root.iterdir()):
                if (folder / "pack.yaml").is_file():
                    packs[folder.name] = folder
    return packs


def load_pack(name: str) -> VoicePack:
    packs = available_packs()
    if name in packs:
        folder = packs[name]
    elif Path(name, "pack.yaml").is_file():
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
        required=("pack", "language", "voice", "rate", "phrases"),
        optional=("name", "volume", "chimes", "clips"),
    )
    if top["pack"].integer(low=0, high=10**6) != FORMAT_VERSION:
        top["pack"].fail(
            f"format version {top['pack'].node.value} is not supported "
            f"(write `pack: {FORMAT_VERSION}`)"
        )
    given = top["phrases"].mapping(required=tuple(PHRASES))
    phrases = Phrases(**{k: given[k].template(PHRASES[k]) for k in PHRASES})
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
            clips[key.text()] = _sound_file(value, folder)
    lang = top["language"]
    language = lang.text()
    return VoicePack(
        id=folder.name,
        name=top["name"].text() if "name" in top else folder.name,
        language=language,
        voice=top["voice"].text(),
        rate=top["rate"].integer(low=RATE_RANGE[0], high=RATE_RANGE[1]),
        volume=top["volume"].number(low=0.0, high=1.0) if "volume" in top else 1.0,
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
