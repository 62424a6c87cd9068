"""Files that hold member data are created readable and writable by their owner only.

The state database, CSV exports, `status --csv` and the `send --dry-run` messages all carry
members' addresses. Created the ordinary way they would be 0644 (readable by every account
on the machine), so they are created 0600 here instead: with ``os.open``'s mode, which the
umask can only narrow, never by a chmod after the bytes are already on disk.
"""

from __future__ import annotations

import os
from pathlib import Path

MODE = 0o600


def create_empty(path: Path) -> bool:
    """Create ``path`` empty and owner-only unless it exists; True if this call made it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, MODE)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def write_new(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` as a new owner-only file (a leftover there is replaced).

    Meant for the ``.partial`` file that is then renamed over the real name, which keeps
    the partial file's permissions. OSError as it comes.
    """
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, MODE)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
