"""End-to-end latency of photo -> age at 640x480, batch 1 (one face), per stage and in total, for
the PyTorch, ONNX and TFLite age models, at 1 thread and at every core. Each (runtime, threads)
pair runs in a fresh process (an idle thread pool of another runtime would steal a core).

Stages, timed in every iteration: ``decode`` (JPEG -> RGB), ``detect`` (BlazeFace on the photo),
``align`` (similarity fit, the second look's detection, warp to 200x200), ``age`` (resize,
normalise, the age model); ``total`` is their sum in the same iteration.

    python benchmarks/photo_latency.py --model best:age-regression_utkface_mae_MobileAgeNet \\
        --root <workspace> --data-dir ../shared/data/utkface --runs 200 --warmup 20
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STAGES = ("decode", "detect", "align", "age", "total")


def worker(args) -> dict:
    from ab.nn import workspace
    from ab.nn.predict import AgeEstimator
    from ab.nn.predict.estimator import open_photo

    estimator = AgeEstimator.from_model(args.model, runtime=args.runtime, threads=args.threads,
                                        workspace=workspace.from_arguments(args))
    aligner = estimator.aligner
    data = Path(args.photo).read_bytes()
    times = {stage: [] for stage in STAGES}
    for i in range(args.warmup + args.runs):
        t0 = time.perf_counter()
        photo = open_photo(data)
        t1 = time.perf_counter()
        faces = aligner.detector(photo)
        t2 = time.perf_counter()
        aligned = aligner.align(photo, faces[0])
        t3 = time.perf_counter()
        estimator.ages([aligned.crop])
        t4 = time.perf_counter()
        if i >= args.warmup:
            for stage, seconds in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
                times[stage].append(seconds * 1000)
    return {"runtime": args.runtime, "threads": args.threads, "faces": len(faces),
            **{stage: {"median": float(np.median(v)), "p90": float(np.quantile(v, 0.9))} for stage, v in times.items()}}


def make_photo(args, path: Path) -> str:
    """A 640x480 JPEG with one test-split face (side 40 % of the width, rotated 10 degrees)."""
    from ab.nn import workspace
    from ab.nn.dataset import utkface
    from ab.nn.dataset.settings import DataSettings
    from ab.nn.dataset.sources import open_image
    from ab.nn.face.scenes import background, paste

    ws = workspace.from_arguments(args)
    split = utkface.plan(ws.dataset_dir(utkface.NAME), ws.cache_dir(utkface.NAME), DataSettings(), progress=False)
    catalog, first = split.catalog, int(split.parts["test"][0])
    _, blob = next(iter(catalog.source.read([catalog.entries[first]])))

    scene = background(640, 480, seed=1)
    paste(scene, open_image(blob), 256, 190, 110, 10.0)
    scene.save(path, quality=92)
    return catalog.entries[first].name


def main(argv=None) -> int:
    from ab.nn import workspace

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="best:age-regression_utkface_mae_MobileAgeNet")
    p.add_argument("--runtimes", nargs="+", default=["torch", "onnx", "tflite"])
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--photo", default=None, help="a 640x480 photo with one face (default: a generated scene)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--runtime", default=None, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    workspace.add_arguments(p)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    with tempfile.TemporaryDirectory() as folder:
        photo = args.photo
        if photo is None:
            photo = str(Path(folder) / "photo.jpg")
            print(f"photo: generated 640x480 scene with test-split face {make_photo(args, Path(photo))}")
        rows = []
        for runtime in args.runtimes:
            for threads in sorted({1, os.cpu_count() or 1}):
                command = [sys.executable, __file__, "--worker", "--runtime", runtime, "--threads", str(threads),
                           "--photo", photo, "--model", args.model, "--runs", str(args.runs), "--warmup",
                           str(args.warmup)]
                for flag in ("root", "db", "data_dir"):
                    if getattr(args, flag):
                        command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    print(f"{runtime}/{threads}: failed: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                    continue
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{args.runs} timed runs after {args.warmup} warm-up, batch 1, milliseconds, median / p90")
    print("| age model runtime | threads | " + " | ".join(STAGES) + " |")
    print("|---|---|" + "---|" * len(STAGES))
    for row in rows:
        cells = " | ".join(f"{row[s]['median']:.2f} / {row[s]['p90']:.2f}" for s in STAGES)
        print(f"| {row['runtime']} | {row['threads']} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
