"""The one door through which images we did not make become pixels: training data, photos given to
``predict``, template crops. Only the formats a face photo comes in are tried (Pillow would also try
EPS, which runs Ghostscript, and a dozen rarer decoders), the size the header declares is checked
before a pixel is decoded, and every failure of the decoder is one error, ``ImageUnreadable``.

The cap, ``DEFAULT_MAX_PIXELS`` (70 million pixels: the 64-megapixel photos of current phone
sensors pass, and decoding one peaks near 0.55 GB), can be changed per call (``limit``,
``predict --max-pixels``) or for every entry with ``$LEMUR_MAX_IMAGE_PIXELS``. Pillow's own hard
limit (``2 * PIL.Image.MAX_IMAGE_PIXELS``, 179 million pixels) holds whatever the cap: a larger
image is refused with the same error.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

DEFAULT_MAX_PIXELS = 70_000_000
MAX_PIXELS_ENV = "LEMUR_MAX_IMAGE_PIXELS"
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
"""Decoders tried, by Pillow's names (JPEG includes the multi-picture JPEG some cameras write)."""


class ImageUnreadable(ValueError):
    """A file or bytes that do not decode to an image within the cap; the message says which and why."""


class ImageTooLarge(ImageUnreadable):
    """An image whose header declares more pixels than the cap."""


def max_pixels(value: int | None = None) -> int:
    """The cap in force: ``value``, else ``$LEMUR_MAX_IMAGE_PIXELS``, else ``DEFAULT_MAX_PIXELS``."""
    if value is None:
        text = os.environ.get(MAX_PIXELS_ENV, "").strip()
        if not text:
            return DEFAULT_MAX_PIXELS
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            raise ValueError(f"${MAX_PIXELS_ENV} must be a whole number of pixels, got {text!r}") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"the image pixel cap must be a positive whole number, got {value!r}")
    return value


def open_image(source: bytes | bytearray | str | Path, box=None, upright: bool = False,
               limit: int | None = None, name: str | None = None):
    """An RGB PIL image decoded from a file path or encoded bytes, turned upright by its EXIF
    orientation when ``upright``, cropped to ``box`` (left, top, right, bottom) when given.

    Raises ``ImageUnreadable`` (``ImageTooLarge`` past the cap of ``limit`` pixels, see
    ``max_pixels``) and nothing else for any content of the file; ``name`` names it in the message
    (default: the path, or "image")."""
    from PIL import Image, ImageOps

    cap = max_pixels(limit)
    is_bytes = isinstance(source, (bytes, bytearray, memoryview))
    label = name or ("image" if is_bytes else str(source))
    if not is_bytes:
        path = Path(source)
        if not path.exists():
            raise ImageUnreadable(f"{label}: no such file")
        if not path.is_file():
            raise ImageUnreadable(f"{label}: not a regular file")
    try:
        with Image.open(io.BytesIO(source) if is_bytes else source, formats=FORMATS) as raw:
            width, height = raw.size
            if width * height > cap:
                raise ImageTooLarge(f"{label}: {width}x{height} is {width * height:,} pixels, more than the cap of "
                                    f"{cap:,} (--max-pixels or ${MAX_PIXELS_ENV})")
            raw.load()
            image = (ImageOps.exif_transpose(raw) if upright else raw).convert("RGB")
        if box is not None:
            left, top, right, bottom = box
            if (right - left) * (bottom - top) > cap:
                raise ImageTooLarge(f"{label}: a crop of {right - left}x{bottom - top} is more than the cap of "
                                    f"{cap:,} pixels")
            image = image.crop(box)
    except ImageUnreadable:
        raise
    except Image.DecompressionBombError as error:
        raise ImageTooLarge(f"{label}: refused by Pillow before decoding ({error})") from None
    except Exception as error:  # any failure of a decoder on hostile bytes: the file is not an image to us
        raise ImageUnreadable(f"{label}: not a readable image ({type(error).__name__}: {error})") from None
    return image
