"""Encoded images whose header declares any size: a few hundred bytes that claim gigapixels, as an
attacker sends them (the pixel data after the header is that of a tiny image, or none)."""
import io
import struct
import zlib

from PIL import Image

FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


def encoded(fmt: str, size=(4, 3), **options) -> bytes:
    """A real small image in ``fmt``."""
    buffer = io.BytesIO()
    image = Image.new("RGB", size, (10, 200, 30))
    image.save(buffer, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}), **options)
    return buffer.getvalue()


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\0" + b"\x80" * 3 * min(width, 16))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def _tiff(width: int, height: int) -> bytes:
    data = bytearray(encoded("TIFF"))
    (ifd,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd)
    for i in range(count):
        at = ifd + 2 + 12 * i
        tag, _, _, _ = struct.unpack_from("<HHII", data, at)
        if tag in (256, 257):
            struct.pack_into("<HHII", data, at, tag, 4, 1, width if tag == 256 else height)
    return bytes(data)


def declaring(fmt: str, width: int, height: int) -> bytes:
    """An image in ``fmt`` whose header says ``width`` x ``height`` (within the format's own field
    widths: 16 bits for JPEG and GIF, 14 for WebP, 31 for PNG, BMP and TIFF)."""
    if fmt == "PNG":
        return _png(width, height)
    if fmt == "TIFF":
        return _tiff(width, height)
    data = bytearray(encoded(fmt))
    if fmt == "JPEG":
        at = data.index(b"\xff\xc0") + 5
        struct.pack_into(">HH", data, at, height, width)
    elif fmt == "GIF":
        struct.pack_into("<HH", data, 6, width, height)
    elif fmt == "BMP":
        struct.pack_into("<ii", data, 18, width, height)
    elif fmt == "WEBP":  # VP8L: 14 bits of width - 1, 14 of height - 1, then alpha and version
        (bits,) = struct.unpack_from("<I", data, 21)
        bits = (bits & ~0xFFFFFFF) | (width - 1) | (height - 1) << 14
        struct.pack_into("<I", data, 21, bits)
    else:
        raise ValueError(fmt)
    return bytes(data)
