"""Images from outside, through the one decoder every entry uses: the declared size is checked before
a pixel is decoded, only face-photo formats are tried, and every failure is ``ImageUnreadable``."""
import io
import os
import time
from collections import Counter

import pytest
from PIL import Image

from ab.nn.dataset import utkface
from ab.nn.dataset.decode import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV, ImageTooLarge, ImageUnreadable, max_pixels, \
    open_image
from ab.nn.dataset.settings import DataSettings
from ab.nn.transform import norm_64
from tests import helpers
from tests.crafted import FORMATS, declaring, encoded

PILLOW_WARNS = Image.MAX_IMAGE_PIXELS          # 89.5 million: Pillow warns and decodes anyway
PILLOW_REFUSES = 2 * Image.MAX_IMAGE_PIXELS    # 179 million: Pillow raises DecompressionBombError


@pytest.mark.parametrize("fmt", FORMATS + ("MPO",))
def test_a_small_image_of_every_accepted_format_decodes(fmt):
    image = open_image(encoded(fmt, size=(7, 5)))
    assert image.mode == "RGB" and image.size == (7, 5)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("width, height", [(9000, 8000),      # 72 MP: over the cap, under Pillow's warning
                                           (10000, 10000),    # 100 MP: Pillow would warn and decode it whole
                                           (16000, 12000),    # 192 MP: Pillow raises its own error
                                           (65535, 65535)])
def test_a_declared_size_over_the_cap_is_refused_before_decoding(fmt, width, height, recwarn):
    if fmt == "WEBP" and width > 16384:
        pytest.skip("WebP sizes are 14 bits")
    data = declaring(fmt, width, height)
    assert len(data) < 2000
    started = time.process_time()
    with pytest.raises(ImageTooLarge) as refused:
        open_image(data, name="huge." + fmt.lower())
    assert time.process_time() - started < 0.5  # nothing was decoded
    message = str(refused.value)
    assert message.startswith(f"huge.{fmt.lower()}: ")
    if width * height < PILLOW_REFUSES:
        assert f"{width}x{height} is {width * height:,} pixels, more than the cap of {DEFAULT_MAX_PIXELS:,}" in message
    else:
        assert "refused by Pillow before decoding" in message


def test_the_cap_is_set_per_call_or_for_every_entry_by_the_environment(monkeypatch):
    small = encoded("PNG", size=(20, 10))
    assert open_image(small, limit=200).size == (20, 10)
    with pytest.raises(ImageTooLarge, match="20x10 is 200 pixels, more than the cap of 199"):
        open_image(small, limit=199)
    monkeypatch.setenv(MAX_PIXELS_ENV, "150")
    assert max_pixels() == 150
    with pytest.raises(ImageTooLarge, match="cap of 150"):
        open_image(small)
    assert open_image(small, limit=500).size == (20, 10)  # a call's own cap wins
    monkeypatch.setenv(MAX_PIXELS_ENV, "many")
    with pytest.raises(ValueError, match=f"\\${MAX_PIXELS_ENV} must be a whole number"):
        open_image(small)
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="positive whole number"):
            max_pixels(bad)


def test_a_crop_box_is_bounded_like_the_image():
    with pytest.raises(ImageTooLarge, match="a crop of 100000x100000"):
        open_image(encoded("PNG"), box=(0, 0, 100_000, 100_000))
    assert open_image(encoded("PNG", size=(8, 8)), box=(2, 2, 6, 5)).size == (4, 3)


@pytest.mark.parametrize("data", [
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",  # EPS: Pillow would run Ghostscript
    b"\x0a\x05\x01\x08" + bytes(124),                                 # PCX header
    b"",
    b"\xff\xd8\xff\xe0 not really a jpeg" * 20,
])
def test_other_formats_and_broken_bytes_are_unreadable(data):
    with pytest.raises(ImageUnreadable, match="image: not a readable image"):
        open_image(data)


def test_truncated_images_of_every_format_are_unreadable():
    for fmt in FORMATS:
        data = encoded(fmt, size=(64, 48))
        with pytest.raises(ImageUnreadable, match="not a readable image"):
            open_image(data[: len(data) // 2])


def test_paths_that_are_not_image_files(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")  # opening it to read would wait for a writer forever
    (tmp_path / "folder.jpg").mkdir()
    for name, message in (("pipe.jpg", "not a regular file"), ("folder.jpg", "not a regular file"),
                          ("missing.jpg", "no such file")):
        with pytest.raises(ImageUnreadable, match=message):
            open_image(tmp_path / name)
    (tmp_path / "ok.png").write_bytes(encoded("PNG"))
    assert open_image(str(tmp_path / "ok.png")).size == (4, 3)


def test_exif_orientation_is_applied_only_when_asked():
    image = Image.new("RGB", (30, 20), (200, 10, 10))
    exif = image.getexif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    assert open_image(buffer.getvalue()).size == (30, 20)
    assert open_image(buffer.getvalue(), upright=True).size == (20, 30)


def test_the_training_loader_skips_an_oversized_image_and_goes_on(tmp_path):
    folder = tmp_path / "UTKFace"
    helpers.make_utkface(folder, count=20)
    (folder / helpers.utk_name(30, 0, 0, 900).replace(".jpg.chip.jpg", ".png")).write_bytes(
        declaring("PNG", 10000, 10000))
    (folder / helpers.utk_name(31, 0, 0, 901)).write_bytes(declaring("JPEG", 16000, 12000))
    parts = utkface.load(tmp_path, tmp_path / "cache", norm_64.transform(utkface.IMAGENET_NORM),
                         norm_64.eval_transform(utkface.IMAGENET_NORM), DataSettings(), progress=False)
    assert parts.skipped == Counter({"undecodable image: ImageTooLarge": 2})
    assert len(parts.train) + len(parts.eval) + len(parts.test) == 20
