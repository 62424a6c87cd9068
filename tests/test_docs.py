"""The documentation in docs/ is held to the code: keys, examples, variables, links.

- every key newsletter.yaml may hold (``setting_keys()``) is in docs/settings.md, and every
  issue key, block type and block key the loader accepts is in docs/editors.md, each in
  its own section;
- every YAML example in docs/editors.md is run through the real CLI: complete issues pass
  ``check --strict`` and build, and the rendered text shown is the text built; fragments
  of blocks pass inside an issue; refused examples print exactly the messages shown;
- the example newsletter.yaml in docs/settings.md loads, and so does each fragment put in it;
- every environment variable the package reads is in docs/settings.md;
- nothing outside tests/ points users at SPEC.md or ../shared (a clone has neither);
- every relative link in docs/ and README.md reaches a file, and its #anchor a heading;
- every ``newsletter ...`` command line in the docs names a command and options that exist.

Examples carry their marker in a first-line comment (``# docs-example: issues/x.yaml``).
"""

from __future__ import annotations

import ast
import re
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import msgspec
import pytest
import yaml
from conftest import REPO, Project

from newsletter.cli import main
from newsletter.input.config import load_network, setting_keys
from newsletter.input.issues import (
    BLOCK_KEYS,
    IMAGE_KEYS,
    ISSUE_KEYS,
    LINK_KEYS,
    PERSON_KEYS,
)

DOCS = REPO / "docs"
EDITORS = DOCS / "editors.md"
SETTINGS = DOCS / "settings.md"
PAGES = sorted(DOCS.glob("*.md"))
SAMPLE_IMAGE = REPO / "issues" / "2016-12-newsletter" / "calendar.png"

# Read by uvicorn, which `newsletter serve` runs: not in the package's own code.
READ_BY_UVICORN = ("FORWARDED_ALLOW_IPS",)


# --------------------------------------------------------------------------- reading the docs


class Fence(msgspec.Struct, frozen=True):
    """A fenced code block at the left margin: its language, text, and the prose before it."""

    lang: str
    text: str
    before: str
    page: str

    @property
    def marker(self) -> tuple[str, str] | None:
        """(kind, argument) from a first line ``# docs-<kind>[: argument]``."""
        m = re.match(r"# docs-([a-z-]+)(?::\s*(\S+))?\s*$", self.text.split("\n", 1)[0])
        return (m[1], m[2] or "") if m else None


def fences(page: Path) -> list[Fence]:
    text = page.read_text(encoding="utf-8")
    found, last = [], 0
    for m in re.finditer(r"^```([\w-]*)\n(.*?)^```[ \t]*$", text, re.M | re.S):
        found.append(Fence(m[1], m[2], text[last:m.start()], page.name))
        last = m.end()
    return found


def headings(text: str) -> list[re.Match[str]]:
    """The Markdown headings of a page (not the comment lines of its code blocks)."""
    code = [m.span() for m in re.finditer(r"^```.*?^```", text, re.M | re.S)]
    return [m for m in re.finditer(r"^(#+) (.+?)\s*$", text, re.M)
            if not any(start <= m.start() < end for start, end in code)]


def section(text: str, heading: str) -> str:
    """The text under a Markdown heading, up to the next heading of the same or higher level."""
    found = headings(text)
    at = next((i for i, m in enumerate(found) if m[2] == heading), None)
    assert at is not None, f"no heading {heading!r}"
    level = len(found[at][1])
    end = next((m.start() for m in found[at + 1:] if len(m[1]) <= level), len(text))
    return text[found[at].end():end]


def marked(page: Path, kind: str) -> list[Fence]:
    return [f for f in fences(page) if f.marker and f.marker[0] == kind]


def local_images(data: Any) -> Iterator[str]:
    """The src of every local image in a parsed issue (or list of blocks)."""
    if isinstance(data, dict):
        image = data.get("image")
        if isinstance(image, dict) and "://" not in str(image.get("src", "")):
            yield str(image["src"])
        for value in data.values():
            yield from local_images(value)
    elif isinstance(data, list):
        for value in data:
            yield from local_images(value)


def write_issue(project: Project, relative: str, text: str) -> None:
    """The issue, and a real PNG at every local image it names."""
    path = project.write(relative, text)
    for src in local_images(yaml.safe_load(text)):
        target = path.parent / src
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLE_IMAGE, target)


# --------------------------------------------------------------------------- (a), (b) keys


@pytest.mark.parametrize("key", setting_keys())
def test_every_setting_key_is_in_the_settings_reference(key: str) -> None:
    assert f"`{key}`" in SETTINGS.read_text(encoding="utf-8"), \
        f"docs/settings.md does not describe `{key}`"


def test_every_issue_key_is_in_the_editors_guide() -> None:
    keys = section(EDITORS.read_text(encoding="utf-8"), "The issue's keys")
    missing = [k for k in ISSUE_KEYS if f"| `{k}` |" not in keys]
    assert not missing, f"docs/editors.md, 'The issue's keys', lacks {missing}"


@pytest.mark.parametrize("kind", list(BLOCK_KEYS))
def test_every_block_type_and_its_keys_are_in_the_editors_guide(kind: str) -> None:
    text = EDITORS.read_text(encoding="utf-8")
    assert f"| `{kind}` |" in section(text, "Blocks"), f"{kind} is not in the table of blocks"
    own = section(text, kind)
    missing = [k for k in BLOCK_KEYS[kind] if k != "type" and f"| `{k}` |" not in own]
    assert not missing, f"docs/editors.md, section {kind!r}, lacks {missing}"
    assert f"type: {kind}" in own, f"section {kind!r} has no example"


@pytest.mark.parametrize(("heading", "keys"), [("Links inside blocks", LINK_KEYS),
                                               ("Images", IMAGE_KEYS),
                                               ("People", PERSON_KEYS)])
def test_links_images_and_people_have_every_key_in_their_section(
        heading: str, keys: tuple[str, ...]) -> None:
    own = section(EDITORS.read_text(encoding="utf-8"), heading)
    missing = [k for k in keys if f"| `{k}` |" not in own]
    assert not missing, f"docs/editors.md, section {heading!r}, lacks {missing}"


# --------------------------------------------------------------------------- (c) issue examples


def test_every_yaml_block_in_the_editors_guide_is_a_marked_example() -> None:
    unmarked = [f.text.split("\n", 1)[0] for f in fences(EDITORS)
                if f.lang == "yaml" and (f.marker is None or f.marker[0] not in
                                         ("example", "blocks", "refused"))]
    assert not unmarked, f"yaml blocks without a docs-example/-blocks/-refused marker: {unmarked}"
    assert len(marked(EDITORS, "example")) >= 1
    assert len(marked(EDITORS, "refused")) >= 1


def test_the_complete_example_uses_every_key_and_every_block_type() -> None:
    [example] = marked(EDITORS, "example")
    data = yaml.safe_load(example.text)
    assert set(data) == set(ISSUE_KEYS)
    blocks = data["blocks"]
    assert {b["type"] for b in blocks} == set(BLOCK_KEYS)
    used = {(b["type"], k) for b in blocks for k in b}
    assert used == {(kind, k) for kind, keys in BLOCK_KEYS.items() for k in keys}
    people = [p for b in blocks for p in b.get("people", ())]
    assert {k for p in people for k in p} == set(PERSON_KEYS)
    links = [b["link"] for b in blocks if "link" in b] + [i for b in blocks
                                                           for i in b.get("items", ())]
    assert {k for link in links for k in link} == set(LINK_KEYS)


@pytest.mark.parametrize("example", marked(EDITORS, "example"),
                         ids=lambda f: f.marker[1] if f.marker else "?")
def test_an_issue_example_passes_check_strict_and_builds(project: Project,
                                                         example: Fence) -> None:
    assert example.marker is not None
    relative = example.marker[1]
    write_issue(project, relative, example.text)
    checked = project.run("check", "--strict", relative)
    assert (checked.code, checked.err) == (0, ""), checked.err
    built = project.run("build", relative)
    assert built.code == 0, built.err
    assert built.err == ""


def _rendered() -> list[tuple[str, Fence]]:
    return [(m[1], f) for f in fences(EDITORS)
            if (m := re.search(r"<!-- docs-rendered: (\S+) -->\s*$", f.before))]


@pytest.mark.parametrize(("relative", "shown"), _rendered(), ids=lambda v: str(v)[:40])
def test_the_rendered_text_shown_is_the_text_built(project: Project, relative: str,
                                                   shown: Fence) -> None:
    """Each piece of the text shown (pieces are separated by a "[...]" line) is in the
    built email.txt, in order."""
    [example] = [f for f in marked(EDITORS, "example") if f.marker == ("example", relative)]
    write_issue(project, relative, example.text)
    built = project.run("build", relative, "-o", "out")
    assert built.code == 0, built.err
    text = (project.root / "out" / "email.txt").read_text(encoding="utf-8")
    at = 0
    for piece in shown.text.split("[...]\n"):
        found = text.find(piece, at)
        assert found >= 0, f"not in the built email.txt (from offset {at}):\n{piece}"
        at = found + len(piece)


def test_there_is_a_rendered_result_for_the_complete_example() -> None:
    assert [r for r, _ in _rendered()] == [f.marker[1] for f in marked(EDITORS, "example")
                                           if f.marker]


@pytest.mark.parametrize("fragment", marked(EDITORS, "blocks"),
                         ids=lambda f: f.text.split("type: ", 2)[1].split("\n")[0])
def test_a_fragment_of_blocks_passes_check_strict_inside_an_issue(project: Project,
                                                                  fragment: Fence) -> None:
    body = "".join(f"  {line}\n" if line else "\n" for line in fragment.text.splitlines())
    issue = ("title: A fragment of the editor's guide\ndate: 2017-03-06\n"
             "preheader: Blocks from docs/editors.md, checked as an issue.\nblocks:\n" + body)
    write_issue(project, "issues/docs-fragment.yaml", issue)
    checked = project.run("check", "--strict", "issues/docs-fragment.yaml")
    assert (checked.code, checked.err) == (0, ""), checked.err
    assert project.run("build", "issues/docs-fragment.yaml").code == 0


@pytest.mark.parametrize("example", marked(EDITORS, "refused"),
                         ids=lambda f: f.marker[1] if f.marker else "?")
def test_a_refused_example_prints_exactly_the_messages_shown(project: Project,
                                                             example: Fence) -> None:
    assert example.marker is not None
    relative = example.marker[1]
    following = fences(EDITORS)
    shown = following[following.index(example) + 1]
    assert shown.lang == "text", "a refused example is followed by its messages in ```text"
    write_issue(project, relative, example.text)
    result = project.run("check", "--strict", relative)
    assert result.code == 1
    assert result.err == shown.text


# --------------------------------------------------------------------------- (d) settings example


def test_the_settings_example_is_a_complete_newsletter_yaml_that_loads(project: Project) -> None:
    [example] = marked(SETTINGS, "settings")
    project.config.write_text(example.text, encoding="utf-8")
    network = load_network(project.config, environ={})
    assert network.helpline.phone == "08000 121 700"
    top = {k for k in setting_keys() if "." not in k}
    assert set(yaml.safe_load(example.text)) == top, "the example leaves out a section"
    checked = project.run("check")  # the real CLI, with the sample issues
    assert checked.code == 0, checked.err


@pytest.mark.parametrize("fragment", marked(SETTINGS, "settings-fragment"),
                         ids=lambda f: f.text.split("\n")[1].split(":")[0])
def test_a_settings_fragment_loads_in_place_of_its_sections(project: Project,
                                                           fragment: Fence) -> None:
    [example] = marked(SETTINGS, "settings")
    settings = yaml.safe_load(example.text)
    settings.update(yaml.safe_load(fragment.text))
    project.config.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    load_network(project.config, environ={})


# --------------------------------------------------------------------------- (e) environment


def environment_variables() -> set[str]:
    """Every variable name the package reads, found in its source.

    In each module that reads the environment: the string constants that look like a
    variable name, and ``PREFIX + "NAME"`` where PREFIX is a module constant ending in _.
    """
    name = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
    found: set[str] = set()
    for path in (REPO / "newsletter").rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        if not re.search(r"environ|getenv|envvar", source):
            continue
        tree = ast.parse(source)
        prefixes = {t.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                    and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
                    and node.value.value.endswith("_") for t in node.targets
                    if isinstance(t, ast.Name)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and name.fullmatch(node.value):
                found.add(node.value)
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add) \
                    and isinstance(node.left, ast.Name) and node.left.id in prefixes \
                    and isinstance(node.right, ast.Constant) and isinstance(node.right.value, str):
                found.add(prefixes[node.left.id] + node.right.value)
    return found


def test_the_scan_finds_the_variables_the_package_reads() -> None:
    found = environment_variables()
    assert {"NEWSLETTER_SECRET", "NEWSLETTER_SMTP_HOST", "NEWSLETTER_DKIM_KEY",
            "NEWSLETTER_CONFIG", "SOURCE_DATE_EPOCH"} <= found


@pytest.mark.parametrize("variable", sorted(environment_variables()) + list(READ_BY_UVICORN))
def test_every_environment_variable_is_in_the_settings_reference(variable: str) -> None:
    environment = section(SETTINGS.read_text(encoding="utf-8"), "Environment variables")
    assert f"`{variable}`" in environment, f"docs/settings.md does not describe {variable}"


# --------------------------------------------------------------------------- (f) no SPEC.md


_NOT_SHIPPED = {".git", ".venv", "node_modules", "tests", "__pycache__", ".newsletter-cache",
                "build", "site", "demo", ".mypy_cache", ".ruff_cache", ".pytest_cache"}


def shipped_text_files() -> Iterator[Path]:
    stack = [REPO]
    while stack:
        folder = stack.pop()
        for path in folder.iterdir():
            if path.name in _NOT_SHIPPED or path.name.endswith(".egg-info") or \
                    path.name.startswith(".site."):
                continue
            if path.is_dir():
                stack.append(path)
            elif path.is_file():
                yield path


def test_nothing_outside_tests_points_at_spec_md_or_the_shared_folder() -> None:
    found = []
    for path in shipped_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if re.search(r"SPEC\.md|\.\./shared|/work/shared", line):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


# --------------------------------------------------------------------------- (g) links


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the headings of a page."""
    seen: dict[str, int] = {}
    found = set()
    for m in headings(page.read_text(encoding="utf-8")):
        slug = re.sub(r"[^\w\- ]", "", m[2].strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def relative_links(page: Path) -> Iterator[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    for m in re.finditer(r"\]\(([^)\s]+)\)", text):
        if not re.match(r"[a-z]+:", m[1]):
            yield m[1]


@pytest.mark.parametrize("page", [*PAGES, REPO / "README.md"], ids=lambda p: p.name)
def test_every_relative_link_reaches_a_file_and_a_heading(page: Path) -> None:
    broken = []
    for link in relative_links(page):
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.exists():
            broken.append(f"{link}: no such file")
        elif anchor and (path.suffix != ".md" or anchor not in anchors(path)):
            broken.append(f"{link}: no heading #{anchor} in {path.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_the_docs_have_four_pages_and_the_readme_links_each() -> None:
    assert [p.name for p in PAGES] == ["editors.md", "operations.md", "sending.md",
                                       "settings.md"]
    readme = set(relative_links(REPO / "README.md"))
    assert {f"docs/{p.name}" for p in PAGES} <= readme


# --------------------------------------------------------------------------- (h) commands


_SHELL = ("sh", "ini", "crontab")


def command_lines() -> Iterator[tuple[str, list[str]]]:
    """(where, arguments after `newsletter`) for each command line in the docs and README:
    in shell-like fences, and in inline code that starts with `newsletter `."""
    for page in [*PAGES, REPO / "README.md"]:
        text = page.read_text(encoding="utf-8")
        lines = [line for f in fences(page) if f.lang in _SHELL
                 for line in f.text.replace("\\\n", " ").splitlines()]
        prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
        lines += re.findall(r"`((?:\S*bin/)?newsletter [^`]+)`", prose)
        for line in lines:
            try:
                words = shlex.split(line, comments=True)
            except ValueError:
                words = line.split()
            words = [w.removeprefix("ExecStart=") for w in words]
            for i, word in enumerate(words):
                # `newsletter` where a shell runs a command, or a path to it anywhere
                starts = i == 0 or words[i - 1] in ("&&", "||", ";", "|") or all(
                    re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", w) for w in words[:i])
                if (word == "newsletter" and starts) or word.endswith("bin/newsletter"):
                    args = []
                    for arg in words[i + 1:]:
                        if arg in ("&&", "||", ";", "|") or arg.startswith((">", "2>")):
                            break
                        args.append(arg)
                    yield f"{page.name}: {line.strip()}", args
                    break


def _options(command: click.Command) -> set[str]:
    return {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"-h", "--help"}


def test_every_command_line_in_the_docs_names_real_commands_and_options() -> None:
    wrong = []
    count = 0
    for where, args in command_lines():
        count += 1
        command: click.Command = main
        words = iter(args)
        for word in words:
            if word == "...":  # the rest is left out
                break
            if word.startswith("-"):
                option = word.split("=", 1)[0]
                if option not in _options(command):
                    wrong.append(f"{where}: no option {option} for {command.name}")
                elif option in ("--config", "-c") and "=" not in word:
                    next(words, None)
            elif isinstance(command, click.Group):
                sub = command.commands.get(word)
                if sub is None:
                    wrong.append(f"{where}: no command {word!r}")
                    break
                command = sub
    assert count >= 20, "the scan found too few command lines"
    assert not wrong, "\n".join(wrong)
