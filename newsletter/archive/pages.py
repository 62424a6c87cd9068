"""Archive stage, part 2: the site's pages, feed and indexes as bytes.

In: Entries (newest first), the Network, and for issue pages the embedded ARCHIVE render
of the issue (its CSS and body, from render.py). Out: (relative path, bytes) pairs. Pure:
no file is written here, and the same input gives the same bytes.

Links between pages are relative, so the folder works from disk and under any base path.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import jinja2
import msgspec
from markupsafe import Markup

from newsletter.archive.entries import Entry
from newsletter.email.templating import html_environment
from newsletter.errors import RenderError
from newsletter.model import Helpline, Image, Issue, Network, RemoteImages

FEED_ENTRIES = 20  # full content is heavy; readers need the recent issues, the site has the rest
BODY_START = "<!-- issue body -->\n"
BODY_END = "\n<!-- /issue body -->"
CSS_START = '<style id="issue-css">\n'
CSS_END = "\n</style>"


class Site(msgspec.Struct, frozen=True):
    """What every page template may use about the network."""

    name: str
    language: str
    website: str
    archive_url: str
    base_path: str  # the path part of archive_url: "/" or "/news/"
    brand_colour: str
    helpline: Helpline
    noindex: bool
    quick_exit_url: str | None
    remote_images: bool  # issues may show images from other sites (the footer says so)
    csp: str  # the Content-Security-Policy of every page
    logo: Image | None = None  # the masthead, published as static/<logo.published_name>

    @classmethod
    def of(cls, network: Network) -> Site:
        archive_url = network.archive_url if network.archive_url.endswith("/") \
            else network.archive_url + "/"
        return cls(
            name=network.name, language=network.language, website=network.website,
            archive_url=archive_url, base_path=urlsplit(archive_url).path or "/",
            brand_colour=network.brand.colour, helpline=network.helpline,
            noindex=network.archive.noindex,
            quick_exit_url=network.archive.quick_exit_url,
            remote_images=network.remote_images is RemoteImages.ALLOW,
            csp=content_security_policy(network), logo=network.brand.logo,
        )


def content_security_policy(network: Network) -> str:
    """The archive pages' policy: their own files only, and the email design's inline
    styles; images from other https sites only where the network allows them in issues.
    Every page carries it; the server sends it as a header too (web/server.py)."""
    images = "'self' https:" if network.remote_images is RemoteImages.ALLOW else "'self'"
    return (f"default-src 'self'; img-src {images}; style-src 'self' 'unsafe-inline'; "
            "script-src 'self'; connect-src 'none'; frame-src 'none'; object-src 'none'; "
            "base-uri 'none'; form-action 'self'")


class FeedItem(msgspec.Struct, frozen=True):
    entry: Entry
    content: str  # the issue's HTML; escaped once by the template
    timestamp: str


def issue_render(issue: Issue, network: Network) -> tuple[str, str]:
    """(css, body HTML) of the issue's ARCHIVE render: the email, minus any recipient."""
    # imported here: MJML and the CSS inliner load slowly, and most rebuilds render nothing
    from newsletter.email.render import render_archive_body

    css, body = render_archive_body(issue, network)
    return css.strip(), body.strip()


def embedded_render(page: str) -> tuple[str, str] | None:
    """The (css, body) an issue page embeds, or None if the page is not one of ours."""
    try:
        css_at = page.index(CSS_START) + len(CSS_START)
        css = page[css_at: page.index(CSS_END, css_at)]
        body_at = page.index(BODY_START) + len(BODY_START)
        body = page[body_at: page.index(BODY_END, body_at)]
    except ValueError:
        return None
    return css, body


class Pages:
    """Renders every kind of output from templates/archive."""

    def __init__(self, network: Network) -> None:
        self.site = Site.of(network)
        self.env = html_environment(network.root.resolve())

    def _render(self, name: str, **context: Any) -> bytes:
        try:
            text = self.env.get_template(f"archive/{name}").render(site=self.site, **context)
        except jinja2.TemplateError as e:
            where = getattr(e, "filename", None) or name
            line = getattr(e, "lineno", None)
            raise RenderError(f"{where}:{line or 0}: {e}") from e
        return text.encode("utf-8")

    def index(self, entries: Sequence[Entry]) -> bytes:
        years: dict[int, list[Entry]] = {}
        for entry in entries:
            years.setdefault(entry.date.year, []).append(entry)
        return self._render("index.html.j2", root="", years=list(years.items()))

    def issue(self, entry: Entry, css: str, body: str, *, previous: Entry | None,
              next: Entry | None) -> bytes:
        if "</style" in css.lower():
            raise RenderError(f"{entry.source}: the rendered CSS would close its <style>")
        # the render is the output of our own escaping templates: embed it as it is
        trusted_css, trusted_body = Markup(css), Markup(body)  # noqa: S704
        return self._render("issue.html.j2", root="../", entry=entry,
                            issue_css=trusted_css, issue_body=trusted_body,
                            previous=previous, next=next)

    def search(self, entries: Sequence[Entry]) -> bytes:
        return self._render("search.html.j2", root="../", entries=entries)

    def not_found(self) -> bytes:
        # served for any missing path, so its links start from the site's own base path
        return self._render("404.html.j2", root=self.site.base_path)

    def feed(self, items: Iterable[tuple[Entry, str]], updated: dt.date | None) -> bytes:
        feed_items = [FeedItem(e, self.absolute_images(e, body), timestamp(e.date))
                      for e, body in items]
        return self._render("feed.xml.j2", items=feed_items,
                            updated=timestamp(updated or dt.date(1970, 1, 1)))

    def absolute_images(self, entry: Entry, body: str) -> str:
        """The page's relative image names as full URLs (feed readers may ignore xml:base)."""
        for image in entry.images:
            body = body.replace(f'src="{image.name}"',
                                f'src="{self.site.archive_url}{entry.href}{image.name}"')
        return body

    def sitemap(self, entries: Sequence[Entry]) -> bytes:
        updated = entries[0].date.isoformat() if entries else None
        return self._render("sitemap.xml.j2", entries=entries, updated=updated)

    def robots(self) -> bytes:
        return self._render("robots.txt.j2")


def search_index(entries: Sequence[Entry]) -> bytes:
    """search-index.js: a script defining a global, so search works from file:// too."""
    issues = [{"slug": e.slug, "href": e.page, "title": e.title, "date": e.date.isoformat(),
               "number": e.number, "text": e.text} for e in entries]
    data = json.dumps({"version": 1, "issues": issues}, ensure_ascii=False,
                      separators=(",", ":"), sort_keys=True)
    # "</" cannot end a script here, but keep the file safe to inline anywhere
    data = data.replace("</", "<\\/").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return f"window.NEWSLETTER_SEARCH = {data};\n".encode()


def read_search_index(data: bytes) -> dict[str, str]:
    """slug -> text from a search-index.js this module wrote (empty if unreadable)."""
    text = data.decode("utf-8", errors="replace").strip()
    prefix = "window.NEWSLETTER_SEARCH = "
    if not text.startswith(prefix) or not text.endswith(";"):
        return {}
    try:
        parsed = json.loads(text[len(prefix):-1])
        return {str(i["slug"]): str(i["text"]) for i in parsed["issues"]}
    except (ValueError, KeyError, TypeError):
        return {}


def timestamp(day: dt.date) -> str:
    """Issue dates as RFC 3339 instants: deterministic, midnight UTC."""
    return f"{day.isoformat()}T00:00:00Z"
