"""A zip file people were given by another tool, read in memory and held to bounds.

Part of the import stage: bytes -> the (name, bytes) of the entries a format expects.
Nothing is ever written to disk, so a name like ``../../etc/passwd`` could not go
anywhere; it is refused all the same, as is every entry the format does not expect. A zip
bomb is stopped by counting: at most MAX_ENTRIES entries, and the bytes actually
decompressed (not the sizes the zip declares) at most the limit for all entries together.
Encrypted entries and broken zips are refused with a message, never a traceback.
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from collections.abc import Callable

from newsletter.errors import InputError, Problem
from newsletter.input.files import size_text
from newsletter.model import Location

MAX_ENTRIES = 16
_CHUNK = 1 << 16
_SAFE_NAME = re.compile(r"[^/\\:\x00-\x1f]+")  # one plain file name: no folders, no drive


def is_zip(data: bytes) -> bool:
    """A zip file's first bytes (a local file header, or the end record of an empty zip)."""
    return data.startswith((b"PK\x03\x04", b"PK\x05\x06"))


def entries(data: bytes, path: str, *, limit: int, expected: Callable[[str], bool],
            hint: str) -> list[tuple[str, bytes]]:
    """Every entry of the zip, in the zip's order, when each one is expected; InputError
    otherwise. ``hint``: what the zip should hold, for the messages."""
    where = Location(path)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
        raise InputError([Problem(where, "", f"not a readable zip file ({e})", hint)]) from e
    if len(infos) > MAX_ENTRIES:
        raise InputError([Problem(where, "", f"the zip holds {len(infos)} files; at most "
                                  f"{MAX_ENTRIES} are read", hint)])
    unexpected = [info.filename for info in infos
                  if not _SAFE_NAME.fullmatch(info.filename) or info.filename in (".", "..")
                  or not expected(info.filename)]
    if unexpected:
        shown = ", ".join(repr(name[:100]) for name in unexpected[:5])
        raise InputError([Problem(where, "", f"unexpected file(s) in the zip: {shown}; "
                                  "nothing was read", hint)])
    found: list[tuple[str, bytes]] = []
    total = 0
    for info in infos:
        if info.flag_bits & 0x1:
            raise InputError([Problem(where, "", f"{info.filename} in the zip is encrypted",
                                      "unzip it with its password, then import the CSV")])
        try:
            with archive.open(info) as entry:
                parts: list[bytes] = []
                while chunk := entry.read(_CHUNK):
                    total += len(chunk)
                    if total > limit:  # counted as decompressed: sizes in the zip can lie
                        raise InputError([Problem(
                            where, "", f"the files in the zip come to more than "
                            f"{size_text(limit)} unpacked; the limit is {size_text(limit)}",
                            "export the audience in parts and import each")])
                    parts.append(chunk)
        except InputError:
            raise
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError,
                RuntimeError, ValueError) as e:
            raise InputError([Problem(where, "", f"{info.filename} in the zip cannot be "
                                      f"read ({e})", hint)]) from e
        found.append((info.filename, b"".join(parts)))
    return found
