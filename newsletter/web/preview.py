"""``newsletter preview``: a local page showing one issue as readers will see it.

A small stdlib HTTP server on 127.0.0.1 (a thread per request) serves:

    /             the preview (templates/web/preview.html.j2): the email in iframes at
                  phone (320, 375 px) and desktop (640 px) width side by side, the text
                  part in a <pre>, problems on top
    /email.html   the rendered email (sample recipient filled in, local images from /images/)
    /email.txt    the text part
    /images/NAME  the issue's local images, by published name
    /version      a number that changes whenever the rendered output changes
    /preview.js   polls /version and reloads the page when it changes

Before answering /version the server looks at the modification times of the issue file,
its image folder, the templates and newsletter.yaml, and renders again if any changed.
Bad YAML shows its messages in the page, a broken preview template its error as text; the
server keeps running. No output of its own: the address is logged.
"""

from __future__ import annotations

import logging
import threading
import webbrowser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import jinja2
import msgspec

from newsletter.errors import InputError, NewsletterError, Problem, RenderError
from newsletter.input.images import published_bytes
from newsletter.model import Image, Location

log = logging.getLogger("newsletter.preview")

IMAGE_BASE = "images/"
PAGE_TEMPLATE = "web/preview.html.j2"  # the widths shown are the template's choice
_CSP = ("default-src 'self'; img-src 'self' https:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'none'")
_SCRIPT = """\
(function () {
  var current = document.documentElement.getAttribute("data-version");
  function poll() {
    fetch("/version", {cache: "no-store"}).then(function (r) { return r.text(); })
      .then(function (v) { if (v.trim() !== current) { location.reload(); } })
      .catch(function () {}).then(function () { setTimeout(poll, 1000); });
  }
  setTimeout(poll, 1000);
})();
"""


class _State(msgspec.Struct):
    """The latest render and what it was made from; guarded by ``lock``."""

    config: Path
    issue_path: Path
    lock: threading.Lock = msgspec.field(default_factory=threading.Lock)
    version: int = 0
    stamp: tuple[tuple[str, float, int], ...] = ()
    html: str = ""
    text: str = ""
    title: str = ""
    problems: list[str] = msgspec.field(default_factory=list)
    images: dict[str, Image] = msgspec.field(default_factory=dict)  # by published name

    def watched(self) -> list[Path]:
        root = self.config.parent
        files = [self.config, self.issue_path]
        for folder in (self.issue_path.with_suffix(""), root / "templates"):
            if folder.is_dir():
                files += sorted(p for p in folder.rglob("*") if p.is_file())
        files += [image.path for image in self.images.values() if image.path]
        return files

    def snapshot(self) -> tuple[tuple[str, float, int], ...]:
        out = []
        for path in self.watched():
            try:
                st = path.stat()
                out.append((str(path), st.st_mtime, st.st_size))
            except OSError:
                out.append((str(path), -1.0, -1))
        return tuple(out)

    def refresh(self) -> None:
        """Render again if anything the output depends on changed."""
        with self.lock:
            stamp = self.snapshot()
            if stamp == self.stamp and self.version:
                return
            self._render()
            self.stamp = self.snapshot()
            self.version += 1

    def _render(self) -> None:
        from newsletter.email.personalize import anonymous_recipient, fill
        from newsletter.email.render import local_images, render_issue
        from newsletter.email.templating import forget_templates
        from newsletter.input.checks import editorial
        from newsletter.input.config import load_network
        from newsletter.input.issues import load_issue

        forget_templates()  # something changed: templates may have been edited
        try:
            network = load_network(self.config)
            issue = load_issue(self.issue_path, network)
            rendered = render_issue(issue, network, image_base=IMAGE_BASE)
        except NewsletterError as e:
            self.problems = (str(e) or type(e).__name__).splitlines()
            return
        self.html, self.text = fill(rendered, anonymous_recipient(network, issue.slug))
        self.title = issue.title
        self.images = {i.published_name: i for i in local_images(issue, network)
                       if i.published_name}
        self.problems = [str(p) for p in editorial(issue, network)]


def page(state: _State) -> str:
    """The preview page, from the project's templates/web/preview.html.j2 (autoescaped).

    RenderError when that template is broken: the editor may be changing it right now.
    """
    from newsletter.email.templating import html_environment

    try:
        template = html_environment(state.config.parent).get_template(PAGE_TEMPLATE)
        return template.render(
            version=state.version, issue_name=state.issue_path.name,
            title=state.title or state.issue_path.name, problems=state.problems,
            rendered=bool(state.html), text=state.text)
    except jinja2.TemplateError as e:
        where = getattr(e, "filename", None) or f"templates/{PAGE_TEMPLATE}"
        raise RenderError(f"{where}:{getattr(e, 'lineno', None) or 0}: "
                          f"{e.message or type(e).__name__}") from e


def _handler(state: _State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "newsletter-preview"

        def do_GET(self) -> None:
            path = unquote(urlsplit(self.path).path)
            image = state.images.get(path.removeprefix("/" + IMAGE_BASE)) \
                if path.startswith("/" + IMAGE_BASE) else None
            if path == "/version":
                state.refresh()
                self._send(str(state.version), "text/plain")
            elif path == "/":
                state.refresh()
                try:
                    self._send(page(state), "text/html")
                except RenderError as e:  # shown, not a dead connection; fixed by saving
                    self._send(str(e), "text/plain", HTTPStatus.INTERNAL_SERVER_ERROR)
            elif path == "/email.html":
                self._send(state.html, "text/html")
            elif path == "/email.txt":
                self._send(state.text, "text/plain")
            elif path == "/preview.js":
                self._send(_SCRIPT, "text/javascript")
            elif image is not None and image.path and image.digest and image.media_type:
                try:  # as published: without the metadata
                    self._send(published_bytes(image.path, image.digest), image.media_type)
                except (OSError, InputError):  # changed since the render: the next one shows it
                    self.send_error(HTTPStatus.NOT_FOUND)
            else:
                self.send_error(HTTPStatus.NOT_FOUND)

        def _send(self, body: str | bytes, media_type: str,
                  status: HTTPStatus = HTTPStatus.OK) -> None:
            data = body.encode("utf-8") if isinstance(body, str) else body
            charset = "; charset=utf-8" if media_type.startswith("text/") else ""
            self.send_response(status)
            self.send_header("Content-Type", media_type + charset)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Security-Policy", _CSP)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: the terminal shows the address and problems only

    return Handler


def make_server(config: Path, issue: Path, port: int) -> ThreadingHTTPServer:
    """A preview server bound to 127.0.0.1 (port 0: any free port), first render done.

    A missing settings or issue file stops here (InputError), before anything is served;
    problems inside them are shown in the page, and fixed by saving.
    """
    if not (config.is_file() and issue.is_file()):
        from newsletter.input.config import load_network
        from newsletter.input.issues import load_issue

        load_issue(issue, load_network(config))  # raises the "cannot read" problem
    state = _State(config=config.resolve(), issue_path=issue.resolve())
    state.refresh()
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), _handler(state))
    except OSError as e:
        raise InputError([Problem(Location("command line"), "--port",
                                  f"cannot listen on 127.0.0.1:{port}: {e.strerror or e}",
                                  "choose another port, or --port 0 for any free one")]) from e
    server.daemon_threads = True
    return server


def serve_preview(config: Path, issue: Path, *, port: int, open_browser: bool) -> None:
    """Run the preview until interrupted (its address is logged)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    server = make_server(config, issue, port)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    log.info("previewing %s at %s (Ctrl+C to stop)", issue, url)
    if open_browser:
        webbrowser.open(url)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()

