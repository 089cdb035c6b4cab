"""The deployment worker: one job per process, so that TensorFlow's weight, a converter crash or a
LiteRT abort (seen with int8 models) cannot take the sweep down.

    python -m ab.nn.deploy.worker [--preload MODULE,...] JOB.json RESULT.json

With ``--preload`` it imports those modules first, writes ``ready`` beside JOB.json, and reads its job
once a line ``go`` comes on its input (``Worker``).

Jobs: ``convert`` (ONNX -> TFLite); ``measure``: an artifact's ages on the trial's eval/test inputs
(read from and written as .npy, ``ab.nn.deploy.inputs``), then its batch-1 timings at the given thread
counts; ``time``: the timings alone (a fresh process per runtime keeps another runtime's idle threads off
the cores); ``convert-measure``: ``convert``, then ``measure`` of each file made, in one process (one
Python start instead of two per trial; TensorFlow's threads stay idle while LiteRT is timed). Its result
file holds the conversion's result before any measurement starts, so a LiteRT abort loses no file made
(``WorkerFailed.partial``).
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ab.nn.util import atomic, faults
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
    return Worker(command=command).finish(job, timeout)


class Worker:
    """One worker process. ``preload``: modules it imports before its job is known (TensorFlow with
    onnx2tf: about 10 s of a trial's export on our 2-core machine), so that its start overlaps the work
    that makes the job; ``ready()`` waits for those imports, before anything is timed beside it. A worker
    never given its job ends when ``close()`` closes its input."""

    def __init__(self, preload: tuple[str, ...] = (), command: list[str] | None = None):
        self.folder = Path(tempfile.mkdtemp(prefix="ab-nn-worker-"))
        self.job_path, self.result_path = self.folder / "job.json", self.folder / "result.json"
        self.preload, self.command = tuple(preload), command
        self.process: subprocess.Popen | None = None
        if self.preload:
            self._start()

    def _start(self) -> None:
        env = None if self.command is None else {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        command = self.command or [sys.executable, "-m", "ab.nn.deploy.worker"]
        preload = ["--preload", ",".join(self.preload)] if self.preload else []
        self.log = open(self.folder / "output.log", "w+")
        self.process = subprocess.Popen([*command, *preload, str(self.job_path), str(self.result_path)], env=env,
                                        stdin=subprocess.PIPE, stdout=self.log, stderr=self.log, text=True,
                                        preexec_fn=die_with_parent)

    def ready(self, timeout: float = 120) -> bool:
        """Wait until the worker has imported what it preloads (or has died, or ``timeout`` passed)."""
        deadline = time.monotonic() + timeout
        while self.process is not None and not (self.folder / READY).exists() and self.process.poll() is None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return (self.folder / READY).exists()

    def finish(self, job: dict, timeout: float = 1800) -> dict:
        """Hand the worker ``job`` and return its result; the process is gone after, whatever happened."""
        try:
            self.job_path.write_text(json.dumps(job))
            if self.process is None:
                self._start()
            try:
                self.process.stdin.write("go\n")
                self.process.stdin.close()
            except (BrokenPipeError, OSError):
                pass  # it died while preloading: reported below
            try:
                code = self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise WorkerFailed(f"{job['kind']} worker timed out after {timeout:.0f} s",
                                   _read(self.result_path)) from None
            if code != 0 or not self.result_path.exists():
                how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
                self.log.seek(0)
                tail = " | ".join(self.log.read().strip().splitlines()[-3:])
                raise WorkerFailed(f"{job['kind']} worker crashed ({how}): {tail[-600:]}", _read(self.result_path))
            result = json.loads(self.result_path.read_text())
            if "error" in result:
                raise WorkerFailed(result["error"])
            return result
        finally:
            self.close()

    def close(self) -> None:
        """End a worker that was never given its job, and remove its files."""
        if self.process is not None and self.process.poll() is None:
            try:
                self.process.stdin.close()
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        if self.process is not None:
            self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)


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
    atomic.write(path, json.dumps(result))


JOBS = {"measure": lambda job, _: _measure(job), "convert": lambda job, _: _convert(job),
        "time": lambda job, _: _latency(job), "convert-measure": _convert_measure}


READY = "ready"
"""The file a preloading worker writes beside its job file once its imports are done."""


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[0] == "--preload":
        for module in argv[1].split(","):
            importlib.import_module(module)
        argv = argv[2:]
        Path(argv[0]).with_name(READY).touch()
        if sys.stdin.readline().strip() != "go":
            return 0  # closed without a job
    job, result_path = json.loads(Path(argv[0]).read_text()), Path(argv[1])
    try:
        result = JOBS[job["kind"]](job, result_path)
    except Exception as error:
        result = {"error": f"{type(error).__name__}: {error}"[:2000]}
    _write(result_path, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
