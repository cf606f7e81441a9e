"""Reading the YAML files users write (routines, voice packs), safely and with positions.

A file is parsed with PyYAML's safe loader into a node tree (never into Python objects
by tags), then walked with `Field`, which knows where every value stands in the file. So
every complaint can say ``file:line:column: field.path: what is wrong``. Hostile input is
refused before it can cost much: files over MAX_BYTES, anything but a regular file (a FIFO
would block forever), aliases (the "billion laughs"), tags other than YAML's plain core
types, undecodable bytes and absurd nesting. Numbers are read as YAML 1.2's core schema
writes them (plain decimal, finite), and text never carries control characters, so what
a file says can neither surprise a reader nor reach a terminal as an escape sequence.
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
import string
import unicodedata
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
        data = _read_regular_file(path, MAX_BYTES + 1)
    except _NotAFile:
        raise error(f"{label}: not a regular file (a pipe or a device?); give a file") from None
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
        node = _compose(text)
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


#: Nesting deeper than this is left to the pure-Python composer, which refuses it
#: (RecursionError) where libyaml's would recurse without a limit.
_FAST_DEPTH = 64


def _compose(text: str) -> yaml.Node | None:
    """The file's node tree. libyaml composes it (ten times faster: a long routine takes
    5 ms instead of 50) when its events hold no alias and no absurd nesting; anything
    else, a file with an error included, goes through the pure-Python `_StrictLoader`,
    whose messages and refusals are the ones users see."""
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            depth = 0
            for event in yaml.parse(text, Loader=fast):
                if isinstance(event, yaml.CollectionStartEvent):
                    depth += 1
                    if depth > _FAST_DEPTH:
                        break
                elif isinstance(event, yaml.CollectionEndEvent):
                    depth -= 1
                elif isinstance(event, yaml.AliasEvent):
                    break
            else:
                node: yaml.Node | None = yaml.compose(text, Loader=fast)
                return node
        except yaml.YAMLError:
            pass
    return yaml.compose(text, Loader=_StrictLoader)


class _NotAFile(Exception):
    pass


def _read_regular_file(path: Path, limit: int) -> bytes:
    """Up to `limit` bytes of a regular file. Opened without blocking, so a FIFO or a
    device is refused at once instead of waiting forever for a writer."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(mode):
            raise _NotAFile
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(limit)
    finally:
        os.close(fd)


#: Implicit YAML 1.1 types a plain value may turn into by accident (2024-01-01 is a date).
_QUOTE_HINT = {
    _CORE + "timestamp": "a date",
    _CORE + "merge": "a merge key",
    _CORE + "value": "a value key",
}


def _check_tags(root: yaml.Node, src: Source) -> None:
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if node.tag not in _ALLOWED_TAGS:
            if isinstance(node, yaml.ScalarNode) and not node.style and node.tag in _QUOTE_HINT:
                src.fail(
                    f"{node.value} is read as {_QUOTE_HINT[node.tag]} (YAML tag "
                    f"{node.tag.removeprefix(_CORE)}); put it in quotes to mean text: "
                    f'"{node.value}"',
                    node,
                    path,
                )
            src.fail(f"the tag {node.tag!r} is not allowed (plain values only)", node, path)
        children: list[tuple[yaml.Node, str]] = []
        if isinstance(node, yaml.SequenceNode):
            children = [(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = shown(key.value) if isinstance(key, yaml.ScalarNode) else "?"
                children += [(key, path), (value, f"{path}.{name}" if path else name)]
        stack.extend(reversed(children))  # so the first bad value in the file is the one named


def _one_line(text: str) -> str:
    return " ".join(text.split())


#: Numbers as YAML 1.2's core schema writes them in decimal; no hex, octal, underscores
#: or base-60 (YAML 1.1's 1:30), which Python's int() and float() would read otherwise.
_INTEGER = re.compile(r"[-+]?[0-9]+")
_DECIMAL = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_NAMED = {0: "NUL", 7: "BEL", 8: "backspace", 9: "tab", 10: "line break", 13: "CR", 27: "ESC"}


def _control_character(text: str, allowed: str) -> tuple[int, str] | None:
    """The first character that is a control code (C0, DEL, C1) or a lone surrogate and
    not in `allowed`, with its position; None when there is none."""
    for i, ch in enumerate(text):
        if ch not in allowed and unicodedata.category(ch) in ("Cc", "Cs"):
            return i, ch
    return None


def shown(text: str) -> str:
    """`text` with control characters written as escapes, safe to print in a message."""
    return "".join(
        ch.encode("unicode_escape").decode("ascii")
        if unicodedata.category(ch) in ("Cc", "Cs")
        else ch
        for ch in text
    )


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
        name = shown(name)
        return Field(node, f"{self.path}.{name}" if self.path else name, self.src)

    @property
    def kind(self) -> str:
        return _KIND.get(self.node.tag, self.node.tag)

    @property
    def raw(self) -> str:
        """The value as written, quoted, for messages."""
        if isinstance(self.node, yaml.ScalarNode):
            text = self.node.value if len(self.node.value) <= 60 else self.node.value[:57] + "..."
            return f'"{shown(text)}"'
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
            name = key.text(multiline=True)
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

    def text(self, *, multiline: bool = False) -> str:
        """A non-empty string without control characters; line breaks and tabs only when
        `multiline` (a `say: |` block). Numbers are not silently turned into text."""
        if not isinstance(self.node, yaml.ScalarNode) or self.node.tag != _CORE + "str":
            self.fail(f"expected text, found {self.kind}")
        value = self.node.value.strip()
        if not value:
            self.fail("must not be empty")
        bad = _control_character(value, "\n\t" if multiline else "")
        if bad is not None:
            at, ch = bad
            name = _NAMED.get(ord(ch), "a control character")
            if ch in "\n\t":
                self.fail(f"must be one line, without a {name} (character {at + 1})")
            self.fail(
                f"contains {name} (U+{ord(ch):04X}) at character {at + 1}; "
                "text may not hold control characters"
            )
        return value

    def _plain_number(self, pattern: re.Pattern[str]) -> str | None:
        """The value's text when it is an unquoted number in `pattern`'s form, else None."""
        node = self.node
        if (
            isinstance(node, yaml.ScalarNode)
            and not node.style
            and node.tag in (_CORE + "int", _CORE + "float", _CORE + "str")
            and pattern.fullmatch(node.value)
        ):
            return node.value
        return None

    def number(self, *, low: float, high: float, what: str = "a number") -> float:
        text = self._plain_number(_DECIMAL)
        if text is None:
            if self.node.tag in (_CORE + "int", _CORE + "float"):  # .nan, .inf, 0x10, 1_0
                self.fail(
                    f"{self.raw} is not {what} written in decimal digits "
                    f"(expected {low:g} to {high:g})"
                )
            self.fail(f"{self.raw} is not {what} (expected {low:g} to {high:g})")
        value = float(text)
        if not (math.isfinite(value) and low <= value <= high):
            written = text if len(text) <= 60 else text[:57] + "..."
            self.fail(f"{written} is out of range (expected {low:g} to {high:g})")
        return value

    def integer(self, *, low: int, high: int) -> int:
        text = self._plain_number(_INTEGER)
        if text is None:
            if self.node.tag in (_CORE + "int", _CORE + "float"):
                self.fail(
                    f"{self.raw} is not a whole number written in decimal digits "
                    f"(expected {low} to {high})"
                )
            self.fail(f"{self.raw} is not a whole number (expected {low} to {high})")
        if len(text.lstrip("+-")) > 30:  # int() of a huge digit string is slow; none fits
            self.fail(f"{self.raw} is out of range (expected {low} to {high})")
        value = int(text)
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

    def template(self, allowed: Iterable[str], *, multiline: bool = False) -> str:
        """Text whose {placeholders} must be among `allowed`."""
        value = self.text(multiline=multiline)
        check_placeholders(value, allowed, self.fail)
        return value

    def cue(self, allowed: Iterable[str], *, max_chars: int, multiline: bool = True) -> str:
        """Text the coach speaks: a template with words in it (not "..." alone, which a
        speech engine turns into no sound), at most `max_chars` long."""
        value = self.template(allowed, multiline=multiline)
        if len(value) > max_chars:
            self.fail(
                f"{len(value)} characters is too long for a spoken cue (at most {max_chars}; "
                "split it into tips or steps)"
            )
        if not any(ch.isalnum() for ch in value):
            self.fail(f"{self.raw} has no words to speak")
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
