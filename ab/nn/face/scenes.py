"""Synthetic scenes for tests and benchmarks: an aligned face crop scaled, rotated and pasted into a
generated background at a known similarity transform, so what detection and alignment recover can
be compared with the truth."""
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


def paste(scene: Image.Image, crop: Image.Image, side: int, left: int, top: int, angle: float = 0.0):
    """``crop`` scaled to ``side`` px, rotated by ``angle`` degrees about its centre and pasted with
    its centre at (left + side/2, top + side/2); returns the 2x3 matrix crop pixels -> scene pixels."""
    scale = side / crop.width
    face = crop.resize((side, side), Image.Resampling.BICUBIC).convert("RGBA")
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
                 span=(0.15, 0.6), max_angle: float = 20.0, seed: int | None = None):
    """``crop`` pasted into a new background: its side a uniform ``span`` fraction of the width,
    rotated uniformly within +-``max_angle`` degrees, at a uniform position that keeps the rotated
    crop inside the scene where it fits (else centred on that axis). ``(scene, matrix, side, angle)``."""
    side = int(round(width * rng.uniform(*span)))
    angle = float(rng.uniform(-max_angle, max_angle))
    extent = side * (abs(np.cos(np.deg2rad(angle))) + abs(np.sin(np.deg2rad(angle))))

    def centre(room: int) -> float:
        return float(rng.uniform(extent / 2, room - extent / 2)) if extent < room else room / 2

    cx, cy = centre(width), centre(height)
    scene = background(width, height, seed=int(rng.integers(1 << 31)) if seed is None else seed)
    matrix = paste(scene, crop, side, round(cx - side / 2), round(cy - side / 2), angle)
    return scene, matrix, side, angle
