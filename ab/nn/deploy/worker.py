"""The deployment worker: one job per process, so that TensorFlow's weight, a converter crash or a
LiteRT abort (seen with int8 models) cannot take the sweep down.

    python -m ab.nn.deploy.worker JOB.json RESULT.json

Jobs: ``convert`` (ONNX -> TFLite); ``measure``: an artifact's ages on the trial's eval/test inputs
(read from and written as .npy, ``ab.nn.deploy.inputs``), then its batch-1 timings at the given thread
counts; ``time``: the timings alone (a fresh process per runtime keeps another runtime's idle threads off
the cores); ``convert-measure``: ``convert``, then ``measure`` of each file made, in one process (one
Python start instead of two per trial; TensorFlow's threads stay idle while LiteRT is timed). Its result
file holds the conversion's result before any measurement starts, so a LiteRT abort loses no file made
(``WorkerFailed.partial``).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ab.nn.util import faults
from ab.nn.util.processes import die_with_parent


class WorkerFailed(RuntimeError):
    """The worker process crashed or reported an error; the message says how. ``partial``: what a
    ``convert-measure`` worker had written before it crashed, else None."""

    def __init__(self, message: str, partial: dict | None = None):
        super().__init__(message)
        self.partial = partial


def run(job: dict, timeout: float = 1800, command: list[str] | None = None) -> dict:
    """Run ``job`` in a fresh Python process and return its result. ``command`` starts another
    program with the same contract (``JOB.json RESULT.json``), e.g. a converter in its own environment,
    which gets no ``PYTHONPATH`` of ours."""
    with tempfile.TemporaryDirectory(prefix="ab-nn-worker-") as folder:
        job_path, result_path = Path(folder) / "job.json", Path(folder) / "result.json"
        job_path.write_text(json.dumps(job))
        env = None if command is None else {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        command = command or [sys.executable, "-m", "ab.nn.deploy.worker"]
        try:
            done = subprocess.run([*command, str(job_path), str(result_path)], env=env,
                                  capture_output=True, text=True, timeout=timeout, preexec_fn=die_with_parent)
        except subprocess.TimeoutExpired:
            raise WorkerFailed(f"{job['kind']} worker timed out after {timeout:.0f} s", _read(result_path)) from None
        if done.returncode != 0 or not result_path.exists():
            code = done.returncode
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            raise WorkerFailed(f"{job['kind']} worker crashed ({how}): {tail[-600:]}", _read(result_path))
        result = json.loads(result_path.read_text())
        if "error" in result:
            raise WorkerFailed(result["error"])
        return result


def _read(result_path: Path) -> dict | None:
    return json.loads(result_path.read_text()) if result_path.exists() else None


def _runtime(artifact: str, threads: int):
    from ab.nn.deploy.runtimes import LiteRtRuntime, OnnxRuntime

    return OnnxRuntime(Path(artifact), threads) if artifact.endswith(".onnx") else LiteRtRuntime(Path(artifact),
                                                                                                 threads)


def _measure(job: dict) -> dict:
    predicted = _predict(job)
    try:
        return predicted | _latency(job)
    except Exception as error:  # the ages stand even when timing fails
        return predicted | {"latency_error": f"{type(error).__name__}: {error}"[:2000]}


def _predict(job: dict) -> dict:
    from ab.nn.deploy.inputs import predict

    runtime = _runtime(job["artifact"], job["threads"])
    files = {}
    for split, inputs in job["inputs"].items():
        path = Path(job["out"]) / f"{split}.npy"
        np.save(path, predict(runtime, Path(inputs), job["batch"]))
        files[split] = str(path)
    return {"files": files, "layout": getattr(runtime, "layout", "NCHW")}


def _latency(job: dict) -> dict:
    from ab.nn.deploy.latency import time_calls

    rows = []
    x = np.random.default_rng(0).standard_normal(job["shape"]).astype(np.float32)
    for threads in job["timing_threads"]:
        runtime = _runtime(job["artifact"], threads)
        native = runtime.native(x)  # timed in the artifact's own input layout, as deployed
        call = lambda: runtime.predict(native, native=True)  # noqa: E731
        call()
        rows.append({"threads": threads, **time_calls(call, job["warmup"], job["runs"]).as_row()})
    return {"rows": rows}


def _convert(job: dict) -> dict:
    from ab.nn.deploy.tflite_convert import convert, converter_name

    calibration = Path(job["calibration"]) if job.get("calibration") else None
    return {"converter": converter_name(),
            "results": convert(Path(job["onnx"]), Path(job["out_dir"]), job["precisions"], calibration,
                               job["mean"], job["std"])}


def _convert_measure(job: dict, result_path: Path) -> dict:
    """``{**convert's result, "measured": {precision: measure's result, or {"error": ...}}}``; written to
    ``result_path`` after the conversion and after each measurement."""
    converted = _convert(job)
    _write(result_path, converted)
    faults.point("measure")
    measured = {}
    for precision, made in converted["results"].items():
        if "path" not in made:
            continue
        out = Path(job["measure"]["out"]) / precision
        out.mkdir(parents=True, exist_ok=True)
        try:
            measured[precision] = _measure({**job["measure"], "artifact": made["path"], "out": str(out)})
        except Exception as error:
            measured[precision] = {"error": f"{type(error).__name__}: {error}"[:2000]}
        _write(result_path, converted | {"measured": measured})
    return converted | {"measured": measured}


def _write(path: Path, result: dict) -> None:
    """Replace ``path`` whole: a crash never leaves half a result."""
    scratch = path.with_suffix(".partial")
    scratch.write_text(json.dumps(result))
    os.replace(scratch, path)


JOBS = {"measure": lambda job, _: _measure(job), "convert": lambda job, _: _convert(job),
        "time": lambda job, _: _latency(job), "convert-measure": _convert_measure}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    job, result_path = json.loads(Path(argv[0]).read_text()), Path(argv[1])
    try:
        result = JOBS[job["kind"]](job, result_path)
    except Exception as error:
        result = {"error": f"{type(error).__name__}: {error}"[:2000]}
    _write(result_path, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
