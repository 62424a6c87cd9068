"""Archive stage, part 3: write the site safely, and only what changed.

The site is built into a staging folder beside the output (same filesystem), checked,
then swapped in with renames: a failed build leaves the previous site as it was. Files
whose bytes did not change are the previous site's own files (hard links, or copies
keeping their mtime), so they keep their mtime.

The replaced site is not deleted: it is brought up to date (hard links to the new
site's files) and kept as the next build's staging folder, ``.<output>.staging``. Making
and deleting a folder per issue on every build cost more than everything else an
incremental build does.

``.<output>.manifest.json`` (beside the site, never in it) records what the last build
made: the fingerprint of its code, templates and config, each issue's entry and page key,
the sha256 of every file, and the fingerprint of the privacy policy those files passed.
That policy is derived from the member list, and the entries name source files: neither
belongs in the published folder, which holds only what readers are meant to see. The
manifest is written after the gate passed and before the swap, so every digest in it
names clean bytes even if the swap never happens: file reuse compares the live bytes
themselves with it, never trusts the manifest alone.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from newsletter.archive.entries import Entry
from newsletter.errors import InputError, Problem, StateError
from newsletter.model import Location

MANIFEST_VERSION = 2  # 2: beside the site instead of inside it


class Manifest(msgspec.Struct, frozen=True):
    fingerprint: str = ""
    policy: str = ""
    entries: dict[str, Entry] = msgspec.field(default_factory=dict)  # by slug (text left out)
    pages: dict[str, str] = msgspec.field(default_factory=dict)  # slug -> page key
    files: dict[str, str] = msgspec.field(default_factory=dict)  # relative path -> sha256

    def to_bytes(self) -> bytes:
        entries = []
        for slug in sorted(self.entries):
            data = self.entries[slug].to_json()
            data.pop("text")  # it is in search-index.js; no need to publish it twice
            entries.append(data)
        data = {"version": MANIFEST_VERSION, "fingerprint": self.fingerprint,
                "policy": self.policy, "entries": entries, "pages": self.pages,
                "files": self.files}
        # compact: indent= would switch json to its slow pure-Python encoder
        text = json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        return (text + "\n").encode()

    def write(self, output: Path) -> None:
        """Replace the manifest beside ``output`` atomically (untouched if unchanged)."""
        path = manifest_path(output)
        data = self.to_bytes()
        try:
            if path.read_bytes() == data:
                return
        except OSError:
            pass
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(data)
        partial.replace(path)

    @classmethod
    def read(cls, output: Path, texts: dict[str, str]) -> Manifest:
        """The previous build's manifest; an empty one when there is none usable."""
        try:
            data: Any = json.loads(manifest_path(output).read_bytes())
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
    """The folder the next site is assembled in, beside the output.

    Between builds it mirrors the live site with hard links (the same files under a
    second name), so a build only touches the files that change: no folder is created
    or deleted for an unchanged issue. Nothing here ever writes into a file; a changed
    file is a new file under the old name, so the live site, which shares the unchanged
    files, cannot be altered before the swap.
    """

    def __init__(self, output: Path, previous: Manifest) -> None:
        self.output = output
        self.folder = staging_folder(output)
        self.previous = previous
        self.files: dict[str, str] = {}  # the new site: relative path -> sha256
        self.written: list[str] = []  # files with new bytes
        self.kept: list[str] = []  # files carried over unchanged
        self.touched: set[str] = set()  # names in the staging folder changed by this build
        self._folders: set[Path] = {self.folder}

    def put(self, relative: str, data: bytes) -> None:
        """Add a file; if the live site has the same bytes, use that very file."""
        digest = sha256(data)
        same = self.previous.files.get(relative) == digest \
            and self.previous_bytes(relative) == data  # never trust a hand-edited file
        if not (same and self._use_live(relative)):
            self._write(relative, data)
        self.files[relative] = digest

    def keep(self, relative: str) -> bytes | None:
        """Reuse the live site's file unchanged; its bytes, or None if it cannot be."""
        digest = self.previous.files.get(relative)
        if digest is None:
            return None
        data = self.previous_bytes(relative)
        if data is None or sha256(data) != digest or not self._use_live(relative):
            return None  # edited by hand or gone: build it again
        self.files[relative] = digest
        return data

    def previous_bytes(self, relative: str) -> bytes | None:
        try:
            return (self.output / relative).read_bytes()
        except OSError:
            return None

    def finish(self) -> None:
        """Remove what the new site no longer has (a deleted issue, leftovers).

        Afterwards the folder holds exactly ``files``, each written or linked to by this
        build: the privacy gate scans that list, not a walk of the folder.
        """
        wanted = set(self.files)
        emptied: set[Path] = set()
        for top, folders, names in os.walk(self.folder, topdown=False):
            here = Path(top)
            left = len(names) + len(folders)
            for name in names:
                relative = (here / name).relative_to(self.folder).as_posix()
                if relative not in wanted:
                    (here / name).unlink()
                    self.touched.add(relative)
                    left -= 1
            left -= sum(1 for name in folders if here / name in emptied)
            if left == 0 and here != self.folder:
                here.rmdir()
                emptied.add(here)

    def _use_live(self, relative: str) -> bool:
        """Make the staged name point at the live file itself (keeping its mtime)."""
        live, staged = self.output / relative, self.folder / relative
        try:
            a, b = live.stat(), staged.stat()
            if (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev):
                self.kept.append(relative)
                return True  # already the same file: the common case
        except FileNotFoundError:
            pass
        if not live.is_file():
            return False
        target = self._fresh(relative)
        try:
            os.link(live, target)
        except OSError:
            try:
                shutil.copy2(live, target)  # another filesystem: copy, keeping the mtime
            except OSError:
                return False
        self.kept.append(relative)
        return True

    def _write(self, relative: str, data: bytes) -> None:
        self._fresh(relative).write_bytes(data)
        self.written.append(relative)

    def _fresh(self, relative: str) -> Path:
        """The staged path, with whatever had that name removed (never written through)."""
        target = self.folder / relative
        if target.parent not in self._folders:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._folders.add(target.parent)
        target.unlink(missing_ok=True)
        self.touched.add(relative)
        return target


def staging_folder(output: Path) -> Path:
    return output.parent / f".{output.name}.staging"


def manifest_path(output: Path) -> Path:
    return output.parent / f".{output.name}.manifest.json"


def _aside_folder(output: Path) -> Path:
    return output.parent / f".{output.name}.old"


def _mirror(folder: Path, live: Path, names: Iterable[str]) -> None:
    """Make ``names`` in ``folder`` hard links to the live files again (or absent)."""
    for relative in sorted(names):
        staged, source = folder / relative, live / relative
        staged.unlink(missing_ok=True)
        if source.is_file():
            staged.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, staged)
            except OSError:
                shutil.copy2(source, staged)
        else:
            for parent in staged.parents:
                if parent == folder or not parent.is_relative_to(folder):
                    break
                try:
                    parent.rmdir()
                except OSError:
                    break


def _mirror_all(folder: Path, live: Path) -> None:
    """A fresh staging folder: the live site's files, hard-linked."""
    if folder.exists():
        shutil.rmtree(folder)
    for top, _, names in os.walk(live):
        here = folder / Path(top).relative_to(live)
        here.mkdir(parents=True, exist_ok=True)
        for name in names:
            try:
                os.link(Path(top) / name, here / name)
            except OSError:
                shutil.copy2(Path(top) / name, here / name)


def check_output(output: Path) -> None:
    """Refuse to replace a folder this program did not build (``-o .`` must not eat a project)."""
    if output.name in ("", ".", ".."):  # the swap renames the folder: it needs a name
        raise InputError([Problem(Location(str(output)), "", "is not a folder name",
                                  "name the site's own folder, e.g. -o site")])
    if output.exists() and not output.is_dir():
        raise InputError([Problem(Location(str(output)), "", "exists and is not a folder")])
    if output.is_dir() and any(output.iterdir()) and not manifest_path(output).is_file():
        raise InputError([Problem(
            Location(str(output)), "",
            f"is not empty and was not built by `newsletter archive` (no "
            f"{manifest_path(output).name} beside it)",
            "choose another folder with -o, or empty it first")])


@contextmanager
def locked(output: Path) -> Iterator[None]:
    """One build at a time beside ``output``: builds share the staging folder.

    The lock is on the parent folder itself (flock), so no lock file is left behind and
    a killed build releases it with its process.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(output.parent, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateError(f"{output}: another `newsletter archive` is building beside it "
                             "right now; wait for it to finish") from None
        yield
    finally:
        os.close(fd)


def recover(output: Path) -> None:
    """Finish a swap an earlier run was killed in the middle of."""
    aside = _aside_folder(output)
    if aside.exists():
        if output.exists():
            shutil.rmtree(aside)  # the new site made it in; the old one was leftover
        else:
            os.rename(aside, output)  # killed between the two renames: put it back


@contextmanager
def staged(output: Path, previous: Manifest) -> Iterator[Staging]:
    """Assemble a site in the staging folder; publish it only if the block succeeds.

    Call ``recover`` first: the live site must be in place, not aside.

    Whatever happens, the staging folder ends as a hard-link mirror of the live site:
    no unpublished bytes (say, a page the privacy gate refused) stay behind on disk.
    """
    staging = Staging(output, previous)
    staging.folder.mkdir(parents=True, exist_ok=True)
    try:
        yield staging
    except BaseException:
        _mirror(staging.folder, output, staging.touched)
        raise
    had_old = output.exists()
    swap(staging.folder, output)
    if had_old:
        _mirror(staging.folder, output, staging.touched)  # the old site, brought up to date
    else:
        _mirror_all(staging.folder, output)


def swap(new: Path, output: Path) -> None:
    """Rename the old site aside and the new one in; the old one becomes the staging folder."""
    aside = _aside_folder(output)
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
        os.rename(aside, new)
