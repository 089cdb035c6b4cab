"""Synthetic scenes for tests and benchmarks: an aligned face crop scaled, rotated and pasted into a
generated background at a known similarity transform, so what detection and alignment recover can
be compared with the truth.

Hard scenes, where a detector is easily fooled: faceless backgrounds with face-like texture
(``FACELESS``: skin-toned blotches, skin-coloured blobs with dark spots, mosaics of shuffled tiles
cut from face crops) and faces pasted onto them with a hard edge, a feathered edge or as an
elliptical cut-out (``EDGES``), so the crop's corners show the scene instead of UTKFace's own
background. Everything is drawn from the seed; nothing is read but the crops given."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def background(width: int = 640, height: int = 480, seed: int = 0) -> Image.Image:
    """A non-trivial background: a colour gradient, overlapping rectangles, ellipses and lines in
    random colours, and blurred noise."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0, 1, width)[None, :, None]
    pixels = (a * (1 - ramp) + b * ramp) * np.ones((height, 1, 1))
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(8, 16))):
        x0, y0 = int(rng.integers(-50, width)), int(rng.integers(-50, height))
        x1, y1 = x0 + int(rng.integers(20, 250)), y0 + int(rng.integers(20, 200))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = int(rng.integers(3))
        if shape == 0:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        elif shape == 1:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(2, 12)))
    noise = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).filter(
        ImageFilter.GaussianBlur(1.0))
    return Image.blend(image, noise, 0.15)


SKIN = np.array([[255, 224, 196], [234, 192, 160], [224, 172, 140], [198, 134, 102], [170, 120, 90],
                 [141, 85, 56], [110, 70, 48], [80, 52, 36]], np.float64)
"""Skin tones from light to dark (RGB)."""
FACELESS = ("plain", "skin", "blobs", "mosaic")
EDGES = ("hard", "soft", "cutout")


def _skin(rng: np.random.Generator) -> np.ndarray:
    low = int(rng.integers(len(SKIN) - 1))
    return SKIN[low] + rng.uniform() * (SKIN[low + 1] - SKIN[low])


def _smooth_field(rng: np.random.Generator, width: int, height: int, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1], (height, width): a random ``cells``-wide grid upsampled bicubically."""
    grid = rng.uniform(0, 255, (max(2, cells * height // width), cells)).astype(np.uint8)
    return np.asarray(Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC), np.float64) / 255


def skin_texture(width: int = 640, height: int = 480, seed: int = 0) -> Image.Image:
    """Skin-toned blotches: two skin tones mixed by smooth noise at two scales, darker blurred
    spots (pores, moles, shadows) and fine grain."""
    rng = np.random.default_rng(seed)
    mix = 0.6 * _smooth_field(rng, width, height, int(rng.integers(3, 8))) \
        + 0.4 * _smooth_field(rng, width, height, int(rng.integers(12, 40)))
    pixels = _skin(rng) * (1 - mix[..., None]) + _skin(rng) * mix[..., None]
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    spots = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(spots)
    for _ in range(int(rng.integers(20, 80))):
        x, y, r = int(rng.integers(width)), int(rng.integers(height)), int(rng.integers(2, 18))
        draw.ellipse((x - r, y - r * rng.uniform(0.4, 1.0), x + r, y + r * rng.uniform(0.4, 1.0)),
                     fill=int(rng.integers(60, 200)))
    shade = Image.fromarray((pixels * rng.uniform(0.25, 0.6)).clip(0, 255).astype(np.uint8))
    image = Image.composite(shade, image, spots.filter(ImageFilter.GaussianBlur(float(rng.uniform(1, 4)))))
    grain = rng.normal(0, rng.uniform(2, 8), (height, width, 1))
    return Image.fromarray((np.asarray(image, np.float64) + grain).clip(0, 255).astype(np.uint8))


def skin_blobs(width: int = 640, height: int = 480, seed: int = 0) -> Image.Image:
    """Skin-coloured ellipses of face size on a generated background, each with one to four dark
    spots at random places, blurred as if out of focus. Placed at random, two spots above a third
    now and then make a schematic face, as a drawn smiley is one."""
    rng = np.random.default_rng(seed)
    image = background(width, height, seed=int(rng.integers(1 << 31)))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(4, 12))):
        w = int(rng.integers(50, 220))
        h = int(w * rng.uniform(1.0, 1.4))
        x0, y0 = int(rng.integers(-w // 3, width - w // 2)), int(rng.integers(-h // 3, height - h // 2))
        colour = _skin(rng)
        draw.ellipse((x0, y0, x0 + w, y0 + h), fill=tuple(int(v) for v in colour))
        for _ in range(int(rng.integers(1, 5))):
            r = int(w * rng.uniform(0.04, 0.12))
            x, y = x0 + int(rng.uniform(0.2, 0.8) * w), y0 + int(rng.uniform(0.2, 0.8) * h)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in colour * rng.uniform(0.1, 0.5)))
    return image.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.5, 6.0))))


def face_mosaic(crops, width: int = 640, height: int = 480, seed: int = 0, pieces: int = 4) -> Image.Image:
    """A mosaic of square tiles cut from face crops: each crop cut into ``pieces`` x ``pieces``
    tiles, tiles drawn at random from all crops, each turned by a random multiple of 90 degrees,
    maybe mirrored, and laid on a grid of a random tile size, so face texture is everywhere and no
    face is whole (a tile holds at most an eye or a mouth)."""
    rng = np.random.default_rng(seed)
    crops = [c.convert("RGB") for c in crops]
    if not crops:
        raise ValueError("face_mosaic needs at least one crop")
    tile = int(rng.integers(32, 96))
    image = Image.new("RGB", (width, height))
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            crop = crops[int(rng.integers(len(crops)))]
            step = crop.width // pieces
            i, j = int(rng.integers(pieces)), int(rng.integers(pieces))
            piece = crop.crop((i * step, j * step, (i + 1) * step, (j + 1) * step)).resize((tile, tile))
            piece = piece.rotate(90 * int(rng.integers(4)))
            if rng.uniform() < 0.5:
                piece = piece.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            image.paste(piece, (left, top))
    return image


def faceless(kind: str, width: int = 640, height: int = 480, seed: int = 0, crops=()) -> Image.Image:
    """A faceless scene of one of the ``FACELESS`` kinds (``mosaic`` needs ``crops``)."""
    if kind == "plain":
        return background(width, height, seed)
    if kind == "skin":
        return skin_texture(width, height, seed)
    if kind == "blobs":
        return skin_blobs(width, height, seed)
    if kind == "mosaic":
        return face_mosaic(crops, width, height, seed)
    raise ValueError(f"unknown scene kind {kind!r}; choose one of {', '.join(FACELESS)}")


def edge_mask(size: int, edge: str) -> Image.Image:
    """The alpha mask (L, ``size`` x ``size``) a crop is pasted with: ``hard`` opaque, ``soft`` opaque
    inside a border of 15 % of the side that fades out, ``cutout`` an ellipse around the face of
    an aligned crop (UTKFace geometry: eyes at 29 %, mouth at 73 % of the height) with a 2 % feather."""
    if edge == "hard":
        return Image.new("L", (size, size), 255)
    if edge == "soft":
        ramp = np.clip(np.minimum(np.arange(size) + 0.5, size - 0.5 - np.arange(size)) / (0.15 * size), 0, 1)
        return Image.fromarray((255 * np.minimum(ramp[None, :], ramp[:, None])).astype(np.uint8))
    if edge == "cutout":
        mask = Image.new("L", (size, size), 0)
        ImageDraw.Draw(mask).ellipse((0.1 * size, 0.02 * size, 0.9 * size, 0.98 * size), fill=255)
        return mask.filter(ImageFilter.GaussianBlur(0.02 * size))
    raise ValueError(f"unknown paste edge {edge!r}; choose one of {', '.join(EDGES)}")


def paste(scene: Image.Image, crop: Image.Image, side: int, left: int, top: int, angle: float = 0.0,
          edge: str = "hard"):
    """``crop`` scaled to ``side`` px, rotated by ``angle`` degrees about its centre and pasted with
    its centre at (left + side/2, top + side/2) through ``edge_mask(side, edge)``; returns the 2x3
    matrix crop pixels -> scene pixels."""
    scale = side / crop.width
    face = crop.resize((side, side), Image.Resampling.BICUBIC).convert("RGBA")
    face.putalpha(edge_mask(side, edge))
    rotated = face.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    cx, cy = left + side / 2, top + side / 2
    scene.paste(rotated, (round(cx - rotated.width / 2), round(cy - rotated.height / 2)), rotated)
    theta = np.deg2rad(angle)
    # PIL rotates counter-clockwise on screen (y down): x' = cos x + sin y, y' = -sin x + cos y
    linear = scale * np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
    offset = np.array([cx, cy]) - linear @ np.array([crop.width / 2, crop.height / 2])
    dx = round(cx - rotated.width / 2) - (cx - rotated.width / 2)
    dy = round(cy - rotated.height / 2) - (cy - rotated.height / 2)
    return np.hstack([linear, (offset + (dx, dy))[:, None]])


def random_scene(crop: Image.Image, rng: np.random.Generator, width: int = 640, height: int = 480,
                 span=(0.15, 0.6), max_angle: float = 20.0, seed: int | None = None, scene: Image.Image | None = None,
                 edge: str = "hard"):
    """``crop`` pasted into a new background (or onto a copy of ``scene``, e.g. a ``faceless`` one)
    with ``edge``: its side a uniform ``span`` fraction of the width, rotated uniformly within
    +-``max_angle`` degrees, at a uniform position that keeps the rotated crop inside the scene
    where it fits (else centred on that axis). ``(scene, matrix, side, angle)``."""
    side = int(round(width * rng.uniform(*span)))
    angle = float(rng.uniform(-max_angle, max_angle))
    extent = side * (abs(np.cos(np.deg2rad(angle))) + abs(np.sin(np.deg2rad(angle))))

    def centre(room: int) -> float:
        return float(rng.uniform(extent / 2, room - extent / 2)) if extent < room else room / 2

    cx, cy = centre(width), centre(height)
    if scene is None:
        scene = background(width, height, seed=int(rng.integers(1 << 31)) if seed is None else seed)
    else:
        scene = scene.convert("RGB").resize((width, height)) if scene.size != (width, height) else scene.copy()
    matrix = paste(scene, crop, side, round(cx - side / 2), round(cy - side / 2), angle, edge)
    return scene, matrix, side, angle
