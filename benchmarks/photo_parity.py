"""Parity: the same photos give the same ages through ``predict`` with the PyTorch, ONNX and TFLite
(fp32) age models and through the bundle's numpy + Pillow + LiteRT reference implementation.

Photos: test-split crops pasted into 640x480 synthetic scenes (as in face_alignment.py), saved as
PNG. The bundle is written from the same model into a scratch folder; the reference runs in its
own process from the bundle folder. Reported: faces compared and the largest age difference from
PyTorch's, per path (bar: 0.01 years).

    python benchmarks/photo_parity.py --model best:age-regression_utkface_mae_MobileAgeNet \\
        --root <workspace> --data-dir ../shared/data/utkface --images 200
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm


def main(argv=None) -> int:
    from ab.nn import workspace
    from ab.nn.bundle.writer import write_bundle
    from ab.nn.dataset import utkface
    from ab.nn.dataset.sources import open_image
    from ab.nn.face.scenes import random_scene
    from ab.nn.predict import AgeEstimator

    sys.path.insert(0, str(Path(__file__).parent))
    from face_alignment import test_crops

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="best:age-regression_utkface_mae_MobileAgeNet")
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    workspace.add_arguments(p)
    args = p.parse_args(argv)
    ws = workspace.from_arguments(args)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        entries, _, blobs, _ = test_crops(ws.dataset_dir(utkface.NAME), ws.cache_dir(utkface.NAME), args.images,
                                          args.seed)
        rng = np.random.default_rng(args.seed)
        files = []
        for i, blob in tqdm(blobs, total=len(entries), desc="scenes", unit="img"):
            path = folder / f"{i:05d}.png"
            random_scene(open_image(blob), rng)[0].save(path)
            files.append(str(path))
        bundle = write_bundle(args.model, folder / "bundle", workspace=ws)
        results = {}
        for runtime in ("torch", "onnx", "tflite"):
            estimator = AgeEstimator.from_model(args.model, runtime=runtime, threads=1, workspace=ws)
            results[runtime] = [(tuple(f.box), f.age) for file in tqdm(files, desc=runtime, unit="img")
                                for f in estimator.predict(file)]
        done = subprocess.run([sys.executable, "reference.py", *files], cwd=bundle, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-2000:], file=sys.stderr)
            return 1
        results["reference"] = [(tuple(r["box"]), r["age"]) for r in map(json.loads, done.stdout.splitlines())
                                if "age" in r]
    torch_ages = np.array([age for _, age in results["torch"]])
    print(f"{len(files)} scenes, {len(torch_ages)} faces; model {args.model}")
    print("| path | faces | same boxes | max age difference from PyTorch (years) |\n|---|---|---|---|")
    for path, found in results.items():
        same = len(found) == len(torch_ages)
        boxes = same and all(np.allclose(a, b, atol=1e-3) for (a, _), (b, _) in zip(found, results["torch"]))
        diff = float(np.abs(np.array([age for _, age in found]) - torch_ages).max()) if same else float("nan")
        print(f"| {path} | {len(found)} | {'yes' if boxes else 'no'} | {diff:.5f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
