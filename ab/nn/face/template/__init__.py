"""The alignment template: where the detector finds the eyes, nose, mouth and ears in UTKFace's
aligned & cropped 200x200 training images, on average (and how much that varies).

Measured, not guessed: the detector runs on a seeded sample of the *training* part of a split
(never its evaluation or test part), each crop pasted in the middle of a black canvas twice its
size so that it is seen at a photo-like scale; the landmarks of the best detection inside the
crop are moved back into crop coordinates, and their mean and standard deviation are the template.
Derived from the research-only images, the template lives in the workspace, never in git. The
command that measures it, ``python -m ab.nn.face.template``, is this package's ``__main__``: it reads
the dataset, which this module does not.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ab.nn.face.align import CROP_SIZE
from ab.nn.face.detect import DEFAULT_MODEL, KEYPOINTS
from ab.nn.util import atomic

FILE_NAME = "align_template.json"
ALIGN_POINTS = (0, 1, 2, 3)
"""Keypoints the similarity transform is fitted to: both eyes, the nose tip and the mouth. The
ear tragions are left out: hidden or guessed whenever the head turns (their spread in the
template is about four times that of the eyes; see the README)."""
DEFAULT_IMAGES = 2000
SAMPLE_SEED = 0
VERSION = 1


class TemplateMissing(FileNotFoundError):
    """No template where one was looked for; the message says how to make one."""


@dataclass(frozen=True)
class Template:
    mean: tuple[tuple[float, float], ...]   # per keypoint (x, y) in crop pixels
    std: tuple[tuple[float, float], ...]
    size: int = CROP_SIZE
    keypoints: tuple[str, ...] = KEYPOINTS
    align_points: tuple[int, ...] = ALIGN_POINTS
    detector: str = f"blazeface-{DEFAULT_MODEL}"
    images: int = 0                          # crops whose landmarks make up the mean
    provenance: dict = field(default_factory=dict)
    version: int = VERSION

    @property
    def points(self) -> np.ndarray:
        """The target positions of ``align_points``, (k, 2)."""
        return np.asarray(self.mean, np.float64)[list(self.align_points)]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, values: dict, where: str = "template") -> "Template":
        try:
            template = cls(mean=tuple(tuple(map(float, p)) for p in values["mean"]),
                           std=tuple(tuple(map(float, p)) for p in values["std"]), size=int(values["size"]),
                           keypoints=tuple(values["keypoints"]), align_points=tuple(map(int, values["align_points"])),
                           detector=str(values["detector"]), images=int(values.get("images", 0)),
                           provenance=dict(values.get("provenance", {})), version=int(values.get("version", 1)))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{where}: not an alignment template ({type(error).__name__}: {error})") from None
        if len(template.mean) != len(template.keypoints) or len(template.align_points) < 2:
            raise ValueError(f"{where}: a template needs a mean per keypoint and at least two align_points")
        return template

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic.write(path, json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: Path) -> "Template":
        path = Path(path)
        if not path.is_file():
            raise TemplateMissing(f"no alignment template at {path}; measure one with "
                                  f"python -m ab.nn.face.template --data-dir <UTKFace folder> --out {path}")
        try:
            values = json.loads(path.read_text())
        except ValueError as error:
            raise ValueError(f"{path}: not JSON ({error})") from None
        return cls.from_json(values, str(path))


def default_path(workspace) -> Path:
    """``<root>/data/utkface/align_template.json`` (``Workspace.face_template_path``)."""
    return workspace.face_template_path


def landmarks_in_crop(detector, crop) -> tuple[np.ndarray, float] | None:
    """The landmarks (6, 2) of the best face whose box centre lies inside ``crop``, in crop
    pixels, with its score; None if the detector finds none there."""
    from PIL import Image

    width, height = crop.size
    canvas = Image.new("RGB", (2 * width, 2 * height))
    offset = np.array([width // 2, height // 2], np.float32)
    canvas.paste(crop.convert("RGB"), tuple(int(v) for v in offset))
    for face in detector(canvas):
        centre = face.box.reshape(2, 2).mean(axis=0) - offset
        if 0 <= centre[0] < width and 0 <= centre[1] < height:
            return face.landmarks - offset, face.score
    return None


def summarise(points: np.ndarray, detector: str, provenance: dict) -> Template:
    """The template of landmark sets ``points`` (n, 6, 2) measured in 200x200 crops."""
    if len(points) == 0:
        raise ValueError("no landmarks to make a template of: the detector found no face in any crop")
    mean, std = points.mean(axis=0), points.std(axis=0)
    return Template(mean=tuple(map(tuple, mean.round(3).tolist())), std=tuple(map(tuple, std.round(3).tolist())),
                    detector=detector, images=int(len(points)), provenance=provenance)


def table(template: Template) -> str:
    """The template as a Markdown table (for the README and the command's output)."""
    rows = ["| keypoint | x | y | std x | std y | used for alignment |", "|---|---|---|---|---|---|"]
    for i, name in enumerate(template.keypoints):
        (x, y), (sx, sy) = template.mean[i], template.std[i]
        used = "yes" if i in template.align_points else "no"
        rows.append(f"| {name} | {x:.1f} | {y:.1f} | {sx:.1f} | {sy:.1f} | {used} |")
    return "\n".join(rows)
