"""Local images as the real CLI publishes them: by their real type, without metadata.

Images are made here with Pillow (EXIF with a GPS position and an Artist, XMP packets,
PNG text chunks, GIF comments) or by hand (polyglots: a GIF that is also a script or a
page). ``check``, ``build``, ``archive`` and ``serve`` run as a user runs them.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import httpx
import pytest
from conftest import Project, free_port
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from newsletter.input.images import ImageError, metadata_in, publishable

SLUG = "2017-03-photos"
ARTIST = "Jane Holloway, 12 Mill Lane, Walsall, jane.holloway@example.net"
GPS = {1: "N", 2: (52.0, 35.0, 8.5), 3: "W", 4: (1.0, 58.0, 55.2)}
XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description '
       b'dc:creator="Jane Holloway" Iptc4xmpCore:CiAdrCity="Walsall"/></rdf:RDF></x:xmpmeta>')
SECRETS = (b"Holloway", b"Mill Lane", b"jane.holloway", b"Walsall", b"xmpmeta")


# --------------------------------------------------------------------------- image makers


def exif(*, artist: str = ARTIST, orientation: int = 1, gps: bool = True) -> Image.Exif:
    data = Image.Exif()
    data[0x013B] = artist
    data[0x010F] = "PhoneMaker"
    if orientation != 1:
        data[0x0112] = orientation
    if gps:
        data[0x8825] = GPS
    return data


def photo(*, size: tuple[int, int] = (64, 48), orientation: int = 1,
          artist: str = ARTIST) -> bytes:
    """A JPEG as a phone writes it: EXIF (GPS, Artist, maker), XMP, a comment."""
    out = io.BytesIO()
    Image.new("RGB", size, (180, 40, 40)).save(
        out, "JPEG", quality=90, exif=exif(orientation=orientation, artist=artist).tobytes(),
        xmp=XMP, comment=b"taken at Jane Holloway's house")
    return out.getvalue()


def png_with_text() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", ARTIST)
    info.add_text("Comment", "Holloway family archive", zip=True)
    info.add_itxt("Description", "Mill Lane, Walsall", lang="en", tkey="Description")
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    out = io.BytesIO()
    Image.new("RGB", (30, 20), (20, 90, 160)).save(out, "PNG", pnginfo=info,
                                                  exif=exif().tobytes())
    return out.getvalue()


def gif_with_comment() -> bytes:
    frames = [Image.new("P", (12, 10), i) for i in range(3)]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=120, loop=0,
                   comment=ARTIST.encode())
    return out.getvalue()


def webp_with_metadata() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (0, 120, 0)).save(out, "WEBP", exif=exif().tobytes(), xmp=XMP,
                                                lossless=True)
    return out.getvalue()


def sub_blocks(data: bytes) -> bytes:
    return b"".join(bytes([len(data[i:i + 255])]) + data[i:i + 255]
                    for i in range(0, len(data), 255)) + b"\0"


def polyglot(payload: bytes) -> bytes:
    """A GIF that is also a script: ``GIF89a/*<binary>*/=1;<payload>/*<binary>;*/``.

    The screen width is the two bytes ``/*``, which opens a JavaScript comment; a GIF
    comment extension closes it, carries the payload and opens another, which bytes after
    the trailer close. Pillow decodes it as a 10799 x 1 GIF.
    """
    head = b"GIF89a/*" + struct.pack("<H", 1) + bytes([0x80, 0, 0]) + b"\0\0\0\xff\xff\xff"
    comment = b"\x21\xfe" + sub_blocks(b"*/=1;" + payload + b"/*")
    image = b"\x2c" + struct.pack("<HHHH", 0, 0, 1, 1) + b"\0" + b"\x02\x02\x44\x01\x00"
    return head + comment + image + b";*/" + payload + b"\n"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def clean_png(width: int = 6, height: int = 4) -> bytes:
    raw = b"".join(b"\0" + b"\x10\x80\xf0" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n"
            + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))


# --------------------------------------------------------------------------- the project


def article(number: int, src: str, alt: str) -> str:
    return (f"  - type: article\n    title: Picture {number}\n    body: Seen at the event.\n"
            f"    image: {{src: '{src}', alt: '{alt}'}}\n")


def with_images(project: Project, images: dict[str, bytes]) -> Path:
    """An issue with one article per image (files in issues/<slug>/); its path."""
    folder = project.root / "issues" / SLUG
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in images.items():
        (folder / name).write_bytes(data)
    blocks = "".join(article(i, f"{SLUG}/{name}", f"Picture {i}")
                     for i, name in enumerate(images, start=1))
    return project.write(f"issues/{SLUG}.yaml",
                         "title: Photos from the conference\ndate: 2017-03-06\n"
                         "preheader: Pictures from the day.\nblocks:\n" + blocks)


def published(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())
            if p.is_file() and not p.name.startswith(("email.", "index."))}


def run_ok(project: Project, *args: str) -> str:
    result = project.run(*args)
    assert result.code == 0, result.out + result.err
    assert "Traceback" not in result.err
    return result.out + result.err


def serve(project: Project) -> tuple[str, subprocess.Popen[str]]:
    run_ok(project, "subscribers", "import", "subscribers/members.csv", "--list", "news")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "serve", "--port", str(port), "-d", "site"],
        cwd=project.root, env={**os.environ, "NEWSLETTER_SECRET": "x" * 32},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return f"http://127.0.0.1:{port}", process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError("server did not start")


# --------------------------------------------------------------------------- polyglots

POLYGLOT_NAMES = ("evil.js", "page.html", "drawing.svg", "style.css", "module.mjs",
                  "no-extension", "SHOUT.JS", "honest.gif")


def test_a_polyglot_is_published_under_its_real_type_without_its_payload(
        project: Project) -> None:
    payloads = {name: f"alert('{name}');document.title='owned-{i}'".encode()
                for i, name in enumerate(POLYGLOT_NAMES)}
    issue = with_images(project, {name: polyglot(payloads[name]) for name in POLYGLOT_NAMES})
    checked = run_ok(project, "check", str(issue.relative_to(project.root)))
    for name in POLYGLOT_NAMES[:-1]:  # told, and shown the name it is published under
        assert re.search(rf"{re.escape(name)} is a GIF image, not what its name says; it is "
                         rf"published as {re.escape(Path(name).stem)}-[0-9a-f]{{12}}\.gif "
                         r"\(rename the file to end in \.gif\)", checked), checked
    assert "honest.gif is a GIF image" not in checked

    run_ok(project, "build", f"issues/{SLUG}.yaml", "-o", "out")
    run_ok(project, "archive", "-o", "site", "--no-members")
    for folder in (project.root / "out", project.root / "site" / SLUG):
        files = published(folder)
        assert len(files) == len(POLYGLOT_NAMES)
        assert all(re.fullmatch(r"[A-Za-z-]+-[0-9a-f]{12}\.gif", name) for name in files), files
        for data in files.values():
            assert not any(p in data for p in payloads.values())
            assert data.endswith(b";") and b"\x21\xfe" not in data  # no comment, no tail
            with Image.open(io.BytesIO(data)) as image:
                assert image.format == "GIF" and image.size == (10799, 1)
    html = (project.root / "out" / "email.html").read_text()
    srcs = re.findall(r'<img[^>]+src="([^"]+)"', html)
    assert len(srcs) == len(POLYGLOT_NAMES) and all(s.endswith(".gif") for s in srcs)
    everywhere = b"".join(p.read_bytes() for p in (project.root / "site").rglob("*")
                          if p.is_file())
    assert b"document.title='owned" not in everywhere

    url, process = serve(project)
    try:
        for name in published(project.root / "site" / SLUG):
            reply = httpx.get(f"{url}/{SLUG}/{name}")
            assert reply.status_code == 200
            assert reply.headers["content-type"] == "image/gif"
            assert reply.headers["x-content-type-options"] == "nosniff"
    finally:
        process.terminate()
        process.communicate(timeout=10)


@pytest.mark.parametrize(("name", "data"), [
    ("tail.png", clean_png() + b"<script>alert(1)</script>"),
    ("comment.jpg", photo() + b"<html><script>alert(2)</script></html>"),
    ("chunk.png", clean_png()[:-12] + png_chunk(b"scRp", b"<script>alert(3)</script>")
     + clean_png()[-12:]),
    ("riff.webp", webp_with_metadata() + b"<script>alert(4)</script>"),
])
def test_other_image_types_lose_what_rides_along_in_them_or_after_them(
        project: Project, name: str, data: bytes) -> None:
    with_images(project, {name: data})
    run_ok(project, "build", f"issues/{SLUG}.yaml", "-o", "out")
    [(published_name, bytes_out)] = published(project.root / "out").items()
    assert published_name.endswith(Path(name).suffix)
    assert b"<script>" not in bytes_out and b"alert(" not in bytes_out
    assert metadata_in(bytes_out) == []
    with Image.open(io.BytesIO(bytes_out)) as image:
        image.load()


# --------------------------------------------------------------------------- broken images


def truncated_cases() -> list[tuple[str, bytes, str]]:
    png = clean_png(40, 30)
    jpeg = photo(size=(120, 90))
    gif = gif_with_comment()
    webp = webp_with_metadata()
    damaged = bytearray(png)
    damaged[50] ^= 0xFF  # inside the IDAT chunk: its checksum no longer matches
    return [
        ("half.png", png[:len(png) // 2], "the PNG file is cut short"),
        ("no-end.png", png[:-12], "the PNG file is cut short"),
        ("damaged.png", bytes(damaged), "not a well-formed PNG file (the 'IDAT' chunk is "
                                        "damaged)"),
        ("half.jpg", jpeg[:len(jpeg) // 2], "the JPEG file is cut short"),
        ("no-end.jpg", jpeg[:-2], "the JPEG file is cut short"),
        ("half.gif", gif[:len(gif) - 20], "the GIF file is cut short"),
        ("half.webp", webp[:len(webp) - 10], "the WebP file is cut short"),
    ]


@pytest.mark.parametrize(("name", "data", "message"), truncated_cases())
def test_an_image_that_does_not_decode_is_refused_by_check_with_its_place_and_a_hint(
        project: Project, name: str, data: bytes, message: str) -> None:
    issue = with_images(project, {name: data})
    result = project.run("check", f"issues/{SLUG}.yaml")
    assert result.code == 1 and "Traceback" not in result.err
    hint = "(open it in an image editor and export it again as PNG, JPEG, GIF or WebP)"
    line = next(i for i, text in enumerate(issue.read_text().splitlines(), start=1)
                if "image:" in text)
    assert f"issues/{SLUG}.yaml:{line}:18: blocks[1].image.src: {SLUG}/{name}: {message}" \
        in result.err, result.err
    assert hint in result.err
    built = project.run("build", f"issues/{SLUG}.yaml", "-o", "out")
    assert built.code == 1 and not (project.root / "out").exists()


def test_pixels_that_a_decoder_cannot_read_are_refused_even_when_the_container_is_whole(
        ) -> None:
    png = bytearray(clean_png(40, 30))
    start = png.index(b"IDAT") + 4
    length = struct.unpack(">I", png[start - 8:start - 4])[0]
    body = b"\x78\x9c" + b"\xff" * (length - 2)  # not a deflate stream, checksum made right
    png[start:start + length] = body
    png[start + length:start + length + 4] = struct.pack(">I", zlib.crc32(b"IDAT" + body))
    with pytest.raises(ImageError, match="cannot be decoded"):
        publishable(bytes(png))


def test_an_image_claiming_too_many_pixels_is_refused_before_it_is_decoded() -> None:
    huge = (b"\x89PNG\r\n\x1a\n"
            + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + png_chunk(b"IEND", b""))
    with pytest.raises(ImageError, match=r"30000×30000 pixels; the limit is 25 million"):
        publishable(huge)


# --------------------------------------------------------------------------- metadata


def test_photo_metadata_reaches_neither_the_build_nor_the_archive(project: Project) -> None:
    images = {"phone.jpg": photo(), "scan.png": png_with_text(),
              "loop.gif": gif_with_comment(), "still.webp": webp_with_metadata()}
    for data in images.values():
        assert any(secret in data for secret in SECRETS)  # the test images carry it
    with_images(project, images)
    run_ok(project, "build", f"issues/{SLUG}.yaml", "-o", "out")
    run_ok(project, "archive", "-o", "site", "--no-members")
    for folder in (project.root / "out", project.root / "site" / SLUG):
        files = published(folder)
        assert sorted(Path(n).suffix for n in files) == [".gif", ".jpg", ".png", ".webp"]
        for name, data in files.items():
            assert not [s for s in SECRETS if s in data], name
            assert metadata_in(data) == [], name
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                tags = image.getexif()
                assert 0x8825 not in tags and 0x013B not in tags and 0x010F not in tags
                assert "comment" not in image.info and "xmp" not in image.info
                assert not {k for k in image.info if k in ("Author", "Comment", "Description",
                                                           "XML:com.adobe.xmp")}
    # the pixels themselves are untouched: a JPEG is not compressed a second time
    source = Image.open(io.BytesIO(images["phone.jpg"]))
    out = next(d for n, d in published(project.root / "out").items() if n.endswith(".jpg"))
    assert Image.open(io.BytesIO(out)).tobytes() == source.tobytes()
    eml = (project.root / "out" / "email.eml").read_bytes()
    assert not [s for s in SECRETS if s in eml]


def test_the_orientation_survives_alone_and_the_email_gets_the_size_as_shown(
        project: Project) -> None:
    with_images(project, {"portrait.jpg": photo(size=(400, 300), orientation=6)})
    run_ok(project, "build", f"issues/{SLUG}.yaml", "-o", "out")
    [(_, data)] = published(project.root / "out").items()
    with Image.open(io.BytesIO(data)) as image:
        assert dict(image.getexif()) == {0x0112: 6}
        assert image.size == (400, 300)  # stored on its side, shown upright
    html = (project.root / "out" / "email.html").read_text()
    assert re.search(r'<img[^>]+width="300"', html), html


def test_publishing_is_deterministic_and_a_clean_image_is_published_byte_for_byte(
        project: Project) -> None:
    clean = clean_png()
    with_images(project, {"phone.jpg": photo(), "clean.png": clean})
    run_ok(project, "build", f"issues/{SLUG}.yaml", "-o", "one")
    run_ok(project, "build", f"issues/{SLUG}.yaml", "-o", "two")
    one, two = published(project.root / "one"), published(project.root / "two")
    assert one == two
    assert clean in one.values()
    assert publishable(one[next(n for n in one if n.endswith(".jpg"))]).removed == ()


def test_the_archive_keeps_unchanged_images_and_a_metadata_only_edit_changes_no_file(
        project: Project) -> None:
    issue = with_images(project, {"phone.jpg": photo()})
    run_ok(project, "archive", "-o", "site", "--no-members")
    names = published(project.root / "site" / SLUG)
    out = run_ok(project, "archive", "-o", "site", "--no-members")
    assert re.search(r"\(0 files written, \d+ unchanged, 0 issues rendered\)", out), out

    # the photographer's name changes in the EXIF only: the same bytes are published
    (issue.parent / SLUG / "phone.jpg").write_bytes(photo(artist="Someone Else, 3 Other Road"))
    out = run_ok(project, "archive", "-o", "site", "--no-members")
    assert re.search(r"\(0 files written, \d+ unchanged, 1 issues rendered\)", out), out
    assert published(project.root / "site" / SLUG) == names

    # new pixels: a new name, the old file gone
    (issue.parent / SLUG / "phone.jpg").write_bytes(photo(size=(80, 48)))
    out = run_ok(project, "archive", "-o", "site", "--no-members")
    now = published(project.root / "site" / SLUG)
    assert set(now) != set(names) and len(now) == 1
    assert f"{SLUG}/{next(iter(now))}" in out or "files written" in out

    # a published image edited by hand is put right on the next build
    target = project.root / "site" / SLUG / next(iter(now))
    target.write_bytes(photo(size=(80, 48)))  # metadata and all
    run_ok(project, "archive", "-o", "site", "--no-members")
    assert published(project.root / "site" / SLUG) == now


def test_the_privacy_gate_refuses_an_image_with_metadata_copied_in_by_hand(
        project: Project) -> None:
    imported = project.run("subscribers", "import", "subscribers/members.csv", "--list", "news")
    assert imported.code == 0, imported.err
    member = next(line.split(",")[0] for line in
                  (project.root / "subscribers/members.csv").read_text().splitlines()[1:])
    static = project.root / "templates/archive/static"
    (static / "banner.jpg").write_bytes(photo())
    data = clean_png()[:-12] + png_chunk(b"tEXt", b"Author\0" + member.encode()) \
        + clean_png()[-12:]
    (static / "logo.png").write_bytes(data)
    result = project.run("archive", "-o", "site", "--no-members")
    assert result.code == 1 and "Traceback" not in result.err
    assert "site/static/banner.jpg: image metadata: EXIF (GPS position, Artist, Make)" \
        in result.err, result.err
    assert "site/static/banner.jpg: image metadata: XMP" in result.err
    assert "site/static/banner.jpg: image metadata: JPEG comment" in result.err
    assert "site/static/logo.png: image metadata: PNG text chunk" in result.err
    assert f"site/static/logo.png: subscriber address {member.lower()} from the state " \
           "database inside an image" in result.err
    assert "nothing was published" in result.err
    assert not (project.root / "site").exists()

    (static / "banner.jpg").unlink()
    shutil.copy(project.root / "issues/2017-02-news/books.png", static / "logo.png")
    run_ok(project, "archive", "-o", "site", "--no-members")  # a clean image passes


def test_a_member_address_in_utf16_metadata_is_found_too() -> None:
    from newsletter.archive.privacy import Policy, scan_image

    policy = Policy(frozenset(), frozenset(), frozenset(), frozenset({"ann@example.org"}),
                    None)
    hidden = clean_png()[:-12] + png_chunk(b"zzZz", "ann@example.org".encode("utf-16-le")) \
        + clean_png()[-12:]
    messages = [p.message for p in scan_image(hidden, policy, "site/x.png")]
    assert "subscriber address ann@example.org from the state database inside an image" \
        in messages
    assert "image metadata: PNG 'zzZz' chunk (publishing an image leaves it out; was this " \
           "file copied in by hand?)" in messages
    assert scan_image(clean_png(), policy, "site/x.png") == []


# --------------------------------------------------------------------------- robustness

SEEDS = [photo(size=(24, 16), orientation=6), png_with_text(), gif_with_comment(),
         webp_with_metadata(), polyglot(b"alert(1)"), clean_png()]


@pytest.mark.filterwarnings("error")  # nothing of Pillow's may reach the editor's terminal
@settings(max_examples=400, deadline=None)
@given(seed=st.sampled_from(range(len(SEEDS))), data=st.data())
def test_damaged_images_are_refused_or_published_clean_never_a_crash(
        seed: int, data: st.DataObject) -> None:
    """Random damage (bytes changed, cut, inserted) to images with metadata: publishing
    refuses with an ImageError or gives a decodable image with nothing left to remove,
    and publishing that again changes nothing."""
    image = bytearray(SEEDS[seed])
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(image) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            image[at] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del image[at:at + data.draw(st.integers(1, 64))]
        else:
            image[at:at] = data.draw(st.binary(min_size=1, max_size=16))
        if not image:
            return
    try:
        result = publishable(bytes(image))
    except ImageError:
        return
    assert metadata_in(result.data) == []
    assert publishable(result.data).data == result.data
