"""Batch-1 latency of MobileAgeNet at 224x224 in PyTorch (eager, inference_mode), onnxruntime and
LiteRT (TFLite float32 from onnx2tf), against the floor implied by the model's multiply-adds and
this machine's measured matrix-multiply rate, all measured in one run.

    python benchmarks/latency.py --size 224 --runs 100 --warmup 20 --rounds 3

Each round times every runtime at 1 thread and at all threads; the table shows the median over
rounds of each round's median. Bars (issue 5): TFLite fp32 <= 1.5x the floor, and TFLite faster
than onnxruntime, which is faster than PyTorch eager.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ab.nn import registry
from ab.nn.deploy import worker
from ab.nn.deploy.latency import library_versions, time_calls
from ab.nn.deploy.onnx_export import export_onnx
from ab.nn.deploy.runtimes import TorchRuntime, torch_threads
from ab.nn.util import system
from ab.nn.util.macs import count_macs

PRM = {"lr": 1e-3, "momentum": 0.9, "dropout": 0.2, "pretrained": 0, "bounded": 1, "epoch_max": 1}


def matmul_gflops(threads: int, n: int = 1024, repeats: int = 20) -> float:
    """Sustained float32 GEMM rate of this machine at ``threads`` (best of ``repeats``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    with torch_threads(threads):
        for _ in range(3):
            a @ b
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    shape = (1, 3, args.size, args.size)
    torch.manual_seed(0)
    model = registry.load(registry.MODEL, "MobileAgeNet").Net(shape, (1,), PRM, "cpu").eval()
    macs = count_macs(model, shape)
    threads = sorted({1, system.cpu_count()})
    with tempfile.TemporaryDirectory() as folder:
        onnx_path = export_onnx(model, shape, Path(folder) / "model.onnx")
        converted = worker.run({"kind": "convert", "onnx": str(onnx_path), "out_dir": folder, "precisions": ["fp32"],
                                "calibration": None, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]})
        tflite = Path(converted["results"]["fp32"]["path"])
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        artifacts = {"onnxruntime": onnx_path, "tflite fp32 (LiteRT)": tflite}
        names = ["pytorch eager", *artifacts]
        medians = {(name, t): [] for name in names for t in threads}
        p90s = {(name, t): [] for name in names for t in threads}
        floors = {t: [] for t in threads}
        for _ in range(args.rounds):
            for t in threads:
                floors[t].append(2 * macs / (matmul_gflops(t) * 1e9) * 1e3)
                with torch_threads(t):
                    runtime = TorchRuntime(model)
                    timing = time_calls(lambda: runtime.predict(x), args.warmup, args.runs).as_row()
                rows = {"pytorch eager": timing}
                for name, path in artifacts.items():  # a fresh process each: no idle runtime threads spinning
                    rows[name] = worker.run({"kind": "time", "artifact": str(path), "shape": list(shape),
                                             "timing_threads": [t], "warmup": args.warmup, "runs": args.runs})["rows"][0]
                for name, row in rows.items():
                    medians[(name, t)].append(row["median_ms"])
                    p90s[(name, t)].append(row["p90_ms"])
    print(f"MobileAgeNet {args.size}x{args.size}, batch 1, {macs / 1e6:.1f} M multiply-adds; {args.rounds} rounds x "
          f"({args.warmup} warm-up + {args.runs} timed runs); {system.cpu_model()}, {system.cpu_count()} cores; "
          f"{library_versions()}\n")
    print("| runtime | threads | median ms | p90 ms | x floor |\n|---|---|---|---|---|")
    for t in threads:
        floor = statistics.median(floors[t])
        print(f"| floor (2 x MACs / measured GEMM rate) | {t} | {floor:.2f} | - | 1.00 |")
        for name in names:
            median = statistics.median(medians[(name, t)])
            print(f"| {name} | {t} | {median:.2f} | {statistics.median(p90s[(name, t)]):.2f} | {median / floor:.2f} |")
    for t in threads:
        eager, ort, lite = (statistics.median(medians[(n, t)]) for n in names)
        floor = statistics.median(floors[t])
        print(f"\n{t} thread(s): TFLite/floor {lite / floor:.2f} ({'meets' if lite <= 1.5 * floor else 'MISSES'} <= 1.5); "
              f"TFLite < onnxruntime: {lite < ort}; onnxruntime < PyTorch: {ort < eager}")


if __name__ == "__main__":
    main()
