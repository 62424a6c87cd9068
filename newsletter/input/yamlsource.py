"""Strict YAML: bytes in, a small tree of nodes that know their line and column out.

Used by config.py (newsletter.yaml) and load.py (issues). PyYAML's ``safe_load`` is not
used: it keeps the last of two duplicate keys, expands aliases, reads ``NO`` as False,
``0123`` as 83, ``12:30`` as 750, and recurses until ``RecursionError`` on deep nesting.
Instead the event stream of the safe parser is folded into :class:`Scalar`,
:class:`Mapping` and :class:`Sequence` nodes without recursion, and every scalar keeps
its raw text. What a scalar means is decided by the field that reads it
(``yamlfields.Reader``): a text field takes the text as written, a number or date field
demands the exact form.

Refused, each with a ``file:line:col`` problem:

- files over 1 MB (before parsing), files saved as UTF-16 or UTF-32 (with a byte order
  mark or without), non-UTF-8 bytes, a byte order mark (editors can save without one, and
  a BOM in the middle of a concatenated file is invisible trouble),
  control characters, tabs where YAML does not allow them;
- anchors and aliases (so an alias bomb stops at its first ``&``), explicit tags such as
  ``!!python/object``, more than one document, nesting deeper than 20 levels;
- duplicate keys (both lines are named) and keys that are not plain text.

Key paths count list items from 1, as an editor counts: ``blocks[1]`` is the first block.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path
from typing import Any

import msgspec
import yaml

from newsletter.errors import InputError, Problem
from newsletter.input import files
from newsletter.input.files import size_text as size_text  # issues.py: the image limit
from newsletter.model import Location

MAX_BYTES = 1_048_576
TOO_BIG_HINT = "split it, or move large content out of the file"
MAX_DEPTH = 20

# What the YAML reader accepts as printable (PyYAML's own rule): anything else is refused
# before parsing, with its position.
_NON_PRINTABLE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)
_SURROGATE = re.compile("[\ud800-\udfff]")
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
# libyaml's parser when PyYAML was built with it (about 10x faster); same events and marks
_FAST_LOADER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR_TAGS = frozenset({"!", "tag:yaml.org,2002:str"})  # allowed on a scalar
_ANY_TAGS = frozenset({"!"})  # on a list or mapping
_KEY_BAD = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_WIDE_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
              (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"))


# --------------------------------------------------------------------------- nodes


class Scalar(msgspec.Struct, frozen=True):
    text: str
    plain: bool  # written without quotes, block indicator or tag
    style: str | None  # None (plain), "'", '"', "|", ">"
    line: int  # 1-based
    col: int  # 1-based

    @property
    def is_null(self) -> bool:
        return self.plain and self.text in _NULLS


class Mapping(msgspec.Struct, frozen=True):
    items: tuple[tuple[Scalar, Node], ...]
    line: int
    col: int


class Sequence(msgspec.Struct, frozen=True):
    items: tuple[Node, ...]
    line: int
    col: int


Node = Scalar | Mapping | Sequence


def describe(node: Node) -> str:
    """How a found value is named in "expected X, found Y"."""
    if isinstance(node, Mapping):
        return "a mapping (key: value pairs)"
    if isinstance(node, Sequence):
        return "a list"
    if node.is_null:
        return "nothing"
    text = node.text if len(node.text) <= 40 else node.text[:37] + "..."
    return repr(text)


# --------------------------------------------------------------------------- parsing


def parse(data: bytes, source: str, problems: list[Problem] | None = None) -> Node | None:
    """The single document in ``data`` as nodes (None when it is empty).

    Raises InputError for anything this module refuses; never another exception. Problems
    that leave a usable tree (a duplicate key, a bad escape) are appended to ``problems``
    when it is given, so the caller can go on and report the rest of the file too.
    """
    text = decode(data, source)
    builder = _Builder(source)
    try:
        try:
            root = builder.build(text, _FAST_LOADER)
        except yaml.YAMLError:
            # libyaml words some errors differently (and stops deep nesting itself, at a
            # different place): read a broken file again with the pure-Python parser so
            # the message is always the same one.
            builder = _Builder(source)
            root = builder.build(text, yaml.SafeLoader)
    except InputError:
        raise
    except yaml.MarkedYAMLError as e:
        raise InputError([*builder.problems, _syntax_problem(e, source)]) from e
    except (yaml.YAMLError, ValueError, RecursionError, MemoryError) as e:
        raise InputError([Problem(Location(source), "", f"cannot read YAML: {e}")]) from e
    if builder.problems:
        if problems is None:
            raise InputError(builder.problems)
        problems.extend(builder.problems)
    return root


def read(path: Path, not_found: tuple[str, str] | None = None) -> bytes:
    """The bytes of a file, refused by its size before a byte is read; InputError when it
    cannot be read. ``not_found`` is the (message, hint) to give for a missing file."""
    source = str(path)
    try:  # a folder, a device or a pipe that would never end: the rule files.py keeps
        return files.read_regular(path, limit=MAX_BYTES, too_big_hint=TOO_BIG_HINT)
    except OSError as e:
        if isinstance(e, FileNotFoundError) and not_found is not None:
            problem = Problem(Location(source), "", *not_found)
        else:
            problem = Problem(Location(source), "", f"cannot read the file: {e.strerror or e}")
        raise InputError([problem]) from None


def decode(data: bytes, source: str) -> str:
    """UTF-8 text, refusing oversize files, a BOM, bad bytes and control characters."""
    too_big = size_problem(len(data), source)
    if too_big:
        raise InputError([too_big])
    wide = _wide_encoding(data)
    if wide is not None:
        name, bom = wide
        raise InputError([Problem(Location(source, 1, 1), "", f"looks like {name}, not UTF-8"
                                  + (f": it starts with a {name} byte order mark" if bom
                                     else ""), "save it as UTF-8" + " without BOM" * bom)])
    if data.startswith(b"\xef\xbb\xbf"):
        raise InputError([Problem(Location(source, 1, 1), "", "file starts with a byte order mark",
                                  "save it as UTF-8 without BOM")])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise InputError([Problem(
            Location(source, line, col), "",
            f"not UTF-8: byte 0x{data[e.start]:02x} cannot be decoded",
            "save the file as UTF-8",
        )]) from None
    bad = _NON_PRINTABLE.search(text)
    if bad:
        pos = bad.start()
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        raise InputError([Problem(
            Location(source, line, col), "",
            f"control character U+{ord(bad.group()):04X} is not allowed",
            "delete it; it is often pasted in invisibly",
        )])
    return text


def _wide_encoding(data: bytes) -> tuple[str, bool] | None:
    """("UTF-16" or "UTF-32", with a byte order mark?) for a file saved so, else None.

    Without a mark: the text of a YAML file is mostly ASCII (keys, indentation, line
    ends), so in UTF-16 a good share of its bytes are NULs, in UTF-32 most are; a UTF-8
    file with a stray NUL is not mistaken for one (that is a control character).
    """
    for bom, name in _WIDE_BOMS:
        if data.startswith(bom):
            return name, True
    sample = data[:4096]
    nuls = sample.count(0)
    if not nuls:
        return None
    for codec, name, share in (("utf-32-le", "UTF-32", 2), ("utf-32-be", "UTF-32", 2),
                               ("utf-16-le", "UTF-16", 8), ("utf-16-be", "UTF-16", 8)):
        if nuls * share < len(sample):
            continue
        try:
            text = codecs.getincrementaldecoder(codec)().decode(sample, final=False)
        except UnicodeDecodeError:
            continue
        if text and not _NON_PRINTABLE.search(text):
            return name, False
    return None


def size_problem(size: int, source: str) -> Problem | None:
    """The problem with a file of ``size`` bytes, if it is too big (check before reading)."""
    return files.size_problem(size, source, MAX_BYTES, TOO_BIG_HINT)


def _syntax_problem(e: yaml.MarkedYAMLError, source: str) -> Problem:
    mark = e.problem_mark or e.context_mark
    where = Location(source, mark.line + 1, mark.column + 1) if mark else Location(source)
    problem = e.problem or e.context or "invalid YAML"
    hint: str | None = None
    if "'\\t'" in problem:
        problem, hint = "tab character", "indent with spaces, not tabs"
    elif "mapping values are not allowed" in problem:
        hint = "put quotes around text that contains ': '"
    elif "found character" in problem and "cannot start any token" in problem:
        hint = "put quotes around text that starts with this character"
    return Problem(where, "", f"YAML syntax: {problem}", hint)


def _tag_name(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!")


def _at(event: yaml.Event) -> tuple[int, int]:
    """An event's 1-based (line, column)."""
    mark = event.start_mark
    return (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)


class _Frame(msgspec.Struct):
    kind: str  # "map" or "seq"
    path: str
    line: int
    col: int
    nodes: list[Node] = msgspec.field(default_factory=list)  # a sequence's items
    pairs: list[tuple[Scalar, Node]] = msgspec.field(default_factory=list)  # a mapping's items
    key: Scalar | None = None  # a mapping's key waiting for its value
    duplicate: bool = False  # the waiting key was seen before: its value is dropped
    seen: dict[str, int] = msgspec.field(default_factory=dict)  # key text -> line


class _Builder:
    """Folds parser events into nodes with an explicit stack: no recursion at any depth."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[Problem] = []

    def fail(self, at: tuple[int, int], key: str, message: str,
             hint: str | None = None) -> InputError:
        where = Location(self.source, *at)
        return InputError([*self.problems, Problem(where, key, message, hint)])

    def build(self, text: str, loader: type) -> Node | None:
        # The most frequent events first: this loop is most of the time a file takes to load.
        # (get_event itself, not yaml.parse: that generator asks check_event first, twice
        # the calls per event; both parsers return None after the stream's end.)
        parser = loader(text)
        try:
            return self._events(parser)
        finally:
            parser.dispose()

    def _events(self, parser: Any) -> Node | None:
        stack: list[_Frame] = []
        root: Node | None = None
        documents = 0
        while (event := parser.get_event()) is not None:
            if isinstance(event, yaml.ScalarEvent):
                self._check_properties(event, stack, _STR_TAGS)
                style = event.style or None  # libyaml says '' for plain, PyYAML None
                scalar = Scalar(event.value, style is None and event.tag is None, style,
                                *_at(event))
                # Only a "\u" escape can make a lone surrogate: decode() refused the rest.
                if event.style == '"' and _SURROGATE.search(scalar.text):
                    # "\ud83d\ude00" escapes decode to two lone halves that no file can hold.
                    self.problems.append(Problem(
                        Location(self.source, scalar.line, scalar.col), self._path(stack),
                        "a \\u escape here makes an invalid character",
                        "write the character itself, or one \\U00XXXXXX escape"))
                    scalar = Scalar(_SURROGATE.sub("\ufffd", scalar.text), scalar.plain,
                                    scalar.style, scalar.line, scalar.col)
                root = self._add(stack, scalar) or root
            elif isinstance(event, yaml.CollectionEndEvent):
                frame = stack.pop()
                node: Node
                if frame.kind == "map":
                    node = Mapping(tuple(frame.pairs), frame.line, frame.col)
                else:
                    node = Sequence(tuple(frame.nodes), frame.line, frame.col)
                root = self._add(stack, node) or root
            elif isinstance(event, yaml.CollectionStartEvent):
                self._check_properties(event, stack, _ANY_TAGS)
                at = _at(event)
                if len(stack) >= MAX_DEPTH:
                    raise self.fail(at, "", f"nested more than {MAX_DEPTH} levels deep",
                                    "flatten the structure")
                path = self._path(stack)
                if stack and stack[-1].kind == "map" and stack[-1].key is None:
                    raise self.fail(at, path, "a key must be plain text, not a list or mapping")
                kind = "map" if isinstance(event, yaml.MappingStartEvent) else "seq"
                stack.append(_Frame(kind, path, *at))
            elif isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise self.fail(_at(event), "", "more than one YAML document",
                                    "an issue is one document: remove the '---' line")
            elif isinstance(event, yaml.AliasEvent):
                raise self.fail(_at(event), self._path(stack), f"alias *{event.anchor} is not "
                                "allowed", "write the value out in full")
        return root

    def _check_properties(self, event: yaml.ScalarEvent | yaml.CollectionStartEvent,
                          stack: list[_Frame], tags: frozenset[str]) -> None:
        """Refuse an anchor, or a tag other than ``tags``."""
        if event.anchor is not None:
            raise self.fail(_at(event), self._path(stack), f"anchor &{event.anchor} is not "
                            "allowed", "write the value out in full")
        if event.tag is not None and event.tag not in tags:
            raise self.fail(_at(event), self._path(stack), f"tag {_tag_name(event.tag)} is "
                            "not allowed", "write plain values without tags")

    @staticmethod
    def _path(stack: list[_Frame]) -> str:
        if not stack:
            return ""
        top = stack[-1]
        if top.kind == "seq":
            return f"{top.path}[{len(top.nodes) + 1}]"
        if top.key is not None:
            return join(top.path, top.key.text)
        return top.path

    def _add(self, stack: list[_Frame], node: Node) -> Node | None:
        """Attach ``node`` to the open collection; return it when it is the document root."""
        if not stack:
            return node
        top = stack[-1]
        if top.kind == "seq":
            top.nodes.append(node)
        elif top.key is None:
            assert isinstance(node, Scalar)  # collections as keys are refused on start
            if _KEY_BAD.search(node.text):
                self.problems.append(Problem(
                    Location(self.source, node.line, node.col), top.path,
                    f"key {node.text!r} contains a control character", "delete it"))
                node = Scalar(_KEY_BAD.sub("?", node.text), node.plain, node.style,
                              node.line, node.col)
            first = top.seen.get(node.text)
            if first is not None:
                self.problems.append(Problem(
                    Location(self.source, node.line, node.col), join(top.path, node.text),
                    f"duplicate key (the first is on line {first})", "keep one of them"))
            else:
                top.seen[node.text] = node.line
            top.key, top.duplicate = node, first is not None
        else:
            if not top.duplicate:
                top.pairs.append((top.key, node))
            top.key = None
        return None


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
