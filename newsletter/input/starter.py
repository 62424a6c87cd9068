"""A new issue to start from: part of input, for ``newsletter new``.

In: the project (its settings and its issues/) and today's date. Out: the next issue file,
``issues/<YYYY-MM>-news.yaml`` (``-2``, ``-3``... when taken), numbered one past the highest
number in use, written from the template ``templates/issue/new.yaml.j2``: every key and
every block type, commented, passing ``newsletter check`` as it is. Nothing is overwritten.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import msgspec

from newsletter.errors import InputError, Problem
from newsletter.input.issues import find_issues, load_issue
from newsletter.model import Location, Network

TEMPLATE = "issue/new.yaml.j2"


class Started(msgspec.Struct, frozen=True):
    path: Path
    slug: str
    number: int
    date: dt.date


def next_number(root: Path, network: Network) -> int:
    """One past the highest number of the issues that load (1 for the first)."""
    numbers = [0]
    for path in find_issues(root):
        try:
            numbers.append(load_issue(path, network).number or 0)
        except InputError:
            continue  # `check` reports it; a broken file does not block a new one
    return max(numbers) + 1


def start_issue(network: Network, today: dt.date) -> Started:
    import jinja2

    root = network.root
    folder = root / "issues"
    number = next_number(root, network)
    slug = f"{today:%Y-%m}-news"
    n = 1
    while (folder / f"{slug}.yaml").exists():
        n += 1
        slug = f"{today:%Y-%m}-news-{n}"
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root / "templates")),
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
        autoescape=False)  # noqa: S701 - YAML, from validated settings, not HTML
    reply_to = network.reply_to.address if network.reply_to else network.sender.address
    try:
        text = environment.get_template(TEMPLATE).render(
            number=number, slug=slug, date=f"{today:%Y-%m-%d}",
            event_start=f"{today + dt.timedelta(days=7):%Y-%m-%d} 10:00",
            website=network.website, reply_to=reply_to)
    except jinja2.TemplateNotFound as e:
        raise InputError([Problem(Location(str(root / "templates" / TEMPLATE)), "",
                                  "not found", hint="the skeleton of a new issue; restore "
                                  "it from the newsletter repository")]) from e
    path = folder / f"{slug}.yaml"
    folder.mkdir(exist_ok=True)
    try:
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), "w",
                       encoding="utf-8") as out:
            out.write(text)
    except OSError as e:
        raise InputError([Problem(Location(str(path)), "",
                                  f"cannot write the file ({e.strerror or e})")]) from e
    return Started(path, slug, number, today)
