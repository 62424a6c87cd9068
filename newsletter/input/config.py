"""Config stage: ``newsletter.yaml`` -> :class:`~newsletter.model.Network`, validated once.

Read with the same strict YAML as issues (yamlsource.py) and checked as a whole: every
problem is reported at once, ``file:line:col``, with "did you mean" for misspelt keys.
The helpline footer is required (every email and page carries it), and so is a way to
leave the list. Anything that ends up in a header (names, the List-Id) is refused if it
holds line breaks, control characters or ``=?``; addresses are validated and their
domains IDNA-encoded.

Each setting is declared once, in the table below (``NETWORK``): its key, which is also
the name of the model field it fills, and how it is read. The allowed keys of a section,
the reading and the model value are all derived from it; a setting left out takes the
model's default. ``setting_keys()`` lists every key the file may hold.

The SMTP password never lives in the file: ``smtp.password_env`` names the environment
variable that holds it. ``NEWSLETTER_SMTP_HOST``, ``_PORT``, ``_USER`` and ``_TLS``
override the file's smtp settings (for a proof server or a test), checked like the file.
"""

from __future__ import annotations

import enum
import hashlib
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import msgspec

from newsletter.errors import InputError, Problem
from newsletter.input import yamlsource as ys
from newsletter.input.fields import Fields, Reader
from newsletter.input.images import ImageError, publishable
from newsletter.model import (
    AfterReading,
    ArchiveSettings,
    Bounces,
    Brand,
    Helpline,
    Image,
    ImapSettings,
    Inbox,
    Limits,
    ListId,
    Location,
    Mailbox,
    Network,
    RemoteImages,
    Smtp,
    TlsMode,
    Unsubscribe,
)
from newsletter.text.addresses import address_problem, is_loopback, phone_problem, url_problem

ENV_PREFIX = "NEWSLETTER_SMTP_"
DKIM_PREFIX = "NEWSLETTER_DKIM_"
# RFC 6376 §3.1: a selector is one or more DNS labels ("news2016", "mail.2016").
_SELECTOR = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")

_HTTPS = frozenset({"https"})
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+")
_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
_LANGUAGE = re.compile(r"[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
_HOST = re.compile(r"[A-Za-z0-9.:\[\]-]+")

_M = TypeVar("_M", bound=msgspec.Struct)

HELPLINE_EXAMPLE = (
    "add helpline: {prompt: ..., name: Modern Slavery Helpline, phone: 08000 121 700, "
    "report_url: https://www.modernslaveryhelpline.org/report}"
)


# --------------------------------------------------------------------------- how a value is read

# A reader takes the section's fields and a key; it returns the value, or None when the
# key is absent or its value was refused (the problem is recorded).
Read = Callable[["_NetworkReader", Fields, str], Any]
# A text check takes the text as read and returns it (or None when it refused it).
Check = Callable[["_NetworkReader", Fields, str, str], str | None]


def text(max_len: int = 200, *, header: bool = False, check: Check | None = None) -> Read:
    def read(nr: _NetworkReader, f: Fields, key: str) -> str | None:
        value = nr.r.text(f, key, max_len=max_len, header=header)
        return value if value is None or check is None else check(nr, f, key, value)
    return read


def integer(minimum: int = 0, maximum: int | None = None) -> Read:
    return lambda nr, f, key: nr.r.integer(f, key, minimum=minimum, maximum=maximum)


def number(minimum: float = 0.0) -> Read:
    return lambda nr, f, key: nr.r.number(f, key, minimum=minimum)


def boolean() -> Read:
    return lambda nr, f, key: nr.r.boolean(f, key)


def choice(options: type[enum.StrEnum], what: str) -> Read:
    def read(nr: _NetworkReader, f: Fields, key: str) -> enum.StrEnum | None:
        found = nr.r.choice(f, key, [o.value for o in options], what=what)
        return None if found is None else options(found)
    return read


def url(nr: _NetworkReader, f: Fields, key: str) -> str | None:
    value = nr.r.text(f, key, max_len=2000)
    if value is None:
        return None
    why = url_problem(value, _HTTPS)
    if why:
        nr.error(f, key, why)
        return None
    return value


def address(nr: _NetworkReader, f: Fields, key: str) -> str | None:
    value = nr.r.text(f, key, max_len=254, header=True)
    if value is None:
        return None
    found, why = address_problem(value)
    if why:
        nr.error(f, key, why)
    return found


def phone(nr: _NetworkReader, f: Fields, key: str) -> str | None:
    value = nr.r.text(f, key, max_len=40)
    problem = None if value is None else phone_problem(value)
    if problem:
        nr.error(f, key, *problem)
        return None
    return value


# Always kept, so never declared: the address, and the consent evidence.
_ALWAYS_KEPT = ("email", "consent_source", "consent_date", "consent_basis", "status")
_COLUMN = re.compile(r"[a-z][a-z0-9_]{0,63}")


def _member_columns(nr: _NetworkReader, f: Fields, key: str) -> tuple[str, ...] | None:
    """The member columns an import stores: lower-case names, each once."""
    if not f.has(key):
        return None
    items = nr.r.items(f.values[key], f.key(key))
    if items is None:
        return None
    found: list[str] = []
    for number, item in enumerate(items):
        where = f"{f.key(key)}[{number}]"
        name = nr.r.text_node(item, where, max_len=64)
        if name is None:
            continue
        if not _COLUMN.fullmatch(name):
            nr.r.error(item, where, f"expected a column name like phone_number, found {name!r}",
                       "lower-case letters, digits and '_', as an import matches the file's "
                       "column names: 'Phone Number' is phone_number")
        elif name in _ALWAYS_KEPT:
            nr.r.error(item, where, f"{name!r} is always kept (it is not a profile column)",
                       "remove it from the list")
        elif name in found:
            nr.r.error(item, where, f"{name!r} is listed twice")
        else:
            found.append(name)
    return tuple(found)


def _archive_url(nr: _NetworkReader, f: Fields, key: str) -> str | None:
    value = url(nr, f, key)
    if value is not None and not value.endswith("/"):
        nr.error(f, key, "must end with '/'", f"write {value}/")
        return None
    return value


def _language(nr: _NetworkReader, f: Fields, key: str, value: str) -> str | None:
    if not _LANGUAGE.fullmatch(value):
        nr.error(f, key, f"expected a language tag like en-GB, found {value!r}")
    return value


def _list_label(nr: _NetworkReader, f: Fields, key: str, value: str) -> str | None:
    if not _LABEL.fullmatch(value):
        nr.error(f, key, f"expected a List-Id label like news.example.org, found {value!r}",
                 "letters, digits, hyphens and at least one dot")
        return None
    return value


def _env_name(nr: _NetworkReader, f: Fields, key: str, value: str) -> str | None:
    if not _ENV_NAME.fullmatch(value):
        nr.error(f, key, f"expected an environment variable name, found {value!r}",
                 "e.g. NEWSLETTER_SMTP_PASSWORD; the password itself never goes here")
        return None
    return value


def _colour(nr: _NetworkReader, f: Fields, key: str, value: str) -> str | None:
    if not _COLOUR.fullmatch(value):
        nr.error(f, key, f"expected a colour like #1d4f91, found {value!r}")
        return None
    ratio = contrast_with_white(value)
    if ratio < 4.5:
        shown = math.floor(ratio * 100) / 100  # never round up to 4.5
        nr.error(f, key, f"{value} on white has a contrast of {shown:.2f}:1; at least 4.5:1 "
                 "is needed", "choose a darker shade so links and headings stay readable")
        return None
    return value.lower()


def _project_file(default: str | None = None) -> Read:
    """A path in the project folder; with ``default``, that file when the key is absent."""
    def read(nr: _NetworkReader, f: Fields, key: str) -> Path | None:
        value = nr.r.text(f, key, max_len=1000) or default
        return None if value is None else nr.root / value
    return read


DATABASE_URL_SCHEMES = ("postgresql://", "postgres://")
URL_PASSWORD = "the database URL carries a password"  # noqa: S105 (a message)


def database_url_problem(url: str) -> str | None:
    """What is wrong with a PostgreSQL URL (None: nothing): it needs a host and a database
    name, and never carries the password (that comes from NEWSLETTER_DATABASE_PASSWORD)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        return f"not a usable database URL: {e}"
    if parts.password is not None:
        return URL_PASSWORD
    if not parts.hostname or not parts.path.strip("/") or port == 0:
        return "a PostgreSQL URL needs a host and a database name"
    return None


def _database(nr: _NetworkReader, f: Fields, key: str) -> Path | str | None:
    """The state database: a file in the project folder (SQLite, the default), or a
    ``postgresql://user@host[:port]/name`` URL, whose password comes from the environment."""
    value = nr.r.text(f, key, max_len=1000)
    if value is None or not value.startswith(DATABASE_URL_SCHEMES):
        path: Path | None = _project_file("newsletter.db")(nr, f, key)
        return path
    problem = database_url_problem(value)
    if problem == URL_PASSWORD:
        nr.error(f, key, problem, "remove it and set NEWSLETTER_DATABASE_PASSWORD in the "
                 "environment instead: postgresql://USER@HOST/DATABASE")
        return None
    if problem is not None:
        nr.error(f, key, problem, "write postgresql://USER@HOST:PORT/DATABASE")
        return None
    return value


LOGO_BYTES = 512 * 1024  # a masthead, not a photograph


def _logo(nr: _NetworkReader, f: Fields, key: str) -> Image | None:
    """The masthead image: a local file, published without its metadata (as issue images)."""
    path: Path | None = _project_file()(nr, f, key)
    if path is None:
        return None
    try:
        data = path.read_bytes() if path.is_file() else None
    except OSError:  # a name too long for the file system, say
        data = None
    if data is None:
        nr.error(f, key, f"logo file not found: {path}")
        return None
    if len(data) > LOGO_BYTES:
        nr.error(f, key, f"{path.name} is {len(data) // 1024} KB; a logo may be at most "
                 f"{LOGO_BYTES // 1024} KB", "export it smaller, e.g. 400 px wide")
        return None
    try:
        image = publishable(data)
    except ImageError as e:
        nr.error(f, key, f"{path.name}: {e.message}", e.hint)
        return None
    node = f.values[key]
    return Image(src=str(path.relative_to(nr.root)) if path.is_relative_to(nr.root)
                 else str(path), alt="", where=Location(nr.source, node.line, node.col),
                 path=path, media_type=image.media_type, width=image.width,
                 height=image.height, size=len(data), digest=hashlib.sha256(data).hexdigest(),
                 published_digest=hashlib.sha256(image.data).hexdigest())


# --------------------------------------------------------------------------- the settings


class Setting(msgspec.Struct, frozen=True):
    """One key of newsletter.yaml: its name (the model field's too) and how it is read."""

    key: str
    read: Read | Group  # a value, or a section of settings
    required: bool = False


class Group(msgspec.Struct, frozen=True):
    """A section of settings and the model value made of them.

    ``finish`` runs once every setting is read: checks that concern several settings, or
    the environment; it may change the values, and returns False when the section is
    unusable. ``always``: read even when the section is absent (the environment can
    supply it).
    """

    model: type[Any]
    settings: tuple[Setting, ...]
    finish: Callable[[_NetworkReader, Fields, dict[str, Any]], bool] | None = None
    always: bool = False

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(s.key for s in self.settings)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(s.key for s in self.settings if s.required)


def _unsubscribe(nr: _NetworkReader, m: Fields, values: dict[str, Any]) -> bool:
    if not m.has("url") and not m.has("mailto"):
        nr.r.error(m.node, m.key("url"), "required: url (one-click unsubscribe) or mailto",
                   "members must be able to leave the list")
        return False
    if values["url"]:
        values["url"] = values["url"].rstrip("/")
    return True


def _brand(nr: _NetworkReader, m: Fields, values: dict[str, Any]) -> bool:
    if values["logo"] is not None and not values["logo_alt"]:
        nr.error(m, "logo", "required with a logo", "the network's name, as the logo shows it",
                 key="logo_alt")
    elif values["logo"] is not None:
        values["logo"] = msgspec.structs.replace(values["logo"], alt=values["logo_alt"])
    return True


def _smtp(nr: _NetworkReader, m: Fields, values: dict[str, Any]) -> bool:
    nr.dkim(m, values)
    host, port, tls, user = nr.smtp_environment(values["host"], values["port"], values["tls"],
                                                values["user"])
    values.update(host=host or None, port=port or None, tls=tls or None, user=user)
    defaults = Smtp()
    if host is not None and not _HOST.fullmatch(host):
        nr.r.problems.append(Problem(nr.smtp_where(m, "host"), "smtp.host",
                                     f"expected a host name, found {host!r}"))
    final_host = host or defaults.host
    if (tls or defaults.tls) is TlsMode.NONE and not is_loopback(final_host):
        nr.r.problems.append(Problem(
            nr.smtp_where(m, "tls"), "smtp.tls",
            f"tls: none sends the password and every message in the clear to {final_host}",
            "use starttls or implicit; none is only for a server on 127.0.0.1"))
    return True


# bounces+<32-character token>: a local part holds at most 64 characters (RFC 5321)
RETURN_LOCAL_MAX = 64 - 33


def _bounce_address(nr: _NetworkReader, f: Fields, key: str) -> str | None:
    value = address(nr, f, key)
    if value is not None and len(value.rpartition("@")[0]) > RETURN_LOCAL_MAX:
        nr.error(f, key, f"the part before @ is longer than {RETURN_LOCAL_MAX} characters",
                 "each message's envelope sender adds a 33-character token to it, and a "
                 "mail server takes at most 64; e.g. bounces@news.example.org")
        return None
    return value


def _inbox(nr: _NetworkReader, m: Fields, values: dict[str, Any]) -> bool:
    given = [key for key in ("maildir", "mbox", "imap") if m.has(key)]
    if len(given) != 1:
        nr.r.error(m.node, m.path,
                   "one of maildir, mbox or imap is required" if not given
                   else f"give one mailbox, not {' and '.join(given)}",
                   "the one mailbox where bounces and emailed unsubscribes arrive")
        return False
    return True


def _imap(nr: _NetworkReader, m: Fields, values: dict[str, Any]) -> bool:
    host = values["host"]
    if host is not None and not _HOST.fullmatch(host):
        nr.error(m, "host", f"expected a host name, found {host!r}")
        return False
    if values["tls"] is TlsMode.NONE and host is not None and not is_loopback(host):
        nr.error(m, "tls", f"tls: none sends the password and the mail in the clear to "
                 f"{host}", "use implicit (port 993) or starttls; none is only for a server "
                 "on 127.0.0.1")
        return False
    if values["port"] is None and values["tls"] is not None \
            and values["tls"] is not TlsMode.IMPLICIT:
        values["port"] = 143
    return True


def _network(nr: _NetworkReader, f: Fields, values: dict[str, Any]) -> bool:
    if not f.has("helpline"):
        nr.r.error(f.keys.get("helpline") or f.node, "helpline",
                   "required: every email and archive page carries the helpline footer",
                   HELPLINE_EXAMPLE)
    return True


MAILBOX = Group(Mailbox, (
    Setting("name", text(header=True), required=True),
    Setting("address", address, required=True),
))

NETWORK = Group(Network, (
    Setting("name", text(header=True), required=True),
    Setting("language", text(35, check=_language)),
    Setting("sender", MAILBOX, required=True),
    Setting("reply_to", MAILBOX),
    Setting("website", url, required=True),
    Setting("archive_url", _archive_url, required=True),
    Setting("list_id", Group(ListId, (
        Setting("name", text(header=True), required=True),
        Setting("label", text(255, check=_list_label), required=True),
    )), required=True),
    # required too, with its own message: see _network
    Setting("helpline", Group(Helpline, (
        Setting("prompt", text(), required=True),
        Setting("name", text(), required=True),
        Setting("phone", phone, required=True),
        Setting("report_url", url, required=True),
        Setting("emergency", phone),
        Setting("top", boolean()),
    ))),
    Setting("brand", Group(Brand, (
        Setting("colour", text(7, check=_colour)),
        Setting("logo", _logo),
        Setting("logo_alt", text()),
    ), _brand)),
    Setting("unsubscribe", Group(Unsubscribe, (
        Setting("url", url),
        Setting("mailto", address),
    ), _unsubscribe), required=True),
    Setting("smtp", Group(Smtp, (
        Setting("host", text(255)),
        Setting("port", integer(1, 65535)),
        Setting("tls", choice(TlsMode, "TLS mode")),
        Setting("user", text(254, header=True)),
        Setting("password_env", text(100, check=_env_name)),
        Setting("timeout", number(1)),
        Setting("final_dot_timeout", number(1)),
        Setting("dkim_key", text(1000)),
        Setting("dkim_selector", text(63)),
        Setting("dkim_domain", text(253)),
    ), _smtp, always=True)),
    Setting("limits", Group(Limits, (
        Setting("per_second", number()),
        Setting("per_minute", integer()),
        Setting("per_hour", integer()),
        Setting("per_day", integer()),
        Setting("concurrency", integer(1)),
        Setting("batch_size", integer()),
        Setting("batch_pause", number()),
        Setting("retry_base", number()),
        Setting("retry_max", number()),
        Setting("retry_deadline", number()),
    ))),
    Setting("archive", Group(ArchiveSettings, (
        Setting("noindex", boolean()),
        Setting("quick_exit_url", url),
    ))),
    Setting("remote_images", choice(RemoteImages, "remote_images value")),
    # What comes back: the envelope sender that names each delivery, and the soft-bounce
    # rule; the mailbox `newsletter inbox` reads.
    Setting("bounces", Group(Bounces, (
        Setting("address", _bounce_address),
        Setting("soft_limit", integer(1)),
        Setting("soft_issues", integer(1)),
    ))),
    Setting("inbox", Group(Inbox, (
        Setting("maildir", _project_file()),
        Setting("mbox", _project_file()),
        Setting("imap", Group(ImapSettings, (
            Setting("host", text(255), required=True),
            Setting("user", text(254, header=True), required=True),
            Setting("port", integer(1, 65535)),
            Setting("tls", choice(TlsMode, "TLS mode")),
            Setting("password_env", text(100, check=_env_name)),
            Setting("folder", text(200, header=True)),
            Setting("timeout", number(1)),
        ), _imap)),
        Setting("processed_folder", text(200, header=True)),
        Setting("after", choice(AfterReading, "after setting")),
    ), _inbox)),
    Setting("member_columns", _member_columns),
    Setting("database", _database),
), _network)


def setting_keys() -> tuple[str, ...]:
    """Every key newsletter.yaml may hold, dotted (``smtp.dkim_key``), in the table's order;
    a section comes before its own keys."""
    def walk(group: Group, prefix: str) -> Iterator[str]:
        for s in group.settings:
            yield prefix + s.key
            if isinstance(s.read, Group):
                yield from walk(s.read, f"{prefix}{s.key}.")
    return tuple(walk(NETWORK, ""))


# --------------------------------------------------------------------------- loading


def load_network(path: Path, environ: Mapping[str, str] | None = None) -> Network:
    """Read and validate newsletter.yaml; raise InputError listing every problem.

    The project root is the file's folder; ``database`` and ``brand.logo`` are resolved
    against it. ``environ`` (default ``os.environ``) supplies the SMTP overrides.
    """
    source = str(path)
    data = ys.read(path, not_found=("settings file not found",
                                    "run newsletter in the project folder, or give --config"))
    early: list[Problem] = []
    root = ys.parse(data, source, early)
    if root is None:
        raise InputError([Problem(Location(source), "", "the file is empty",
                                  "see docs/settings.md for the settings a network needs")])
    reader = _NetworkReader(source, path.parent, os.environ if environ is None else environ)
    reader.r.problems.extend(early)
    return reader.network(root)


def contrast_with_white(colour: str) -> float:
    """WCAG 2 contrast ratio of ``#rrggbb`` against white."""
    def channel(hex2: str) -> float:
        c = int(hex2, 16) / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(colour[i:i + 2]) for i in (1, 3, 5))
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return 1.05 / (luminance + 0.05)


class _NetworkReader:
    def __init__(self, source: str, root: Path, environ: Mapping[str, str]) -> None:
        self.source = source
        self.root = root
        self.environ = environ
        self.r = Reader(source, keep_locations=False)  # a Network keeps none

    def error(self, f: Fields, name: str, message: str, hint: str | None = None, *,
              key: str | None = None) -> None:
        """A problem with the value of ``name`` (reported under ``key``, if given)."""
        self.r.error(f.values[name], f.key(key or name), message, hint)

    def network(self, node: ys.Node) -> Network:
        f = self.r.fields(node, "", NETWORK.keys, NETWORK.required)
        if f is None:
            raise InputError(self.r.problems)
        values = self.values(NETWORK, f)
        self.r.raise_if_errors()
        assert values is not None  # refused otherwise
        return _make(Network, values, root=self.root, source=Location(self.source))

    def values(self, group: Group, f: Fields) -> dict[str, Any] | None:
        """Each setting of ``group`` as read from ``f`` (None: absent or refused); None
        when ``group.finish`` finds the section unusable."""
        values = {s.key: self.section(f, s.key, s.read) if isinstance(s.read, Group)
                  else s.read(self, f, s.key) for s in group.settings}
        if group.finish is not None and not group.finish(self, f, values):
            return None
        return values

    def section(self, f: Fields, name: str, group: Group) -> Any:
        """The model value of section ``name``, or None (absent, or refused)."""
        if f.has(name):
            m = self.r.fields(f.values[name], f.key(name), group.keys, group.required,
                              what=f"{name} settings")
        elif group.always:
            m = Fields(ys.Mapping((), 0, 0), f.key(name), {}, {})
        else:
            return None
        if m is None:
            return None
        values = self.values(group, m)
        if values is None or any(values[key] is None for key in group.required):
            return None
        return _make(group.model, values)

    # --- smtp and dkim: the environment overrides the file

    def dkim(self, m: Fields, values: dict[str, Any]) -> None:
        """The DKIM key file (a secret: kept outside the repository), selector and domain.

        NEWSLETTER_DKIM_KEY, _SELECTOR and _DOMAIN override the file, as for SMTP.
        """
        env = self.environ
        key: str | None = env.get(DKIM_PREFIX + "KEY", "").strip() or values["dkim_key"]
        selector = env.get(DKIM_PREFIX + "SELECTOR", "").strip() or values["dkim_selector"]
        domain = env.get(DKIM_PREFIX + "DOMAIN", "").strip() or values["dkim_domain"]

        def where(name: str) -> Location:
            variable = DKIM_PREFIX + name.upper()
            return (Location(f"environment variable {variable}") if env.get(variable)
                    else self.smtp_where(m, f"dkim_{name}"))

        def problem(name: str, message: str, hint: str | None = None) -> None:
            self.r.problems.append(Problem(where(name), f"smtp.dkim_{name}", message, hint))

        if selector is not None and not _SELECTOR.fullmatch(selector):
            problem("selector", f"expected a DNS label like news2016, found {selector!r}")
        if domain is not None and not _LABEL.fullmatch(domain):
            problem("domain", f"expected a domain like example.org, found {domain!r}")
        if (key is None) != (selector is None):
            missing = "selector" if selector is None else "key"
            problem(missing, "required with " + ("dkim_key" if selector is None
                                                 else "dkim_selector"),
                    "DKIM needs both the key file and the selector; or set "
                    f"{DKIM_PREFIX}{missing.upper()}")
        values.update(dkim_key=self.root / key if key else None, dkim_selector=selector,
                      dkim_domain=domain, dkim_key_where=where("key") if key else None)

    def smtp_where(self, m: Fields, name: str) -> Location:
        variable = ENV_PREFIX + name.upper()
        if variable in self.environ:
            return Location(f"environment variable {variable}")
        if name in m.values:
            return self.r.where(m.values[name])
        return self.r.where(m.node) if m.node.line else Location(self.source)

    def smtp_environment(self, host: str | None, port: int | None, tls: TlsMode | None,
                         user: str | None) -> tuple[str | None, int | None, TlsMode | None,
                                                    str | None]:
        env = self.environ
        problems = self.r.problems

        def bad(name: str, message: str, hint: str | None = None) -> None:
            problems.append(Problem(Location(f"environment variable {ENV_PREFIX}{name}"),
                                    "", message, hint))

        if ENV_PREFIX + "HOST" in env:
            host = env[ENV_PREFIX + "HOST"].strip()
            if not host:
                bad("HOST", "empty")
        if ENV_PREFIX + "PORT" in env:
            text = env[ENV_PREFIX + "PORT"].strip()
            if re.fullmatch(r"[1-9][0-9]{0,4}", text) and int(text) <= 65535:
                port = int(text)
            else:
                bad("PORT", f"expected a port number 1 to 65535, found {text!r}")
        if ENV_PREFIX + "TLS" in env:
            text = env[ENV_PREFIX + "TLS"].strip()
            try:
                tls = TlsMode(text)
            except ValueError:
                bad("TLS", f"unknown TLS mode {text!r}", "use one of implicit, starttls, none")
        if ENV_PREFIX + "USER" in env:
            user = env[ENV_PREFIX + "USER"].strip() or None
            if user and re.search(r"[\x00-\x1f\x7f]", user):
                bad("USER", "control characters are not allowed")
        return host, port, tls, user


def _make(model: type[_M], values: dict[str, Any], **more: Any) -> _M:
    """The model value of the settings: the model's defaults stand for those not given."""
    needed = {field.name for field in msgspec.structs.fields(model) if field.required}
    return model(**{key: value for key, value in values.items()
                    if value is not None or key in needed}, **more)
