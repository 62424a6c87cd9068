"""Archive stage, part 3: write the site safely, and only what changed.

The site is built into a staging folder beside the output (same filesystem), checked,
then swapped in with renames: a failed build leaves the previous site as it was. Files
whose bytes did not change are hard-linked (or copied, keeping their mtime) from the
previous site instead of being written again, so they keep their mtime.

``.manifest.json`` (in the site) records what the last build made: the fingerprint of
its code, templates and config, each issue's entry and page key, the sha256 of every
file, and the privacy policy fingerprint those files passed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError, Problem
from ..model import Location
from .entries import Entry

MANIFEST = ".manifest.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True, slots=True)
class Manifest:
    fingerprint: str = ""
    policy: str = ""
    entries: dict[str, Entry] = field(default_factory=dict)  # by slug (text left out)
    pages: dict[str, str] = field(default_factory=dict)  # slug -> page key
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256

    def to_bytes(self) -> bytes:
        entries = []
        for slug in sorted(self.entries):
            data = self.entries[slug].to_json()
            data.pop("text")  # it is in search-index.js; no need to publish it twice
            entries.append(data)
        data = {"version": MANIFEST_VERSION, "fingerprint": self.fingerprint,
                "policy": self.policy, "entries": entries, "pages": self.pages,
                "files": self.files}
        return (json.dumps(data, ensure_ascii=False, indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def read(cls, site: Path, texts: dict[str, str]) -> Manifest:
        """The previous build's manifest; an empty one when there is none usable."""
        try:
            data: Any = json.loads((site / MANIFEST).read_bytes())
            if data.get("version") != MANIFEST_VERSION:
                return cls()
            entries = {}
            for item in data["entries"]:
                if item["slug"] in texts:  # an entry without its search text is not reusable
                    entry = Entry.from_json({**item, "text": texts[item["slug"]]})
                    entries[entry.slug] = entry
            return cls(str(data["fingerprint"]), str(data["policy"]), entries,
                       {str(k): str(v) for k, v in data["pages"].items()},
                       {str(k): str(v) for k, v in data["files"].items()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return cls()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Staging:
    """The folder the new site is assembled in, reusing the previous site's files."""

    def __init__(self, output: Path, previous: Manifest) -> None:
        self.output = output
        self.folder = output.parent / f".{output.name}.staging-{os.getpid()}"
        self.previous = previous
        self.files: dict[str, str] = {}
        self.written: list[str] = []
        self.kept: list[str] = []
        self._folders: set[Path] = {self.folder}

    def put(self, relative: str, data: bytes) -> None:
        """Add a file; if the previous site has the same bytes, link that one instead."""
        digest = sha256(data)
        same = self.previous.files.get(relative) == digest \
            and self.previous_bytes(relative) == data  # never trust a hand-edited file
        if not (same and self._link_previous(relative)):
            target = self._target(relative)
            target.write_bytes(data)
            self.written.append(relative)
        self.files[relative] = digest

    def put_manifest(self, manifest: Manifest) -> None:
        data = manifest.to_bytes()
        if self.previous_bytes(MANIFEST) != data or not self._link_previous(MANIFEST):
            self._target(MANIFEST).write_bytes(data)
            self.written.append(MANIFEST)

    def copy(self, relative: str, source: Path, digest: str) -> None:
        """Add a copy of a source file whose sha256 is known (an image)."""
        same = self.previous.files.get(relative) == digest and _same_size(
            self.output / relative, source)  # the name carries the hash; images are large
        if not (same and self._link_previous(relative)):
            shutil.copyfile(source, self._target(relative))
            self.written.append(relative)
        self.files[relative] = digest

    def keep(self, relative: str) -> bytes | None:
        """Reuse the previous site's file unchanged; its bytes, or None if it cannot be."""
        digest = self.previous.files.get(relative)
        if digest is None:
            return None
        try:
            data = (self.output / relative).read_bytes()
        except OSError:
            return None
        if sha256(data) != digest or not self._link_previous(relative):
            return None  # edited by hand or gone: build it again
        self.files[relative] = digest
        return data

    def previous_bytes(self, relative: str) -> bytes | None:
        try:
            return (self.output / relative).read_bytes()
        except OSError:
            return None

    def _link_previous(self, relative: str) -> bool:
        old = self.output / relative
        if not old.is_file():
            return False
        target = self._target(relative)
        try:
            os.link(old, target)
        except OSError:
            try:
                shutil.copy2(old, target)  # another filesystem: copy, keeping the mtime
            except OSError:
                return False
        self.kept.append(relative)
        return True

    def _target(self, relative: str) -> Path:
        target = self.folder / relative
        if target.parent not in self._folders:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._folders.add(target.parent)
        return target


def _same_size(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_size == b.stat().st_size
    except OSError:
        return False


def check_output(output: Path) -> None:
    """Refuse to replace a folder this program did not build (``-o .`` must not eat a project)."""
    if output.exists() and not output.is_dir():
        raise InputError([Problem(Location(str(output)), "", "exists and is not a folder")])
    if output.is_dir() and any(output.iterdir()) and not (output / MANIFEST).is_file():
        raise InputError([Problem(
            Location(str(output)), "",
            "is not empty and was not built by `newsletter archive` (no .manifest.json)",
            "choose another folder with -o, or empty it first")])


@contextmanager
def staged(output: Path, previous: Manifest) -> Iterator[Staging]:
    """Assemble a site in a staging folder; publish it only if the block succeeds."""
    staging = Staging(output, previous)
    if staging.folder.exists():
        shutil.rmtree(staging.folder)
    staging.folder.mkdir(parents=True)
    try:
        yield staging
        swap(staging.folder, output)
    finally:
        if staging.folder.exists():
            shutil.rmtree(staging.folder, ignore_errors=True)


def swap(new: Path, output: Path) -> None:
    """Rename the old site aside, the new one in, then delete the old one."""
    aside = output.parent / f".{output.name}.old-{os.getpid()}"
    if aside.exists():
        shutil.rmtree(aside)
    had_old = output.exists()
    if had_old:
        os.rename(output, aside)
    try:
        os.rename(new, output)
    except OSError:
        if had_old:
            os.rename(aside, output)
        raise
    if had_old:
        shutil.rmtree(aside, ignore_errors=True)
