"""The alignment template: where the detector finds the eyes, nose, mouth and ears in UTKFace's
aligned & cropped 200x200 training images, on average (and how much that varies).

Measured, not guessed: the detector runs on a seeded sample of the *training* part of a split
(never its evaluation or test part), each crop pasted in the middle of a black canvas twice its
size so that it is seen at a photo-like scale; the landmarks of the best detection inside the
crop are moved back into crop coordinates, and their mean and standard deviation are the template.
Derived from the research-only images, the template lives in the workspace, never in git:

    python -m ab.nn.face.template --data-dir ../shared/data/utkface      # -> <root>/data/utkface/align_template.json
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ab.nn.face.align import CROP_SIZE
from ab.nn.face.detect import DEFAULT_MODEL, KEYPOINTS, MODELS

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
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1))
        tmp.replace(path)
        return path

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


def training_crops(folder: Path, settings, images: int, seed: int = SAMPLE_SEED, cache_dir: Path | None = None):
    """``(name, encoded bytes)`` of a seeded sample of the split's training part (the same part
    training uses: ``utkface.plan``; ``cache_dir`` remembers the images' content ids)."""
    import tempfile

    from ab.nn.dataset import utkface

    split = utkface.plan(folder, cache_dir or Path(tempfile.gettempdir()) / "ab-nn-ids", settings, progress=False)
    catalog, train = split.catalog, split.parts["train"]
    chosen = np.sort(np.random.default_rng(seed).choice(train, min(images, len(train)), replace=False))
    entries = [catalog.entries[i] for i in chosen]
    description = f"{catalog.source.describe()}, {settings.label} training part: {len(entries)} of {len(train)}"
    return entries, catalog.source.read(entries), description


def measure(folder: Path, settings=None, images: int = DEFAULT_IMAGES, detector_model: str = DEFAULT_MODEL,
            seed: int = SAMPLE_SEED, threads: int = 1, progress: bool = True,
            cache_dir: Path | None = None) -> tuple[Template, dict]:
    """Run the detector on the training crops; ``(template, counts)``."""
    from tqdm.auto import tqdm

    from ab.nn.dataset.settings import DataSettings
    from ab.nn.dataset.sources import open_image
    from ab.nn.face.detect import FaceDetector

    settings = settings or DataSettings()
    detector = FaceDetector(detector_model, threads=threads)
    entries, blobs, description = training_crops(Path(folder), settings, images, seed, cache_dir)
    points, counts = [], {"sampled": len(entries), "unreadable": 0, "no_face": 0, "not_200x200": 0}
    for _, blob in tqdm(blobs, total=len(entries), desc="measuring the template", unit="img", disable=not progress):
        try:
            crop = open_image(blob)
        except Exception:
            counts["unreadable"] += 1
            continue
        if crop.size != (CROP_SIZE, CROP_SIZE):
            counts["not_200x200"] += 1
            crop = crop.resize((CROP_SIZE, CROP_SIZE))
        found = landmarks_in_crop(detector, crop)
        if found is None:
            counts["no_face"] += 1
            continue
        points.append(found[0])
    provenance = {"source": description, "sample_seed": seed, "detector_file": detector.path.name,
                  "canvas": "crop pasted at the centre of a black 400x400 canvas", **counts}
    return summarise(np.asarray(points, np.float64), detector.name, provenance), counts


def table(template: Template) -> str:
    """The template as a Markdown table (for the README and the command's output)."""
    rows = ["| keypoint | x | y | std x | std y | used for alignment |", "|---|---|---|---|---|---|"]
    for i, name in enumerate(template.keypoints):
        (x, y), (sx, sy) = template.mean[i], template.std[i]
        used = "yes" if i in template.align_points else "no"
        rows.append(f"| {name} | {x:.1f} | {y:.1f} | {sx:.1f} | {sy:.1f} | {used} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    from ab.nn import workspace
    from ab.nn.dataset.settings import PROTOCOLS, DataSettings

    p = argparse.ArgumentParser(prog="python -m ab.nn.face.template", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=DEFAULT_IMAGES, help="training crops to measure (a seeded sample)")
    p.add_argument("--sample-seed", type=int, default=SAMPLE_SEED)
    p.add_argument("--split", choices=PROTOCOLS, default="paper")
    p.add_argument("--split-seed", type=int, default=42, help="the split's seed")
    p.add_argument("--detector", choices=sorted(MODELS), default=DEFAULT_MODEL)
    p.add_argument("--out", default=None, help=f"template file (default <root>/data/utkface/{FILE_NAME})")
    p.add_argument("--quiet", action="store_true")
    workspace.add_arguments(p)
    args = p.parse_args(argv)
    if args.images < 2:
        p.error("--images must be at least 2")
    ws = workspace.from_arguments(args)
    from ab.nn.dataset import DataError, utkface

    try:
        template, counts = measure(ws.dataset_dir(utkface.NAME), DataSettings(split=args.split,
                                                                              split_seed=args.split_seed),
                                   args.images, args.detector, args.sample_seed, progress=not args.quiet,
                                   cache_dir=ws.cache_dir(utkface.NAME))
    except (DataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    path = template.save(Path(args.out) if args.out else default_path(ws))
    print(f"{template.images} of {counts['sampled']} training crops measured ({counts['no_face']} without a face, "
          f"{counts['unreadable']} unreadable); template written to {path}")
    print(table(template))
    return 0


if __name__ == "__main__":
    sys.exit(main())
