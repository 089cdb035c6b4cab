"""Which BlazeFace variant: detection rate of each on test-split crops pasted into 640x480 scenes
(by the face's share of the width), on the bare 200x200 crops, and on faceless generated scenes
(false positives), with the median and fastest time of one interpreter call (1 thread; on a
loaded machine the fastest is the one to compare).

    python benchmarks/face_detectors.py --data-dir ../shared/data/utkface --images 400
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm


def main(argv=None) -> int:
    from ab.nn import workspace
    from ab.nn.dataset import utkface
    from ab.nn.dataset.sources import open_image
    from ab.nn.face import align
    from ab.nn.face.detect import MODELS, FaceDetector
    from ab.nn.face.scenes import background, random_scene

    sys.path.insert(0, str(Path(__file__).parent))
    from face_alignment import _iou, test_crops

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--seed", type=int, default=2)
    workspace.add_arguments(p)
    args = p.parse_args(argv)
    ws = workspace.from_arguments(args)
    detectors = {name: FaceDetector(name, threads=1) for name in MODELS}
    bins = ((0.15, 0.25), (0.25, 0.4), (0.4, 0.6))
    found = {name: {b: [] for b in bins} for name in detectors}
    bare = {name: 0 for name in detectors}
    entries, _, blobs, _ = test_crops(ws.dataset_dir(utkface.NAME), ws.cache_dir(utkface.NAME), args.images, args.seed)
    rng = np.random.default_rng(args.seed)
    for _, blob in tqdm(blobs, total=len(entries), desc="scenes", unit="img"):
        crop = open_image(blob)
        scene, matrix, side, _ = random_scene(crop, rng)
        corners = align.apply(matrix, [[0, 0], [200, 0], [200, 200], [0, 200]])
        pasted = (*corners.min(axis=0), *corners.max(axis=0))
        share = next(b for b in bins if b[0] <= side / 640 <= b[1])
        for name, detector in detectors.items():
            found[name][share].append(any(_iou(f.box, pasted) > 0.3 for f in detector(scene)))
            bare[name] += bool(detector(crop))
    faceless = [background(seed=100_000 + i) for i in range(100)]
    print(f"{len(entries)} test-split crops in scenes, {len(faceless)} faceless scenes")
    print("| variant | input | " + " | ".join(f"face {a:.0%}-{b:.0%} of width" for a, b in bins)
          + " | bare 200x200 crop | false positives (faceless) | one call, median / fastest ms |")
    print("|---|---|" + "---|" * (len(bins) + 3))
    for name, detector in detectors.items():
        false = sum(len(detector(image)) for image in faceless)
        x = np.zeros((1, detector.spec.size, detector.spec.size, 3), np.float32)
        detector.interpreter.set_tensor(detector.input_index, x)
        times = []
        for _ in range(60):
            start = time.perf_counter()
            detector.interpreter.invoke()
            times.append((time.perf_counter() - start) * 1000)
        rates = " | ".join(f"{np.mean(found[name][b]):.1%} (n {len(found[name][b])})" for b in bins)
        print(f"| {name} | {detector.spec.size} | {rates} | {bare[name] / len(entries):.1%} | {false} | "
              f"{np.median(times[10:]):.2f} / {np.min(times[10:]):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
