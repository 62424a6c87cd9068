"""Author Markdown -> sanitised HTML, and -> plain text: part of the render stage.

Bodies and intros are CommonMark written by editors. For the HTML part they go through
markdown-it-py's "js-default" preset (raw HTML is escaped, not passed through) and then nh3
with a small allowlist, because MRML passes anything it is given straight into the email.
Links keep only https, mailto and tel targets (addresses.url_problem decides); relative and
protocol-relative links lose their href; images never come from Markdown (only from a
block's ``image``). Headings inside a body become <h3>: the email's outline is h1 issue,
h2 block, h3 inside a block.

For the text part the same token stream is written out as paragraphs, wrapped by
plaintext.py, with links as numbered references [1] collected in a LinkRefs.

For the load stage, ``parts`` lists what the renderer would drop (raw HTML, images, unsafe
links) and every link's text, parsed with the same grammar, so problems are reported on
the line where the editor wrote them. When a text holds none of that (the usual case) the
two grammars give the same tokens, and the loader's parse is kept for the renderer.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Any, TypeVar

import msgspec
import nh3
from markdown_it import MarkdownIt
from markdown_it.token import Token

from newsletter.text.addresses import LINK_SCHEMES, url_problem
from newsletter.text.plaintext import LinkRefs, heading, wrap

_TAGS = frozenset({"p", "a", "strong", "em", "ul", "ol", "li", "br", "code", "pre",
                   "blockquote", "h3", "hr"})
_ATTRIBUTES = {"a": {"href"}}


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    md = MarkdownIt("js-default")
    md.disable("image")  # images come only from a block's `image`, with alt text checked
    return md


class _SeeEverything(MarkdownIt):
    """The renderer's grammar, but keeping what it would drop (raw HTML, images, links
    such as ``javascript:``) as tokens, so the loader can report them on their line."""

    def validateLink(self, url: str) -> bool:
        return True


@lru_cache(maxsize=1)
def _inspector() -> MarkdownIt:
    return _SeeEverything("js-default", {"html": True})


class Part(msgspec.Struct, frozen=True):
    kind: str  # "link", "image" or "html"
    line: int  # 0-based line inside the Markdown text
    target: str  # the href / src / HTML
    text: str  # the link text or image alt


def parts(markdown: str) -> tuple[Part, ...]:
    """The links, images and raw HTML in a Markdown text, in order, with their line.

    load.py refuses the HTML, images and unsafe links; checks.py reads the link texts:
    the text is parsed once for both.
    """
    found = _PARTS.get(markdown)
    if found is None:
        env: dict[str, Any] = {}
        tokens = _inspector().parse(markdown, env)
        if _renders_alike(markdown, tokens, env):
            _remember(markdown, tokens)
        found = _keep(_PARTS, markdown, tuple(_find_parts(tokens)))
    return found


def _find_parts(tokens: list[Token]) -> Iterator[Part]:
    for token in tokens:
        first = token.map[0] if token.map else 0
        if token.type == "html_block":
            yield Part("html", first, token.content.strip(), "")
            continue
        if token.type != "inline" or not token.children:
            continue
        line = first
        link: tuple[int, str, list[str]] | None = None
        for child in token.children:
            if child.type in ("softbreak", "hardbreak"):
                line += 1
            elif child.type == "link_open":
                link = (line, str(child.attrs.get("href", "")), [])
            elif child.type == "link_close" and link is not None:
                yield Part("link", link[0], link[1], "".join(link[2]))
                link = None
            elif child.type in ("text", "code_inline") and link is not None:
                link[2].append(child.content)
            elif child.type == "image":
                yield Part("image", line, str(child.attrs.get("src", "")), child.content)
            elif child.type == "html_inline":
                yield Part("html", line, child.content, "")


def _keep_safe_urls(tag: str, attribute: str, value: str) -> str | None:
    if attribute in ("href", "src") and url_problem(value) is not None:
        return None
    return value


def _renders_alike(markdown: str, tokens: list[Token], env: dict[str, Any]) -> bool:
    """Whether the inspector's tokens are exactly the renderer's for this text.

    The two grammars differ only in raw HTML and images (both need a ``<`` or ``![``) and
    in the links the renderer's validateLink refuses (``javascript:`` and the like), which
    the inspector keeps as links or reference definitions.
    """
    if "<" in markdown or "![" in markdown:
        return False
    definitions = [*env.get("references", {}).values(), *env.get("duplicate_refs", ())]
    hrefs = [str(definition["href"]) for definition in definitions]
    for token in tokens:
        hrefs += [str(c.attrs["href"]) for c in token.children or () if c.type == "link_open"]
    return all(_parser().validateLink(href) for href in hrefs)


_PARSED: dict[str, tuple[Token, ...]] = {}
_PARTS: dict[str, tuple[Part, ...]] = {}
_KEPT_MAX = 512  # texts kept in each

_V = TypeVar("_V")


def _keep(cache: dict[str, _V], markdown: str, value: _V) -> _V:
    """Keep ``value`` for ``markdown``, dropping the oldest entry of a full cache."""
    if len(cache) >= _KEPT_MAX:
        cache.pop(next(iter(cache)))
    cache[markdown] = value
    return value


def _remember(markdown: str, tokens: list[Token]) -> tuple[Token, ...]:
    """Keep a parse for the renderer (headings made <h3>); the tokens are only read."""
    for token in tokens:
        if token.type in ("heading_open", "heading_close"):
            token.tag = "h3"
    return _keep(_PARSED, markdown, tuple(tokens))


def _tokens(markdown: str) -> tuple[Token, ...]:
    """Parsed once for both parts (the HTML and the text), and for the loader when it can."""
    parsed = _PARSED.get(markdown)
    return parsed if parsed is not None else _remember(markdown, _parser().parse(markdown))


def clear_cache() -> None:
    """Forget parsed Markdown (benchmarks measure a cold render)."""
    _PARSED.clear()
    _PARTS.clear()


@lru_cache(maxsize=1)
def _cleaner() -> nh3.Cleaner:
    """nh3's sanitiser, configured once (half the cost of ``nh3.clean`` per body)."""
    return nh3.Cleaner(
        tags=set(_TAGS),
        attributes={k: set(v) for k, v in _ATTRIBUTES.items()},
        url_schemes=set(LINK_SCHEMES),
        link_rel=None,
        strip_comments=True,
        attribute_filter=_keep_safe_urls,
    )


def to_html(markdown: str) -> str:
    """Sanitised HTML for a Markdown body (safe to place inside an <mj-text>)."""
    md = _parser()
    html = md.renderer.render(list(_tokens(markdown)), md.options, {})
    cleaned: str = _cleaner().clean(html)
    return cleaned.strip()


def _inline_text(token: Token, refs: LinkRefs) -> str:
    out: list[str] = []
    href_stack: list[str | None] = []
    for child in token.children or ():
        kind = child.type
        if kind in ("text", "code_inline", "html_inline"):
            out.append(child.content)
        elif kind == "softbreak":
            out.append(" ")
        elif kind == "hardbreak":
            out.append("\n")
        elif kind == "link_open":
            target = str(child.attrs.get("href", ""))
            href_stack.append(target if url_problem(target) is None else None)
        elif kind == "link_close":
            href = href_stack.pop() if href_stack else None
            if href is not None:
                out.append(f" [{refs.number(href)}]")
    return "".join(out)


def to_text(markdown: str, refs: LinkRefs, *, indent: str = "") -> str:
    """Plain text for a Markdown body: wrapped paragraphs, lists, links as [n] references."""
    paragraphs: list[tuple[str, bool]] = []  # (text, is an item of a tight list)
    tight = False
    in_heading = False
    prefixes: list[str] = []  # one per open list item / blockquote
    list_kinds: list[tuple[bool, int]] = []  # (ordered, next number)
    first_line_prefix: str | None = None
    for token in _tokens(markdown):
        kind = token.type
        if kind == "bullet_list_open":
            list_kinds.append((False, 0))
        elif kind == "ordered_list_open":
            list_kinds.append((True, int(str(token.attrs.get("start", 1)))))
        elif kind in ("bullet_list_close", "ordered_list_close"):
            list_kinds.pop()
        elif kind == "list_item_open":
            ordered, number = list_kinds[-1]
            marker = f"{number}. " if ordered else "* "
            if ordered:
                list_kinds[-1] = (True, number + 1)
            first_line_prefix = "".join(prefixes) + marker
            prefixes.append(" " * len(marker))
        elif kind == "list_item_close":
            prefixes.pop()
        elif kind == "blockquote_open":
            prefixes.append("> ")
        elif kind == "blockquote_close":
            prefixes.pop()
        elif kind == "heading_open":
            in_heading = True
        elif kind == "paragraph_open":
            tight = token.hidden
        elif kind == "inline":
            text = _inline_text(token, refs)
            rest = indent + "".join(prefixes)
            first = indent + (first_line_prefix if first_line_prefix is not None else
                              "".join(prefixes))
            first_line_prefix = None
            lines = [wrap(line, initial_indent=first if i == 0 else rest,
                          subsequent_indent=rest)
                     for i, line in enumerate(text.split("\n"))]
            block = "\n".join(lines)
            if in_heading:
                block = indent + heading(text, "-").replace("\n", "\n" + indent)
                in_heading = False
            paragraphs.append((block, tight and bool(list_kinds)))
            tight = False
        elif kind in ("code_block", "fence"):
            code = indent + "    " + token.content.rstrip("\n").replace(
                "\n", "\n" + indent + "    ")
            paragraphs.append((code, False))
        elif kind == "hr":
            paragraphs.append((indent + "* * *", False))
    # Items of a tight list sit on consecutive lines; everything else is a paragraph.
    out: list[str] = []
    previous_tight = False
    for text, is_tight in paragraphs:
        if out:
            out.append("\n" if is_tight and previous_tight else "\n\n")
        out.append(text)
        previous_tight = is_tight
    return "".join(out)
