"""Local images as they may be published: decodable, of a known type, without metadata.

Part of the load stage. In: the bytes of an image file an issue names. Out: a
:class:`Publishable` (the bytes to publish, the real media type, which names the published
file's extension, and the display size), or :class:`ImageError` saying why the file cannot be
published. The outputs (the build folder, the archive, the preview) take the bytes to
publish from :func:`published_bytes`; the archive's privacy gate asks :func:`metadata_in`
what a file still carries.

The type comes from the bytes (``sniff_image``), never from the editor's file name: a
GIF saved as ``.js`` is published as ``.gif``. The container is then rebuilt from an
allowlist of the parts a decoder needs (pixels, palette, transparency, colour profile,
animation timing); everything else is left out: EXIF (the GPS position, the camera owner's
name), XMP, IPTC, comments, PNG text chunks, GIF comment and plain-text extensions, and
any bytes after the image's end marker, where a script or page rides along in a
polyglot file. Only the EXIF orientation survives, as a minimal EXIF block of its own, so
a portrait photo is not shown on its side. Pixels are never re-encoded, so a JPEG loses
no quality and a file with nothing to remove is published byte for byte; the output
depends on the input alone (no clock, no library version). Finally Pillow decodes every
frame of the result, so a truncated or corrupt file is refused by ``check``, not shown
broken in the inbox.
"""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import msgspec

from newsletter.errors import InputError, Problem
from newsletter.model import Location

MAX_PIXELS = 25_000_000  # per frame: a 1 MB file can claim far more than memory holds
MAX_TOTAL_PIXELS = 100_000_000  # all frames of an animation together
_PILLOW_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF",
                   "image/webp": "WEBP"}
ORIENTATION = 0x0112
_NAMED_TAGS = {0x013B: "Artist", 0x8298: "Copyright", 0x010F: "Make", 0x0110: "Model",
               0x010E: "ImageDescription", 0x9286: "UserComment", 0xA430: "CameraOwnerName",
               0xA431: "BodySerialNumber", 0x0132: "DateTime"}
_GPS_IFD = 0x8825


class ImageError(ValueError):
    """Why an image cannot be published, with a hint for the editor."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class Publishable(msgspec.Struct, frozen=True):
    data: bytes  # what is published: the file less its metadata
    media_type: str  # image/png, image/jpeg, image/gif or image/webp
    width: int  # as displayed (after the EXIF orientation)
    height: int
    removed: tuple[str, ...] = ()  # what was left out, for messages: "EXIF (GPS position)"


_BROKEN_HINT = "open it in an image editor and export it again as PNG, JPEG, GIF or WebP"


def publishable(data: bytes) -> Publishable:
    """The image as it may be published; ImageError when it is not an image we can use."""
    sniffed = sniff_image(data)
    if sniffed is None:
        raise ImageError("not a PNG, JPEG, GIF or WebP image",
                         "export it in one of those formats")
    media_type, width, height = sniffed
    if width * height > MAX_PIXELS:  # from the header: refused before anything is decoded
        raise _too_big(width, height)
    clean, removed = _STRIPPERS[media_type](data)
    width, height = _decode(clean, media_type)
    return Publishable(clean, media_type, width, height, tuple(removed))


def published_bytes(path: Path, digest: str) -> bytes:
    """The bytes to publish for the image file ``path`` that load.py checked as ``digest``.

    Read again at the output's edge rather than kept in memory; the file must still be
    the one that was checked (InputError otherwise: it changed during the build).
    """
    data = path.read_bytes()
    sniffed = sniff_image(data)
    if sniffed is None or hashlib.sha256(data).hexdigest() != digest:
        raise InputError([Problem(Location(str(path)), "", "the image changed while it was "
                                  "being published", "run the command again")])
    return _STRIPPERS[sniffed[0]](data)[0]


def metadata_in(data: bytes) -> list[str]:
    """What publishing would remove from an image file: [] for a clean one.

    For the privacy gate: a file that is no well-formed image is reported as such.
    """
    sniffed = sniff_image(data)
    if sniffed is None:
        return ["not a PNG, JPEG, GIF or WebP image"]
    try:
        return _STRIPPERS[sniffed[0]](data)[1]
    except ImageError as e:
        return [e.message]


def sniff_image(data: bytes) -> tuple[str, int, int] | None:
    """``(media type, width, height)`` from the file's own header, or None."""
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
            width, height = struct.unpack(">II", data[16:24])
            return "image/png", width, height
        if data[:6] in (b"GIF87a", b"GIF89a"):
            width, height = struct.unpack("<HH", data[6:10])
            return "image/gif", width, height
        if data.startswith(b"\xff\xd8\xff"):
            size = _jpeg_size(data)
            return ("image/jpeg", *size) if size else None
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            size = _webp_size(data)
            return ("image/webp", *size) if size else None
    except (struct.error, IndexError):  # a header cut short: not an image we can use
        return None
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        i += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and data[20] == 0x2F:
        (bits,) = struct.unpack("<I", data[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    return None


def _too_big(width: int, height: int, frames: int = 1) -> ImageError:
    limit = f"{MAX_PIXELS // 1_000_000} million pixels"
    if frames > 1:
        limit += f", {MAX_TOTAL_PIXELS // 1_000_000} million in all frames"
    return ImageError(f"the image is {width}×{height} pixels"
                      f"{f' in {frames} frames' if frames > 1 else ''}; the limit is {limit}",
                      "resize it; 1200 pixels wide is plenty for an email")


def _truncated(what: str) -> ImageError:
    return ImageError(f"the {what} is cut short (an incomplete download or copy?)",
                      _BROKEN_HINT)


def _malformed(what: str) -> ImageError:
    return ImageError(f"not a well-formed {what}", _BROKEN_HINT)


# --------------------------------------------------------------------------- decoding


def _decode(data: bytes, media_type: str) -> tuple[int, int]:
    """Decode every frame with Pillow; the display size. ImageError if it cannot be."""
    from PIL import Image, ImageSequence

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's notes on odd files: not for the editor
            with Image.open(io.BytesIO(data), formats=[_PILLOW_FORMATS[media_type]]) as image:
                width, height = image.size
                frames = getattr(image, "n_frames", 1)
                if width * height > MAX_PIXELS or width * height * frames > MAX_TOTAL_PIXELS:
                    raise _too_big(width, height, frames)
                for frame in ImageSequence.Iterator(image):
                    frame.load()
                orientation = image.getexif().get(ORIENTATION, 1)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError("the image claims more pixels than can be decoded safely",
                         "resize it; 1200 pixels wide is plenty for an email") from e
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error,
            zlib.error) as e:
        # Pillow's decoders report a damaged file in each of these ways
        why = str(e) or type(e).__name__
        if "truncated" in why or isinstance(e, EOFError):
            raise _truncated("image data") from e
        raise ImageError(f"the image cannot be decoded ({why})", _BROKEN_HINT) from e
    # orientations 5 to 8 turn the picture a quarter: shown, it is as wide as it is high
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _orientation(tiff: bytes) -> tuple[int, list[str]]:
    """The orientation in an EXIF (TIFF) block, and the notable things it carries."""
    from PIL import Image

    exif = Image.Exif()
    try:
        with warnings.catch_warnings():  # "Corrupt EXIF data": said here, not on stderr
            warnings.simplefilter("ignore")
            exif.load(tiff)
            tags = dict(exif)
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, struct.error):
        return 1, []  # unreadable: nothing of it is kept
    orientation = tags.get(ORIENTATION, 1)
    notable = ["GPS position"] if _GPS_IFD in tags else []
    notable += [name for tag, name in _NAMED_TAGS.items() if tag in tags]
    return (orientation if orientation in range(1, 9) else 1), notable


def _minimal_exif(orientation: int) -> bytes:
    """A TIFF block holding the orientation alone (little-endian, one IFD, one entry)."""
    entry = struct.pack("<HHIHH", ORIENTATION, 3, 1, orientation, 0)
    return b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + entry + b"\0\0\0\0"


def _exif_kept(tiff: bytes, removed: list[str], *, keep: bool = True) -> bytes | None:
    """The EXIF block to publish in place of ``tiff``: the orientation alone, or nothing."""
    orientation, notable = _orientation(tiff)
    kept = _minimal_exif(orientation) if orientation != 1 and keep else None
    if tiff != kept:
        removed.append("EXIF" + (f" ({', '.join(notable)})" if notable else ""))
    return kept


# --------------------------------------------------------------------------- PNG

# Chunks a viewer needs: pixels, palette, transparency, colour, density, animation (APNG).
_PNG_KEEP = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"cHRM", b"gAMA",
                       b"iCCP", b"sBIT", b"sRGB", b"cICP", b"bKGD", b"pHYs", b"acTL",
                       b"fcTL", b"fdAT"})
_PNG_TEXT = {b"tEXt": "PNG text chunk", b"zTXt": "PNG compressed text chunk",
             b"iTXt": "PNG international text chunk", b"tIME": "PNG modification time"}


def _png(data: bytes) -> tuple[bytes, list[str]]:
    out = [data[:8]]
    removed: list[str] = []
    i = 8
    while True:
        if i + 8 > len(data):
            raise _truncated("PNG file")
        (length,) = struct.unpack(">I", data[i:i + 4])
        kind = data[i + 4:i + 8]
        end = i + 12 + length
        if end > len(data):
            raise _truncated("PNG file")
        body = data[i + 8:i + 8 + length]
        if zlib.crc32(kind + body) != struct.unpack(">I", data[end - 4:end])[0]:
            raise _malformed(f"PNG file (the {kind.decode('latin-1')!r} chunk is damaged)")
        if kind in _PNG_KEEP:
            out.append(data[i:end])
        elif kind == b"eXIf":
            kept = _exif_kept(body, removed)
            if kept is not None:
                out.append(struct.pack(">I", len(kept)) + b"eXIf" + kept
                           + struct.pack(">I", zlib.crc32(b"eXIf" + kept)))
        elif kind == b"iTXt" and body.startswith(b"XML:com.adobe.xmp\0"):
            removed.append("XMP")
        else:
            removed.append(_PNG_TEXT.get(kind, f"PNG {kind.decode('latin-1')!r} chunk"))
        i = end
        if kind == b"IEND":
            break
    if i < len(data):
        removed.append(f"{len(data) - i} bytes after the end of the image")
    return b"".join(out), removed


# --------------------------------------------------------------------------- JPEG

_JPEG_SEGMENTS = frozenset({*range(0xC0, 0xD0), 0xDB, 0xDD, 0xDC, 0xDE, 0xDF})
_JPEG_APP = {0xE1: "EXIF or XMP", 0xED: "IPTC", 0xFE: "JPEG comment"}


def _jpeg(data: bytes) -> tuple[bytes, list[str]]:
    head: list[bytes] = [b"\xff\xd8"]
    body: list[bytes] = []
    removed: list[str] = []
    exif: bytes | None = None
    i = 2
    while True:
        while i + 1 < len(data) and data[i] == 0xFF and data[i + 1] == 0xFF:
            i += 1  # fill bytes before a marker
        if i + 2 > len(data):
            raise _truncated("JPEG file")
        if data[i] != 0xFF:
            raise _malformed("JPEG file")
        marker = data[i + 1]
        if marker == 0xD9:  # end of image: whatever follows is not part of it
            body.append(b"\xff\xd9")
            i += 2
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # no length
            body.append(data[i:i + 2])
            i += 2
            continue
        if i + 4 > len(data):
            raise _truncated("JPEG file")
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        end = i + 2 + length
        if length < 2 or end > len(data):
            raise _truncated("JPEG file")
        segment, payload = data[i:end], data[i + 4:end]
        i = end
        if marker == 0xDA:  # start of scan: the compressed data runs to the next marker
            scan = _scan_end(data, i)
            body.append(segment + data[i:scan])
            i = scan
        elif marker in _JPEG_SEGMENTS:
            body.append(segment)
        elif marker == 0xE0 and payload.startswith(b"JFIF\0") and length == 16 and not body \
                and len(head) == 1:
            head.append(segment)  # JFIF without a thumbnail, where JFIF belongs
        elif marker == 0xE2 and payload.startswith(b"ICC_PROFILE\0"):
            body.append(segment)
        elif marker == 0xEE and payload.startswith(b"Adobe"):
            body.append(segment)  # says how the colours were transformed: needed to decode
        elif marker == 0xE1 and payload.startswith(b"Exif\0\0") and exif is None:
            kept = _exif_kept(payload[6:], removed)
            exif = b"" if kept is None else \
                b"\xff\xe1" + struct.pack(">H", len(kept) + 8) + b"Exif\0\0" + kept
        elif marker == 0xE1 and payload.startswith(b"http://ns.adobe.com/xap/1.0/"):
            removed.append("XMP")
        elif marker == 0xE0:
            removed.append("JFIF thumbnail or extension")
        else:
            removed.append(_JPEG_APP.get(marker, f"JPEG APP{marker - 0xE0} segment"
                                         if 0xE0 <= marker <= 0xEF else
                                         f"JPEG segment {marker:#04x}"))
    if i < len(data):
        removed.append(f"{len(data) - i} bytes after the end of the image")
    return b"".join([*head, exif or b"", *body]), removed


def _scan_end(data: bytes, i: int) -> int:
    """Where the entropy-coded data that starts at ``i`` ends: at the next real marker."""
    while True:
        i = data.find(b"\xff", i)
        if i < 0 or i + 1 >= len(data):
            raise _truncated("JPEG file")
        following = data[i + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
            i += 1 if following == 0xFF else 2  # a stuffed byte, a restart marker, a fill
            continue
        return i


# --------------------------------------------------------------------------- GIF

_LOOPING = (b"NETSCAPE2.0", b"ANIMEXTS1.0")


def _gif(data: bytes) -> tuple[bytes, list[str]]:
    if len(data) < 13:
        raise _truncated("GIF file")
    flags = data[10]
    i = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    if i > len(data):
        raise _truncated("GIF file")
    out = [data[:i]]
    removed: list[str] = []
    while True:
        if i >= len(data):
            raise _truncated("GIF file")
        kind = data[i]
        if kind == 0x3B:  # the trailer
            out.append(b";")
            i += 1
            break
        if kind == 0x2C:  # an image: descriptor, local colour table, LZW code size, data
            if i + 10 > len(data):
                raise _truncated("GIF file")
            local = data[i + 9]
            start = i
            i += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1
            _, i = _sub_blocks(data, i)
            out.append(data[start:i])
        elif kind == 0x21:  # an extension
            if i + 2 > len(data):
                raise _truncated("GIF file")
            label, start = data[i + 1], i
            blocks, i = _sub_blocks(data, i + 2)
            kept = b""
            if label == 0xF9 and blocks and len(blocks[0]) == 4:  # frame timing, transparency
                kept = b"\x21\xf9\x04" + blocks[0] + b"\0"
            elif label == 0xFF and blocks and blocks[0] in _LOOPING and len(blocks) > 1 \
                    and len(blocks[1]) == 3 and blocks[1][0] == 1:
                kept = b"\x21\xff\x0b" + blocks[0] + b"\x03" + blocks[1] + b"\0"
            if kept:
                out.append(kept)
                if kept != data[start:i]:
                    removed.append("data appended to a GIF extension")
            elif label == 0xFE:
                removed.append("GIF comment")
            elif label == 0x01:
                removed.append("GIF plain text extension")
            elif label == 0xFF and blocks and blocks[0] == b"XMP DataXMP":
                removed.append("XMP")
            else:
                removed.append(f"GIF extension {label:#04x}")
        else:
            raise _malformed("GIF file")
    if i < len(data):
        removed.append(f"{len(data) - i} bytes after the end of the image")
    return b"".join(out), removed


def _sub_blocks(data: bytes, i: int) -> tuple[list[bytes], int]:
    """The data sub-blocks starting at ``i`` (each a length byte, then that many bytes,
    up to a zero length), and where they end."""
    blocks: list[bytes] = []
    while True:
        if i >= len(data):
            raise _truncated("GIF file")
        size = data[i]
        if size == 0:
            return blocks, i + 1
        if i + 1 + size > len(data):
            raise _truncated("GIF file")
        blocks.append(data[i + 1:i + 1 + size])
        i += 1 + size


# --------------------------------------------------------------------------- WebP

_WEBP_KEEP = frozenset({b"VP8 ", b"VP8L", b"VP8X", b"ALPH", b"ANIM", b"ANMF", b"ICCP"})
_VP8X_EXIF, _VP8X_XMP = 0x08, 0x04


def _webp(data: bytes) -> tuple[bytes, list[str]]:
    if len(data) < 12:
        raise _truncated("WebP file")
    (size,) = struct.unpack("<I", data[4:8])
    end = 8 + size
    if end > len(data):
        raise _truncated("WebP file")
    chunks: list[bytes] = []
    removed: list[str] = []
    i = 12
    while i < end:
        if i + 8 > end:
            raise _truncated("WebP file")
        kind = data[i:i + 4]
        (length,) = struct.unpack("<I", data[i + 4:i + 8])
        stop = i + 8 + length + (length & 1)
        if i + 8 + length > end:
            raise _truncated("WebP file")
        chunk = data[i:min(stop, end)]
        if kind == b"VP8X" and length >= 10:
            flags = chunk[8] & ~(_VP8X_EXIF | _VP8X_XMP)
            chunk = chunk[:8] + bytes([flags]) + chunk[9:]
        if kind in _WEBP_KEEP:
            chunks.append(chunk + (b"\0" if len(chunk) & 1 else b""))
        elif kind == b"EXIF":
            _exif_kept(chunk[8:].removeprefix(b"Exif\0\0"), removed, keep=False)
        else:
            removed.append("XMP" if kind == b"XMP " else
                           f"WebP {kind.decode('latin-1')!r} chunk")
        i = stop
    if end < len(data):
        removed.append(f"{len(data) - end} bytes after the end of the image")
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body, removed


_STRIPPERS: dict[str, Callable[[bytes], tuple[bytes, list[str]]]] = {
    "image/png": _png, "image/jpeg": _jpeg, "image/gif": _gif, "image/webp": _webp}
