"""Timing of single inference calls: warm-up, many runs, median/p90/min, fixed thread counts."""
from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

WARMUP = 20
RUNS = 100


@dataclass
class Timing:
    warmup: int
    runs: int
    median_ms: float
    p90_ms: float
    min_ms: float
    mean_ms: float

    def as_row(self) -> dict:
        return asdict(self)


def time_calls(call: Callable[[], object], warmup: int = WARMUP, runs: int = RUNS) -> Timing:
    if runs < 1:
        raise ValueError(f"need at least one timed run, got {runs}")
    for _ in range(warmup):
        call()
    samples = np.empty(runs, dtype=np.float64)
    for i in range(runs):
        start = time.perf_counter_ns()
        call()
        samples[i] = (time.perf_counter_ns() - start) / 1e6
    return Timing(warmup=warmup, runs=runs, median_ms=float(np.median(samples)),
                  p90_ms=float(np.percentile(samples, 90)), min_ms=float(samples.min()),
                  mean_ms=float(samples.mean()))


def library_versions() -> str:
    """Versions of everything that can change a timing, as JSON."""
    versions = {"python": platform.python_version()}
    for name, module in (("torch", "torch"), ("onnxruntime", "onnxruntime"), ("onnx", "onnx"),
                         ("ai_edge_litert", "ai_edge_litert"), ("onnx2tf", "onnx2tf"), ("numpy", "numpy")):
        try:
            from importlib.metadata import version

            versions[name] = version(module.replace("_", "-"))
        except Exception:
            continue
    return json.dumps(versions, sort_keys=True)
