"""The deployment worker: one job per process, so that TensorFlow's weight, a converter crash or a
LiteRT abort (seen with int8 models) cannot take the sweep down.

    python -m ab.nn.deploy.worker JOB.json RESULT.json

Jobs: ``convert`` (ONNX -> TFLite); ``measure``: an artifact's ages on the trial's eval/test
inputs (written as .npy), then its batch-1 timings at the given thread counts; ``time``: the
timings alone (a fresh process per runtime keeps another runtime's idle threads off the cores).
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

from ab.nn.util.processes import die_with_parent


class WorkerFailed(RuntimeError):
    """The worker process crashed or reported an error; the message says how."""


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
            raise WorkerFailed(f"{job['kind']} worker timed out after {timeout:.0f} s") from None
        if done.returncode != 0 or not result_path.exists():
            code = done.returncode
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            raise WorkerFailed(f"{job['kind']} worker crashed ({how}): {tail[-600:]}")
        result = json.loads(result_path.read_text())
        if "error" in result:
            raise WorkerFailed(result["error"])
        return result


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
    from torch.utils.data import DataLoader

    from ab.nn.dataset.identity import DataMismatch
    from ab.nn.dataset import trial_data
    from ab.nn.dataset.trial_data import DataSpec

    runtime = _runtime(job["artifact"], job["threads"])
    data = trial_data.load(DataSpec.from_json(job["data"]))
    if job.get("data_key") and data.identity.key != job["data_key"]:
        raise DataMismatch(f"the artifact is measured on {data.identity.describe()}, but its trial was judged on "
                           f"data key {job['data_key']}")
    files = {}
    for split in job["splits"]:
        dataset = data.eval if split == "eval" else data.test
        predictions = [runtime.predict(x.numpy()) for x, _ in DataLoader(dataset, batch_size=job["batch"])]
        path = Path(job["out"]) / f"{split}.npy"
        np.save(path, np.concatenate(predictions) if predictions else np.zeros(0, np.float32))
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


JOBS = {"measure": _measure, "convert": _convert, "time": _latency}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    job = json.loads(Path(argv[0]).read_text())
    try:
        result = JOBS[job["kind"]](job)
    except Exception as error:
        result = {"error": f"{type(error).__name__}: {error}"[:2000]}
    Path(argv[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
