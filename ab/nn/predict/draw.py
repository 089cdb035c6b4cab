"""A photo with each face's box, landmarks and estimated age drawn on it."""
from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

BOX = (255, 200, 0)
POINT = (0, 220, 255)


def annotate(image: Image.Image, faces) -> Image.Image:
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    line = max(2, round(max(out.size) / 300))
    font = ImageFont.load_default(size=max(12, round(max(out.size) / 40)))
    for face in faces:
        x0, y0, x1, y1 = face.box
        draw.rectangle((x0, y0, x1, y1), outline=BOX, width=line)
        for x, y in face.landmarks:
            draw.ellipse((x - line, y - line, x + line, y + line), fill=POINT)
        label = f"{face.age:.1f}"
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        y = y0 - (bottom - top) - 2 * line if y0 - (bottom - top) - 2 * line >= 0 else y1 + line
        draw.rectangle((x0, y, x0 + right - left + 2 * line, y + bottom - top + 2 * line), fill=BOX)
        draw.text((x0 + line - left, y + line - top), label, fill=(0, 0, 0), font=font)
    return out
