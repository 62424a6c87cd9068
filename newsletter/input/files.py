"""Input files are regular files of a bounded size, checked before a byte is read.

One rule for every reader of files people name: yamlsource.py (newsletter.yaml, issues) and
members/csvfiles.py (member CSVs). A folder, a device such as ``/dev/zero`` (it never ends)
or a named pipe (reading it waits for a writer, for ever) is refused, and so is a file over
the reader's limit, by its size.
"""

from __future__ import annotations

import stat
from pathlib import Path

from newsletter.errors import InputError, Problem
from newsletter.model import Location


def read_regular(path: Path, *, limit: int, too_big_hint: str,
                 irregular_hint: str | None = None, shown_as: str | None = None) -> bytes:
    """The bytes of ``path``: InputError (``file: cannot read the file: a folder``, ``...:
    not a regular file``, ``file is 1.1 MB; the limit is 1.0 MB``) when the rule refuses
    it; OSError as it comes when it cannot be opened or read (each reader words those).
    ``shown_as``: the file's name in messages (default: the path)."""
    source = shown_as or str(path)
    status = path.stat()
    if not stat.S_ISREG(status.st_mode):
        what = "a folder" if stat.S_ISDIR(status.st_mode) else "not a regular file"
        raise InputError([Problem(Location(source), "", f"cannot read the file: {what}",
                                  irregular_hint)])
    too_big = size_problem(status.st_size, source, limit, too_big_hint)
    if too_big:
        raise InputError([too_big])
    data = path.read_bytes()
    too_big = size_problem(len(data), source, limit, too_big_hint)  # it grew meanwhile
    if too_big:
        raise InputError([too_big])
    return data


def size_problem(size: int, source: str, limit: int, hint: str) -> Problem | None:
    """The problem with a file of ``size`` bytes, if it is over ``limit``."""
    if size <= limit:
        return None
    return Problem(Location(source), "", f"file is {size_text(size)}; the limit is "
                   f"{size_text(limit)}", hint)


def size_text(n: int) -> str:
    """A byte count as people read it: ``1.1 MB``, ``12.0 KB``, ``300 bytes``."""
    if n >= 1_048_576:
        return f"{n / 1_048_576:.1f} MB"
    if n >= 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n} bytes"
