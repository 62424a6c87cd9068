"""The render stage: Issue + Network -> RenderedIssue (HTML and plain text).

    Jinja   templates/email/base.mjml.j2 (+ blocks/<type>.mjml.j2)  -> MJML
    MRML    mjml.mjml2html(fonts={}, disable_comments=True)           -> HTML
    inline  css-inline: the rules MRML leaves in <style>; @media rules stay behind
    text    templates/text/base.txt.j2 from the same model (never scraped from the HTML)

Pure and deterministic: the same issue and network give the same bytes (``write_build``
at the end is the one function that touches files, for ``newsletter build``). In EMAIL
mode the output holds Slot markers (greeting, unsubscribe URL) that personalize.py fills
per recipient, where the templates placed them and nowhere else (``PlacedSlots``);
ARCHIVE mode has no recipient at all (no greeting, no unsubscribe link) and points at
images by their published names, which the archive copies beside each page.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import css_inline
import jinja2
import mjml
import msgspec

from newsletter.email.templating import html_environment, text_environment
from newsletter.errors import InputError, Problem, RenderError
from newsletter.input.images import published_bytes
from newsletter.model import Image, Issue, Location, Network, RenderedIssue, RenderMode, Slot
from newsletter.text.plaintext import LinkRefs, tidy

EMAIL_TEMPLATE = "email/base.mjml.j2"
TEXT_TEMPLATE = "text/base.txt.j2"


class Colours(msgspec.Struct, frozen=True):
    """The template palette (besides the network's brand colour); all pairs >= 4.5:1."""

    text: str = "#1f2933"
    muted: str = "#4b5563"
    page: str = "#f3f4f6"
    card: str = "#ffffff"
    rule: str = "#9aa5b1"
    callout: str = "#eef3fa"
    helpline: str = "#fdf3d7"
    dark_page: str = "#111418"
    dark_card: str = "#1c2128"
    dark_text: str = "#e5e7eb"
    dark_muted: str = "#c2c8d0"
    dark_link: str = "#9ec5ff"
    dark_callout: str = "#1f2d3d"
    dark_helpline: str = "#3a3220"


COLOURS = Colours()


def view_url(issue: Issue, network: Network) -> str:
    """The anonymous archive page of an issue: the "view in browser" link."""
    return network.archive_url.rstrip("/") + "/" + issue.slug + "/"


def image_url(image: Image, issue: Issue, network: Network, mode: RenderMode,
              image_base: str | None = None) -> str:
    """Where a reader's client fetches an image from (``image_base`` overrides, for previews)."""
    name = image.published_name
    if name is None:  # an https image, used as written
        return image.src
    if image_base is not None:
        return image_base + name
    if mode is RenderMode.ARCHIVE:
        return name  # the archive copies images beside each page
    return view_url(issue, network) + name


class PlacedSlots:
    """The per-recipient markers the templates place in one render (``{{ Slot.GREETING }}``).

    While rendering, each is a random word of this render alone, so no text an issue or
    newsletter.yaml writes can pass for one (load.py refuses the Slot values in any
    text, in any spelling; this is the backstop). ``settle`` turns them into the Slot
    values personalize.py fills, after refusing any Slot value that was there already:
    it did not come from a template, and filling it would send each member's value
    wherever that text shows or links to.
    """

    def __init__(self) -> None:
        nonce = secrets.token_hex(8)
        self.markers = {slot: f"__slot_{nonce}_{slot.name}__" for slot in Slot}

    def for_templates(self) -> dict[str, str]:
        return {slot.name: marker for slot, marker in self.markers.items()}

    def settle(self, output: str, issue: Issue, part: str) -> str:
        stray = _STRAY_SLOT.search(output)
        if stray is not None:
            raise RenderError(
                f"{issue.where}: the {part} holds the personalisation marker "
                f"{stray.group()} where no template placed it; members' values go only "
                "where a template writes {{ Slot." + (_slot_name(stray.group()) or "...")
                + " }} (run `newsletter check` to find it in the issue or newsletter.yaml)")
        for slot, marker in self.markers.items():
            output = output.replace(marker, slot.value)
        return output


_STRAY_SLOT = re.compile(r"__NL_[A-Za-z0-9_]*", re.IGNORECASE)


def _slot_name(marker: str) -> str | None:
    return next((slot.name for slot in Slot if slot.value == marker), None)


def _context(issue: Issue, network: Network, mode: RenderMode, slots: PlacedSlots,
             image_base: str | None = None) -> dict[str, object]:
    def locate(image: Image) -> str:
        return image_url(image, issue, network, mode, image_base)

    return {"issue": issue, "network": network, "mode": mode,
            "view_url": view_url(issue, network), "image_url": locate, "colours": COLOURS,
            "logo_url": logo_url(network, image_base), "Slot": slots.for_templates()}


def logo_url(network: Network, image_base: str | None = None) -> str | None:
    """Where the email's masthead is fetched from: the archive's static folder, where
    ``newsletter archive`` publishes it (``image_base`` overrides, for previews)."""
    logo = network.brand.logo
    if logo is None or logo.published_name is None:
        return None
    if image_base is not None:
        return image_base + logo.published_name
    return network.archive_url.rstrip("/") + "/static/" + logo.published_name


def render_mjml(issue: Issue, network: Network, mode: RenderMode = RenderMode.EMAIL, *,
                image_base: str | None = None, slots: PlacedSlots | None = None) -> str:
    """Stage 1: the MJML document for an issue, with ``slots``' markers where the
    templates place them (``PlacedSlots.settle`` turns them into Slot values)."""
    # absolute(), not resolve(): resolve() would lstat each folder of the path every time
    env = html_environment(network.root.absolute())
    context = _context(issue, network, mode, slots or PlacedSlots(), image_base)
    try:
        return env.get_template(EMAIL_TEMPLATE).render(context)
    except jinja2.TemplateError as e:
        raise RenderError(f"{issue.where}: the email template failed: {_describe(e)}") from e


def mjml_to_html(source: str, issue: Issue) -> str:
    """Stage 2: MJML -> HTML with MRML (no web fonts, no comments)."""
    try:
        html: str = mjml.mjml2html(source, fonts={}, disable_comments=True)
    except ValueError as e:
        raise RenderError(f"{issue.where}: MJML could not render issue {issue.slug!r}: {e}") \
            from e
    return html


@lru_cache(maxsize=1)
def _inliner() -> css_inline.CSSInliner:
    return css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)


def inline_css(html: str) -> str:
    """Stage 3: move the <style> rules MRML leaves behind onto the elements.

    @media rules (phone widths, dark mode) cannot be inlined and stay in the head.
    """
    inlined: str = _inliner().inline(html)
    return inlined


def render_html(issue: Issue, network: Network, mode: RenderMode = RenderMode.EMAIL, *,
                image_base: str | None = None) -> str:
    """Jinja -> MJML -> HTML -> inlined CSS, Slot markers only where templates put them."""
    slots = PlacedSlots()
    html = inline_css(mjml_to_html(render_mjml(issue, network, mode, image_base=image_base,
                                               slots=slots), issue))
    return slots.settle(html, issue, "HTML part")


def render_text(issue: Issue, network: Network, mode: RenderMode = RenderMode.EMAIL) -> str:
    """The plain-text part from the model: wrapped, links as numbered references."""
    env = text_environment(network.root.absolute())
    slots = PlacedSlots()
    context = _context(issue, network, mode, slots)
    context["refs"] = LinkRefs()
    try:
        text = env.get_template(TEXT_TEMPLATE).render(context)
    except jinja2.TemplateError as e:
        raise RenderError(f"{issue.where}: the text template failed: {_describe(e)}") from e
    return slots.settle(tidy(text), issue, "plain-text part")


def render_issue(issue: Issue, network: Network, mode: RenderMode = RenderMode.EMAIL, *,
                 image_base: str | None = None) -> RenderedIssue:
    """Render an issue once: what every recipient's message (or the archive page) is made of.

    ``image_base`` replaces where local images are fetched from (the preview serves them).
    """
    html = render_html(issue, network, mode, image_base=image_base)
    text = render_text(issue, network, mode)
    return RenderedIssue(slug=issue.slug, subject=issue.subject_line,
                         preheader=issue.preheader, html=html, text=text,
                         view_url=view_url(issue, network), mode=mode,
                         content_hash=content_hash(issue, network, html, text))


def content_hash(issue: Issue, network: Network, html: str, text: str) -> str:
    """What locks a send: everything every recipient's message shares.

    The subject, the preheader, every header value ``prepare`` takes from newsletter.yaml
    (From, Reply-To, List-Id, List-Archive) and both parts: a send that was started is
    resumed only if none of them changed, so nobody gets another subject or sender than
    the members before them. Only the per-recipient values are left out.
    """
    # here, not at the top: the archive renders without it, and it imports the email package
    from newsletter.email.personalize import message_headers

    shared = msgspec.json.encode([issue.subject_line, issue.preheader,
                                  message_headers(network)])
    digest = hashlib.sha256(shared + b"\0" + html.encode("utf-8") + b"\0" +
                            text.encode("utf-8"))
    return digest.hexdigest()


_STYLE = re.compile(r"<style\b[^>]*>(.*?)</style>", re.DOTALL | re.IGNORECASE)
_BODY = re.compile(r"<body\b[^>]*>(.*)</body>", re.DOTALL | re.IGNORECASE)


def split_document(html: str) -> tuple[str, str]:
    """(css, body) of a rendered document: the head's remaining CSS and the inner <body>."""
    head = html.split("</head>", 1)[0]
    css = "\n".join(m.group(1).strip() for m in _STYLE.finditer(head))
    body = _BODY.search(html)
    return css, (body.group(1) if body else "")


def render_archive_body(issue: Issue, network: Network) -> tuple[str, str]:
    """What an archive page embeds: (css, body html) of the ARCHIVE render.

    The same templates as the email, with no recipient: no greeting, no unsubscribe
    link, images by their published names (relative to the page).
    """
    return split_document(render_html(issue, network, RenderMode.ARCHIVE))


def _describe(error: jinja2.TemplateError) -> str:
    if isinstance(error, jinja2.TemplateSyntaxError):
        return f"{error.filename or error.name}:{error.lineno}: {error.message}"
    return str(error)


# --------------------------------------------------------------------------- the build's edge


def local_images(issue: Issue, network: Network | None = None) -> list[Image]:
    """The issue's local images (https images are not copied), each once; with
    ``network``, its masthead too."""
    seen: dict[str, Image] = {}
    logo = network.brand.logo if network is not None else None
    if logo is not None and logo.published_name is not None:
        seen[logo.published_name] = logo
    for block in issue.blocks:
        image = getattr(block, "image", None)
        if isinstance(image, Image) and image.published_name and image.path is not None:
            seen.setdefault(image.published_name, image)
    return list(seen.values())


def write_build(folder: Path, files: dict[str, bytes], images: list[Image]) -> None:
    """Write a build folder all at once: a failure leaves the old folder (or nothing).

    Everything goes into a temporary folder beside the target, which is then renamed
    into place; the previous build is removed only after that. A folder that cannot be
    written is an InputError naming it (``-o`` is the user's choice), not a traceback.
    """
    try:
        _replace_folder(folder.resolve(), files, images)
    except OSError as e:
        why = "a file is in the way of a folder" if isinstance(
            e, FileExistsError | NotADirectoryError) else (e.strerror or str(e))
        at = f"{e.filename}: " if e.filename else ""
        raise InputError([Problem(Location(str(folder)), "", f"cannot write the build: "
                                  f"{at}{why}", "choose a folder you can write to with -o")]
                         ) from e


def _replace_folder(folder: Path, files: dict[str, bytes], images: list[Image]) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for name, data in files.items():
            (staging / name).write_bytes(data)
        for image in images:
            assert image.path is not None and image.digest is not None
            data = published_bytes(image.path, image.digest)  # without the metadata
            assert image.published_name is not None
            (staging / image.published_name).write_bytes(data)
        staging.chmod(0o755)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            folder.rename(old)
            try:
                staging.rename(folder)
            except BaseException:
                old.rename(folder)  # put the previous build back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
