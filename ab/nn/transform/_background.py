"""Background replacement: a training crop's surroundings swapped for a random texture behind a soft
or elliptical mask.

Why: UTKFace's aligned crops always show the same kind of border around the face (hair, neck, the
photo's own background). A face pasted into a scene with a feathered edge, or cut out, keeps its
features but shows the scene in the aligned crop's corners, and a model that learned UTKFace's
corners ages it differently (+2.3 years for soft pastes, docs/experiments/photo-pipeline.md). Here
the model sees, in a share of its training crops, the face blended into one of four texture
families (``TEXTURES``): smooth colour fields, skin-toned fields, a mosaic of the crop's own tiles (face
texture with no face) and blurred noise; ``norm_<size>_bgs`` adds a fifth, ``shapes``: a colour gradient
under random rectangles, ellipses and lines, man-made surroundings (walls, posters, furniture), drawn here
independently of the photo benchmarks' scenes (``ab.nn.face.scenes``). The masks are random too: a border
that fades over 5-30 % of the side, or an ellipse around the face with a feathered rim.

Operates on a uint8 CHW tensor and draws from torch's global generator, so a seeded data loader
gives the same crops run after run.
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F

TEXTURES = ("colour", "skin", "tiles", "noise")
"""The families of ``norm_<size>_bg`` and ``_bg75`` (a new family here would change their draws)."""
FAMILIES = (*TEXTURES, "shapes")
"""Every family ``texture`` draws."""
MASKS = ("border", "ellipse")
LIGHT_SKIN = torch.tensor([255.0, 224.0, 196.0])
DARK_SKIN = torch.tensor([80.0, 52.0, 36.0])


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


def _choice(options: tuple[str, ...]) -> str:
    return options[int(torch.randint(len(options), ()))]


def _grid(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel centres as fractions of the side, (height, 1) and (1, width)."""
    return ((torch.arange(height) + 0.5) / height)[:, None], ((torch.arange(width) + 0.5) / width)[None, :]


def border_mask(height: int, width: int, inset: float, fade: float) -> torch.Tensor:
    """1 inside, fading to 0 over ``fade`` (a fraction of the side) towards an ``inset`` from the edge."""
    y, x = _grid(height, width)
    distance = torch.minimum(torch.minimum(y, 1 - y), torch.minimum(x, 1 - x))
    return ((distance - inset) / fade).clamp(0, 1)


def ellipse_mask(height: int, width: int, centre: tuple[float, float], radii: tuple[float, float],
                 feather: float) -> torch.Tensor:
    """1 inside an ellipse (centre and radii as fractions of the side), falling to 0 over a rim of
    ``feather`` times its radius outside it."""
    y, x = _grid(height, width)
    radius = (((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2).sqrt()
    return ((1 + feather - radius) / feather).clamp(0, 1)


def random_mask(height: int, width: int) -> torch.Tensor:
    if _choice(MASKS) == "border":
        return border_mask(height, width, inset=_uniform(0.0, 0.08), fade=_uniform(0.05, 0.30))
    # around the face of an aligned UTKFace crop, which fills the middle of the frame
    return ellipse_mask(height, width, centre=(_uniform(0.45, 0.55), _uniform(0.47, 0.57)),
                        radii=(_uniform(0.30, 0.45), _uniform(0.38, 0.52)), feather=_uniform(0.02, 0.25))


def _smooth(height: int, width: int, channels: int, cells: int) -> torch.Tensor:
    """Smooth random field in [0, 1]: a ``cells`` x ``cells`` grid upsampled bicubically."""
    grid = torch.rand(1, channels, cells, cells)
    return F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False)[0].clamp(0, 1)


def _muted(field: torch.Tensor) -> torch.Tensor:
    """Colours pulled towards their grey by a random share: scenes are seldom as saturated as noise."""
    grey = field.mean(0, keepdim=True)
    return grey + _uniform(0.15, 1.0) * (field - grey)


def _skin_tone() -> torch.Tensor:
    return torch.lerp(LIGHT_SKIN, DARK_SKIN, float(torch.rand(())))


def _tiles(image: torch.Tensor) -> torch.Tensor:
    """The crop cut into n x n tiles, shuffled, each maybe mirrored: face texture, no face."""
    _, height, width = image.shape
    n = int(torch.randint(3, 7, ()))
    th, tw = height // n, width // n
    pieces = [image[:, i * th:(i + 1) * th, j * tw:(j + 1) * tw] for i in range(n) for j in range(n)]
    order = torch.randperm(len(pieces)).tolist()
    flips = torch.rand(len(pieces)) < 0.5
    rows = [torch.cat([pieces[order[i * n + j]].flip(-1) if flips[i * n + j] else pieces[order[i * n + j]]
                       for j in range(n)], dim=2) for i in range(n)]
    mosaic = torch.cat(rows, dim=1).float()[None]
    return F.interpolate(mosaic, size=(height, width), mode="nearest")[0]


def _shapes(height: int, width: int, channels: int) -> torch.Tensor:
    """A linear colour gradient in a random direction under 3 to 11 filled rectangles, ellipses and lines
    of random colours, in [0, 1]: the flat, hard-edged surroundings of rooms, posters and signs."""
    y, x = _grid(height, width)
    angle = _uniform(0.0, 2 * math.pi)
    ramp = ((x - 0.5) * math.cos(angle) + (y - 0.5) * math.sin(angle) + 0.5).clamp(0, 1)
    start, end = torch.rand(channels, 1, 1), torch.rand(channels, 1, 1)
    field = start + (end - start) * ramp
    for _ in range(int(torch.randint(3, 12, ()))):
        colour = torch.rand(channels, 1, 1)
        cx, cy = _uniform(-0.1, 1.1), _uniform(-0.1, 1.1)
        shape = _choice(("rectangle", "ellipse", "line"))
        if shape == "rectangle":
            inside = ((x - cx).abs() <= _uniform(0.03, 0.35)) & ((y - cy).abs() <= _uniform(0.03, 0.35))
        elif shape == "ellipse":
            inside = ((x - cx) / _uniform(0.03, 0.35)) ** 2 + ((y - cy) / _uniform(0.03, 0.35)) ** 2 <= 1
        else:
            direction = _uniform(0.0, math.pi)
            dx, dy = math.cos(direction), math.sin(direction)
            along = ((x - cx) * dx + (y - cy) * dy).clamp(-_uniform(0.1, 0.8), _uniform(0.1, 0.8))
            inside = ((x - cx - along * dx) ** 2 + (y - cy - along * dy) ** 2).sqrt() <= _uniform(0.005, 0.03)
        field = torch.where(inside, colour, field)
    return field


def random_texture(image: torch.Tensor, families: tuple[str, ...] = TEXTURES) -> torch.Tensor:
    return texture(image, _choice(families))


def texture(image: torch.Tensor, family: str) -> torch.Tensor:
    """A random texture of one of the ``FAMILIES``, float CHW in [0, 255], the image's size."""
    channels, height, width = image.shape
    if family == "colour":
        return 255 * _muted(_smooth(height, width, channels, int(torch.randint(2, 9, ()))))
    if family == "skin":
        mix = _smooth(height, width, 1, int(torch.randint(3, 12, ())))
        tones = torch.lerp(_skin_tone()[:, None, None], _skin_tone()[:, None, None], mix)[:channels]
        shade = 1 - _uniform(0.0, 0.5) * _smooth(height, width, 1, int(torch.randint(6, 24, ())))
        return tones * shade
    if family == "tiles":
        return _tiles(image)
    if family == "shapes":
        return 255 * (_muted(_shapes(height, width, channels))
                      + _uniform(0.0, 0.06) * torch.randn(channels, height, width)).clamp(0, 1)
    if family != "noise":
        raise ValueError(f"unknown texture family {family!r}; choose one of {', '.join(FAMILIES)}")
    noise = _muted(_smooth(height, width, channels, int(torch.randint(8, 33, ()))))
    return 255 * (noise + _uniform(0.0, 0.15) * torch.randn(channels, height, width)).clamp(0, 1)


class ReplaceBackground:
    """With probability ``p``, the crop blended into a random texture of one of ``families`` (drawn with equal
    chances) through a random mask."""

    def __init__(self, p: float = 0.5, families: tuple[str, ...] = TEXTURES):
        if not 0 <= p <= 1:
            raise ValueError(f"p must lie in [0, 1], got {p}")
        unknown = [f for f in families if f not in FAMILIES]
        if unknown or not families:
            raise ValueError(f"families must be some of {', '.join(FAMILIES)}, got {families!r}")
        self.p, self.families = p, tuple(families)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if image.dtype != torch.uint8 or image.ndim != 3:
            raise TypeError(f"ReplaceBackground takes a uint8 CHW tensor, got {image.dtype} {tuple(image.shape)}")
        if float(torch.rand(())) >= self.p:
            return image
        _, height, width = image.shape
        alpha = random_mask(height, width)
        blended = torch.lerp(random_texture(image, self.families), image.float(), alpha)
        return blended.round().clamp(0, 255).to(torch.uint8)

    def __repr__(self) -> str:
        return f"ReplaceBackground(p={self.p}, families={self.families})"
