"""The web app: the built archive plus the one-click unsubscribe endpoint (RFC 8058).

Edge stage: ``create_app(network, site_dir)`` -> a Starlette app; ``run()`` serves it with
uvicorn. ``/unsubscribe/<token>``: GET and HEAD only show a confirmation page (link
scanners and forwarded mail must not unsubscribe anyone); POST with the body
``List-Unsubscribe=One-Click`` (multipart/form-data or urlencoded, as mail providers send
it, or as the page's own form sends it) unsubscribes, answers 200 with no redirect, and
is idempotent. Garbage tokens and valid-looking tokens for nobody get the same answer.
Every other path is a static file from the archive folder. No cookies, ever; strict
security headers; small request bodies only; a per-client rate limit on unsubscribing;
logs never contain the token.
"""

from __future__ import annotations

import html
import logging
import re
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from newsletter.archive.pages import content_security_policy
from newsletter.errors import InputError, Problem
from newsletter.members import database as db
from newsletter.members import store as members
from newsletter.members.tokens import Secrets, read_token, secrets_from_env
from newsletter.model import Location, Network

log = logging.getLogger("newsletter.serve")

MAX_BODY = 4096  # a one-click body is 26 bytes; a browser form a little more
RATE_LIMIT = 30  # unsubscribe requests per client ...
RATE_WINDOW = 60.0  # ... per this many seconds
ONE_CLICK = ("List-Unsubscribe", "One-Click")
SECURITY_HEADERS = (
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
)
_TOKEN_IN_PATH = re.compile(r"^/unsubscribe/.*")


# --------------------------------------------------------------------------- pages


def _page(network: Network, title: str, body: str, status: int) -> HTMLResponse:
    """A small self-contained page with the helpline footer (no scripts, no styles)."""
    h = network.helpline
    esc = html.escape
    document = f"""<!DOCTYPE html>
<html lang="{esc(network.language)}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{esc(title)} – {esc(network.name)}</title>
</head>
<body>
<main>
<h1>{esc(title)}</h1>
{body}
</main>
<footer>
<p>{esc(h.prompt)} Call the {esc(h.name)} on <a href="{esc(h.phone_tel)}">{esc(h.phone)}</a>
or <a href="{esc(h.report_url)}">report online</a>.
If someone is in immediate danger, always call
<a href="{esc(h.emergency_tel)}">{esc(h.emergency)}</a>.</p>
<p><a href="{esc(network.website)}">{esc(network.name)}</a></p>
</footer>
</body>
</html>
"""
    return HTMLResponse(document, status_code=status, headers={"Cache-Control": "no-store"})


def _confirm_page(network: Network) -> HTMLResponse:
    body = f"""<p>Do you want to stop receiving {html.escape(network.list_id.name)} by email?</p>
<form method="post" action="">
<input type="hidden" name="{ONE_CLICK[0]}" value="{ONE_CLICK[1]}">
<button type="submit">Unsubscribe</button>
</form>
<p>If you did not mean to open this page, close it: nothing has changed.</p>"""
    return _page(network, "Unsubscribe", body, 200)


def _done_page(network: Network) -> HTMLResponse:
    body = (f"<p>You have been unsubscribed from {html.escape(network.list_id.name)}. "
            "You will not receive it again.</p>"
            f'<p>Past issues stay on <a href="{html.escape(network.archive_url)}">'
            "the archive</a>.</p>")
    return _page(network, "You have been unsubscribed", body, 200)


def _invalid_page(network: Network) -> HTMLResponse:
    how = ""
    if network.unsubscribe.mailto:
        address = html.escape(network.unsubscribe.mailto)
        how = (f' To unsubscribe, email <a href="mailto:{address}?subject=unsubscribe">'
               f"{address}</a> with the subject “unsubscribe”.")
    body = ("<p>This unsubscribe link is not valid: it may have been cut short or changed "
            f"when it was copied. Nothing has changed.{how}</p>")
    return _page(network, "Link not recognised", body, 400)


def _bad_request_page(network: Network) -> HTMLResponse:
    body = ("<p>This request was not a one-click unsubscribe. Open the link in a browser "
            "and press the Unsubscribe button. Nothing has changed.</p>")
    return _page(network, "Not an unsubscribe request", body, 400)


def _simple(network: Network, title: str, text: str, status: int,
            headers: dict[str, str] | None = None) -> HTMLResponse:
    response = _page(network, title, f"<p>{html.escape(text)}</p>", status)
    response.headers.update(headers or {})
    return response


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


# --------------------------------------------------------------------------- middleware


def security_headers(network: Network) -> tuple[tuple[bytes, bytes], ...]:
    """SECURITY_HEADERS and the archive pages' own policy (archive/pages.py) plus what
    only a header can say; two policies would both apply, and the stricter would break
    pages."""
    policy = content_security_policy(network) + "; frame-ancestors 'none'"
    return (*SECURITY_HEADERS, (b"content-security-policy", policy.encode("ascii")))


class _SecurityHeaders:
    """Security headers on every response; any Set-Cookie is dropped; token-free logs."""

    def __init__(self, app: ASGIApp, headers: tuple[tuple[bytes, bytes], ...]) -> None:
        self.app = app
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != b"set-cookie"]
                headers.extend(self.headers)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
        path = _TOKEN_IN_PATH.sub("/unsubscribe/<token>", scope.get("path", ""))
        log.info("%s %s %s", scope.get("method", "?"), path, status)


class RateLimiter:
    """At most ``limit`` requests per ``window`` seconds per client address."""

    def __init__(self, limit: int, window: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.clock = limit, window, clock
        self.seen: dict[str, deque[float]] = {}

    def allow(self, client: str) -> bool:
        now = self.clock()
        if len(self.seen) > 10_000:  # bound memory: forget clients gone quiet
            self.seen = {k: v for k, v in self.seen.items() if v and v[-1] > now - self.window}
        times = self.seen.setdefault(client, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= self.limit:
            return False
        times.append(now)
        return True


# --------------------------------------------------------------------------- the app


def create_app(network: Network, site_dir: Path, *, secrets: Secrets | None = None,
               rate_limit: int = RATE_LIMIT, rate_window: float = RATE_WINDOW,
               max_body: int = MAX_BODY) -> Starlette:
    """The archive in ``site_dir`` and ``/unsubscribe/<token>`` for ``network``."""
    keys = secrets if secrets is not None else secrets_from_env()
    limiter = RateLimiter(rate_limit, rate_window)
    root = site_dir.resolve()

    def member_for(token: str) -> tuple[int, str] | None:
        """(subscriber id, list) the token names, if it is ours and names a member of a list."""
        found = read_token(keys, token)
        if found is None:
            return None
        conn = db.connect(network.database)
        try:
            subscriber_id = members.member_id_for(conn, found.uid, found.list_name)
            return None if subscriber_id is None else (subscriber_id, found.list_name)
        finally:
            conn.close()

    def leave(subscriber_id: int, list_name: str) -> None:
        conn = db.connect(network.database)
        try:
            members.unsubscribe(conn, subscriber_id, list_name, "one-click unsubscribe")
        finally:
            conn.close()

    async def unsubscribe(request: Request) -> Response:
        client = request.client.host if request.client else "unknown"
        if not limiter.allow(client):
            return _simple(network, "Too many requests", "Please wait a minute and try "
                           "again.", 429, {"Retry-After": str(int(rate_window))})
        token = request.path_params["token"]
        if request.method == "POST":
            try:
                body = await _read_body(request, max_body)
            except _TooLarge:
                return _simple(network, "Request too large", "This request is too large.",
                               413)
            if not is_one_click(request.headers.get("content-type", ""), body):
                return _bad_request_page(network)
        found = await run_in_threadpool(member_for, token)
        if found is None:
            return _invalid_page(network)
        if request.method != "POST":
            return _confirm_page(network)
        await run_in_threadpool(leave, *found)
        return _done_page(network)

    async def static(request: Request) -> Response:
        relative = request.path_params.get("path", "")
        if root.is_dir():
            candidate = (root / relative).resolve()
            if candidate.is_dir():
                candidate = candidate / "index.html"
            if candidate.is_relative_to(root) and candidate.is_file():
                return FileResponse(candidate)
            custom = root / "404.html"
            if custom.is_file():
                return FileResponse(custom, status_code=404)
        return _simple(network, "Page not found", "There is no page at this address.", 404)

    app = Starlette(routes=[
        Route("/unsubscribe/{token}", unsubscribe, methods=["GET", "HEAD", "POST"]),
        Route("/{path:path}", static, methods=["GET", "HEAD"]),
    ])
    app.add_middleware(_SecurityHeaders, headers=security_headers(network))
    return app


def check_site(site_dir: Path) -> None:
    """Refuse to serve a folder that holds no built archive (a typo, or not built yet)."""
    if not (site_dir / "index.html").is_file():
        raise InputError([Problem(Location(str(site_dir)), "", "no built archive here (no "
                                  "index.html)", hint="build it first with 'newsletter "
                                  "archive', or name its folder with -d")])


def run(network: Network, site_dir: Path, secrets: Secrets, *, host: str, port: int) -> None:
    """Serve until interrupted (uvicorn's own access log is off: it would log tokens)."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    app = create_app(network, site_dir, secrets=secrets)
    uvicorn.run(app, host=host, port=port, access_log=False, server_header=False,
                log_level="info")

