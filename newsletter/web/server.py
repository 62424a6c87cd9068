"""The web app: the built archive plus the one-click unsubscribe endpoint (RFC 8058).

Edge stage: ``create_app(network, site_dir)`` -> an ASGI app; ``run()`` serves it with
uvicorn. ``/unsubscribe/<token>``: GET and HEAD only show a confirmation page (link
scanners and forwarded mail must not unsubscribe anyone); POST with the body
``List-Unsubscribe=One-Click`` (multipart/form-data or urlencoded, as mail providers send
it, or as the page's own form sends it) unsubscribes, answers 200 with no redirect, and
is idempotent. Garbage tokens and valid-looking tokens for nobody get the same answer.
Every other path is a static file from the archive folder.

The pages are the project's templates/web/*.html.j2, rendered once at start-up (none
depends on the request; a broken template stops the server before it serves). Every
response, errors included, carries the security headers and never a cookie; a path that
is not strict UTF-8, or holds control characters, is refused with a page. Request bodies
are small; unsubscribing is rate-limited per client (O(1) a request, bounded memory).
The members database is used in a thread, one short connection a request; while another
process holds its write lock (an import), an unsubscribe waits without holding a thread,
then answers 503 with a page asking to try again. The log has one line a request, escaped,
with every token replaced by a marker.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import TypeVar

import h11
import jinja2
import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from newsletter.archive.pages import Site, content_security_policy
from newsletter.email.templating import html_environment
from newsletter.errors import InputError, Problem, RenderError, StateError
from newsletter.members import database as db
from newsletter.members import store as members
from newsletter.members.tokens import Secrets, read_token, secrets_from_env
from newsletter.model import Location, Network

log = logging.getLogger("newsletter.serve")

T = TypeVar("T")

ONE_CLICK = ("List-Unsubscribe", "One-Click")
SECURITY_HEADERS = (
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
)
_REPLACED_HEADERS = frozenset({b"set-cookie", b"content-security-policy",
                               *(name for name, _ in SECURITY_HEADERS)})
# each attempt at the database waits this long for its lock, in a worker thread; between
# attempts the request sleeps on the event loop, so waiting requests hold no thread
_ATTEMPT_MS = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_TOKEN_SHAPED = re.compile(r"[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}")  # payload.signature
TOKEN_MARK = "<token>"  # noqa: S105 (what the log shows instead of a token)


class Limits(msgspec.Struct, frozen=True):
    """What one client and one request may cost (the defaults are the server's)."""

    rate_limit: int = 30  # unsubscribe requests per client ...
    rate_window: float = 60.0  # ... per this many seconds
    rate_clients: int = 10_000  # clients remembered at once; the oldest are forgotten
    max_body: int = 4096  # a one-click body is 26 bytes; a browser form a little more
    # How long an unsubscribe waits for a locked database before answering 503: an import
    # holds the lock for its whole transaction (100,000 rows: ~2.5 s on a small machine),
    # and the member's browser or mail provider is still waiting for the answer.
    busy_wait: float = 20.0
    retry_after: int = 60  # the 503's Retry-After, in seconds


# --------------------------------------------------------------------------- pages

PAGES = ("confirm", "unsubscribed", "invalid-link", "not-one-click", "too-large", "too-many",
         "busy", "not-found", "bad-address", "method-not-allowed", "error")


class Pages:
    """The server's pages, from ``<network.root>/templates/web/<name>.html.j2``.

    Each is rendered once, here: none depends on the request (the confirmation's form
    posts back to its own address), so a broken or missing template is reported before
    anything is served, and an error page can always be sent.
    """

    def __init__(self, network: Network) -> None:
        env = html_environment(network.root.resolve())
        context = {"site": Site.of(network), "list_name": network.list_id.name,
                   "mailto": network.unsubscribe.mailto, "one_click": ONE_CLICK}
        self.bodies: dict[str, bytes] = {}
        for name in PAGES:
            try:
                text = env.get_template(f"web/{name}.html.j2").render(context)
            except jinja2.TemplateNotFound as e:
                missing = network.root / "templates" / str(e.name)
                raise RenderError(f"{missing}: not found (the server's pages are the "
                                  "templates in templates/web/)") from e
            except jinja2.TemplateError as e:
                where = getattr(e, "filename", None) or f"templates/web/{name}.html.j2"
                line = getattr(e, "lineno", None) or 0
                raise RenderError(f"{where}:{line}: {e.message or type(e).__name__}") from e
            self.bodies[name] = text.encode("utf-8")

    def response(self, name: str, status: int,
                 headers: Mapping[str, str] | None = None) -> HTMLResponse:
        return HTMLResponse(self.bodies[name], status_code=status,
                            headers={"Cache-Control": "no-store", **(headers or {})})


# --------------------------------------------------------------------------- request bodies


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _TooLarge
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _TooLarge
    return body


def is_one_click(content_type: str, body: bytes) -> bool:
    """Does the body carry ``List-Unsubscribe=One-Click`` (urlencoded or multipart)?"""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        try:
            fields = urllib.parse.parse_qs(body.decode("ascii"), strict_parsing=False)
        except UnicodeDecodeError:
            return False
        return fields.get(ONE_CLICK[0]) == [ONE_CLICK[1]]
    if kind == "multipart/form-data":
        head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
        message = BytesParser(policy=HTTP).parsebytes(head + body)
        if not message.is_multipart():
            return False
        for part in message.iter_parts():
            if not isinstance(part, EmailMessage):
                continue
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if name == ONE_CLICK[0] and isinstance(payload, bytes):
                return payload.strip() == ONE_CLICK[1].encode()
    return False


# --------------------------------------------------------------------------- paths and logs


def security_headers(network: Network) -> tuple[tuple[bytes, bytes], ...]:
    """SECURITY_HEADERS and the archive pages' own policy (archive/pages.py) plus what
    only a header can say; two policies would both apply, and the stricter would break
    pages."""
    policy = content_security_policy(network) + "; frame-ancestors 'none'"
    return (*SECURITY_HEADERS, (b"content-security-policy", policy.encode("ascii")))


def request_path(scope: Scope) -> str | None:
    """The request's path, percent-decoded as strict UTF-8; None when it is not (bytes
    that are not UTF-8, overlong forms, surrogates) or holds control characters.

    The server's own decoding replaces bad bytes with U+FFFD and keeps NUL, CR and LF.
    """
    raw = scope.get("raw_path")
    if raw is None:
        text: str = scope["path"]
    else:
        try:
            text = urllib.parse.unquote_to_bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None if _CONTROL.search(text) else text


def loggable(scope: Scope) -> str:
    """The request line for the log: tokens replaced by a marker (everything after an
    ``unsubscribe`` segment, anything shaped like a signed token, any query), then every
    control and non-ASCII character escaped, so a request cannot write a line of its own."""
    raw = scope.get("raw_path")
    path = scope.get("path", "") if raw is None \
        else urllib.parse.unquote_to_bytes(raw).decode("utf-8", "replace")
    segments: list[str] = []
    for segment in path.split("/"):
        if segments and segments[-1].lower() == "unsubscribe":
            segments.append(TOKEN_MARK)
            break
        segments.append(_TOKEN_SHAPED.sub(TOKEN_MARK, segment))
    line = f"{scope.get('method', '?')} {'/'.join(segments)}"
    if scope.get("query_string"):
        line += "?<query>"
    return line.encode("unicode_escape").decode("ascii")


# --------------------------------------------------------------------------- the outer layer


def _secured(headers: list[tuple[bytes, bytes]], ours: tuple[tuple[bytes, bytes], ...]
             ) -> list[tuple[bytes, bytes]]:
    kept = [(k, v) for k, v in headers if k.lower() not in _REPLACED_HEADERS]
    return kept + list(ours)


class _Guard:
    """Outside everything else, so that nothing answers without it: the path decoded
    strictly (else a 400 page), the security headers on every response and any cookie
    dropped, an error page for an exception no one caught, one log line a request."""

    def __init__(self, app: ASGIApp, pages: Pages,
                 headers: tuple[tuple[bytes, bytes], ...]) -> None:
        self.app, self.pages, self.headers = app, pages, headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        status = 0

        async def send_secured(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": _secured(list(message.get("headers", [])),
                                                          self.headers)}
            await send(message)

        path = request_path(scope)
        try:
            if path is None:
                await self.pages.response("bad-address", 400)(scope, receive, send_secured)
            else:
                await self.app({**scope, "path": path}, receive, send_secured)
        except Exception:
            log.exception("error answering %s", loggable(scope))
            if not status:
                await self.pages.response("error", 500)(scope, receive, send_secured)
        log.info("%s %s", loggable(scope), status)


# --------------------------------------------------------------------------- rate limit


@dataclass(slots=True)
class _Window:
    opened: float
    count: int


class RateLimiter:
    """At most ``limit`` requests per client in a window of ``window`` seconds that opens
    at the client's first request; O(1) a request, at most ``max_clients`` remembered.

    The table is kept in the order the windows opened, so the expired ones are always at
    its front: each request drops those, and a full table drops the oldest window (a
    client forgotten early merely starts a fresh allowance).
    """

    def __init__(self, limit: int, window: float, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.max_clients, self.clock = limit, window, max_clients, clock
        self.windows: OrderedDict[str, _Window] = OrderedDict()

    def __len__(self) -> int:
        return len(self.windows)

    def allow(self, client: str) -> bool:
        now = self.clock()
        windows = self.windows
        while windows and next(iter(windows.values())).opened <= now - self.window:
            windows.popitem(last=False)
        current = windows.get(client)
        if current is None:
            if len(windows) >= self.max_clients:
                windows.popitem(last=False)
            windows[client] = _Window(now, 1)
            return True
        if current.count >= self.limit:
            return False
        current.count += 1
        return True


# --------------------------------------------------------------------------- the database


class _Busy(Exception):
    """The members database stayed locked for longer than the server waits."""


class _Members:
    """The members database as requests use it: a short connection each, in a thread."""

    def __init__(self, path: db.Target, busy_wait: float) -> None:
        self.path, self.busy_wait = path, busy_wait

    async def run(self, work: Callable[[db.Connection], T]) -> T:
        """``work(conn)`` in a thread; while the database is locked, tried again (sleeping
        on the event loop between attempts) for up to ``busy_wait`` seconds, then _Busy."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.busy_wait
        pause = 0.05
        while True:
            try:
                return await run_in_threadpool(self._attempt, work)
            except db.ERROR_OR_STATE as e:
                if not db.busy(e):
                    raise
            left = deadline - loop.time()
            if left <= 0:
                raise _Busy
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 1.0)

    def _attempt(self, work: Callable[[db.Connection], T]) -> T:
        # never make an empty one: every link would be refused
        if not db.is_postgresql(self.path) and not Path(self.path).is_file():
            raise StateError(f"{self.path}: the members database has gone")
        conn = db.connect(self.path, migrate=False)  # serve() migrated it before starting
        try:
            if db.is_postgresql(conn):
                conn.execute(f"SET lock_timeout = {_ATTEMPT_MS}")
            else:
                conn.execute(f"PRAGMA busy_timeout = {_ATTEMPT_MS}")
            return work(conn)
        finally:
            conn.close()


# --------------------------------------------------------------------------- the app


def create_app(network: Network, site_dir: Path, *, secrets: Secrets | None = None,
               limits: Limits | None = None) -> ASGIApp:
    """The archive in ``site_dir`` and ``/unsubscribe/<token>`` for ``network``.

    RenderError when a page template is missing or broken.
    """
    keys = secrets if secrets is not None else secrets_from_env()
    limits = limits or Limits()
    pages = Pages(network)
    limiter = RateLimiter(limits.rate_limit, limits.rate_window, limits.rate_clients)
    database = _Members(network.database, limits.busy_wait)
    root = site_dir.resolve()

    async def unsubscribe(request: Request) -> Response:
        client = request.client.host if request.client else "unknown"
        if not limiter.allow(client):
            return pages.response("too-many", 429,
                                  {"Retry-After": str(round(limits.rate_window))})
        if request.method == "POST":
            try:
                body = await _read_body(request, limits.max_body)
            except _TooLarge:
                return pages.response("too-large", 413)
            if not is_one_click(request.headers.get("content-type", ""), body):
                return pages.response("not-one-click", 400)
        found = read_token(keys, request.path_params["token"])
        if found is None:
            return pages.response("invalid-link", 400)
        uid, list_name = found.uid, found.list_name
        try:
            member = await database.run(lambda c: members.member_id_for(c, uid, list_name))
            if member is None:
                return pages.response("invalid-link", 400)
            if request.method != "POST":
                return pages.response("confirm", 200)
            await database.run(lambda c: members.unsubscribe(c, member, list_name,
                                                             "one-click unsubscribe"))
        except _Busy:
            log.warning("the members database stayed locked for %g s (an import?): "
                        "answered 503", limits.busy_wait)
            return pages.response("busy", 503, {"Retry-After": str(limits.retry_after)})
        return pages.response("unsubscribed", 200)

    async def static(request: Request) -> Response:
        relative = request.path_params.get("path", "")
        try:
            if root.is_dir():
                candidate = (root / relative).resolve()
                if candidate.is_dir():
                    candidate = candidate / "index.html"
                if candidate.is_relative_to(root) and candidate.is_file():
                    return FileResponse(candidate)
                custom = root / "404.html"
                if custom.is_file():
                    return FileResponse(custom, status_code=404)
        except OSError:  # a name too long for the file system is no page either
            pass
        return pages.response("not-found", 404)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        headers = exc.headers if isinstance(exc, HTTPException) else None
        name = {404: "not-found", 405: "method-not-allowed"}.get(status, "error")
        return pages.response(name, status, headers)

    async def server_error(request: Request, exc: Exception) -> Response:
        return pages.response("error", 500)  # _Guard logs the exception

    app = Starlette(
        routes=[Route("/unsubscribe/{token}", unsubscribe, methods=["GET", "HEAD", "POST"]),
                Route("/{path:path}", static, methods=["GET", "HEAD"])],
        exception_handlers={HTTPException: http_error, Exception: server_error})
    return _Guard(app, pages, security_headers(network))


def check_site(site_dir: Path) -> None:
    """Refuse to serve a folder that holds no built archive (a typo, or not built yet)."""
    if not (site_dir / "index.html").is_file():
        raise InputError([Problem(Location(str(site_dir)), "", "no built archive here (no "
                                  "index.html)", hint="build it first with 'newsletter "
                                  "archive', or name its folder with -d")])


def check_database(path: db.Target) -> None:
    """Refuse to answer unsubscribe links without the members database they name (an
    empty one would be made, and every link answered "not recognised")."""
    if not db.exists(path):
        raise InputError([Problem(
            Location(db.describe(path)), "", "no members database here, so no unsubscribe link "
            "could be recognised", hint="import the members first with 'newsletter "
            "subscribers import FILE.csv --list NAME', or point --config at the "
            "newsletter.yaml of the project that sent the links")])


class _Protocol(H11Protocol):
    """uvicorn's HTTP/1.1, whose own answer to a request it cannot parse (a NUL or a space
    in the request line, oversized headers) carries the security headers too."""

    ours: tuple[tuple[bytes, bytes], ...] = SECURITY_HEADERS  # run() sets the network's

    def send_400_response(self, msg: str) -> None:
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close"),
                   (b"cache-control", b"no-store"), *self.ours]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                      h11.Data(data=msg.encode("ascii", "replace")), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()


def run(network: Network, site_dir: Path, secrets: Secrets, *, host: str, port: int,
        limits: Limits | None = None) -> None:
    """Serve until interrupted (uvicorn's own access log is off: it would log tokens)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    app = create_app(network, site_dir, secrets=secrets, limits=limits)
    protocol = type("NetworkProtocol", (_Protocol,), {"ours": security_headers(network)})
    uvicorn.run(app, host=host, port=port, access_log=False, server_header=False,
                log_level="info", http=protocol)
