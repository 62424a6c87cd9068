"""The data that flows between stages: frozen value classes and enums, nothing else.

Every stage takes and returns these values; none of them carries behaviour beyond
small derived properties. This module imports nothing from the rest of the package.

The values are ``msgspec.Struct(frozen=True)`` classes: typed, immutable, slotted and
compared by value, like ``@dataclass(frozen=True, slots=True)``, but defined in C. A
frozen dataclass compiles five methods from source when its module is imported; the
package's ~60 of them took ~25 ms of every command's start-up (measured with
``python -X importtime``), an eighth of a whole ``newsletter build``. The package uses
Structs throughout, so there is one way to write a value.

    config.py   newsletter.yaml   -> Network
    load.py     issues/<slug>.yaml -> Issue (a tuple of Block values)
    render.py   Issue + Network    -> RenderedIssue (HTML and text with Slot markers)
    personalize Prepared message   + Recipient -> message bytes
"""

from __future__ import annotations

import datetime as dt
import enum
from pathlib import Path
from typing import ClassVar

import msgspec

# --------------------------------------------------------------------------- locations


class Location(msgspec.Struct, frozen=True):
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


class Mailbox(msgspec.Struct, frozen=True):
    """A display name and an ASCII (IDNA-encoded) address."""

    name: str
    address: str


class Helpline(msgspec.Struct, frozen=True):
    """The Modern Slavery Helpline footer every email and page carries."""

    prompt: str  # "Suspect someone is a victim of modern slavery?"
    name: str  # "Modern Slavery Helpline"
    phone: str  # as shown: "08000 121 700"
    report_url: str  # https URL for reporting online
    emergency: str = "999"
    top: bool = True  # a compact line near the top of each email, besides the box at the end

    @property
    def phone_tel(self) -> str:
        """The number for a ``tel:`` link (digits and a leading + only)."""
        return tel_uri(self.phone)

    @property
    def emergency_tel(self) -> str:
        return tel_uri(self.emergency)


def tel_uri(number: str) -> str:
    """``08000 121 700`` -> ``tel:08000121700``."""
    return "tel:" + "".join(c for c in number if c.isdigit() or c == "+")


class ListId(msgspec.Struct, frozen=True):
    """RFC 2919 List-Id: ``Name <label.namespace>``."""

    name: str
    label: str  # e.g. "news.wmasn.example.org"

    @property
    def header(self) -> str:
        return f"{self.name} <{self.label}>"


class Brand(msgspec.Struct, frozen=True):
    colour: str = "#1d4f91"  # links, headings, buttons; must keep 4.5:1 on white
    logo: Image | None = None  # the masthead: a local file, optional (alt: logo_alt)
    logo_alt: str = ""


class Unsubscribe(msgspec.Struct, frozen=True):
    url: str | None = None  # https base; the token is appended: <url>/<token>
    mailto: str | None = None  # optional address for mailto: unsubscribe


class Smtp(msgspec.Struct, frozen=True):
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
    # Where the key's path was given (its line in newsletter.yaml, or the environment
    # variable): a key that cannot be used is reported there.
    dkim_key_where: Location | None = None


class Limits(msgspec.Struct, frozen=True):
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


class RemoteImages(enum.StrEnum):
    """May an issue show an image from another site (``remote_images`` in newsletter.yaml)?

    Fetching it tells that site when each reader opens the email or the archive page.
    """

    REFUSE = "refuse"  # issues must carry their images in their own folder
    ALLOW = "allow"  # https images are allowed; the archive's policy and footer say so


class ArchiveSettings(msgspec.Struct, frozen=True):
    noindex: bool = False
    quick_exit_url: str | None = None  # "leave this site quickly" target


class Bounces(msgspec.Struct, frozen=True):
    """Where reports about sent messages come back, and when soft bounces count as one.

    With ``address`` (``bounces@news.example.org``), each message's envelope sender is
    ``bounces+<signed token>@news.example.org``: the token names the delivery, never the
    address. Without it, the sender's address is the envelope sender (Message-IDs only).
    """

    address: str | None = None
    soft_limit: int = 3  # this many soft bounces (4.x.x, delays) ...
    soft_issues: int = 2  # ... about at least this many different issues: bounced


class ImapSettings(msgspec.Struct, frozen=True):
    host: str
    user: str
    port: int = 993
    tls: TlsMode = TlsMode.IMPLICIT
    password_env: str = "NEWSLETTER_IMAP_PASSWORD"  # noqa: S105 (a variable name)
    folder: str = "INBOX"
    timeout: float = 60.0


class AfterReading(enum.StrEnum):
    """What ``newsletter inbox`` does with a message it has dealt with."""

    MOVE = "move"  # to the processed folder (an mbox file is flagged instead)
    FLAG = "flag"  # marked read where it is
    DELETE = "delete"  # only when asked


class Inbox(msgspec.Struct, frozen=True):
    """The mailbox ``newsletter inbox`` reads: a Maildir, an mbox file, or IMAP."""

    maildir: Path | None = None
    mbox: Path | None = None
    imap: ImapSettings | None = None
    processed_folder: str = "Processed"
    after: AfterReading = AfterReading.MOVE


class Network(msgspec.Struct, frozen=True):
    """Everything newsletter.yaml says, validated once."""

    name: str
    sender: Mailbox
    reply_to: Mailbox | None
    website: str
    archive_url: str  # public base URL of the archive, ends with "/"
    list_id: ListId
    helpline: Helpline
    language: str = "en-GB"
    brand: Brand = msgspec.field(default_factory=Brand)
    unsubscribe: Unsubscribe = msgspec.field(default_factory=Unsubscribe)
    smtp: Smtp = msgspec.field(default_factory=Smtp)
    limits: Limits = msgspec.field(default_factory=Limits)
    archive: ArchiveSettings = msgspec.field(default_factory=ArchiveSettings)
    remote_images: RemoteImages = RemoteImages.REFUSE
    bounces: Bounces = msgspec.field(default_factory=Bounces)
    inbox: Inbox | None = None
    # What is kept about each member besides the address and the consent evidence: the
    # columns the network declares (member_columns); an import drops every other column.
    member_columns: tuple[str, ...] = ("name", "organisation")
    # The state database: a SQLite file, or a postgresql:// URL (never with a password).
    database: Path | str = Path("newsletter.db")
    root: Path = Path(".")  # the project folder (where newsletter.yaml lives)
    source: Location = Location("newsletter.yaml")

    @property
    def sender_domain(self) -> str:
        return self.sender.address.rpartition("@")[2]


# --------------------------------------------------------------------------- issues


class Link(msgspec.Struct, frozen=True):
    url: str  # https, mailto or tel only (checked on load)
    text: str
    where: Location
    note: str | None = None


IMAGE_EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif",
                    "image/webp": ".webp"}


class Image(msgspec.Struct, frozen=True):
    src: str  # as written: a path relative to the issue, or an https URL
    alt: str
    where: Location
    path: Path | None = None  # resolved local file, None for https images
    media_type: str | None = None  # from the bytes: image/png, image/jpeg, image/gif, image/webp
    width: int | None = None  # as displayed
    height: int | None = None
    size: int | None = None  # bytes
    digest: str | None = None  # sha256 hex of the local file's bytes
    # sha256 hex of the bytes published (input/images.py: the file less its metadata)
    published_digest: str | None = None

    @property
    def published_name(self) -> str | None:
        """Content-hashed file name the image is published under (local images only).

        The extension is the real type's, whatever the editor's file was called: a GIF
        saved as ``.js`` must not be served as a script.
        """
        if self.path is None or self.published_digest is None or self.media_type is None:
            return None
        return f"{self.path.stem}-{self.published_digest[:12]}{IMAGE_EXTENSIONS[self.media_type]}"


class Person(msgspec.Struct, frozen=True):
    name: str
    where: Location
    role: str | None = None
    organisation: str | None = None
    phone: str | None = None
    email: str | None = None

    @property
    def phone_tel(self) -> str | None:
        return tel_uri(self.phone) if self.phone else None


class Article(msgspec.Struct, frozen=True):
    type: ClassVar[str] = "article"
    title: str
    where: Location
    body: str | None = None  # Markdown
    image: Image | None = None
    link: Link | None = None


class Event(msgspec.Struct, frozen=True):
    type: ClassVar[str] = "event"
    title: str
    where: Location
    date: dt.date | None = None  # a whole-day event ...
    start: dt.datetime | None = None  # ... or start (and optional end) date-times
    end: dt.datetime | None = None
    location: str | None = None
    body: str | None = None
    link: Link | None = None


class Contact(msgspec.Struct, frozen=True):
    type: ClassVar[str] = "contact"
    title: str
    where: Location
    body: str | None = None
    people: tuple[Person, ...] = ()


class Callout(msgspec.Struct, frozen=True):
    type: ClassVar[str] = "callout"
    title: str
    where: Location
    body: str | None = None
    link: Link | None = None


class Links(msgspec.Struct, frozen=True):
    type: ClassVar[str] = "links"
    title: str
    where: Location
    items: tuple[Link, ...] = ()


class Section(msgspec.Struct, frozen=True):
    type: ClassVar[str] = "section"
    title: str
    where: Location


Block = Article | Event | Contact | Callout | Links | Section
BLOCK_TYPES: tuple[type[Block], ...] = (Article, Event, Contact, Callout, Links, Section)


class Issue(msgspec.Struct, frozen=True):
    slug: str  # file name without .yaml: the archive permalink and ledger key
    title: str
    date: dt.date
    blocks: tuple[Block, ...]
    where: Location
    number: int | None = None
    subject: str | None = None  # defaults to title
    preheader: str | None = None
    intro: str | None = None  # Markdown
    # The send-by deadline, UK local time like event times (deadline.py): a datetime, or
    # a plain date meaning until the end of that day. No message to a list starts after it.
    send_by: dt.datetime | dt.date | None = None
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


class RenderedIssue(msgspec.Struct, frozen=True):
    """One issue rendered once: what every recipient's message is made from."""

    slug: str
    subject: str
    preheader: str | None
    html: str  # complete document, CSS inlined
    text: str  # plain-text alternative, wrapped, links as numbered references
    view_url: str  # the anonymous archive page ("view in browser")
    mode: RenderMode
    # sha256 of what every message shares (subject, preheader, the header values from
    # the config, html, text: render.content_hash): a send is resumed only if it is equal
    content_hash: str


# --------------------------------------------------------------------------- members and delivery


class MemberStatus(enum.StrEnum):
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    REMOVED = "removed"
    COMPLAINED = "complained"  # reported the newsletter as spam (a feedback report)


class Subscriber(msgspec.Struct, frozen=True):
    id: int
    email: str  # normalised: IDNA domain, as given local part
    name: str | None
    organisation: str | None
    status: MemberStatus
    uid: str  # random opaque id used in tokens and Message-IDs; never the address


class PrivateValues(msgspec.Struct, frozen=True):
    """What the member list holds that public output must never show: the privacy gate's
    list, read from the state database by the members stage, passed to the archive."""

    addresses: frozenset[str] = frozenset()  # lower-case member addresses
    uids: frozenset[str] = frozenset()  # members' opaque ids (in tokens and Message-IDs)
    salt: str = ""  # the database's random salt: keys the gate's fingerprint


class Recipient(msgspec.Struct, frozen=True):
    """Per-recipient values a message needs; nothing else varies between messages."""

    address: str  # ASCII, one address
    greeting: str  # "Hello Jane" (plain text; personalize escapes it for HTML)
    unsubscribe_url: str  # https URL (shown in the body)
    list_unsubscribe: str  # exact List-Unsubscribe header value
    list_unsubscribe_post: str  # "List-Unsubscribe=One-Click"
    message_id: str  # "<...@sender.domain>", stable for (issue, subscriber)
    # The envelope sender (bounces+<token>@...), stable for (issue, subscriber) like the
    # Message-ID; "" sends with the network's own address.
    return_path: str = ""


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    ATTEMPTING = "attempting"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    UNKNOWN = "unknown"
    SUPPRESSED = "suppressed"
    EXPIRED = "expired"
    BOUNCED = "bounced"  # sent, then a bounce report came back (newsletter inbox)
