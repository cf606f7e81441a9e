"""What the built-in sessions say: in our own words (never five words in a row from a
seed guide), the partner's side named in every sided cue, the pressure advice and the
side switches present in fist rocking, and no title echoed by the words that follow it."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest

from coach.routine import builtin_routines, load_routine
from coach.voicepack import PHRASES, builtin_pack_dir, load_pack

try:  # the script stage has its own module on main
    from coach.script import write_script
except ImportError:
    from coach.timeline import write_script

SEEDS = Path(__file__).parents[1].parent / "shared" / "seeds"
RUN = 5
ROUTINES = sorted(builtin_routines())
PACKS = sorted(p.name for p in builtin_pack_dir().iterdir() if (p / "pack.yaml").is_file())
SIDE_NAMES = {"en": ("left", "right"), "es": ("izquierdo", "derecho")}


def words(text: str) -> list[str]:
    """Lower-cased words with the punctuation stripped ("partner's" is "partners")."""
    text = text.lower().replace("\u2019", "'").replace("'", "")
    return re.findall(r"[^\W_]+", text)


def runs(text: str, n: int = RUN) -> set[tuple[str, ...]]:
    w = words(text)
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def seed_runs() -> set[tuple[str, ...]]:
    if not SEEDS.is_dir():
        pytest.skip(f"no seed guides at {SEEDS}")
    found: set[tuple[str, ...]] = set()
    for path in sorted(SEEDS.glob("*.txt")):
        found |= runs(path.read_text(encoding="utf-8"))
    assert found, f"no seed text in {SEEDS}"
    return found


def fill(template: str, **values: str) -> list[str]:
    """TEMPLATE with its {placeholders} filled, once for each side when it names one."""
    names = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    base = {"title": "", "seconds": "10", **values}
    if "side" not in names:
        return [template.format(**base)]
    return [template.format(**{**base, "side": side}) for side in ("left", "right")]


def routine_texts(name: str) -> list[str]:
    """Everything a built-in routine says or shows, its sides filled in."""
    r = load_routine(name)
    out = [r.title, r.description]
    for step in r.steps:
        out.append(step.title)
        for text in (step.say, *(t.say for t in step.tips), step.pressure.more, step.pressure.less):
            if text:
                out.extend(fill(text))
    return out


def pack_texts(pack_id: str) -> list[str]:
    phrases = load_pack(pack_id).phrases
    return [text for key in PHRASES for text in fill(getattr(phrases, key))]


def echoes_a_seed(text: str, seeds: set[tuple[str, ...]]) -> list[str]:
    return [" ".join(r) for r in sorted(runs(text) & seeds)]


def test_the_seed_check_catches_a_borrowed_sentence():
    seeds = seed_runs()
    borrowed = "Now hold your fingers over any tight area, gently."
    assert echoes_a_seed(borrowed, seeds) == [
        "fingers over any tight area",
        "hold your fingers over any",
        "your fingers over any tight",
    ]
    assert echoes_a_seed("Rest your fingertips on one tight spot.", seeds) == []


@pytest.mark.parametrize("name", ROUTINES)
def test_a_routine_speaks_in_its_own_words(name):
    seeds = seed_runs()
    borrowed = {t: echoes_a_seed(t, seeds) for t in routine_texts(name)}
    assert {t: r for t, r in borrowed.items() if r} == {}


@pytest.mark.parametrize("pack_id", PACKS)
def test_a_packs_phrases_are_in_its_own_words(pack_id):
    seeds = seed_runs()
    borrowed = {t: echoes_a_seed(t, seeds) for t in pack_texts(pack_id)}
    assert {t: r for t, r in borrowed.items() if r} == {}


def packs_for(name: str) -> list:
    language = load_routine(name).language or "en"
    return [p for p in map(load_pack, PACKS) if p.language.split("-")[0] == language]


def mentions_a_side(text: str, language: str) -> bool:
    return any(side in words(text) for side in SIDE_NAMES[language])


def names_the_partners_side(text: str, language: str) -> bool:
    """Every side word in TEXT is the partner's: "your partner's right", "their left";
    in Spanish "el lado derecho de tu pareja", "su lado izquierdo"."""
    sides = "|".join(SIDE_NAMES[language])
    if language == "en":
        whose = rf"\b(?:your partner's|their) (?:{sides})\b"
    else:
        whose = rf"\bsu \w+ (?:{sides})\b|\b(?:{sides}) de tu pareja\b"
    mentioned = len(re.findall(rf"\b(?:{sides})\b", text.lower()))
    return mentioned == len(re.findall(whose, text.lower()))


@pytest.mark.parametrize("name", ROUTINES)
def test_every_sided_cue_names_the_partners_side(name):
    routine = load_routine(name)
    language = routine.language or "en"
    checked = 0
    for pack in packs_for(name):
        script = write_script(routine, pack)
        for run in script.runs:
            if run.side is None:
                continue
            # A first side opens with the step's title; a later one with the switch cue.
            opening = run.opening if run.switch else run.opening[1:]
            texts = [*opening, *(t.text for t in run.tips)]
            for text in texts:
                if mentions_a_side(text, language):
                    checked += 1
                    assert names_the_partners_side(text, language), (pack.id, text)
    assert checked, "no sided cue names a side"


@pytest.mark.parametrize("pack_id", PACKS)
def test_a_packs_switch_phrase_names_the_partners_side(pack_id):
    pack = load_pack(pack_id)
    language = pack.language.split("-")[0]
    for side in ("left", "right"):
        text = pack.phrases.switch_sides.format(side=pack.phrases.side(side))
        assert mentions_a_side(text, language), text
        assert names_the_partners_side(text, language), text


def test_the_side_check_refuses_a_bare_side():
    assert not names_the_partners_side("Now the left side.", "en")
    assert not names_the_partners_side("Stand at their left, circle on the right side.", "en")
    assert names_the_partners_side("Kneel at their left, by your partner's left shoulder.", "en")
    assert not names_the_partners_side("Ahora, el lado izquierdo.", "es")
    assert names_the_partners_side("Ahora, el lado izquierdo de tu pareja.", "es")


#: The seed's advice for more pressure, and the way back to less, as each language says it.
PRESSURE_ADVICE = {
    "en": (
        ("slow down",),
        ("finger joints", "knuckles"),
        ("other hand on top",),
        ("kneel up",),
        ("body weight",),
        ("lighten", "lighter", "less"),
    ),
    "es": (
        ("más despacio",),
        ("nudillos",),
        ("otra mano encima",),
        ("rodillas",),
        ("peso",),
        ("aligera", "menos", "suavidad"),
    ),
}


@pytest.mark.parametrize("name", [n for n in ROUTINES if "fist-rocking" in n])
def test_fist_rocking_teaches_pressure_and_switches_sides(name):
    routine = load_routine(name)
    language = routine.language or "en"
    for pack in packs_for(name):
        script = write_script(routine, pack)
        tips = [t.text.lower() for run in script.runs for t in run.tips]
        advice = [
            t for t in tips if all(any(w in t for w in way) for way in PRESSURE_ADVICE[language])
        ]
        assert advice, f"{pack.id}: no tip says how to add and ease pressure"
        switches = [run for run in script.runs if run.switch]
        assert switches, f"{pack.id}: no side switch"
        for run in switches:
            assert run.chime == pack.chimes["side"]
            assert run.opening[0] == pack.phrases.switch_sides.format(
                side=pack.phrases.side(run.side)
            )
        # Both of the partner's sides are worked, one after the other.
        sided = [run.side for run in script.runs if run.side]
        assert set(sided) == {"left", "right"}


@pytest.mark.parametrize("name", ROUTINES)
def test_no_title_is_echoed_by_the_words_after_it(name):
    for step in load_routine(name).steps:
        title, say = words(step.title), words(step.say)
        assert title[:2] != say[:2], (step.title, step.say[:40])


@pytest.mark.parametrize("name", [n for n in ROUTINES if not n.endswith("-es")])
def test_english_routines_use_contractions(name):
    for text in routine_texts(name):
        assert not re.search(r"\b(let us|that is|you will|do not|it is)\b", text.lower()), text


@pytest.mark.parametrize("name", [n for n in ROUTINES if n.endswith("-es")])
def test_spanish_routines_put_no_comma_before_y(name):
    for text in routine_texts(name):
        assert not re.search(r",\s+y\b", text), text
