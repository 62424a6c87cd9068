"""Archive stage, part 1: what the site needs to know about each issue.

In: a loaded Issue (model.Issue). Out: an Entry, the small, serialisable summary the
index, search index, feed and privacy gate are made from. Entries are kept in the
manifest, so an unchanged issue is not even loaded again on the next build.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from newsletter.archive.privacy import Written, written_in
from newsletter.model import Article, Block, Callout, Contact, Event, Image, Issue, Links

SUMMARY_WORDS = 30

_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")  # [text](url) -> text
_AUTOLINK = re.compile(r"<((?:https|mailto|tel):[^>\s]*)>")
_BLOCK_MARK = re.compile(r"^\s{0,3}(?:#{1,6}\s|>\s?|[-*+]\s|\d{1,9}[.)]\s|[-*_]{3,}\s*$)",
                         re.MULTILINE)
_EMPHASIS = re.compile(r"(?<!\w)[*_]{1,3}|[*_]{1,3}(?!\w)|`+")
_SPACE = re.compile(r"\s+")


class PublishedImage(msgspec.Struct, frozen=True):
    name: str  # the content-hashed file name beside the page (Image.published_name)
    source: str  # the local file, relative to the project folder
    digest: str  # sha256 of the source file's bytes (the name hashes the published ones)


class Entry(msgspec.Struct, frozen=True):
    """One issue as the site sees it (no rendered HTML: that lives in its page)."""

    slug: str
    title: str
    date: dt.date
    number: int | None
    summary: str  # the preheader, or the first words of the first text
    text: str  # every text of the issue, for search (search_text)
    source: str  # the YAML file, relative to the project folder
    input_hash: str  # sha256 of the YAML bytes
    images: tuple[PublishedImage, ...] = ()
    # what the privacy gate lets pages repeat from this issue
    written: Written = msgspec.field(default_factory=Written)

    @property
    def href(self) -> str:
        """The permalink relative to the site root."""
        return f"{self.slug}/"

    @property
    def page(self) -> str:
        """The page file relative to the site root: what links use, so disk browsing works."""
        return f"{self.slug}/index.html"

    def to_json(self) -> dict[str, Any]:
        return {
            "slug": self.slug, "title": self.title, "date": self.date.isoformat(),
            "number": self.number, "summary": self.summary, "text": self.text,
            "source": self.source, "input_hash": self.input_hash,
            "images": [[i.name, i.source, i.digest] for i in self.images],
            "written": {"hosts": list(self.written.hosts), "emails": list(self.written.emails),
                        "placeholders": list(self.written.placeholders)},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        return cls(
            slug=str(data["slug"]), title=str(data["title"]),
            date=dt.date.fromisoformat(data["date"]),
            number=None if data["number"] is None else int(data["number"]),
            summary=str(data["summary"]), text=str(data["text"]), source=str(data["source"]),
            input_hash=str(data["input_hash"]),
            images=tuple(PublishedImage(str(n), str(s), str(d)) for n, s, d in data["images"]),
            written=Written(**{k: tuple(str(v) for v in data["written"][k])
                               for k in ("hosts", "emails", "placeholders")}),
        )


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def entry_for(issue: Issue, root: Path, yaml_bytes: bytes) -> Entry:
    """Summarise one issue (load.py has already refused images too large to publish)."""
    images: dict[str, PublishedImage] = {}
    for image in issue_images(issue):
        if image.path is None or image.published_name is None or image.digest is None:
            continue  # an https image: published as written
        images[image.published_name] = PublishedImage(
            image.published_name, _relative(image.path, root), image.digest)
    return Entry(
        slug=issue.slug, title=issue.title, date=issue.date, number=issue.number,
        summary=summary_of(issue), text=search_text(issue),
        source=_relative(Path(issue.where.path), root),
        input_hash=hashlib.sha256(yaml_bytes).hexdigest(),
        images=tuple(images[name] for name in sorted(images)),
        written=written_in(yaml_bytes.decode("utf-8", errors="replace")),
    )


def issue_images(issue: Issue) -> Iterator[Image]:
    for block in issue.blocks:
        if isinstance(block, Article) and block.image is not None:
            yield block.image


def markdown_text(source: str | None) -> str:
    """Markdown as plain words, for search and summaries: link text kept, URLs and markup
    dropped, spaces folded. A few regular expressions, not a parser: the words are what
    matters, and a parse per body would double the cost of loading an issue."""
    if not source:
        return ""
    text = _LINK.sub(r"\1", source)
    text = _AUTOLINK.sub(r"\1", text)
    text = _BLOCK_MARK.sub(" ", text)
    text = _EMPHASIS.sub(" ", text)
    return _SPACE.sub(" ", html.unescape(text)).strip()


def summary_of(issue: Issue) -> str:
    if issue.preheader:
        return issue.preheader.strip()
    texts = [issue.intro] + [getattr(b, "body", None) for b in issue.blocks]
    for source in texts:
        words = markdown_text(source).split()
        if words:
            cut = words[:SUMMARY_WORDS]
            return " ".join(cut) + (" …" if len(words) > SUMMARY_WORDS else "")
    return ""


def search_text(issue: Issue) -> str:
    """Every text of the issue, one line: its parts apart by " · " for readable snippets."""
    parts = (_SPACE.sub(" ", part).strip() for part in _words(issue))
    return " · ".join(part for part in parts if part)


def _words(issue: Issue) -> Iterator[str]:
    # not the title: the search index carries it beside the text, and a snippet that
    # begins by repeating the title under the title tells the reader nothing
    if issue.subject:
        yield issue.subject
    if issue.preheader:
        yield issue.preheader
    yield markdown_text(issue.intro)
    for block in issue.blocks:
        yield from _block_words(block)


def _block_words(block: Block) -> Iterator[str]:
    yield block.title
    if isinstance(block, Article | Event | Contact | Callout):
        yield markdown_text(block.body)
    if isinstance(block, Article | Event | Callout) and block.link is not None:
        yield block.link.text
    if isinstance(block, Article) and block.image is not None:
        yield block.image.alt
    if isinstance(block, Event) and block.location:
        yield block.location
    if isinstance(block, Contact):
        for person in block.people:
            yield from (v for v in (person.name, person.role, person.organisation,
                                    person.phone, person.email) if v)
    if isinstance(block, Links):
        for item in block.items:
            yield item.text
            if item.note:
                yield item.note


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()
