"""Every routine rule, with the message a user sees (file, line, column, field, value)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import pytest
import yaml

from coach import yamlfile
from coach.errors import RoutineError
from coach.routine import builtin_routines, load_routine

REPO = Path(__file__).resolve().parent.parent

GOOD = """\
routine: 1
title: Tiny
steps:
  - title: Warm the oil
    say: Rub your hands together.
    time: 30s
  - title: Circles
    say: Circles on the {side} side.
    time: 1m
    sides: [right, left]
    tips:
      - after: 20s
        say: Change direction.
      - every: 25s
        say: Ask about the pressure.
    countdown: 10s
    rhythm: 50
    pressure:
      more: Lean in.
      less: Lighten up.
"""


def write(tmp_path: Path, text: str, name: str = "my-routine.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    old = os.getcwd()
    os.chdir(tmp_path)  # so messages name the file as the user typed it
    return old


def error_for(tmp_path: Path, text: str) -> str:
    old = write(tmp_path, text)
    try:
        with pytest.raises(RoutineError) as info:
            load_routine("my-routine.yaml")
    finally:
        os.chdir(old)
    return str(info.value)


def test_a_good_routine_loads_with_every_field():
    old = os.getcwd()
    try:
        r = load_routine_text(GOOD)
    finally:
        os.chdir(old)
    assert r.title == "Tiny"
    circles = r.steps[1]
    assert circles.time == 60 and circles.sides == ("right", "left")
    assert [(t.after, t.every) for t in circles.tips] == [(20, None), (None, 25)]
    assert circles.countdown == 10 and circles.rhythm == 50
    assert circles.pressure.more == "Lean in."


def load_routine_text(text: str):
    import tempfile

    d = Path(tempfile.mkdtemp())
    write(d, text)
    return load_routine("my-routine.yaml")


def test_the_spec_example_message_word_for_word(tmp_path):
    steps = "".join(f"  - title: S{i}\n    say: Hello.\n    time: 30s\n" for i in range(3))
    text = (
        f"routine: 1\ntitle: T\nsteps:\n{steps}  - title: Long\n    say: Hi.\n    time: 2 minuts\n"
    )
    assert error_for(tmp_path, text) == (
        'my-routine.yaml:15:11: steps[3].time: "2 minuts" is not a duration (try 90s, 1m30s, 2m)'
    )


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("routine: 1\n", "", "my-routine.yaml:1:1: missing required key 'routine'"),
        (
            "routine: 1\n",
            "routine: 2\n",
            "my-routine.yaml:1:10: routine: format version 2 is not supported",
        ),
        (
            "routine: 1\n",
            "routine: one\n",
            'my-routine.yaml:1:10: routine: "one" is not a whole number',
        ),
        (
            "title: Tiny\n",
            "title: Tiny\ncolour: blue\n",
            "my-routine.yaml:3:1: colour: unknown key 'colour' (expected one of: routine, title, "
            "steps, description, language, voice, pace)",
        ),
        (
            "title: Tiny\n",
            "title: Tiny\ntitle: Again\n",
            "my-routine.yaml:3:1: title: this key appears twice",
        ),
        (
            "title: Tiny\n",
            "title: 42\n",
            "my-routine.yaml:2:8: title: expected text, found a number",
        ),
        (
            "title: Tiny\n",
            "title: Tiny\npace: fast\n",
            'my-routine.yaml:3:7: pace: "fast" is not a pace (slow, normal, brisk or a factor',
        ),
        ("title: Tiny\n", "title: Tiny\npace: 9\n", 'my-routine.yaml:3:7: pace: "9" is not a pace'),
        (
            "title: Tiny\n",
            "title: Tiny\nlanguage: 12\n",
            "my-routine.yaml:3:11: language: expected text, found a number",
        ),
        (
            "    time: 30s\n",
            "    time: 0s\n",
            'my-routine.yaml:6:11: steps[0].time: "0s" is not a positive duration',
        ),
        (
            "    time: 30s\n",
            "    time: -5\n",
            'my-routine.yaml:6:11: steps[0].time: "-5" is not a positive duration',
        ),
        (
            "    time: 30s\n",
            "    time: [1]\n",
            "my-routine.yaml:6:11: steps[0].time: expected a duration (try 90s, 1m30s, 2m), "
            "found a list",
        ),
        (
            "    time: 30s\n",
            "    time: 30s\n    colour: red\n",
            "my-routine.yaml:7:5: steps[0].colour: unknown key 'colour'",
        ),
        (
            "    say: Rub your hands together.\n",
            "",
            "my-routine.yaml:4:5: steps[0]: missing required key 'say'",
        ),
        (
            "    sides: [right, left]\n",
            "    sides: [right, middle]\n",
            'my-routine.yaml:10:20: steps[1].sides[1]: "middle" is not a side (expected left or '
            "right)",
        ),
        (
            "    sides: [right, left]\n",
            "    sides: [left, left]\n",
            "my-routine.yaml:10:19: steps[1].sides[1]: side 'left' is listed twice",
        ),
        (
            "    sides: [right, left]\n",
            "    sides: []\n",
            "my-routine.yaml:10:12: steps[1].sides: expected at least 1 item",
        ),
        (
            "      - after: 20s\n",
            "      - after: 1m\n",
            'my-routine.yaml:12:16: steps[1].tips[0].after: "1m" falls outside its step (the step '
            "lasts 1m; a tip must come before the end)",
        ),
        (
            "      - every: 25s\n",
            "      - every: 2m\n",
            'my-routine.yaml:14:16: steps[1].tips[1].every: "2m" falls outside its step',
        ),
        (
            "      - after: 20s\n",
            "      - after: 20s\n        every: 30s\n",
            "my-routine.yaml:12:9: steps[1].tips[0]: a tip needs exactly one of `after: TIME` or "
            "`every: TIME`",
        ),
        (
            "    countdown: 10s\n",
            "    countdown: 1m\n",
            'my-routine.yaml:16:16: steps[1].countdown: "1m" is not shorter than the step (1m)',
        ),
        (
            "    rhythm: 50\n",
            "    rhythm: 500\n",
            "my-routine.yaml:17:13: steps[1].rhythm: 500 is out of range (expected 20 to 200)",
        ),
        (
            "    rhythm: 50\n",
            "    rhythm: fast\n",
            'my-routine.yaml:17:13: steps[1].rhythm: "fast" is not a rhythm in beats per minute',
        ),
        (
            "      more: Lean in.\n",
            "      harder: Lean in.\n",
            "my-routine.yaml:19:7: steps[1].pressure.harder: unknown key 'harder' (expected one "
            "of: more, less)",
        ),
        (
            "    say: Circles on the {side} side.\n",
            "    say: Circles on the {sid} side.\n",
            "my-routine.yaml:8:10: steps[1].say: {sid} is not a placeholder here (use {side})",
        ),
        (
            "    say: Rub your hands together.\n",
            "    say: Rub your {side} hand.\n",
            "my-routine.yaml:5:10: steps[0].say: {side} is only allowed in a step with sides",
        ),
        (
            "    say: Circles on the {side} side.\n",
            "    say: Circles {side\n",
            'my-routine.yaml:8:10: steps[1].say: "Circles {side" has an unmatched { or }',
        ),
        (
            "        say: Change direction.\n",
            "        say: Change {side:>9}.\n",
            "my-routine.yaml:13:14: steps[1].tips[0].say: {side} is not a placeholder here",
        ),
        (
            "  - title: Warm the oil\n",
            "  - title: Warm the {oil}\n",
            "my-routine.yaml:4:12: steps[0].title: {oil} is not a placeholder here (none are "
            "allowed here)",
        ),
        (
            "    say: Rub your hands together.\n",
            "    say: ''\n",
            "my-routine.yaml:5:10: steps[0].say: must not be empty",
        ),
        (
            "title: Tiny\n",
            "title: Tiny\nsteps: []\n",
            "my-routine.yaml:4:1: steps: this key appears twice",
        ),
    ],
)
def test_each_rule_names_file_line_column_field_and_value(tmp_path, old, new, expected):
    assert old in GOOD
    message = error_for(tmp_path, GOOD.replace(old, new, 1))
    assert message.startswith(expected), message
    assert "\n" not in message


def test_no_steps_is_an_error(tmp_path):
    assert error_for(tmp_path, "routine: 1\ntitle: T\nsteps: []\n") == (
        "my-routine.yaml:3:8: steps: expected at least 1 item"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "my-routine.yaml: the file is empty"),
        ("routine: 1\ntitle: [unclosed\n", "my-routine.yaml:3:1: not valid YAML"),
        (
            "- just\n- a list\n",
            "my-routine.yaml:1:1: expected a mapping of keys to values, found a list",
        ),
        (
            "a: &x [1]\nb: *x\n",
            "my-routine.yaml:2:4: not valid YAML: aliases (*name) are not allowed here",
        ),
        (
            "routine: !!python/object/apply:os.system ['echo hacked']\n",
            "my-routine.yaml:1:10: routine: the tag "
            "'tag:yaml.org,2002:python/object/apply:os.system' is not allowed",
        ),
        ("routine: !custom 1\n", "my-routine.yaml:1:10: routine: the tag '!custom' is not allowed"),
        ("routine: 1\x00\x01\x02\n", "my-routine.yaml: not valid YAML:"),
    ],
)
def test_hostile_or_broken_files_are_refused_with_a_position(tmp_path, text, expected):
    message = error_for(tmp_path, text)
    assert message.startswith(expected), message


def test_an_alias_bomb_is_refused_quickly(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 12)]
    start = time.perf_counter()
    message = error_for(tmp_path, "\n".join(lines) + "\n")
    assert "aliases (*name) are not allowed" in message
    assert time.perf_counter() - start < 1.0


def test_binary_junk_is_refused_as_not_utf8(tmp_path):
    (tmp_path / "junk.yaml").write_bytes(b"routine: 1\n" + bytes(range(128, 256)) * 10)
    with pytest.raises(RoutineError, match=r"junk.yaml:2: byte 11 is not UTF-8 text"):
        load_routine(str(tmp_path / "junk.yaml"))


def test_a_huge_file_is_refused_without_parsing(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("routine: 1\n" + "# filler\n" * 200_000)
    start = time.perf_counter()
    with pytest.raises(RoutineError, match="larger than 1000 kB"):
        load_routine(str(path))
    assert time.perf_counter() - start < 1.0


def test_absurd_nesting_is_refused(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("routine: " + "[" * 50_000 + "]" * 50_000 + "\n")
    with pytest.raises(RoutineError, match="nested too deeply"):
        load_routine(str(path))


def test_a_missing_file_says_so(tmp_path):
    with pytest.raises(RoutineError, match=r"nope.yaml: no such file"):
        load_routine(str(tmp_path / "nope.yaml"))


def test_the_built_in_routines_load_and_last_12_to_20_minutes():
    names = builtin_routines()
    assert {"upper-back-basics", "upper-back-fist-rocking"} <= set(names)
    for name in ("upper-back-basics", "upper-back-fist-rocking"):
        r = load_routine(name)
        minutes = sum(s.time * max(1, len(s.sides)) for s in r.steps) / 60
        assert 12 <= minutes <= 20, (name, minutes)
        assert any(s.pressure.more for s in r.steps)
    assert any(s.rhythm for s in load_routine("upper-back-fist-rocking").steps)
    assert any(s.sides for s in load_routine("upper-back-basics").steps)


def _pair_tree(node) -> object:
    if isinstance(node, yaml.MappingNode):
        value = [(_pair_tree(k), _pair_tree(v)) for k, v in node.value]
    elif isinstance(node, yaml.SequenceNode):
        value = [_pair_tree(v) for v in node.value]
    else:
        value = (node.style or "", node.value)
    return (type(node).__name__, node.tag, node.start_mark.line, node.start_mark.column, value)


def test_libyaml_reads_every_shipped_file_as_the_pure_python_composer_does():
    # The fast path must change nothing a check or a message sees: tags, styles, marks.
    files = [*REPO.glob("coach/routines/**/*.yaml"), *REPO.glob("voice_packs/*/*.yaml")]
    assert len(files) >= 6
    for path in files:
        text = path.read_text(encoding="utf-8")
        fast = yamlfile._compose(text)
        slow = yaml.compose(text, Loader=yamlfile._StrictLoader)
        assert _pair_tree(fast) == _pair_tree(slow), path


@pytest.mark.parametrize(
    "text",
    ["a: &x 1\nb: *x\n", "a: [" * 70 + "]" * 70 + "\n", "a: b: c\n", "a: 'unclosed\n"],
    ids=["alias", "deep", "error", "unclosed"],
)
def test_what_libyaml_is_not_trusted_with_goes_through_the_strict_composer(text, monkeypatch):
    calls = []
    strict = yamlfile._StrictLoader

    class Counting(strict):  # type: ignore[misc, valid-type]
        def __init__(self, stream):
            calls.append(1)
            super().__init__(stream)

    monkeypatch.setattr(yamlfile, "_StrictLoader", Counting)
    with contextlib.suppress(yaml.YAMLError, RecursionError):  # its refusal, if any
        yamlfile._compose(text)
    assert calls
