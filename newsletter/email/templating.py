"""The Jinja environments the render stage (and the archive) use.

Two environments, both loading from ``<network.root>/templates``:

    html_environment(root)  autoescape ON for every template, .mjml.j2 included
                            (select_autoescape() would leave .mjml unescaped), StrictUndefined
    text_environment(root)  autoescape OFF (the text part would show "&amp;"), StrictUndefined

Author content is only ever passed as data: nothing here compiles a string from an issue,
so ``{{ config }}`` in a body reaches the reader literally.

Templates are read once per process (no ``auto_reload``: it would stat every template on
every render, includes too). The preview, which renders again after an edit, calls
``forget_templates`` first. Compiled, they are kept between runs in the project's own
``.newsletter-cache/templates/`` (a fresh process would otherwise spend much of a build
compiling them), which carries a ``.gitignore`` of ``*`` so no repository picks it up.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import marshal
import os
import pickle
from functools import lru_cache
from pathlib import Path

from jinja2 import (
    BytecodeCache,
    Environment,
    FileSystemBytecodeCache,
    FileSystemLoader,
    StrictUndefined,
)
from jinja2.bccache import Bucket, bc_magic
from markupsafe import Markup

from newsletter.model import Event, RenderMode, Slot
from newsletter.text import markdown
from newsletter.text.plaintext import heading, oneline, wrap

_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")


def long_date(day: dt.date) -> str:
    """en-GB long date, independent of the process locale: ``Tuesday 15 November 2016``."""
    return f"{_DAYS[day.weekday()]} {day.day} {_MONTHS[day.month - 1]} {day.year}"


def _clock(moment: dt.datetime) -> str:
    return f"{moment:%H:%M}"


def event_when(event: Event) -> str:
    """When an event happens, in words: a day, or a start and optional end time."""
    if event.start is not None:
        text = f"{long_date(event.start.date())}, {_clock(event.start)}"
        if event.end is not None:
            if event.end.date() == event.start.date():
                text += f" to {_clock(event.end)}"
            else:
                text += f" to {long_date(event.end.date())}, {_clock(event.end)}"
        return text
    if event.date is not None:
        return long_date(event.date)
    return ""


def _markdown_html(value: str) -> Markup:
    # Safe: markdown.to_html escapes raw HTML and nh3 keeps only an allowlist.
    return Markup(markdown.to_html(value))  # noqa: S704


CACHE_FOLDER = ".newsletter-cache"


class _WholeFileBytecodeCache(FileSystemBytecodeCache):
    """Jinja's own file cache, each file read in one piece, and optional.

    Jinja hands ``marshal.load`` the open file, which then reads it a few bytes at a time
    (~0.1 ms a template, a build loads 18); ``marshal.loads`` on the file's bytes is ~5x
    faster. A file not in the layout Jinja 3.1 writes (magic, pickled source checksum,
    marshalled code) goes to Jinja's own reader, which compiles afresh when it must.
    A cache that cannot be written (a read-only project folder) is no error: the
    templates are compiled again next time.

    Both environments share the folder, and a template both load (shared/helpline.j2)
    compiles differently in each (escaping, trimmed blocks): ``kind`` keeps their entries
    apart, which Jinja's key (the template's name and path) alone would not.
    """

    def __init__(self, directory: str, kind: str = "") -> None:
        super().__init__(directory)
        self.kind = kind

    def get_cache_key(self, name: str, filename: str | None = None) -> str:
        return super().get_cache_key(f"{self.kind}:{name}" if self.kind else name, filename)

    def dump_bytecode(self, bucket: Bucket) -> None:
        with contextlib.suppress(OSError):
            folder = Path(self.directory)
            if not folder.is_dir():  # made on the first write, not by merely reading
                folder.mkdir(parents=True)
                ignore = folder.parent / ".gitignore"
                if not ignore.exists():
                    ignore.write_text("# made by newsletter: compiled templates, safe to "
                                      "delete\n*\n", encoding="utf-8")
            super().dump_bytecode(bucket)

    def load_bytecode(self, bucket: Bucket) -> None:
        try:
            with open(os.path.join(self.directory, self.pattern % (bucket.key,)), "rb") as f:
                data = f.read()
        except OSError:  # not cached yet, or gone meanwhile
            return
        head = bc_magic + pickle.dumps(bucket.checksum, 2)
        if data.startswith(head):
            try:
                # As Jinja's own reader does. The folder is the project's: whoever can write
                # there can edit the templates themselves, which are code too.
                bucket.code = marshal.loads(memoryview(data)[len(head):])  # noqa: S302
                return
            except (EOFError, ValueError, TypeError):
                pass
        bucket.load_bytecode(io.BytesIO(data))


@lru_cache(maxsize=8)
def _bytecode_cache(root: Path, kind: str) -> BytecodeCache:
    """The project's template cache (see the module docstring). Entries are keyed by the
    template's path and checked against its source's checksum, so edits are seen. In the
    project, not in Jinja's default folder under /tmp: that one is shared by every
    project, and nothing ever empties it (a test run left 20 MB there)."""
    return _WholeFileBytecodeCache(str(root / CACHE_FOLDER / "templates"), kind)


def _globals() -> dict[str, object]:
    return {"Slot": Slot, "RenderMode": RenderMode}


@lru_cache(maxsize=8)
def html_environment(root: Path) -> Environment:
    """The one environment for HTML and MJML templates (autoescape on, strict)."""
    env = Environment(
        loader=FileSystemLoader(str(root / "templates")),
        autoescape=True,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        auto_reload=False,  # see forget_templates
        bytecode_cache=_bytecode_cache(root, "html"),
    )
    env.filters.update(markdown=_markdown_html, long_date=long_date, when=event_when,
                       oneline=oneline)
    env.globals.update(_globals())
    return env


@lru_cache(maxsize=8)
def text_environment(root: Path) -> Environment:
    """The environment for the plain-text part: no escaping, strict, blocks trimmed."""
    # Plain text, never HTML: escaping would show "&amp;" to readers.
    env = Environment(
        loader=FileSystemLoader(str(root / "templates")),
        autoescape=False,  # noqa: S701
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,  # see forget_templates
        bytecode_cache=_bytecode_cache(root, "text"),
    )
    env.filters.update(md_text=markdown.to_text, wrap=wrap, heading=heading,
                       long_date=long_date, when=event_when, oneline=oneline)
    env.globals.update(_globals())
    return env


def forget_templates() -> None:
    """Drop the environments and their compiled templates, so edited templates are read
    again (for the preview server; builds read each template once)."""
    html_environment.cache_clear()
    text_environment.cache_clear()
