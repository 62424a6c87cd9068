"""Load stage: ``issues/<slug>.yaml`` -> :class:`~newsletter.model.Issue`.

Strict YAML (see yamlsource.py), then the issue schema (docs/editors.md), version 1. Every
problem in the file is collected and raised together as one InputError, each with the
file, line and column of the value at fault. Local images are read here, once: their type
is sniffed from the bytes (not the name), every frame is decoded, their metadata is left
out of the bytes to publish (images.py), and the file's bytes go into the issue's
``source_hash``. An image from another site is refused (loading it tells that site who
opens the email, and when) unless newsletter.yaml says ``remote_images: allow``. An issue
file that is a link to a file outside its folder is refused unread.

Markdown (intro and bodies) is inspected here with ``markdown.parts`` to refuse what the
renderer would drop (raw HTML, Markdown images, links other than https/mailto/tel), so the
editor hears about it from ``check``, on the right line.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import TypeVar
from urllib.parse import urlsplit

from newsletter.errors import InputError, Problem
from newsletter.input import images
from newsletter.input import yamlsource as ys
from newsletter.input.fields import Fields, Reader
from newsletter.input.images import sniff_image
from newsletter.model import (
    Article,
    Block,
    Callout,
    Contact,
    Event,
    Image,
    Issue,
    Link,
    Links,
    Location,
    Network,
    Person,
    RemoteImages,
    Section,
)
from newsletter.text import markdown as md
from newsletter.text.addresses import address_problem, phone_problem, url_problem

MAX_BLOCKS = 60
MAX_ITEMS = 50  # people in a contact block, links in a links block
MAX_IMAGE_BYTES = 1_048_576
TITLE_LEN = 200
BODY_LEN = 20_000
SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")

ISSUE_KEYS = ("version", "title", "date", "send_by", "number", "subject", "preheader", "intro",
              "blocks")
BLOCK_KEYS: dict[str, tuple[str, ...]] = {
    "article": ("type", "title", "body", "image", "link"),
    "event": ("type", "title", "date", "start", "end", "location", "body", "link"),
    "contact": ("type", "title", "body", "people"),
    "callout": ("type", "title", "body", "link"),
    "links": ("type", "title", "items"),
    "section": ("type", "title"),
}
LINK_KEYS = ("url", "text", "note")
IMAGE_KEYS = ("src", "alt")
PERSON_KEYS = ("name", "role", "organisation", "phone", "email")
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_FILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
_T = TypeVar("_T")


def find_issues(root: Path) -> list[Path]:
    """The issue files of the project in ``root``, sorted by name."""
    folder = root / "issues"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.yaml") if p.is_file())


def issue_path(root: Path, given: Path) -> Path:
    """An issue named on the command line: a path, or just its name (``2017-02-news``),
    found in the project's issues/ folder. Every command takes either."""
    if given.suffix or len(given.parts) > 1 or given.is_file():
        return given
    named = root / "issues" / f"{given.name}.yaml"
    return named if named.is_file() else given


def load_issue(path: Path, network: Network | None = None) -> Issue:
    """Read and validate one issue; raise InputError listing every problem in it.

    ``network`` gives the settings an issue is checked against: images from other sites
    are refused unless it sets ``remote_images: allow`` (without one, they are refused).
    """
    source = str(path)
    _refuse_link_elsewhere(path, source)
    data = ys.read(path)
    early: list[Problem] = []
    root = ys.parse(data, source, early)
    remote = network is not None and network.remote_images is RemoteImages.ALLOW
    return _IssueReader(path, source, data, early, remote_images=remote).issue(root)


def _refuse_link_elsewhere(path: Path, source: str) -> None:
    """Refuse an issue file that is a link to a file outside its own folder, unread.

    Messages quote what a file holds ("found 'root:$6$...'"), so a link committed as
    ``issues/x.yaml`` would show whoever runs ``check`` (or reads a CI log) the first
    lines of any file the link names. A link to another file in the folder is fine, as
    for images (their files must be in the issue's folder too).
    """
    if not path.is_symlink():
        return
    try:
        inside = path.resolve().is_relative_to(path.parent.resolve())
    except (OSError, RuntimeError):  # a loop of links: reading it says so
        return
    if not inside:
        raise InputError([Problem(Location(source), "", "the file is a link to a file outside "
                                  "its folder", "copy the issue into the folder instead of "
                                  "linking to it; what a linked file holds is not shown")])


# --------------------------------------------------------------------------- Markdown


def markdown_location(node: ys.Scalar, line: int, source: str, lines: list[str]) -> Location:
    """Where line ``line`` of a Markdown value is in the file.

    Exact for literal blocks (``|``), whose lines are the file's lines; folded and quoted
    text is reported at its start.
    """
    if node.style != "|":
        return Location(source, node.line, node.col)
    number = node.line + 1 + line
    text = lines[number - 1] if 0 < number <= len(lines) else ""
    return Location(source, number, len(text) - len(text.lstrip(" ")) + 1)


# --------------------------------------------------------------------------- the schema


class _IssueReader:
    def __init__(self, path: Path, source: str, data: bytes, early: list[Problem], *,
                 remote_images: bool = False) -> None:
        self.path = path
        self.remote_images = remote_images
        self.folder = path.parent
        self.source = source
        self.hash = hashlib.sha256(data)
        self.lines = data.decode("utf-8").splitlines()
        self.r = Reader(source, lines=self.lines)
        self.r.problems.extend(early)

    def issue(self, root: ys.Node | None) -> Issue:
        r = self.r
        if root is None:
            raise InputError([Problem(Location(self.source), "", "the file is empty",
                                      "an issue needs at least title, date and blocks: see "
                                      "docs/editors.md")])
        slug = self.path.stem
        if not SLUG.fullmatch(slug):
            r.problems.append(Problem(
                Location(self.source), "", f"file name '{self.path.name}' cannot be an issue "
                "name", "use lowercase letters, digits and hyphens, e.g. 2016-12.yaml"))
        f = r.fields(root, "", ISSUE_KEYS, required=("title", "date", "blocks"))
        if f is None:
            raise InputError(r.problems)
        version = r.integer(f, "version")
        if version is not None and version != 1:
            r.error(f.values["version"], "version", f"unsupported version {version}",
                    "this program reads version 1")
        title = r.text(f, "title", max_len=TITLE_LEN, header=True)
        date = r.date(f, "date")
        send_by = _send_by(r, f, date)
        number = r.integer(f, "number", minimum=1)
        subject = r.text(f, "subject", max_len=TITLE_LEN, header=True)
        preheader = r.text(f, "preheader", max_len=300)
        intro = self.markdown(f, "intro")
        blocks: list[Block] = []
        if f.has("blocks"):
            items = r.items(f.values["blocks"], "blocks")
            if items is not None and not items:
                r.error(f.values["blocks"], "blocks", "no blocks", "an issue needs at least one")
            elif items is not None and len(items) > MAX_BLOCKS:
                r.error(f.values["blocks"], "blocks", f"{len(items)} blocks; the limit is "
                        f"{MAX_BLOCKS}", "split the issue in two")
            for i, node in enumerate((items or ())[:MAX_BLOCKS], start=1):
                block = self.block(node, f"blocks[{i}]")
                if block is not None:
                    blocks.append(block)
        r.raise_if_errors()
        assert title is not None and date is not None  # required: reported otherwise
        return Issue(
            slug=slug, title=title, date=date, blocks=tuple(blocks), where=r.where(root),
            number=number, subject=subject, preheader=preheader, intro=intro, send_by=send_by,
            source_hash=self.hash.hexdigest(), locations=tuple(r.locations.items()),
        )

    # --- blocks

    def block(self, node: ys.Node, path: str) -> Block | None:
        r = self.r
        if not isinstance(node, ys.Mapping):
            r.error(node, path, f"expected a block (type: ..., title: ...), found "
                    f"{ys.describe(node)}")
            return None
        kind_node = next((v for k, v in node.items if k.text == "type"), None)
        if kind_node is None or (isinstance(kind_node, ys.Scalar) and kind_node.is_null):
            r.error(node, ys.join(path, "type"), "required",
                    "one of " + ", ".join(BLOCK_KEYS))
            return None
        kinds = Fields(node, path, {"type": kind_node}, {})
        kind = r.choice(kinds, "type", BLOCK_KEYS, what="block type")
        if kind is None:
            return None
        article = "an" if kind[0] in "aeiou" else "a"
        f = r.fields(node, path, BLOCK_KEYS[kind], required=("title",),
                     what=f"{article} {kind} block")
        if f is None:
            return None
        where = r.where(node)
        title = r.text(f, "title", max_len=TITLE_LEN)
        body = self.markdown(f, "body") if "body" in BLOCK_KEYS[kind] else None
        link = self.link(f.values["link"], f.key("link")) if f.has("link") else None
        if title is None:
            return None
        if kind == "article":
            image = self.image(f.values["image"], f.key("image")) if f.has("image") else None
            return Article(title, where, body=body, image=image, link=link)
        if kind == "event":
            return self.event(f, title, where, body, link)
        if kind == "contact":
            people = tuple(p for p in self.many(f, "people", self.person) if p is not None)
            return Contact(title, where, body=body, people=people)
        if kind == "callout":
            return Callout(title, where, body=body, link=link)
        if kind == "links":
            if not f.has("items"):
                r.error(f.keys.get("items") or node, f.key("items"), "required",
                        "list the links: - {url: ..., text: ...}")
            items = tuple(i for i in self.many(f, "items", self.link) if i is not None)
            return Links(title, where, items=items)
        return Section(title, where)

    def event(self, f: Fields, title: str, where: Location, body: str | None,
              link: Link | None) -> Event | None:
        r = self.r
        day = r.date(f, "date")
        start = r.datetime(f, "start")
        end = r.datetime(f, "end")
        if f.has("date") and f.has("start"):
            r.error(f.values["start"], f.key("start"), "give either date or start, not both",
                    "date for a whole-day event, start (and end) for one with times")
        elif not f.has("date") and not f.has("start"):
            r.error(f.node, f.key("date"), "required: date (a whole-day event) or start",
                    "e.g. date: 2016-11-15 or start: 2016-11-15 10:00")
        if f.has("end") and not f.has("start"):
            r.error(f.values["end"], f.key("end"), "end needs a start")
        elif start is not None and end is not None and end < start:
            r.error(f.values["end"], f.key("end"), f"end ({end:%Y-%m-%d %H:%M}) is before "
                    f"start ({start:%Y-%m-%d %H:%M})")
        location = r.text(f, "location", max_len=TITLE_LEN)
        return Event(title, where, date=day, start=start, end=end, location=location,
                     body=body, link=link)

    def many(self, f: Fields, name: str,
             read: Callable[[ys.Node, str], _T | None]) -> Iterator[_T | None]:
        """Each item of the list at ``name``, read by ``read``."""
        if not f.has(name):
            return
        key = f.key(name)
        items = self.r.items(f.values[name], key)
        if items is not None and len(items) > MAX_ITEMS:
            self.r.error(f.values[name], key, f"{len(items)} items; the limit is {MAX_ITEMS}")
            return
        for i, node in enumerate(items or (), start=1):
            yield read(node, f"{key}[{i}]")

    # --- values inside blocks

    def markdown(self, f: Fields, name: str) -> str | None:
        r = self.r
        text = r.text(f, name, max_len=BODY_LEN, multiline=True)
        node = f.values.get(name)
        if text is None or not isinstance(node, ys.Scalar):
            return text
        key = f.key(name)
        links = 0
        for part in md.parts(text):
            where = markdown_location(node, part.line, self.source, self.lines)
            if part.kind == "link":
                links += 1  # checks.py finds each link's place under this key
                r.locations[f"{key}.links[{links}]"] = where
            if part.kind == "html":
                if not part.target.startswith("</"):
                    shown = part.target if len(part.target) <= 30 else part.target[:27] + "..."
                    r.problems.append(Problem(where, key, f"raw HTML is not allowed in Markdown: "
                                              f"{shown}", "write Markdown; HTML is removed"))
            elif part.kind == "image":
                r.problems.append(Problem(where, key, "images are not allowed in Markdown",
                                          "use the block's image: {src: ..., alt: ...}"))
            else:
                why = url_problem(part.target)
                if why:
                    r.problems.append(Problem(where, key, f"link to {part.target!r}: {why}"))
        return text

    def link(self, node: ys.Node, path: str) -> Link | None:
        r = self.r
        f = r.fields(node, path, LINK_KEYS, required=("url", "text"), what="a link")
        if f is None:
            return None
        url = r.text(f, "url", max_len=2000)
        if url is not None:
            why = url_problem(url)
            if why:
                r.error(f.values["url"], f.key("url"), why)
                url = None
        text = r.text(f, "text", max_len=TITLE_LEN)
        note = r.text(f, "note", max_len=500)
        if url is None or text is None:
            return None
        return Link(url, text, r.where(node), note=note)

    def person(self, node: ys.Node, path: str) -> Person | None:
        r = self.r
        f = r.fields(node, path, PERSON_KEYS, required=("name",), what="a person")
        if f is None:
            return None
        name = r.text(f, "name", max_len=TITLE_LEN)
        role = r.text(f, "role", max_len=TITLE_LEN)
        organisation = r.text(f, "organisation", max_len=TITLE_LEN)
        phone = r.text(f, "phone", max_len=40)
        problem = None if phone is None else phone_problem(phone)
        if problem:
            r.error(f.values["phone"], f.key("phone"), *problem)
            phone = None
        email = r.text(f, "email", max_len=254)
        if email is not None:
            email, why = address_problem(email)
            if why:
                r.error(f.values["email"], f.key("email"), why)
        if name is None:
            return None
        return Person(name, r.where(node), role=role, organisation=organisation, phone=phone,
                      email=email)

    def image(self, node: ys.Node, path: str) -> Image | None:
        r = self.r
        f = r.fields(node, path, IMAGE_KEYS, required=("src",), what="an image")
        if f is None:
            return None
        if not f.has("alt"):
            r.error(f.keys.get("alt") or node, f.key("alt"), "required",
                    "describe the image for people who cannot see it")
        where = r.where(node)
        src = r.text(f, "src", max_len=2000)
        alt = r.text(f, "alt", max_len=1000)
        if src is None or alt is None:
            return None
        src_node = f.values["src"]
        key = f.key("src")
        if _URL_SCHEME.match(src):
            why = url_problem(src, frozenset({"https"}))
            if why:
                r.error(src_node, key, why)
                return None
            if not self.remote_images:
                r.error(src_node, key, *self.remote_image_problem(src))
                return None
            return Image(src, alt, where)
        file = self.local_file(src, src_node, key)
        if file is None:
            return None
        size = file.stat().st_size
        if size > MAX_IMAGE_BYTES:
            r.error(src_node, key, f"image is {ys.size_text(size)}; the limit is "
                    f"{ys.size_text(MAX_IMAGE_BYTES)}",
                    "compress it; 1200 pixels wide is plenty for an email")
            return None
        data = file.read_bytes()
        if sniff_image(data) is None:
            r.error(src_node, key, f"{src} is not a PNG, JPEG, GIF or WebP image",
                    "export it in one of those formats")
            return None
        try:
            published = images.publishable(data)
        except images.ImageError as e:
            r.error(src_node, key, f"{src}: {e.message}", e.hint)
            return None
        self.hash.update(data)
        return Image(src, alt, where, path=file, media_type=published.media_type,
                     width=published.width, height=published.height, size=size,
                     digest=hashlib.sha256(data).hexdigest(),
                     published_digest=hashlib.sha256(published.data).hexdigest())

    def remote_image_problem(self, src: str) -> tuple[str, str]:
        """Why an image from another site is refused, and where to put it instead."""
        parts = urlsplit(src)
        name = PurePosixPath(parts.path).name
        if not _FILE_NAME.fullmatch(name):
            name = "image"
        folder = self.folder / self.path.stem
        return (f"image from another site ({parts.hostname}): loading it tells that site "
                "when each reader opens the email or the archive page",
                f"save it in {folder}/ and write src: {self.path.stem}/{name}; or set "
                "remote_images: allow in newsletter.yaml")

    @functools.cached_property
    def resolved_folder(self) -> Path:
        """The issue's folder, resolved once for all its images (an lstat per folder)."""
        return self.folder.resolve()

    def local_file(self, src: str, node: ys.Node, key: str) -> Path | None:
        r = self.r
        relative = PurePosixPath(src)
        if "\\" in src:
            r.error(node, key, "use / between folder names, not \\")
            return None
        if relative.is_absolute() or ".." in relative.parts:
            r.error(node, key, f"{src!r} points outside the issue's folder",
                    "give a path relative to the issue file, e.g. 2016-12/report.jpg")
            return None
        file = self.folder / relative
        try:
            resolved = file.resolve()
            inside = resolved.is_relative_to(self.resolved_folder)
            found = resolved.is_file()
        except (OSError, RuntimeError):
            inside, found = True, False
        if not inside:
            r.error(node, key, f"{src!r} points outside the issue's folder (a link?)")
            return None
        if not found:
            r.error(node, key, f"image file not found: {file}",
                    "paths are relative to the issue file's folder")
            return None
        return resolved


# --------------------------------------------------------------------------- send_by
# UK local time, like event times; newsletter/clock.py says when it falls.

_SEND_BY = "send_by"
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DAY_AND_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ]")


def _send_by(r: Reader, f: Fields, date: dt.date | None) -> dt.date | None:
    """``send_by``: a date and time (the exact form of event times), or a date.

    Problems are recorded on ``r`` like any other field's; so is a deadline before the
    issue's own ``date``.
    """
    if not f.has(_SEND_BY):
        return None
    node = f.values[_SEND_BY]
    text = node.text.strip() if isinstance(node, ys.Scalar) else ""
    value: dt.date | None
    if _DAY.fullmatch(text):
        value = r.date(f, _SEND_BY)
    elif _DAY_AND_TIME.match(text):  # the rest of the form is checked as for event times
        value = r.datetime(f, _SEND_BY)
    else:
        r.error(node, f.key(_SEND_BY), "expected a date like 2017-03-10 or a date and time like "
                f"2017-03-10 09:00, found {ys.describe(node)}",
                "UK local time, 24-hour clock; a date alone means until the end of that day")
        return None
    day = value.date() if isinstance(value, dt.datetime) else value
    if day is not None and date is not None and day < date:
        r.error(node, f.key(_SEND_BY), f"{text} is before the issue's date, {date:%Y-%m-%d}",
                "the deadline for sending an issue cannot come before the issue")
        return None
    return value
