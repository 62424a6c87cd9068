"""Helpers for the plain-text part: wrapping, underlined headings, numbered link references.

The text part is rendered from the model (templates/text/), never scraped from the HTML.
Lines wrap at 76 columns on spaces only: a URL is never broken, even when it is longer
than a line. Links are written as ``text [1]`` and listed in full at the end.
"""

from __future__ import annotations

import re

WIDTH = 76


class LinkRefs:
    """The numbered links of one text part, in order of first use (same URL, same number)."""

    def __init__(self) -> None:
        self._numbers: dict[str, int] = {}

    def number(self, url: str) -> int:
        return self._numbers.setdefault(url, len(self._numbers) + 1)

    @property
    def items(self) -> list[tuple[int, str]]:
        return [(n, url) for url, n in self._numbers.items()]

    def __len__(self) -> int:
        return len(self._numbers)


def oneline(value: str) -> str:
    """Collapse every run of whitespace (line breaks included) into one space."""
    return " ".join(value.split())


def wrap(text: str, *, initial_indent: str = "", subsequent_indent: str = "") -> str:
    """Wrap one paragraph at WIDTH columns without breaking words or URLs.

    The same lines as ``textwrap.wrap(..., break_long_words=False, break_on_hyphens=False)``
    (a test holds them equal), at a fifth of the cost: this runs once per paragraph.
    """
    words = text.split()
    if not words:
        return ""
    whole = initial_indent + " ".join(words)
    if len(whole) <= WIDTH:  # titles, links, list items: most calls
        return whole
    lines = []
    line = initial_indent + words[0]
    for word in words[1:]:
        if len(line) + 1 + len(word) <= WIDTH:
            line += " " + word
        else:
            lines.append(line)
            line = subsequent_indent + word
    lines.append(line)
    return "\n".join(lines)


def heading(text: str, char: str = "=") -> str:
    """A heading underlined with ``char`` (wrapped first when long)."""
    lines = wrap(text).split("\n")
    return "\n".join(lines) + "\n" + char * max(len(line) for line in lines)


def tidy(text: str) -> str:
    """Strip trailing spaces, fold runs of blank lines into one, end with one newline."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n") + "\n"
