"""The archive stage: every issue -> a static website (pages, index, feed, search).

    entries.py   Issue -> Entry (what the index, search and feed need)
    pages.py     Entries + the ARCHIVE render -> page, feed and index bytes (pure)
    publish.py   staging folder, manifest (beside the site), reuse of unchanged files, swap

In: the network, the issue files and the members' private values (PrivateValues, read by
the members stage: this package never opens the database). Out: the output folder
(default ``site/``), replaced as a whole only after every page is built and the privacy
gate (privacy.py) found nothing. Unchanged issues are not even loaded again: their
entries come from the manifest, their pages from the previous site, and the render a
re-made page embeds (when only a neighbour's title changed) from the page it replaces.

    site/index.html            newest first, by year
    site/<slug>/index.html     one page per issue (+ its images, content-hashed names,
                               without their metadata: input/images.py)
    site/search/index.html     search that works without a server (search-index.js)
    site/feed.xml              Atom, full content of the latest 20 issues
    site/sitemap.xml, robots.txt, 404.html, static/
    .site.manifest.json        beside the site, unpublished: what the last build made
    .site.staging/             beside the site: the next build is assembled here
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from newsletter.archive import privacy
from newsletter.archive.entries import Entry, entry_for, file_hash
from newsletter.archive.pages import (
    FEED_ENTRIES,
    Pages,
    embedded_render,
    issue_render,
    read_search_index,
    search_index,
)
from newsletter.archive.publish import (
    Manifest,
    Staging,
    check_output,
    locked,
    manifest_path,
    recover,
    staged,
)
from newsletter.errors import InputError, Problem
from newsletter.input.images import published_bytes
from newsletter.model import Issue, Location, Network, PrivateValues

__all__ = ["BuildReport", "build_site"]

SEARCH_INDEX = "search-index.js"


class BuildReport(msgspec.Struct, frozen=True):
    output: Path
    issues: int
    written: tuple[str, ...]  # files whose bytes are new in this build
    kept: tuple[str, ...]  # files carried over from the previous site unchanged
    loaded: tuple[str, ...]  # slugs of the issues that were loaded and rendered again


def build_site(network: Network, issue_files: Sequence[Path], output: Path,
               load: Callable[[Path], Issue], members: PrivateValues) -> BuildReport:
    """Build the archive of ``issue_files`` into ``output``; raise InputError on bad input.

    ``members``: what the member list holds (the pipeline reads it from the members
    stage); the privacy gate refuses any page that shows one of its values.
    """
    try:
        with locked(output):
            return _build(network, issue_files, output, load, members)
    except OSError as e:  # a read-only or full disk, a path we may not write: say which
        where = e.filename or output
        raise InputError([Problem(Location(str(output)), "",
                                  f"cannot write the site ({where}: {e.strerror or e})")]
                         ) from e


def _build(network: Network, issue_files: Sequence[Path], output: Path,
           load: Callable[[Path], Issue], members: PrivateValues) -> BuildReport:
    recover(output)
    check_output(output)
    fingerprint = build_fingerprint(network)
    previous, reusable = _previous_build(output, fingerprint)
    entries, fresh = _entries(network, issue_files, reusable, load)
    config_written = privacy.written_in(_config_text(network))
    policy = privacy.policy_for(network, [config_written, *(e.written for e in entries)],
                                members)
    pages = Pages(network)

    with staged(output, previous) as site:
        page_keys, bodies = _issue_pages(site, pages, entries, fresh, fingerprint, network,
                                         issue_files, load)
        feed_items = [(e, bodies[e.slug]) for e in entries[:FEED_ENTRIES]]
        site.put("index.html", pages.index(entries))
        site.put("search/index.html", pages.search(entries))
        site.put(SEARCH_INDEX, search_index(entries))
        site.put("feed.xml", pages.feed(feed_items, entries[0].date if entries else None))
        site.put("sitemap.xml", pages.sitemap(entries))
        site.put("robots.txt", pages.robots())
        site.put("404.html", pages.not_found())
        static = network.root / "templates" / "archive" / "static"
        for path in sorted(p for p in static.rglob("*") if p.is_file()):
            site.put(f"static/{path.relative_to(static).as_posix()}", path.read_bytes())
        logo = network.brand.logo  # the masthead of the pages and of every email
        if logo is not None and logo.path is not None and logo.digest is not None:
            site.put(f"static/{logo.published_name}", published_bytes(logo.path, logo.digest))
        site.finish()  # now the folder holds exactly site.files
        # a file byte-identical to one that passed the gate under the same policy is clean
        trusted = previous.files if previous.policy == policy.fingerprint else {}
        privacy.scan_files(site.folder, [rel for rel, digest in site.files.items()
                                         if trusted.get(rel) != digest],
                           policy, shown_as=str(output))
        # beside the site, not in it: the policy fingerprint is derived from the member
        # list. Written before the swap, so a failure to write it publishes nothing.
        Manifest(fingerprint, policy.fingerprint, {e.slug: e for e in entries}, page_keys,
                 dict(sorted(site.files.items()))).write(output)

    return BuildReport(output, len(entries), tuple(site.written), tuple(site.kept),
                       tuple(sorted(fresh)))


def _previous_build(output: Path, fingerprint: str) -> tuple[Manifest, dict[str, Entry]]:
    """The live site's manifest, and the entries a build with this fingerprint may reuse."""
    search_js = output / SEARCH_INDEX
    search_bytes = search_js.read_bytes() if search_js.is_file() else b""
    previous = Manifest.read(output, read_search_index(search_bytes))
    # entries take their words from the live search index: only if it is the one we wrote
    if previous.fingerprint != fingerprint or previous.files.get(SEARCH_INDEX) != \
            hashlib.sha256(search_bytes).hexdigest():
        return previous, {}
    return previous, previous.entries


def _issue_pages(site: Staging, pages: Pages, entries: list[Entry], fresh: dict[str, Issue],
                 fingerprint: str, network: Network, issue_files: Sequence[Path],
                 load: Callable[[Path], Issue]) -> tuple[dict[str, str], dict[str, str]]:
    """Each issue's page and images; (page keys, rendered bodies the feed needs)."""
    page_keys: dict[str, str] = {}
    bodies: dict[str, str] = {}
    for i, entry in enumerate(entries):
        newer = entries[i - 1] if i > 0 else None
        older = entries[i + 1] if i + 1 < len(entries) else None
        key = page_keys[entry.slug] = _page_key(fingerprint, entry, older, newer)
        relative = f"{entry.slug}/index.html"
        kept = site.keep(relative) if site.previous.pages.get(entry.slug) == key else None
        if kept is None:
            css, body = _issue_pieces(entry, fresh, site.previous_bytes(relative), network,
                                      load, issue_files)
            site.put(relative, pages.issue(entry, css, body, previous=older, next=newer))
            bodies[entry.slug] = body
        elif i < FEED_ENTRIES:
            bodies[entry.slug] = _embedded(kept)[1]
        for image in entry.images:
            relative = f"{entry.slug}/{image.name}"
            if site.keep(relative) is None:  # new, or the live copy was edited or is gone
                site.put(relative, published_bytes(network.root / image.source, image.digest))
    return page_keys, bodies


def _entries(network: Network, issue_files: Sequence[Path], reusable: dict[str, Entry],
             load: Callable[[Path], Issue]) -> tuple[list[Entry], dict[str, Issue]]:
    """An Entry per issue (newest first), and the issues that had to be loaded afresh."""
    entries: list[Entry] = []
    fresh: dict[str, Issue] = {}
    problems: list[Problem] = []
    for path in issue_files:
        data = path.read_bytes()
        old = reusable.get(path.stem)
        if old is not None and old.input_hash == hashlib.sha256(data).hexdigest() \
                and _images_unchanged(old, network.root):
            entries.append(old)
            continue
        try:
            issue = load(path)
        except InputError as e:
            problems.extend(e.problems)
            continue
        entry = entry_for(issue, network.root, data)
        entries.append(entry)
        fresh[entry.slug] = issue
    if problems:
        raise InputError(problems)
    entries.sort(key=lambda e: (e.date, e.number or 0, e.slug), reverse=True)
    return entries, fresh


def _images_unchanged(entry: Entry, root: Path) -> bool:
    try:
        return all(file_hash(root / image.source) == image.digest for image in entry.images)
    except OSError:
        return False


def _issue_pieces(entry: Entry, fresh: dict[str, Issue], old_page: bytes | None,
                  network: Network, load: Callable[[Path], Issue],
                  issue_files: Sequence[Path]) -> tuple[str, str]:
    """The issue's render: new if it changed, else the one its previous page embeds."""
    if entry.slug not in fresh and old_page is not None:
        pieces = embedded_render(old_page.decode("utf-8"))
        if pieces is not None:
            return pieces
    issue = fresh.get(entry.slug)
    if issue is None:  # reused entry, but its old page is gone: load it after all
        path = next(p for p in issue_files if p.stem == entry.slug)
        issue = fresh[entry.slug] = load(path)
    return issue_render(issue, network)


def _embedded(page: bytes) -> tuple[str, str]:
    pieces = embedded_render(page.decode("utf-8"))
    return pieces if pieces is not None else ("", "")


def _page_key(fingerprint: str, entry: Entry, older: Entry | None, newer: Entry | None) -> str:
    """Everything an issue page's bytes depend on: the code, templates and config, the
    issue's YAML and images (its entry derives from them), and its neighbours' titles."""
    parts = [fingerprint, entry.slug, entry.input_hash,
             *(f"{i.name}:{i.digest}" for i in entry.images)]
    for other in (older, newer):
        parts += [other.slug, other.title] if other else ["", ""]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def build_fingerprint(network: Network) -> str:
    """Changes whenever the code, the templates or the config could change any output."""
    digest = hashlib.sha256()
    digest.update(_config_text(network).encode())
    logo = network.brand.logo  # every page names it: a new logo is a new build
    digest.update(((logo.published_digest or "") if logo else "").encode() + b"\0")
    package = Path(__file__).resolve().parent.parent  # the newsletter package
    templates = network.root / "templates"
    for folder, pattern in ((package, "*.py"), (templates, "*")):
        for path in sorted(p for p in folder.rglob(pattern) if p.is_file()):
            digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _config_text(network: Network) -> str:
    config = Path(network.source.path)
    if not config.is_absolute():
        config = network.root / config
    try:
        return config.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


# --------------------------------------------------------------------------- before a send


class Published(enum.StrEnum):
    """What the built site holds of one issue (the send confirmation says it)."""

    CURRENT = "current"  # its page, built from the issue file as it is now
    OLDER = "older"  # its page, built from an earlier version of the file
    MISSING = "missing"  # a site without this issue
    NO_SITE = "no-site"  # no site built in that folder


def published(output: Path, slug: str, source: Path) -> Published:
    """Whether the site built in ``output`` holds this issue, from this very file."""
    if not (output / "index.html").is_file():
        return Published.NO_SITE
    try:
        data = json.loads(manifest_path(output).read_bytes())
        hashes = {str(e["slug"]): str(e["input_hash"]) for e in data["entries"]}
    except (OSError, ValueError, KeyError, TypeError):
        hashes = {}
    if slug not in hashes or not (output / slug / "index.html").is_file():
        return Published.MISSING
    try:
        return Published.CURRENT if hashes[slug] == file_hash(source) else Published.OLDER
    except OSError:
        return Published.OLDER
