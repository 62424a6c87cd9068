"""Typed values out of strict YAML nodes (yamlsource.py), every problem collected.

Used by config.py and load.py: a :class:`Reader` reads each field of a mapping as the
schema wants it (text as written, a whole number, a date, one of a few choices), records
a ``file:line:col`` problem for anything else and returns None, so a loader reads the whole
file and reports everything at once. ``Reader.fields`` reports unknown keys with "did you
mean" and missing required ones. No text value may hold a personalisation marker
(``__NL_UNSUBSCRIBE_URL__``...): those belong to the templates alone.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Iterable
from typing import TypeVar
from urllib.parse import unquote

import msgspec

from newsletter.errors import InputError, Problem, Severity
from newsletter.input.yamlsource import Mapping, Node, Scalar, Sequence, describe, join
from newsletter.model import Location
from newsletter.text.headers import FORBIDDEN as _HEADER_BAD

_N = TypeVar("_N", int, float)


class Fields(msgspec.Struct):
    """A mapping's values by key, after unknown keys were reported."""

    node: Mapping
    path: str
    values: dict[str, Node]
    keys: dict[str, Scalar]

    def key(self, name: str) -> str:
        return join(self.path, name)

    def has(self, name: str) -> bool:
        value = self.values.get(name)
        return value is not None and not (isinstance(value, Scalar) and value.is_null)


_LINE_BAD = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
# Bidi embeddings, overrides and isolates: they make text show in another order than it is
# stored ("Trojan Source"), so a subject or a link can read differently from what it is.
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
_TEXT_BAD = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x84\x86-\x9f]")
_INT = re.compile(r"0|[1-9][0-9]*")
_NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?")
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_DATETIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?")


# Every per-recipient marker (model.Slot) starts so. The render fills them only where a
# template placed one, so no value read here may hold one, in any spelling a renderer or
# a browser decodes into it: Markdown backslash escapes, HTML entities, percent-encoding.
_MARKER = re.compile(r"__NL_[A-Za-z0-9_]*", re.IGNORECASE)


def _decoded(text: str) -> str:
    return unquote(html.unescape(text.replace("\\", "")))


def slot_marker(text: str) -> tuple[int, str] | None:
    """(offset, marker) of the first personalisation marker in ``text``, however spelt."""
    found = _MARKER.search(text)
    if found:
        return found.start(), found.group()
    decoded = _MARKER.search(_decoded(text))
    if decoded is None:
        return None
    # the shortest stretch of text that decodes into a marker: where it ends, then starts
    low, high = 0, len(text)
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if _MARKER.search(_decoded(text[:middle])) else \
            (middle + 1, high)
    end, low, high = low, 0, low
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if _MARKER.search(_decoded(text[middle:end])) else \
            (low, middle - 1)
    return low, decoded.group()


def _closest(word: str, choices: list[str]) -> list[str]:
    """The "did you mean" candidate, if any (difflib loads only when a word is wrong)."""
    import difflib

    return difflib.get_close_matches(word, choices, n=1, cutoff=0.6)


class Reader:
    """Reads typed values out of nodes, collecting every problem instead of stopping.

    Each method returns None (and records a problem) when the value is missing or wrong,
    so a loader reads the whole file and reports everything at once. ``locations`` maps
    the key of each value read to where it is (an Issue keeps them for checks.py); a
    loader that keeps none passes ``keep_locations=False``, saving a Location per value.
    """

    def __init__(self, source: str, *, keep_locations: bool = True,
                 lines: list[str] | None = None) -> None:
        self.source = source
        self.problems: list[Problem] = []
        self.locations: dict[str, Location] = {}
        self.keep_locations = keep_locations
        self.lines = lines  # the file's lines, to place problems inside block scalars

    # --- problems and places

    def where(self, node: Node | Scalar) -> Location:
        return Location(self.source, node.line, node.col)

    def error(self, node: Node, key: str, message: str, hint: str | None = None) -> None:
        self.problems.append(Problem(self.where(node), key, message, hint))

    def raise_if_errors(self) -> None:
        if any(p.severity is Severity.ERROR for p in self.problems):
            raise InputError(sorted(self.problems, key=lambda p: (p.where.line, p.where.col)))

    # --- containers

    def fields(self, node: Node, path: str, allowed: Iterable[str],
               required: Iterable[str] = (), what: str = "") -> Fields | None:
        """The mapping's values; unknown keys and missing required ones are reported."""
        if not isinstance(node, Mapping):
            self.error(node, path, f"expected a mapping (key: value pairs), found {describe(node)}")
            return None
        allowed = list(allowed)
        values: dict[str, Node] = {}
        keys: dict[str, Scalar] = {}
        for key, value in node.items:
            if key.text not in allowed:
                close = _closest(key.text, allowed)
                hint = f"did you mean '{close[0]}'?" if close else \
                    "allowed keys: " + ", ".join(allowed)
                label = f"unknown key in {what}" if what else "unknown key"
                self.error(key, join(path, key.text), label, hint)
                continue
            values[key.text] = value
            keys[key.text] = key
        fields = Fields(node, path, values, keys)
        for name in required:
            if not fields.has(name):
                where: Node = keys.get(name) or node
                self.error(where, fields.key(name), "required")
        return fields

    def items(self, node: Node, path: str) -> tuple[Node, ...] | None:
        if not isinstance(node, Sequence):
            self.error(node, path, f"expected a list, found {describe(node)}",
                       "start each item on its own line with '- '")
            return None
        return node.items

    # --- scalars by field name

    def _value(self, f: Fields, name: str) -> Node | None:
        value = f.values.get(name)
        if value is None or (isinstance(value, Scalar) and value.is_null):
            return None
        if self.keep_locations:
            self.locations[f.key(name)] = self.where(value)
        return value

    def _scalar(self, node: Node, key: str, expected: str) -> Scalar | None:
        if isinstance(node, Scalar):
            return node
        self.error(node, key, f"expected {expected}, found {describe(node)}")
        return None

    def _field(self, f: Fields, name: str, expected: str) -> tuple[Scalar, str] | None:
        """The scalar given for ``name`` and its key path; None when absent or refused."""
        node = self._value(f, name)
        if node is None:
            return None
        key = f.key(name)
        scalar = self._scalar(node, key, expected)
        return None if scalar is None else (scalar, key)

    def text(self, f: Fields, name: str, *, max_len: int = 200, multiline: bool = False,
             header: bool = False) -> str | None:
        """Text exactly as written: ``NO``, ``1.10`` and ``12:30`` stay text."""
        node = self._value(f, name)
        return None if node is None else self.text_node(node, f.key(name), max_len=max_len,
                                                        multiline=multiline, header=header)

    def text_node(self, node: Node, key: str, *, max_len: int = 200, multiline: bool = False,
                  header: bool = False) -> str | None:
        scalar = self._scalar(node, key, "text")
        if scalar is None:
            return None
        value = scalar.text.rstrip() if multiline else scalar.text.strip()
        if header:
            bad = _HEADER_BAD.search(value)
            if bad:
                found = "'=?'" if bad.group() == "=?" else "a line break" \
                    if bad.group() in "\r\n\u2028\u2029" else \
                    f"control character U+{ord(bad.group()):04X}"
                self.error(scalar, key, f"{found} is not allowed in text that goes into an "
                           "email header", "keep it on one line, without control characters")
                return None
        bad = (_TEXT_BAD if multiline else _LINE_BAD).search(value)
        if bad:
            what = "a line break" if bad.group() in "\n\u2028\u2029" else \
                f"control character U+{ord(bad.group()):04X}"
            self.error(scalar, key, f"{what} is not allowed here",
                       "keep it on one line" if what == "a line break" else "delete it")
            return None
        bidi = None if multiline else _BIDI.search(value)
        if bidi:
            import unicodedata

            char = bidi.group()
            self.error(scalar, key, f"bidi control U+{ord(char):04X} "
                       f"({unicodedata.name(char)}) is not allowed here",
                       "it makes the text show in another order than it is written; "
                       "delete it")
            return None
        if len(value) > max_len:
            self.error(scalar, key, f"too long: {len(value):,} characters; the limit is "
                       f"{max_len:,}")
            return None
        marker = slot_marker(scalar.text)
        if marker is not None:
            at, shown = marker
            self.problems.append(Problem(
                self._inside(scalar, at), key, f"{shown} is a personalisation marker: each "
                "member's own value would be put here", "remove it; members' values go only "
                "where the templates place them, never into issue text or links"))
            return None
        if not value.strip():
            self.error(scalar, key, "empty", "write some text or remove the key")
            return None
        return value

    def _inside(self, scalar: Scalar, at: int) -> Location:
        """Where offset ``at`` of a scalar's text is in the file: exact on the first line of
        a plain or quoted value and in literal blocks (``|``); else where the value starts."""
        before = scalar.text[:at]
        if scalar.style == "|" and self.lines is not None:
            number = scalar.line + 1 + before.count("\n")
            line = self.lines[number - 1] if 0 < number <= len(self.lines) else ""
            indent = len(line) - len(line.lstrip(" "))
            return Location(self.source, number, indent + 1 + at - (before.rfind("\n") + 1))
        if scalar.style in (None, "'", '"') and "\n" not in before:
            return Location(self.source, scalar.line, scalar.col + (scalar.style is not None) + at)
        return self.where(scalar)

    def integer(self, f: Fields, name: str, *, minimum: int = 0,
                maximum: int | None = None) -> int | None:
        node = self._value(f, name)
        return None if node is None else self.integer_node(node, f.key(name), minimum=minimum,
                                                           maximum=maximum)

    def integer_node(self, node: Node, key: str, *, minimum: int = 0,
                     maximum: int | None = None) -> int | None:
        scalar = self._scalar(node, key, "a whole number")
        if scalar is None:
            return None
        text = scalar.text.strip()
        if len(text) > 18:  # also keeps int() below its 4,300-digit limit
            self.error(scalar, key, f"expected a whole number, found {describe(scalar)}")
            return None
        if re.fullmatch(r"0[0-9]+", text):
            self.error(scalar, key, f"a leading zero is not allowed in {text}",
                       f"write {int(text)}")
            return None
        if re.fullmatch(r"-[0-9]+", text):
            value = int(text)
            return self._in_range(scalar, key, value, minimum, maximum)
        if not _INT.fullmatch(text):
            self.error(scalar, key, f"expected a whole number, found {describe(scalar)}")
            return None
        value = int(text)
        return self._in_range(scalar, key, value, minimum, maximum)

    def number(self, f: Fields, name: str, *, minimum: float = 0.0) -> float | None:
        found = self._field(f, name, "a number")
        if found is None:
            return None
        scalar, key = found
        text = scalar.text.strip()
        if not _NUMBER.fullmatch(text) or re.fullmatch(r"0[0-9]+(\.[0-9]+)?", text):
            self.error(scalar, key, f"expected a number like 0.5 or 30, found {describe(scalar)}")
            return None
        value = float(text)
        return self._in_range(scalar, key, value, minimum, None)

    def _in_range(self, scalar: Scalar, key: str, value: _N, minimum: _N,
                  maximum: _N | None) -> _N | None:
        if value < minimum or (maximum is not None and value > maximum):
            span = f"at least {minimum}" if maximum is None else f"{minimum} to {maximum}"
            self.error(scalar, key, f"expected {span}, found {scalar.text.strip()}")
            return None
        return value

    def boolean(self, f: Fields, name: str) -> bool | None:
        found = self._field(f, name, "true or false")
        if found is None:
            return None
        scalar, key = found
        text = scalar.text.strip()
        if text in ("true", "false"):
            return text == "true"
        self.error(scalar, key, f"expected true or false, found {describe(scalar)}",
                   "write true or false")
        return None

    def date(self, f: Fields, name: str) -> dt.date | None:
        found = self._field(f, name, "a date")
        if found is None:
            return None
        scalar, key = found
        text = scalar.text.strip()
        m = _DATE.fullmatch(text)
        if not m:
            self.error(scalar, key, f"expected a date like 2016-12-05, found {describe(scalar)}")
            return None
        try:
            return dt.date(int(m[1]), int(m[2]), int(m[3]))
        except ValueError as e:
            self.error(scalar, key, f"{text} is not a real date ({e})")
            return None

    def datetime(self, f: Fields, name: str) -> dt.datetime | None:
        found = self._field(f, name, "a date and time")
        if found is None:
            return None
        scalar, key = found
        text = scalar.text.strip()
        m = _DATETIME.fullmatch(text)
        if not m:
            self.error(scalar, key, "expected a date and time like 2016-11-15 10:00, found "
                       f"{describe(scalar)}", "UK local time, 24-hour clock")
            return None
        try:
            return dt.datetime(int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]),
                               int(m[6] or 0))
        except ValueError as e:
            self.error(scalar, key, f"{text} is not a real date and time ({e})")
            return None

    def choice(self, f: Fields, name: str, options: Iterable[str],
               what: str = "value") -> str | None:
        found = self._field(f, name, "text")
        if found is None:
            return None
        scalar, key = found
        options = list(options)
        text = scalar.text.strip()
        if text in options:
            return text
        close = _closest(text, options)
        hint = f"did you mean '{close[0]}'?" if close else "use one of " + ", ".join(options)
        self.error(scalar, key, f"unknown {what} {describe(scalar)}", hint)
        return None
