"""Reading the YAML files users write (routines, voice packs), safely and with positions.

A file is parsed with PyYAML's safe loader into a node tree (never into Python objects
by tags), then walked with `Field`, which knows where every value stands in the file. So
every complaint can say ``file:line:column: field.path: what is wrong``. Hostile input is
refused before it can cost much: files over MAX_BYTES, aliases (the "billion laughs"),
tags other than YAML's plain core types, undecodable bytes and absurd nesting.
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import yaml

from coach.errors import InputError
from coach.timetext import parse_duration
from coach.units import Seconds

MAX_BYTES = 1_000_000

_CORE = "tag:yaml.org,2002:"
_ALLOWED_TAGS = {_CORE + t for t in ("str", "int", "float", "bool", "null", "seq", "map")}


class _StrictLoader(yaml.SafeLoader):
    """The safe loader, minus aliases: nothing in our files needs them, and they are
    how a tiny file expands into a huge one."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.MarkedYAMLError(
                None, None, "aliases (*name) are not allowed here", event.start_mark
            )
        return super().compose_node(parent, index)


@dataclass(frozen=True)
class Source:
    """A file being read: the name to print in messages and the error type to raise."""

    label: str
    error: type[InputError]

    def fail(self, message: str, node: yaml.Node | None = None, field: str = "") -> NoReturn:
        line = column = None
        if node is not None:
            line, column = node.start_mark.line + 1, node.start_mark.column + 1
        raise self.error(message, file=self.label, line=line, column=column, field=field or None)


def load(path: Path, label: str, error: type[InputError]) -> Field:
    """Parse a YAML file into its root `Field`, or raise `error` saying where and why."""
    src = Source(label, error)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise error(f"{label}: no such file") from None
    except IsADirectoryError:
        raise error(f"{label}: is a folder, not a file") from None
    except OSError as exc:
        raise error(f"{label}: cannot read ({exc.strerror or exc})") from None
    if len(data) > MAX_BYTES:
        src.fail(f"file is larger than {MAX_BYTES // 1000} kB; this is not a routine or pack file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise error(
            f"byte {exc.start} is not UTF-8 text; save the file as UTF-8", file=label, line=line
        ) from None
    try:
        node = yaml.compose(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        problem = exc.problem or "not valid YAML"
        raise error(
            f"not valid YAML: {problem}",
            file=label,
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
        ) from None
    except yaml.YAMLError as exc:  # ReaderError for control characters has no marks
        raise error(f"not valid YAML: {_one_line(str(exc))}", file=label) from None
    except RecursionError:
        raise error("nested too deeply to be a routine or pack file", file=label) from None
    if node is None:
        src.fail("the file is empty")
    _check_tags(node, src)
    return Field(node, "", src)


def _check_tags(root: yaml.Node, src: Source) -> None:
    stack = [root]
    while stack:
        node = stack.pop()
        if node.tag not in _ALLOWED_TAGS:
            src.fail(f"the tag {node.tag!r} is not allowed (plain values only)", node)
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend((key, value))


def _one_line(text: str) -> str:
    return " ".join(text.split())


_KIND = {
    _CORE + "str": "text",
    _CORE + "int": "a number",
    _CORE + "float": "a number",
    _CORE + "bool": "true/false",
    _CORE + "null": "nothing",
    _CORE + "seq": "a list",
    _CORE + "map": "a mapping",
}


@dataclass(frozen=True)
class Field:
    """A YAML node together with its field path, for typed access with good messages."""

    node: yaml.Node
    path: str
    src: Source

    def fail(self, message: str) -> NoReturn:
        self.src.fail(message, self.node, self.path)

    def child(self, node: yaml.Node, name: str | int) -> Field:
        if isinstance(name, int):
            return Field(node, f"{self.path}[{name}]", self.src)
        return Field(node, f"{self.path}.{name}" if self.path else name, self.src)

    @property
    def kind(self) -> str:
        return _KIND.get(self.node.tag, self.node.tag)

    @property
    def raw(self) -> str:
        """The value as written, quoted, for messages."""
        if isinstance(self.node, yaml.ScalarNode):
            text = self.node.value if len(self.node.value) <= 60 else self.node.value[:57] + "..."
            return f'"{text}"'
        return self.kind

    def mapping(
        self, required: Iterable[str] = (), optional: Iterable[str] = ()
    ) -> dict[str, Field]:
        """The mapping's fields by key; unknown, duplicate or missing keys are errors."""
        if not isinstance(self.node, yaml.MappingNode):
            self.fail(f"expected a mapping of keys to values, found {self.kind}")
        required, optional = list(required), list(optional)
        allowed = set(required) | set(optional)
        out: dict[str, Field] = {}
        for knode, vnode in self.node.value:
            if not isinstance(knode, yaml.ScalarNode) or knode.tag != _CORE + "str":
                Field(knode, self.path, self.src).fail("keys must be plain words")
            key = knode.value
            if key in out:
                self.child(knode, key).fail("this key appears twice")
            if allowed and key not in allowed:
                self.child(knode, key).fail(
                    f"unknown key {key!r} (expected one of: {', '.join(required + optional)})"
                )
            out[key] = self.child(vnode, key)
        for key in required:
            if key not in out:
                self.fail(f"missing required key {key!r}")
        return out

    def entries(self) -> list[tuple[Field, Field]]:
        """(key, value) pairs of a mapping with free-form keys (e.g. recorded clips)."""
        if not isinstance(self.node, yaml.MappingNode):
            self.fail(f"expected a mapping, found {self.kind}")
        pairs = []
        seen = set()
        for knode, vnode in self.node.value:
            key = Field(knode, self.path, self.src)
            name = key.text()
            if name in seen:
                key.fail("this key appears twice")
            seen.add(name)
            pairs.append((key, self.child(vnode, name)))
        return pairs

    def items(self, *, min_len: int = 0) -> list[Field]:
        if not isinstance(self.node, yaml.SequenceNode):
            self.fail(f"expected a list, found {self.kind}")
        if len(self.node.value) < min_len:
            self.fail(f"expected at least {min_len} item{'s' if min_len != 1 else ''}")
        return [self.child(n, i) for i, n in enumerate(self.node.value)]

    def text(self) -> str:
        """A non-empty string. Numbers are not silently turned into text."""
        if not isinstance(self.node, yaml.ScalarNode) or self.node.tag != _CORE + "str":
            self.fail(f"expected text, found {self.kind}")
        value = self.node.value.strip()
        if not value:
            self.fail("must not be empty")
        return value

    def number(self, *, low: float, high: float, what: str = "a number") -> float:
        if self.node.tag not in (_CORE + "int", _CORE + "float"):
            self.fail(f"{self.raw} is not {what} (expected {low:g} to {high:g})")
        value = float(self.node.value.replace("_", ""))
        if not (math.isfinite(value) and low <= value <= high):
            self.fail(f"{self.node.value} is out of range (expected {low:g} to {high:g})")
        return value

    def integer(self, *, low: int, high: int) -> int:
        if self.node.tag != _CORE + "int":
            self.fail(f"{self.raw} is not a whole number (expected {low} to {high})")
        value = int(self.node.value.replace("_", ""), 0)
        if not low <= value <= high:
            self.fail(f"{value} is out of range (expected {low} to {high})")
        return value

    def duration(self) -> Seconds:
        """A positive duration: 45s, 1m, 1m30s, 2m or a number of seconds."""
        hint = "(try 90s, 1m30s, 2m)"
        if not isinstance(self.node, yaml.ScalarNode) or self.node.tag not in (
            _CORE + "str",
            _CORE + "int",
            _CORE + "float",
        ):
            self.fail(f"expected a duration {hint}, found {self.kind}")
        seconds = parse_duration(self.node.value.replace("_", ""))
        if seconds is None or not math.isfinite(seconds):
            self.fail(f"{self.raw} is not a duration {hint}")
        if seconds <= 0:
            self.fail(f"{self.raw} is not a positive duration {hint}")
        if seconds > 24 * 3600:
            self.fail(f"{self.raw} is longer than a day")
        return seconds

    def template(self, allowed: Iterable[str]) -> str:
        """Text whose {placeholders} must be among `allowed`."""
        value = self.text()
        check_placeholders(value, allowed, self.fail)
        return value


def check_placeholders(value: str, allowed: Iterable[str], fail: Callable[[str], NoReturn]) -> None:
    """Reject malformed braces and unknown {names}; `fail(message)` raises."""
    allowed = list(allowed)
    hint = (
        f"use {', '.join('{' + a + '}' for a in allowed)}" if allowed else "none are allowed here"
    )
    try:
        parsed = list(string.Formatter().parse(value))
    except ValueError:
        fail(f'"{value}" has an unmatched {{ or }} (write {{{{ or }}}} for a literal brace)')
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in allowed or spec or conversion:
            fail(f"{{{name}}} is not a placeholder here ({hint})")
