"""Every trial deploys: PyTorch -> ONNX -> TFLite, each artifact's MAE on the same preprocessed
eval/test inputs as PyTorch's (made once, ``inputs``; a seeded sample of each split by default,
``--fidelity-images``) and its largest difference from PyTorch's ages (the trial's own recorded
predictions where they are the same computation, ``reference``), and batch-1 latency per runtime and
thread count. A failing step is recorded on its artifact's row; it never changes the trial's training
result and never stops the sweep."""
from __future__ import annotations

import copy
import io
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from ab.nn import __version__, checkpoint, registry
from ab.nn.config import Config
from ab.nn.dataset.trial_data import TrialData
from ab.nn.deploy import converters, worker
from ab.nn.deploy import inputs as model_inputs
from ab.nn.deploy.latency import library_versions, time_calls
from ab.nn.deploy import onnx_export
from ab.nn.deploy.options import FAILED, OK, TFLITE, ExportOptions
from ab.nn.deploy.reference import Reference, from_recorded
from ab.nn.deploy.runtimes import OnnxRuntime, TorchRuntime, torch_threads
from ab.nn.deploy.tflite_convert import PRELOAD
from ab.nn.util import system
from ab.nn.util.digest import sha256_of

if TYPE_CHECKING:
    from ab.nn.stat.store import StatStore

log = logging.getLogger(__name__)


def _short(error: BaseException | str) -> str:
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return text.strip()[:2000]


@dataclass(frozen=True)
class NetSource:
    """How to build the model again in another interpreter (litert-torch's environment): its LEMUR
    model file and the arguments of its ``Net`` besides the input shape."""

    model_file: Path
    prm: dict
    out_shape: tuple

    @classmethod
    def of(cls, config: Config, prm: dict, out_shape) -> "NetSource":
        return cls(registry.path(registry.MODEL, config.nn), dict(prm), tuple(out_shape))


class Deployment:
    def __init__(self, store: StatStore, trial_id: int, config: Config, folder: Path, options: ExportOptions,
                 in_shape: tuple, source: NetSource | None = None, fence: int | None = None):
        """``fence``: the lease of the runner that trained the trial (its rows are written only while it
        owns the trial); ``None`` for a deployment of a finished trial from the command line."""
        self.store, self.trial_id, self.config, self.fence = store, trial_id, config, fence
        self.folder, self.options, self.source = folder, options, source
        self.in_shape = tuple(in_shape)
        self.shape_text = "x".join(map(str, self.in_shape))
        self.versions = library_versions()
        self._converter: worker.Worker | None = None  # onnx2tf's worker, started early (_artifacts)

    # -- measurements ----------------------------------------------------------------------------
    def _splits(self, data: TrialData) -> dict[str, object]:
        """The images every artifact is measured on: each split whole, or its fidelity sample."""
        whole = {"eval": data.eval, **({"test": data.test} if data.test is not None else {})}
        return {split: model_inputs.sample(dataset, self.options.fidelity_images)
                for split, dataset in whole.items()}

    def _reference(self, model: torch.nn.Module, data: TrialData, splits: dict[str, object],
                   inputs: dict[str, Path], labels: dict[str, np.ndarray]) -> Reference:
        """The trial's recorded predictions where they are this model's ages on these images on the CPU
        (``reference.from_recorded``), else a PyTorch pass over the inputs."""
        reference, why = from_recorded(self.store.recorded_predictions(self.trial_id), splits, labels,
                                       data.identity.key)
        if reference is not None:
            return reference
        log.info("trial %s: PyTorch's ages computed again (%s)", self.trial_id, why)
        runtime = TorchRuntime(model)
        with torch_threads(system.cpu_count()):
            return Reference(labels, {split: model_inputs.predict(runtime, path, self.options.batch)
                                      for split, path in inputs.items()})

    @staticmethod
    def _fidelity(reference: Reference, ages: dict[str, np.ndarray]) -> dict:
        row = {}
        for split, labels in reference.labels.items():
            predicted = ages[split]
            if predicted.shape != labels.shape:
                raise ValueError(f"{split}: {predicted.shape[0]} ages for {labels.shape[0]} images")
            row[f"{split}_mae"] = float(np.abs(predicted - labels).mean())
            row[f"{split}_max_diff"] = float(np.abs(predicted - reference.ages[split]).max())
            row[f"n_{split}"] = int(labels.shape[0])
        return row

    def _latency_rows(self, export_id: int, runtime_name: str, rows: list[dict]) -> None:
        for timing in rows:
            self.store.add_latency(export_id, self.trial_id, fence=self.fence, runtime=runtime_name, batch=1,
                                   input_shape=self.shape_text, cpu=system.cpu_model(),
                                   cpu_count=system.cpu_count(), host=system.host(), versions=self.versions,
                                   status=OK, **timing)

    def _latency_failed(self, export_id: int, runtime_name: str, error) -> None:
        self.store.add_latency(export_id, self.trial_id, fence=self.fence, runtime=runtime_name, threads=0, batch=1,
                               input_shape=self.shape_text, cpu=system.cpu_model(), cpu_count=system.cpu_count(),
                               host=system.host(), versions=self.versions, status=FAILED, error=_short(error))

    def _time_in_process(self, make_runtime) -> list[dict]:
        x = np.random.default_rng(0).standard_normal(self.in_shape).astype(np.float32)
        rows = []
        for threads in self.options.thread_counts():
            with torch_threads(threads):  # PyTorch's pool; onnxruntime takes its count from make_runtime
                runtime = make_runtime(threads)
                runtime.predict(x)
                timing = time_calls(lambda: runtime.predict(x), self.options.warmup, self.options.runs)
            rows.append({"threads": threads, **timing.as_row()})
        return rows

    def _artifact(self, fmt: str, precision: str, path: Path | None, converter: str, layout: str,
                  seconds: float | None) -> dict:
        return {"format": fmt, "precision": precision, "converter": converter, "path": str(path) if path else None,
                "sha256": sha256_of(path) if path else None, "size_bytes": path.stat().st_size if path else None,
                "layout": layout, "input_shape": self.shape_text, "seconds": seconds}

    # -- the steps -------------------------------------------------------------------------------
    def run(self, model: torch.nn.Module, data: TrialData, metadata: dict, progress: bool = True) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tflite = [f[len(TFLITE):] for f in self.options.formats if f.startswith(TFLITE)]
        steps = 2 + 2 * len(tflite) * len(self.options.converters)
        self.bar = tqdm(total=steps, desc=f"deploying trial {self.trial_id}", unit="step", leave=False,
                        disable=not progress, position=1)
        try:
            self._run(model, data, metadata, tflite)
        finally:
            self.bar.close()

    def _step(self, what: str) -> None:
        self.bar.set_postfix_str(what)

    def _run(self, model: torch.nn.Module, data: TrialData, metadata: dict, tflite: list[str]) -> None:
        cpu_model = copy.deepcopy(model).cpu().eval()
        self._step("PyTorch reference ages and latency")
        # in the trial's folder: a sandboxed trial's /tmp is a size-capped tmpfs, and the inputs of all of
        # UTKFace at 224 px take gigabytes
        with tempfile.TemporaryDirectory(prefix="export-inputs-", dir=self.folder) as scratch:
            splits = self._splits(data)
            inputs, labels = model_inputs.write(splits, Path(scratch), self.options.batch)
            reference = self._reference(cpu_model, data, splits, inputs, labels)
            self._artifacts(cpu_model, reference, inputs, data, metadata, tflite)

    def _artifacts(self, cpu_model: torch.nn.Module, reference: Reference, inputs: dict[str, Path], data: TrialData,
                   metadata: dict, tflite: list[str]) -> None:
        weights = self.folder / "model.pth"
        size = weights.stat().st_size if weights.exists() else len(_state_bytes(cpu_model))
        export_id = self.store.add_export(
            self.trial_id, fence=self.fence, format="pytorch", precision="fp32", converter=f"torch {torch.__version__}",
            path=str(weights) if weights.exists() else None,
            sha256=sha256_of(weights) if weights.exists() else None, size_bytes=size, layout="NCHW",
            input_shape=self.shape_text, status=OK, **self._fidelity(reference, reference.ages))
        try:
            self._latency_rows(export_id, "pytorch", self._time_in_process(lambda t: TorchRuntime(cpu_model)))
        except Exception as error:
            self._latency_failed(export_id, "pytorch", error)

        self.bar.update(1)
        self._step("ONNX export, fidelity and latency")
        # onnx2tf's worker starts now (TensorFlow's import beside the ONNX export), after PyTorch's timing
        self._converter = worker.Worker(preload=PRELOAD) if tflite and converters.ONNX2TF in self.options.converters \
            else None
        try:
            onnx_path = self._onnx(cpu_model, reference, inputs, metadata)
            self.bar.update(1)
            for converter in self.options.converters if tflite else ():
                self._step(f"TFLite conversion with {converter} ({', '.join(tflite)})")
                self._tflite(converter, cpu_model, onnx_path, tflite, reference, inputs, data, metadata)
        finally:
            if self._converter is not None:
                self._converter.close()

    def _quiet(self) -> None:
        """Before timing: wait for a starting converter to finish its imports."""
        if self._converter is not None:
            self._converter.ready(self.options.timeout)

    def _onnx(self, model, reference: Reference, inputs: dict[str, Path], metadata: dict) -> Path | None:
        path = self.folder / "model.onnx"
        start = time.perf_counter()
        try:
            path, exporter = onnx_export.export(model, self.in_shape, path, metadata=metadata,
                                                exporters=self.options.onnx_exporters)
        except Exception as error:
            tried = onnx_export.exporter_name(", ".join(self.options.onnx_exporters))
            self.store.add_export(self.trial_id, fence=self.fence, format="onnx", precision="fp32", converter=tried,
                                  layout="NCHW", input_shape=self.shape_text, status=FAILED, error=_short(error))
            return None
        row = self._artifact("onnx", "fp32", path, exporter, "NCHW", time.perf_counter() - start)
        export_id = self.store.add_export(self.trial_id, fence=self.fence, status=OK, **row)
        try:
            runtime = OnnxRuntime(path, system.cpu_count())
            ages = {split: model_inputs.predict(runtime, file, self.options.batch) for split, file in inputs.items()}
            self.store.update_export(export_id, **self._fidelity(reference, ages))
            self._quiet()
            self._latency_rows(export_id, "onnxruntime", self._time_in_process(lambda t: OnnxRuntime(path, t)))
        except Exception as error:
            self.store.update_export(export_id, status=FAILED, error=_short(error))
        return path

    def _calibration(self, data: TrialData) -> Path | None:
        """Training images (never evaluation ones) as NHWC float in [0, 1], for full int8."""
        pixels = getattr(data.train, "pixels", None)
        if pixels is None:
            return None
        count = len(data.train)
        chosen = np.sort(np.random.default_rng(0).choice(count, min(count, self.options.calibration_images),
                                                         replace=False))
        images = pixels(chosen)
        path = self.folder / "calibration.npy"
        np.save(path, images.astype(np.float32) / 255.0)
        return path

    def _tflite(self, converter: str, model: torch.nn.Module, onnx_path: Path | None, precisions: list[str],
                reference: Reference, inputs: dict[str, Path], data: TrialData, metadata: dict) -> None:
        def failed(precision: str, error, name: str = converter) -> None:
            self.store.add_export(self.trial_id, fence=self.fence, format="tflite", precision=precision, converter=name,
                                  input_shape=self.shape_text, status=FAILED, error=_short(error))

        if converter == converters.ONNX2TF and onnx_path is None:
            for precision in precisions:
                failed(precision, "no ONNX file to convert (the ONNX export failed)")
            return
        if converter == converters.LITERT_TORCH and self.source is None:
            for precision in precisions:
                failed(precision, "litert-torch rebuilds the model from its model file: no model file was given")
            return
        calibration = self._calibration(data) if "int8" in precisions else None
        if "int8" in precisions and calibration is None:
            failed("int8", "full int8 needs calibration images: the training set exposes no pixels()")
            precisions = [p for p in precisions if p != "int8"]
        if not precisions:
            return
        job = {"out_dir": str(self.folder), "precisions": precisions,
               "calibration": str(calibration) if calibration else None,
               "mean": _floats(metadata.get("mean"), IMAGENET_MEAN), "std": _floats(metadata.get("std"), IMAGENET_STD)}
        with tempfile.TemporaryDirectory(prefix="ab-nn-convert-") as scratch:
            try:
                converted = self._convert(converter, model, onnx_path, job, inputs, Path(scratch))
            except (worker.WorkerFailed, converters.ConverterUnavailable) as error:
                for precision in precisions:
                    failed(precision, error)
                return
            finally:
                if calibration is not None:
                    calibration.unlink(missing_ok=True)
            measured = converted.get("measured", {})
            for precision in precisions:
                result = converted["results"].get(precision, {"error": "not produced"})
                if "error" in result:
                    failed(precision, result["error"], converted["converter"])
                    continue
                path = Path(result["path"])
                export_id = self.store.add_export(self.trial_id, fence=self.fence, status=OK, **self._artifact(
                    "tflite", precision, path, converted["converter"], "NHWC", result["seconds"]))
                self.bar.update(1)
                self._step(f"TFLite {precision}: fidelity and latency")
                if precision in measured:
                    self._record_measured(export_id, measured[precision], reference)
                else:
                    self._measure_tflite(export_id, path, reference, inputs)
                self.bar.update(1)

    def _convert(self, converter: str, model: torch.nn.Module, onnx_path: Path | None, job: dict,
                 inputs: dict[str, Path], scratch: Path) -> dict:
        """The converter's result. onnx2tf's worker also measures each file it made (``measured``): one
        process start fewer per trial. A measurement that crashed that worker keeps the
        conversion's result; what it left unmeasured is measured alone (``_measure_tflite``), as before."""
        if converter == converters.ONNX2TF:
            started, self._converter = self._converter or worker.Worker(), None
            try:
                return started.finish({"kind": "convert-measure", "onnx": str(onnx_path), **job,
                                       "measure": self._measure_job(inputs, scratch)},
                                      self.options.timeout * (1 + len(job["precisions"])))
            except worker.WorkerFailed as error:
                if "results" not in (error.partial or {}):
                    raise
                log.warning("trial %s: %s; what it converted is measured in separate workers", self.trial_id, error)
                return error.partial
        weights = scratch / "weights.pth"
        torch.save(model.state_dict(), weights)
        return worker.run({**job, "model_file": str(self.source.model_file),
                           "prm": checkpoint.without_pretrained(self.source.prm), "weights": str(weights),
                           "in_shape": list(self.in_shape), "out_shape": list(self.source.out_shape)},
                          self.options.timeout, command=converters.litert_torch_command())

    def _measure_job(self, inputs: dict[str, Path], out: Path, artifact: Path | None = None) -> dict:
        return {"kind": "measure", "artifact": str(artifact) if artifact else None, "threads": system.cpu_count(),
                "batch": self.options.batch, "inputs": {split: str(path) for split, path in inputs.items()},
                "out": str(out),
                "timing_threads": list(self.options.thread_counts()), "shape": list(self.in_shape),
                "warmup": self.options.warmup, "runs": self.options.runs}

    def _measure_tflite(self, export_id: int, path: Path, reference: Reference, inputs: dict[str, Path]) -> None:
        """Ages and latency in one worker process (LiteRT can abort the process on a bad model)."""
        with tempfile.TemporaryDirectory(prefix="ab-nn-measure-") as out:
            try:
                measured = worker.run(self._measure_job(inputs, Path(out), path), self.options.timeout)
            except worker.WorkerFailed as error:
                measured = {"error": str(error)}
            self._record_measured(export_id, measured, reference)

    def _record_measured(self, export_id: int, measured: dict, reference: Reference) -> None:
        """A ``measure`` job's result on the artifact's rows: its fidelity, then its latency rows."""
        try:
            if "error" in measured:
                raise worker.WorkerFailed(measured["error"])
            ages = {split: np.load(file) for split, file in measured["files"].items()}
            self.store.update_export(export_id, layout=measured["layout"], **self._fidelity(reference, ages))
        except (worker.WorkerFailed, ValueError) as error:
            self.store.update_export(export_id, status=FAILED, error=_short(error))
            return
        if "latency_error" in measured:
            self._latency_failed(export_id, "litert", measured["latency_error"])
        else:
            self._latency_rows(export_id, "litert", measured["rows"])


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _floats(text: str | None, default) -> list[float]:
    return [float(v) for v in text.split(",")] if text else list(default)


def _state_bytes(model: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def metadata_for(config: Config, trial_id: int, in_shape, data: TrialData, model,
                 template_path: Path | None = None) -> dict:
    """ONNX metadata properties (strings): what a consumer needs to feed and read the model, the same
    keys as ``meta.json``'s ``preprocessing`` (``ab.nn.checkpoint.preprocessing``)."""
    pre = checkpoint.preprocessing(model, data, in_shape, template_path)
    meta = {"model": config.nn, "config": config.name, "trial_id": trial_id,
            "input_name": "input", "output_name": "age", "input_shape": "x".join(map(str, in_shape)),
            "layout": pre["layout"], "color": pre["color"], "crop_size": str(pre["crop_size"]),
            "input_range": "RGB scaled to [0, 1], then (x - mean) / std", "resize": pre["resize"],
            "output": "age in years, shape (batch, 1)", "split": pre["split"], "data_key": pre["data_key"],
            "producer": f"ab.nn {__version__}"}
    if pre["mean"] is not None:
        meta.update(mean=",".join(f"{v:g}" for v in pre["mean"]), std=",".join(f"{v:g}" for v in pre["std"]))
    if pre["age_range"] is not None:
        meta["age_range"] = ",".join(f"{v:g}" for v in pre["age_range"])
    if pre["align_template"] is not None:
        meta["align_template"] = json.dumps(pre["align_template"])
    return meta
