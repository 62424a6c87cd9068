"""Config stage: ``newsletter.yaml`` -> :class:`~newsletter.model.Network`, validated once.

Read with the same strict YAML as issues (yamlsource.py) and checked as a whole: every
problem is reported at once, ``file:line:col``, with "did you mean" for misspelt keys.
The helpline footer is required (every email and page carries it), and so is a way to
leave the list. Anything that ends up in a header (names, the List-Id) is refused if it
holds line breaks, control characters or ``=?``; addresses are validated and their
domains IDNA-encoded.

The SMTP password never lives in the file: ``smtp.password_env`` names the environment
variable that holds it. ``NEWSLETTER_SMTP_HOST``, ``_PORT``, ``_USER`` and ``_TLS``
override the file's smtp settings (for a proof server or a test), checked like the file.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

from newsletter.errors import InputError, Problem
from newsletter.input import yamlsource as ys
from newsletter.input.fields import Fields, Reader
from newsletter.model import (
    ArchiveSettings,
    Brand,
    Helpline,
    Limits,
    ListId,
    Location,
    Mailbox,
    Network,
    Smtp,
    TlsMode,
    Unsubscribe,
)
from newsletter.text.addresses import address_problem, is_loopback, phone_problem, url_problem

TOP_KEYS = ("name", "language", "sender", "reply_to", "website", "archive_url", "list_id",
            "helpline", "brand", "unsubscribe", "smtp", "limits", "archive", "database")
MAILBOX_KEYS = ("name", "address")
LIST_ID_KEYS = ("name", "label")
HELPLINE_KEYS = ("prompt", "name", "phone", "report_url", "emergency")
BRAND_KEYS = ("colour", "logo", "logo_alt")
UNSUBSCRIBE_KEYS = ("url", "mailto")
SMTP_KEYS = ("host", "port", "tls", "user", "password_env", "timeout", "final_dot_timeout",
             "dkim_key", "dkim_selector", "dkim_domain")
LIMIT_KEYS = ("per_second", "per_minute", "per_hour", "per_day", "concurrency", "batch_size",
              "batch_pause", "retry_base", "retry_max", "retry_deadline")
ARCHIVE_KEYS = ("noindex", "quick_exit_url")
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

HELPLINE_EXAMPLE = (
    "add helpline: {prompt: ..., name: Modern Slavery Helpline, phone: 08000 121 700, "
    "report_url: https://www.modernslaveryhelpline.org/report}"
)


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
                                  "see SPEC.md for the settings a network needs")])
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

    def network(self, node: ys.Node) -> Network:
        r = self.r
        f = r.fields(node, "", TOP_KEYS, required=("name", "sender", "website", "archive_url",
                                                    "list_id", "unsubscribe"))
        if f is None:
            raise InputError(r.problems)
        if not f.has("helpline"):
            r.error(f.keys.get("helpline") or node, "helpline",
                    "required: every email and archive page carries the helpline footer",
                    HELPLINE_EXAMPLE)
        name = r.text(f, "name", header=True)
        language = r.text(f, "language", max_len=35) or "en-GB"
        if f.has("language") and not _LANGUAGE.fullmatch(language):
            r.error(f.values["language"], "language", f"expected a language tag like en-GB, "
                    f"found {language!r}")
        sender = self.mailbox(f, "sender")
        reply_to = self.mailbox(f, "reply_to")
        website = self.url(f, "website")
        archive_url = self.url(f, "archive_url")
        if archive_url is not None and not archive_url.endswith("/"):
            r.error(f.values["archive_url"], "archive_url", "must end with '/'",
                    f"write {archive_url}/")
            archive_url = None
        list_id = self.list_id(f)
        helpline = self.helpline(f)
        brand = self.brand(f)
        unsubscribe = self.unsubscribe(f)
        smtp = self.smtp(f)
        limits = self.limits(f)
        archive = self.archive(f)
        database = r.text(f, "database", max_len=1000)
        r.raise_if_errors()
        assert name and sender and website and archive_url and list_id and helpline
        assert unsubscribe and smtp and limits and archive
        return Network(
            name=name, sender=sender, reply_to=reply_to, website=website,
            archive_url=archive_url, list_id=list_id, helpline=helpline, language=language,
            brand=brand or Brand(), unsubscribe=unsubscribe, smtp=smtp, limits=limits,
            archive=archive, database=self.root / (database or "newsletter.db"),
            root=self.root, source=Location(self.source),
        )

    # --- pieces

    def section(self, f: Fields, name: str, keys: tuple[str, ...],
                required: tuple[str, ...] = ()) -> Fields | None:
        if not f.has(name):
            return None
        return self.r.fields(f.values[name], f.key(name), keys, required,
                             what=f"{name} settings")

    def url(self, f: Fields, name: str) -> str | None:
        url = self.r.text(f, name, max_len=2000)
        if url is None:
            return None
        why = url_problem(url, _HTTPS)
        if why:
            self.r.error(f.values[name], f.key(name), why)
            return None
        return url

    def address(self, f: Fields, name: str) -> str | None:
        text = self.r.text(f, name, max_len=254, header=True)
        if text is None:
            return None
        address, why = address_problem(text)
        if why:
            self.r.error(f.values[name], f.key(name), why)
        return address

    def mailbox(self, f: Fields, name: str) -> Mailbox | None:
        m = self.section(f, name, MAILBOX_KEYS, required=("name", "address"))
        if m is None:
            return None
        display = self.r.text(m, "name", header=True)
        address = self.address(m, "address")
        return Mailbox(display, address) if display and address else None

    def list_id(self, f: Fields) -> ListId | None:
        m = self.section(f, "list_id", LIST_ID_KEYS, required=("name", "label"))
        if m is None:
            return None
        display = self.r.text(m, "name", header=True)
        label = self.r.text(m, "label", max_len=255)
        if label is not None and not _LABEL.fullmatch(label):
            self.r.error(m.values["label"], m.key("label"), f"expected a List-Id label like "
                         f"news.example.org, found {label!r}",
                         "letters, digits, hyphens and at least one dot")
            label = None
        return ListId(display, label) if display and label else None

    def helpline(self, f: Fields) -> Helpline | None:
        m = self.section(f, "helpline", HELPLINE_KEYS,
                         required=("prompt", "name", "phone", "report_url"))
        if m is None:
            return None
        r = self.r
        prompt = r.text(m, "prompt")
        name = r.text(m, "name")
        phone = self.phone(m, "phone")
        report_url = self.url(m, "report_url")
        emergency = self.phone(m, "emergency") or "999"
        if prompt and name and phone and report_url:
            return Helpline(prompt, name, phone, report_url, emergency)
        return None

    def phone(self, m: Fields, name: str) -> str | None:
        phone = self.r.text(m, name, max_len=40)
        problem = None if phone is None else phone_problem(phone)
        if problem:
            self.r.error(m.values[name], m.key(name), *problem)
            return None
        return phone

    def brand(self, f: Fields) -> Brand | None:
        m = self.section(f, "brand", BRAND_KEYS)
        if m is None:
            return None
        r = self.r
        colour = r.text(m, "colour", max_len=7)
        if colour is not None:
            if not _COLOUR.fullmatch(colour):
                r.error(m.values["colour"], m.key("colour"), f"expected a colour like "
                        f"#1d4f91, found {colour!r}")
                colour = None
            else:
                ratio = contrast_with_white(colour)
                if ratio < 4.5:
                    shown = math.floor(ratio * 100) / 100  # never round up to 4.5
                    r.error(m.values["colour"], m.key("colour"), f"{colour} on white has a "
                            f"contrast of {shown:.2f}:1; at least 4.5:1 is needed",
                            "choose a darker shade so links and headings stay readable")
                    colour = None
        logo = r.text(m, "logo", max_len=1000)
        logo_alt = r.text(m, "logo_alt")
        logo_path: Path | None = None
        if logo is not None:
            logo_path = self.root / logo
            if not logo_path.is_file():
                r.error(m.values["logo"], m.key("logo"), f"logo file not found: {logo_path}")
            if not logo_alt:
                r.error(m.values["logo"], m.key("logo_alt"), "required with a logo",
                        "the network's name, as the logo shows it")
        return Brand(colour=(colour or Brand().colour).lower(), logo=logo_path,
                     logo_alt=logo_alt or "")

    def unsubscribe(self, f: Fields) -> Unsubscribe | None:
        m = self.section(f, "unsubscribe", UNSUBSCRIBE_KEYS)
        if m is None:
            return None
        url = self.url(m, "url")
        mailto = self.address(m, "mailto")
        if not m.has("url") and not m.has("mailto"):
            self.r.error(m.node, m.key("url"), "required: url (one-click unsubscribe) or "
                         "mailto", "members must be able to leave the list")
            return None
        return Unsubscribe(url=url.rstrip("/") if url else None, mailto=mailto)

    def smtp(self, f: Fields) -> Smtp | None:
        r = self.r
        m = self.section(f, "smtp", SMTP_KEYS)
        if f.has("smtp") and m is None:
            return None
        host: str | None = None
        port: int | None = None
        tls: TlsMode | None = None
        user: str | None = None
        password_env: str | None = None
        timeout: float | None = None
        final_dot: float | None = None
        if m is not None:
            host = r.text(m, "host", max_len=255)
            port = r.integer(m, "port", minimum=1, maximum=65535)
            tls_text = r.choice(m, "tls", [t.value for t in TlsMode], what="TLS mode")
            tls = TlsMode(tls_text) if tls_text else None
            user = r.text(m, "user", max_len=254, header=True)
            password_env = r.text(m, "password_env", max_len=100)
            if password_env is not None and not _ENV_NAME.fullmatch(password_env):
                r.error(m.values["password_env"], m.key("password_env"),
                        f"expected an environment variable name, found {password_env!r}",
                        "e.g. NEWSLETTER_SMTP_PASSWORD; the password itself never goes here")
                password_env = None
            timeout = r.number(m, "timeout", minimum=1)
            final_dot = r.number(m, "final_dot_timeout", minimum=1)
        dkim = self.dkim(m)
        host, port, tls, user = self.smtp_environment(host, port, tls, user)
        defaults = Smtp()
        smtp = Smtp(
            host=host or defaults.host, port=port or defaults.port, tls=tls or defaults.tls,
            user=user, password_env=password_env or defaults.password_env,
            timeout=timeout or defaults.timeout,
            final_dot_timeout=final_dot or defaults.final_dot_timeout,
            dkim_key=dkim[0], dkim_selector=dkim[1], dkim_domain=dkim[2],
        )
        if host is not None and not _HOST.fullmatch(host):
            r.problems.append(Problem(self.smtp_where(m, "host"), "smtp.host",
                                      f"expected a host name, found {host!r}"))
        if smtp.tls is TlsMode.NONE and not is_loopback(smtp.host):
            r.problems.append(Problem(
                self.smtp_where(m, "tls"), "smtp.tls",
                f"tls: none sends the password and every message in the clear to {smtp.host}",
                "use starttls or implicit; none is only for a server on 127.0.0.1"))
        return smtp

    def dkim(self, m: Fields | None) -> tuple[Path | None, str | None, str | None]:
        """The DKIM key file (a secret: kept outside the repository), selector and domain.

        NEWSLETTER_DKIM_KEY, _SELECTOR and _DOMAIN override the file, as for SMTP.
        """
        r = self.r
        key = selector = domain = None
        if m is not None:
            key = r.text(m, "dkim_key", max_len=1000)
            selector = r.text(m, "dkim_selector", max_len=63)
            domain = r.text(m, "dkim_domain", max_len=253)
        env = self.environ
        key = env.get(DKIM_PREFIX + "KEY", "").strip() or key
        selector = env.get(DKIM_PREFIX + "SELECTOR", "").strip() or selector
        domain = env.get(DKIM_PREFIX + "DOMAIN", "").strip() or domain

        def problem(name: str, message: str, hint: str | None = None) -> None:
            variable = DKIM_PREFIX + name.upper()
            where = (Location(f"environment variable {variable}") if env.get(variable)
                     else self.smtp_where(m, f"dkim_{name}"))
            r.problems.append(Problem(where, f"smtp.dkim_{name}", message, hint))

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
        return (self.root / key if key else None), selector, domain

    def smtp_where(self, m: Fields | None, name: str) -> Location:
        variable = ENV_PREFIX + name.upper()
        if variable in self.environ:
            return Location(f"environment variable {variable}")
        if m is not None and name in m.values:
            return self.r.where(m.values[name])
        if m is not None:
            return self.r.where(m.node)
        return Location(self.source)

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

    def limits(self, f: Fields) -> Limits | None:
        m = self.section(f, "limits", LIMIT_KEYS)
        if m is None:
            return None if f.has("limits") else Limits()
        r = self.r
        d = Limits()
        per_second = r.number(m, "per_second")
        per_minute = r.integer(m, "per_minute")
        per_hour = r.integer(m, "per_hour")
        per_day = r.integer(m, "per_day")
        concurrency = r.integer(m, "concurrency", minimum=1)
        batch_size = r.integer(m, "batch_size")
        batch_pause = r.number(m, "batch_pause")
        retry_base = r.number(m, "retry_base")
        retry_max = r.number(m, "retry_max")
        retry_deadline = r.number(m, "retry_deadline")

        def pick(value: float | None, default: float) -> float:
            return default if value is None else value

        def pick_int(value: int | None, default: int) -> int:
            return default if value is None else value

        return Limits(
            per_second=pick(per_second, d.per_second),
            per_minute=pick_int(per_minute, d.per_minute),
            per_hour=pick_int(per_hour, d.per_hour),
            per_day=pick_int(per_day, d.per_day),
            concurrency=pick_int(concurrency, d.concurrency),
            batch_size=pick_int(batch_size, d.batch_size),
            batch_pause=pick(batch_pause, d.batch_pause),
            retry_base=pick(retry_base, d.retry_base),
            retry_max=pick(retry_max, d.retry_max),
            retry_deadline=pick(retry_deadline, d.retry_deadline),
        )

    def archive(self, f: Fields) -> ArchiveSettings | None:
        m = self.section(f, "archive", ARCHIVE_KEYS)
        if m is None:
            return None if f.has("archive") else ArchiveSettings()
        noindex = self.r.boolean(m, "noindex")
        quick_exit = self.url(m, "quick_exit_url")
        return ArchiveSettings(noindex=bool(noindex), quick_exit_url=quick_exit)
