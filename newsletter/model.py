"""The data that flows between stages: frozen dataclasses and enums, nothing else.

Every stage takes and returns these values; none of them carries behaviour beyond
small derived properties. This module imports nothing from the rest of the package.

    config.py   newsletter.yaml   -> Network
    load.py     issues/<slug>.yaml -> Issue (a tuple of Block values)
    render.py   Issue + Network    -> RenderedIssue (HTML and text with Slot markers)
    personalize Prepared message   + Recipient -> message bytes
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

# --------------------------------------------------------------------------- locations


@dataclass(frozen=True, slots=True)
class Location:
    """Where a value came from: a file and a 1-based line and column."""

    path: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.path}:{self.line}:{self.col}"
        return self.path


# --------------------------------------------------------------------------- the network


class TlsMode(enum.StrEnum):
    IMPLICIT = "implicit"  # TLS from the first byte (port 465)
    STARTTLS = "starttls"  # plain connect, STARTTLS required (port 587)
    NONE = "none"  # plaintext: only ever allowed to a loopback host


@dataclass(frozen=True, slots=True)
class Mailbox:
    """A display name and an ASCII (IDNA-encoded) address."""

    name: str
    address: str


@dataclass(frozen=True, slots=True)
class Helpline:
    """The Modern Slavery Helpline footer every email and page carries."""

    prompt: str  # "Suspect someone is a victim of modern slavery?"
    name: str  # "Modern Slavery Helpline"
    phone: str  # as shown: "08000 121 700"
    report_url: str  # https URL for reporting online
    emergency: str = "999"

    @property
    def phone_tel(self) -> str:
        """The number for a ``tel:`` link (digits and a leading + only)."""
        return tel_uri(self.phone)

    @property
    def emergency_tel(self) -> str:
        return tel_uri(self.emergency)

    @property
    def text(self) -> str:
        """The footer as one plain sentence pair (the wording is fixed by the network)."""
        return (
            f"{self.prompt} Call the {self.name} on {self.phone} or report online. "
            f"If someone is in immediate danger, always call {self.emergency}."
        )


def tel_uri(number: str) -> str:
    """``08000 121 700`` -> ``tel:08000121700``."""
    return "tel:" + "".join(c for c in number if c.isdigit() or c == "+")


@dataclass(frozen=True, slots=True)
class ListId:
    """RFC 2919 List-Id: ``Name <label.namespace>``."""

    name: str
    label: str  # e.g. "news.wmasn.example.org"

    @property
    def header(self) -> str:
        return f"{self.name} <{self.label}>"


@dataclass(frozen=True, slots=True)
class Brand:
    colour: str = "#1d4f91"  # links, headings, buttons; must keep 4.5:1 on white
    logo: Path | None = None  # local file, optional
    logo_alt: str = ""


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    url: str | None = None  # https base; the token is appended: <url>/<token>
    mailto: str | None = None  # optional address for mailto: unsubscribe


@dataclass(frozen=True, slots=True)
class Smtp:
    host: str = "127.0.0.1"
    port: int = 587
    tls: TlsMode = TlsMode.STARTTLS
    user: str | None = None
    password_env: str = "NEWSLETTER_SMTP_PASSWORD"  # noqa: S105 (a variable name, not a secret)
    timeout: float = 60.0  # per command; the final-dot wait is longer (see send.py)
    final_dot_timeout: float = 600.0
    # Optional DKIM signing of the exact bytes sent (dkim.py). The key file is a secret:
    # keep it outside the repository (NEWSLETTER_DKIM_KEY overrides the path).
    dkim_key: Path | None = None  # PEM private key (RSA)
    dkim_selector: str | None = None  # the DNS selector: <selector>._domainkey.<domain>
    dkim_domain: str | None = None  # d= ; defaults to the sender's domain


@dataclass(frozen=True, slots=True)
class Limits:
    """Sending limits; 0 means no limit for that window."""

    per_second: float = 0.0
    per_minute: int = 30
    per_hour: int = 0
    per_day: int = 10_000
    concurrency: int = 2
    batch_size: int = 0  # 0: no batches
    batch_pause: float = 0.0  # seconds between batches
    retry_base: float = 300.0  # first delay after a 4xx, doubled each time
    retry_max: float = 4000.0
    retry_deadline: float = 5 * 24 * 3600.0  # give up (expired) after this long


@dataclass(frozen=True, slots=True)
class ArchiveSettings:
    noindex: bool = False
    quick_exit_url: str | None = None  # "leave this site quickly" target


@dataclass(frozen=True, slots=True)
class Network:
    """Everything newsletter.yaml says, validated once."""

    name: str
    sender: Mailbox
    reply_to: Mailbox | None
    website: str
    archive_url: str  # public base URL of the archive, ends with "/"
    list_id: ListId
    helpline: Helpline
    language: str = "en-GB"
    brand: Brand = field(default_factory=Brand)
    unsubscribe: Unsubscribe = field(default_factory=Unsubscribe)
    smtp: Smtp = field(default_factory=Smtp)
    limits: Limits = field(default_factory=Limits)
    archive: ArchiveSettings = field(default_factory=ArchiveSettings)
    database: Path = Path("newsletter.db")
    root: Path = Path(".")  # the project folder (where newsletter.yaml lives)
    source: Location = Location("newsletter.yaml")

    @property
    def sender_domain(self) -> str:
        return self.sender.address.rpartition("@")[2]


# --------------------------------------------------------------------------- issues


@dataclass(frozen=True, slots=True)
class Link:
    url: str  # https, mailto or tel only (checked on load)
    text: str
    where: Location
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Image:
    src: str  # as written: a path relative to the issue, or an https URL
    alt: str
    where: Location
    path: Path | None = None  # resolved local file, None for https images
    media_type: str | None = None  # sniffed: image/png, image/jpeg, image/gif, image/webp
    width: int | None = None
    height: int | None = None
    size: int | None = None  # bytes
    digest: str | None = None  # sha256 hex of the local file's bytes

    @property
    def published_name(self) -> str | None:
        """Content-hashed file name the image is published under (local images only)."""
        if self.path is None or self.digest is None:
            return None
        return f"{self.path.stem}-{self.digest[:12]}{self.path.suffix.lower()}"


@dataclass(frozen=True, slots=True)
class Person:
    name: str
    where: Location
    role: str | None = None
    organisation: str | None = None
    phone: str | None = None
    email: str | None = None

    @property
    def phone_tel(self) -> str | None:
        return tel_uri(self.phone) if self.phone else None


@dataclass(frozen=True, slots=True)
class Article:
    type: ClassVar[str] = "article"
    title: str
    where: Location
    body: str | None = None  # Markdown
    image: Image | None = None
    link: Link | None = None


@dataclass(frozen=True, slots=True)
class Event:
    type: ClassVar[str] = "event"
    title: str
    where: Location
    date: dt.date | None = None  # a whole-day event ...
    start: dt.datetime | None = None  # ... or start (and optional end) date-times
    end: dt.datetime | None = None
    location: str | None = None
    body: str | None = None
    link: Link | None = None


@dataclass(frozen=True, slots=True)
class Contact:
    type: ClassVar[str] = "contact"
    title: str
    where: Location
    body: str | None = None
    people: tuple[Person, ...] = ()


@dataclass(frozen=True, slots=True)
class Callout:
    type: ClassVar[str] = "callout"
    title: str
    where: Location
    body: str | None = None
    link: Link | None = None


@dataclass(frozen=True, slots=True)
class Links:
    type: ClassVar[str] = "links"
    title: str
    where: Location
    items: tuple[Link, ...] = ()


@dataclass(frozen=True, slots=True)
class Section:
    type: ClassVar[str] = "section"
    title: str
    where: Location


Block = Article | Event | Contact | Callout | Links | Section
BLOCK_TYPES: tuple[type[Block], ...] = (Article, Event, Contact, Callout, Links, Section)


@dataclass(frozen=True, slots=True)
class Issue:
    slug: str  # file name without .yaml: the archive permalink and ledger key
    title: str
    date: dt.date
    blocks: tuple[Block, ...]
    where: Location
    number: int | None = None
    subject: str | None = None  # defaults to title
    preheader: str | None = None
    intro: str | None = None  # Markdown
    source_hash: str = ""  # sha256 of the YAML bytes and local image bytes
    # Where each value was written, by key path ("subject", "blocks[2].body"): for messages.
    locations: tuple[tuple[str, Location], ...] = ()

    @property
    def subject_line(self) -> str:
        return self.subject or self.title

    def location_of(self, key: str) -> Location:
        """Where the value at ``key`` was written (the issue itself when unknown)."""
        for name, where in self.locations:
            if name == key:
                return where
        return self.where


# --------------------------------------------------------------------------- rendering


class Slot(enum.StrEnum):
    """Per-recipient markers left in the rendered HTML and text.

    Only ASCII letters and underscores, so they pass unchanged through Jinja
    escaping, MJML, CSS inlining and quoted-printable encoding; personalize.py
    replaces them in pre-encoded segments. The archive renders with none of them.
    """

    GREETING = "__NL_GREETING__"  # "Hello Jane" / "Hello"
    UNSUBSCRIBE_URL = "__NL_UNSUBSCRIBE_URL__"


class RenderMode(enum.StrEnum):
    EMAIL = "email"  # with Slot markers, for personalize
    ARCHIVE = "archive"  # no recipient at all


@dataclass(frozen=True, slots=True)
class RenderedIssue:
    """One issue rendered once: what every recipient's message is made from."""

    slug: str
    subject: str
    preheader: str | None
    html: str  # complete document, CSS inlined
    text: str  # plain-text alternative, wrapped, links as numbered references
    view_url: str  # the anonymous archive page ("view in browser")
    mode: RenderMode
    content_hash: str  # sha256 of html + text: refuse to resume a send if it changed


# --------------------------------------------------------------------------- members and delivery


class MemberStatus(enum.StrEnum):
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    REMOVED = "removed"


@dataclass(frozen=True, slots=True)
class Subscriber:
    id: int
    email: str  # normalised: IDNA domain, as given local part
    name: str | None
    organisation: str | None
    status: MemberStatus
    uid: str  # random opaque id used in tokens and Message-IDs; never the address


@dataclass(frozen=True, slots=True)
class Recipient:
    """Per-recipient values a message needs; nothing else varies between messages."""

    address: str  # ASCII, one address
    greeting: str  # "Hello Jane" (plain text; personalize escapes it for HTML)
    unsubscribe_url: str  # https URL (shown in the body)
    list_unsubscribe: str  # exact List-Unsubscribe header value
    list_unsubscribe_post: str  # "List-Unsubscribe=One-Click"
    message_id: str  # "<...@sender.domain>", stable for (issue, subscriber)


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    ATTEMPTING = "attempting"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    UNKNOWN = "unknown"
    SUPPRESSED = "suppressed"
    EXPIRED = "expired"
