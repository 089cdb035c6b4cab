"""Does alignment recover the training crop? Test-split aligned crops of UTKFace are pasted into
640x480 synthetic scenes (side 15-60 % of the width, rotation within +-20 degrees, random position,
a generated background of gradients, shapes and noise); detection, alignment and the age model run
on each scene. Reported:

* detection rate: a detection whose box overlaps the pasted crop (IoU > 0.3) and whose centre lies
  inside it; other detections count as false positives;
* landmark error: the original crop's own landmarks (the detector's, on the crop), carried into the
  recovered crop through paste and alignment, against where they are in the original crop (pixels
  of the 200x200 frame, and as a fraction of the eye distance);
* test MAE on the original crops vs on the recovered crops (the same detected images; paired
  difference with a 95 % interval), the same with a single alignment pass (no second look, see
  ``ab.nn.face.aligner``), and for a plain box crop without alignment (the detector's box, made
  square about its centre, resized to 200x200).

    python benchmarks/face_alignment.py --model best:age-regression_utkface_mae_MobileAgeNet \\
        --root <workspace> --data-dir ../shared/data/utkface --images 2000
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Mean of b - a and its 95 % interval (normal approximation; n in the thousands)."""
    d = b - a
    half = 1.96 * d.std(ddof=1) / math.sqrt(len(d))
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def _iou(a, b) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def box_crop(image: Image.Image, box, size: int = 200) -> Image.Image:
    """The detector's box made square about its centre, resized (PIL bilinear); black outside."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = max(box[2] - box[0], box[3] - box[1]) / 2
    return image.crop((round(cx - half), round(cy - half), round(cx + half), round(cy + half))).resize(
        (size, size), Image.Resampling.BILINEAR)


def test_crops(folder: Path, cache_dir: Path, count: int, seed: int):
    """A seeded sample of the test part of the split training uses (``utkface.plan``: content ids)."""
    from ab.nn.dataset import utkface
    from ab.nn.dataset.settings import DataSettings

    split = utkface.plan(folder, cache_dir, DataSettings(), progress=False)
    catalog, test = split.catalog, split.parts["test"]
    chosen = np.sort(np.random.default_rng(seed).choice(test, min(count, len(test)), replace=False))
    entries = [catalog.entries[i] for i in chosen]
    return entries, catalog.ages[chosen], catalog.source.read(entries), len(test)


def main(argv=None) -> int:
    from ab.nn import workspace
    from ab.nn.dataset.sources import open_image
    from ab.nn.face import align
    from ab.nn.face.aligner import FaceAligner
    from ab.nn.face.scenes import random_scene
    from ab.nn.face.template import landmarks_in_crop
    from ab.nn.predict import AgeEstimator

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="best:age-regression_utkface_mae_MobileAgeNet")
    p.add_argument("--runtime", default="tflite", choices=("torch", "onnx", "tflite"))
    p.add_argument("--images", type=int, default=2000, help="test-split crops (a seeded sample)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the numbers as JSON here")
    workspace.add_arguments(p)
    args = p.parse_args(argv)
    ws = workspace.from_arguments(args)
    from ab.nn.dataset import utkface

    estimator = AgeEstimator.from_model(args.model, runtime=args.runtime, workspace=ws)
    aligner, template = estimator.aligner, estimator.aligner.template
    single = FaceAligner(aligner.detector, template, refine=False)
    used = list(template.align_points)
    eye_distance = float(np.linalg.norm(np.subtract(template.mean[1], template.mean[0])))
    entries, labels, blobs, test_size = test_crops(ws.dataset_dir(utkface.NAME), ws.cache_dir(utkface.NAME), args.images,
                                                      args.seed)
    rng = np.random.default_rng(args.seed)
    rows = []
    start = time.perf_counter()
    for (i, blob), label in tqdm(zip(blobs, labels), total=len(entries), desc="scenes", unit="img"):
        crop = open_image(blob)
        scene, paste_matrix, side, angle = random_scene(crop, rng)
        corners = align.apply(paste_matrix, [[0, 0], [200, 0], [200, 200], [0, 200]])
        pasted = (*corners.min(axis=0), *corners.max(axis=0))
        faces = aligner.detector(scene)
        hits = [f for f in faces if _iou(f.box, pasted) > 0.3 and
                pasted[0] < (f.box[0] + f.box[2]) / 2 < pasted[2] and pasted[1] < (f.box[1] + f.box[3]) / 2 < pasted[3]]
        row = {"name": entries[i].name, "age": float(label), "side": side, "angle": angle, "found": bool(hits),
               "false_positives": len(faces) - (1 if hits else 0)}
        crops = [crop]
        if hits:
            face = max(hits, key=lambda f: _iou(f.box, pasted))
            recovered, once = aligner.align(scene, face), single.align(scene, face)
            crops += [recovered.crop, box_crop(scene, face.box), once.crop]
            own = landmarks_in_crop(aligner.detector, crop)
            if own is not None:
                for key, matrix in (("landmark_error", recovered.matrix), ("landmark_error_single", once.matrix)):
                    carried = align.apply(matrix @ np.vstack([paste_matrix, [0, 0, 1]]), own[0][used])
                    row[key] = float(np.linalg.norm(carried - own[0][used], axis=1).mean())
        ages = estimator.ages(crops)
        row["age_original"] = float(ages[0])
        if hits:
            row["age_aligned"], row["age_box"], row["age_single"] = float(ages[1]), float(ages[2]), float(ages[3])
        rows.append(row)
    seconds = time.perf_counter() - start

    n, found = len(rows), [r for r in rows if r["found"]]
    low, high = _wilson(len(found), n)
    truth = np.array([r["age"] for r in found])
    original = np.abs(np.array([r["age_original"] for r in found]) - truth)
    aligned = np.abs(np.array([r["age_aligned"] for r in found]) - truth)
    boxed = np.abs(np.array([r["age_box"] for r in found]) - truth)
    once = np.abs(np.array([r["age_single"] for r in found]) - truth)
    errors = np.array([r["landmark_error"] for r in found if "landmark_error" in r])
    errors_single = np.array([r["landmark_error_single"] for r in found if "landmark_error" in r])
    result = {
        "model": estimator.describe()["model"], "runtime": args.runtime, "detector": aligner.detector.name,
        "template_images": template.images, "test_split_size": test_size, "scenes": n, "seconds": seconds,
        "detected": len(found), "detection_rate": len(found) / n, "detection_rate_95": [low, high],
        "false_positives": int(sum(r["false_positives"] for r in rows)),
        "landmark_error_px": {"n": int(len(errors)), "mean": float(errors.mean()), "median": float(np.median(errors)),
                              "p90": float(np.quantile(errors, 0.9)), "eye_distance_px": eye_distance},
        "landmark_error_single_px": {"mean": float(errors_single.mean()), "median": float(np.median(errors_single)),
                                     "p90": float(np.quantile(errors_single, 0.9))},
        "mae_single": float(once.mean()), "single_minus_original": _paired(original, once),
        "mae_all_original": float(np.mean([abs(r["age_original"] - r["age"]) for r in rows])),
        "mae_original": float(original.mean()), "mae_aligned": float(aligned.mean()), "mae_box": float(boxed.mean()),
        "aligned_minus_original": _paired(original, aligned), "box_minus_original": _paired(original, boxed),
    }
    if args.out:
        Path(args.out).write_text(json.dumps({"summary": result, "rows": rows}, indent=1))
    d, dl, dh = result["aligned_minus_original"]
    b, bl, bh = result["box_minus_original"]
    lm, ls = result["landmark_error_px"], result["landmark_error_single_px"]
    s, sl, sh = result["single_minus_original"]
    print(f"{n} test-split crops in scenes ({seconds:.0f} s); detector {result['detector']}, model "
          f"{args.model} ({args.runtime})")
    print("| measure | value |\n|---|---|")
    print(f"| detection rate | {result['detection_rate']:.2%} ({len(found)} of {n}; 95 % {low:.2%}-{high:.2%}) |")
    print(f"| false positives | {result['false_positives']} in {n} scenes |")
    print(f"| landmark error (eyes, nose, mouth) | mean {lm['mean']:.2f} px, median {lm['median']:.2f}, p90 "
          f"{lm['p90']:.2f} of 200 (mean {lm['mean'] / eye_distance:.1%} of the eye distance; n {lm['n']}) |")
    print(f"| landmark error, single pass | mean {ls['mean']:.2f} px, median {ls['median']:.2f}, p90 {ls['p90']:.2f} |")
    print(f"| test MAE, original crops | {result['mae_original']:.3f} (n {len(found)}) |")
    print(f"| test MAE, detected + aligned | {result['mae_aligned']:.3f} ({d:+.3f}, 95 % {dl:+.3f} to {dh:+.3f}) |")
    print(f"| test MAE, detected + aligned in one pass | {result['mae_single']:.3f} ({s:+.3f}, 95 % {sl:+.3f} to "
          f"{sh:+.3f}) |")
    print(f"| test MAE, plain box crop | {result['mae_box']:.3f} ({b:+.3f}, 95 % {bl:+.3f} to {bh:+.3f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
