"""Editorial checks: a loaded Issue -> warnings an editor should look at before sending.

Nothing here stops a build: load.py refuses broken input. These are the things a
careful sub-editor would flag: link text that says nothing out of context ("click here"
means nothing to a screen reader listing links), placeholders left in, a subject too long
for an inbox line, no preheader, long alt text, remote images (where the network allows
them at all: fetching them tells the image's server when each reader opened the email),
an image file whose name says another type than its bytes, repeated block titles, articles
without a body. ``newsletter check --strict`` turns them into errors.

Also here: folding repeated warnings for the terminal, as Pelican's ``LimitFilter`` does.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterable, Iterator

from newsletter.errors import Problem, Severity
from newsletter.model import Article, Callout, Contact, Event, Issue, Link, Links, Location, Network
from newsletter.text.markdown import parts

SUBJECT_LEN = 60
ALT_LEN = 150
FOLD_AFTER = 3

VAGUE_LINK_TEXT = frozenset({"click here", "here", "read more", "this link", "link", "more",
                             "click", "click this link", "more here", "this"})
# the file extensions that tell an image's real type (the published name uses the first)
_NAMES_OF = {"image/png": (".png",), "image/jpeg": (".jpg", ".jpeg"), "image/gif": (".gif",),
             "image/webp": (".webp",)}
_PLACEHOLDER = re.compile(r"\b(?:TK|TODO|TBC|XXX)\b|\b[Ll]orem ipsum\b|\{\{.*?\}\}")


def editorial(issue: Issue, network: Network | None = None) -> list[Problem]:
    """Warnings for an issue that loaded without errors, in file order."""
    problems: list[Problem] = []

    def warn(key: str, message: str, hint: str | None = None,
             where: Location | None = None) -> None:
        problems.append(Problem(where or issue.location_of(key), key, message, hint,
                                Severity.WARNING))

    if not issue.preheader:
        warn("preheader", "no preheader",
             "inbox previews will show the first words of the email instead")
    subject_key = "subject" if issue.subject else "title"
    if len(issue.subject_line) > SUBJECT_LEN:
        warn(subject_key, f"subject is {len(issue.subject_line)} characters; phones show "
             f"about {SUBJECT_LEN}", "put the important words first or shorten it")

    for key, link in _links(issue):
        if _vague(link.text):
            warn(f"{key}.text", _vague_message(link.text), _VAGUE_HINT)
    for key, markdown in _markdown(issue):
        links = 0
        for part in parts(markdown):
            if part.kind != "link":
                continue
            links += 1
            if _vague(part.text):
                warn(key, _vague_message(part.text), _VAGUE_HINT,
                     issue.location_of(f"{key}.links[{links}]"))

    titles: dict[str, int] = {}
    for i, block in enumerate(issue.blocks, start=1):
        path = f"blocks[{i}]"
        folded = " ".join(block.title.split()).casefold()
        if folded in titles:
            first = titles[folded]
            warn(f"{path}.title", f"same title as blocks[{first}] on line "
                 f"{issue.location_of(f'blocks[{first}].title').line}",
                 "readers skim by titles")
        else:
            titles[folded] = i
        if isinstance(block, Article):
            if not (block.body and block.body.strip()):
                warn(f"{path}.title", "article without a body",
                     "add a sentence or two, or make it a links item")
            image = block.image
            if image is not None:
                if len(image.alt) > ALT_LEN:
                    warn(f"{path}.image.alt", f"alt text is {len(image.alt)} characters; "
                         f"keep it under {ALT_LEN}", "describe what matters; put details "
                         "in the body")
                if image.path is None:
                    warn(f"{path}.image.src", "remote image: fetching it tells its server "
                         "when each reader opens the email",
                         "save the image next to the issue and give its path")
                elif image.media_type and image.path.suffix.lower() not in \
                        _NAMES_OF[image.media_type]:
                    kind = image.media_type.removeprefix("image/").upper().replace("WEBP",
                                                                                   "WebP")
                    warn(f"{path}.image.src", f"{image.path.name} is a {kind} image, not what "
                         f"its name says; it is published as {image.published_name}",
                         f"rename the file to end in {_NAMES_OF[image.media_type][0]}")

    for key, text in _texts(issue):
        for match in _PLACEHOLDER.finditer(text):
            warn(key, f"placeholder {match.group()!r} left in the text",
                 "finish or remove it before sending")
    problems.sort(key=lambda p: (p.where.line, p.where.col))
    return problems


_VAGUE_HINT = "say where it goes, e.g. 'the full report (PDF)'"


def _vague(text: str) -> bool:
    words = re.sub(r"[^\w\s]", " ", text).casefold().split()
    return " ".join(words) in VAGUE_LINK_TEXT


def _vague_message(text: str) -> str:
    return f"link text {text.strip()!r} does not say where the link goes"


def _links(issue: Issue) -> Iterator[tuple[str, Link]]:
    for i, block in enumerate(issue.blocks, start=1):
        if isinstance(block, Article | Event | Callout) and block.link is not None:
            yield f"blocks[{i}].link", block.link
        elif isinstance(block, Links):
            for j, item in enumerate(block.items, start=1):
                yield f"blocks[{i}].items[{j}]", item


def _markdown(issue: Issue) -> Iterator[tuple[str, str]]:
    if issue.intro:
        yield "intro", issue.intro
    for i, block in enumerate(issue.blocks, start=1):
        body = getattr(block, "body", None)
        if isinstance(body, str):
            yield f"blocks[{i}].body", body


def _texts(issue: Issue) -> Iterator[tuple[str, str]]:
    """Every text an editor wrote, by key path."""
    yield "title", issue.title
    if issue.subject:
        yield "subject", issue.subject
    if issue.preheader:
        yield "preheader", issue.preheader
    yield from _markdown(issue)
    for i, block in enumerate(issue.blocks, start=1):
        path = f"blocks[{i}]"
        yield f"{path}.title", block.title
        if isinstance(block, Event) and block.location:
            yield f"{path}.location", block.location
        if isinstance(block, Article) and block.image is not None:
            yield f"{path}.image.alt", block.image.alt
        if isinstance(block, Contact):
            for j, person in enumerate(block.people, start=1):
                for name in ("name", "role", "organisation"):
                    value = getattr(person, name)
                    if value:
                        yield f"{path}.people[{j}].{name}", value
    for key, link in _links(issue):
        yield f"{key}.text", link.text
        if link.note:
            yield f"{key}.note", link.note


# --------------------------------------------------------------------------- reporting


def numbering(issues: Iterable[Issue]) -> list[Problem]:
    """Warnings for issue numbers used twice, or going down while the dates go up."""
    problems: list[Problem] = []
    numbered = sorted((i for i in issues if i.number is not None),
                      key=lambda i: (i.date, i.slug))
    first: dict[int, Issue] = {}
    for issue in numbered:
        assert issue.number is not None
        if issue.number in first:
            other = first[issue.number]
            problems.append(Problem(
                issue.location_of("number"), "number",
                f"number {issue.number} is also the number of {other.slug} "
                f"({other.location_of('number')})", "give each issue its own number",
                Severity.WARNING))
        else:
            first[issue.number] = issue
    for before, after in itertools.pairwise(numbered):
        assert before.number is not None and after.number is not None
        if after.number < before.number and after.date > before.date:
            problems.append(Problem(
                after.location_of("number"), "number",
                f"number {after.number} comes after {before.slug} (number {before.number}, "
                f"dated {before.date:%Y-%m-%d}) but is dated later, {after.date:%Y-%m-%d}",
                "numbers go up with the dates: check the number or the date",
                Severity.WARNING))
    return problems


def fold(problems: Iterable[Problem], limit: int = FOLD_AFTER) -> list[str]:
    """Lines to print: each warning message at most ``limit`` times, then a count."""
    seen: Counter[str] = Counter()
    lines: list[str] = []
    for problem in problems:
        if problem.severity is Severity.WARNING:
            seen[problem.message] += 1
            if seen[problem.message] > limit:
                continue
        lines.append(str(problem))
    for message, count in seen.items():
        if count > limit:
            lines.append(f"... and {count - limit} more like this: warning: {message}")
    return lines
