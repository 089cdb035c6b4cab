"""``python -m ab.nn.face.template``: measure the alignment template on a seeded sample of the training
part of a split (never its evaluation or test part) and save it in the workspace:

    python -m ab.nn.face.template --data-dir ../shared/data/utkface      # -> <root>/data/utkface/align_template.json

A command above both the dataset and the face code, which do not import each other.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ab.nn import workspace
from ab.nn.dataset import DataError, utkface
from ab.nn.dataset.settings import PROTOCOLS, DataSettings
from ab.nn.dataset.decode import open_image
from ab.nn.face.align import CROP_SIZE
from ab.nn.face.detect import DEFAULT_MODEL, MODELS, FaceDetector
from ab.nn.face.template import (DEFAULT_IMAGES, FILE_NAME, SAMPLE_SEED, Template, default_path, landmarks_in_crop,
                                 summarise, table)
from ab.nn.util.arguments import Parser


def training_crops(folder: Path, settings, images: int, seed: int = SAMPLE_SEED, cache_dir: Path | None = None):
    """``(name, encoded bytes)`` of a seeded sample of the split's training part (the same part
    training uses: ``utkface.plan``; ``cache_dir`` remembers the images' content ids)."""
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


def main(argv=None) -> int:
    p = Parser(prog="python -m ab.nn.face.template", description=__doc__,
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
