"""ONNX -> TFLite with onnx2tf: float32 and float16, and on request dynamic-range int8 and full
int8 (int8 input and output) calibrated on training images.

onnx2tf turns the NCHW input into NHWC; the runtimes transpose explicitly. It is run on a copy of
the ONNX file (its simplifier rewrites its input in place), in a scratch folder holding the
sample file it would otherwise try to download (no network on our machines). Runs inside the
deployment worker process: TensorFlow is heavy and the converter can crash.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PRECISIONS = ("fp32", "fp16", "dynamic-int8", "int8")
_OUTPUTS = {"fp32": "float32", "fp16": "float16", "dynamic-int8": "dynamic_range_quant",
            "int8": "full_integer_quant"}
_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"
PRELOAD = ("onnx2tf", "onnxsim", "ai_edge_litert.interpreter")
"""What a converting worker imports before its ONNX file exists (``worker.Worker``), in the order the
conversion would: onnx2tf starts TensorFlow, and onnxsim's import (2.5 of MobileAgeNet's 10 s of
conversion) loads PyTorch."""


def converter_name() -> str:
    from importlib.metadata import version

    return f"onnx2tf {version('onnx2tf')}"


def _attempts(onnx_path: Path):
    """``(what, simplify first, onnx2tf's extra arguments)`` per try. First the graph simplified once,
    here, by onnxsim: onnx2tf runs onnxsim three times as a separate program, which took 7 of
    MobileAgeNet's 14 s of conversion for the same TFLite operators and ages. Then onnx2tf's own way.
    Last with the input fixed at batch 1: some graphs (a Resize whose target size is computed from the
    dynamic batch, as in C3AE) convert only when every shape is constant; their TFLite model takes one
    image per call. (Without any simplification, onnx2tf made one of MobileAgeNet's graphs answer one
    age for a batch of six: every try but the last must answer one age per image, ``_per_image``.)"""
    import onnx

    yield "simplified once", True, {"not_use_onnxsim": True}
    yield "simplified by onnx2tf", False, {}
    graph_input = onnx.load(str(onnx_path), load_external_data=False).graph.input[0]
    dims = [d.dim_value for d in graph_input.type.tensor_type.shape.dim][1:]
    static = f"{graph_input.name}:" + ",".join(str(d) for d in [1, *dims])
    yield "with a static batch of 1", False, {"overwrite_input_shape": [static]}


def _simplify(path: Path) -> None:
    import onnx
    import onnxsim

    simplified, _ = onnxsim.simplify(onnx.load(str(path)))
    onnx.save(simplified, str(path))


def _per_image(tflite: Path, batch: int = 3) -> None:
    """Raise unless the TFLite model answers ``batch`` ages for ``batch`` images."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite), num_threads=1)
    entry = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(entry["index"], [batch, *entry["shape"][1:]])
    interpreter.allocate_tensors()
    interpreter.set_tensor(entry["index"], np.zeros((batch, *entry["shape"][1:]), entry["dtype"]))
    interpreter.invoke()
    shape = interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).shape
    if not shape or shape[0] != batch:
        raise ValueError(f"the TFLite model answers shape {tuple(shape)} for a batch of {batch} images")


def convert(onnx_path: Path, out_dir: Path, precisions: list[str], calibration: Path | None = None,
            mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)) -> dict[str, dict]:
    """``{precision: {"path": ..., "seconds": ...}}`` or ``{precision: {"error": ...}}`` for each asked."""
    unknown = set(precisions) - set(PRECISIONS)
    if unknown:
        raise ValueError(f"unknown TFLite precision(s) {sorted(unknown)}; known: {PRECISIONS}")
    if "int8" in precisions and calibration is None:
        raise ValueError("full int8 needs calibration images")
    if not precisions:
        return {}
    import onnx2tf

    onnx_path, out_dir = Path(onnx_path).resolve(), Path(out_dir).resolve()
    calibration = Path(calibration).resolve() if calibration is not None else None
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="onnx2tf-", dir=out_dir))
    previous_dir, previous_path = os.getcwd(), os.environ.get("PATH", "")
    results: dict[str, dict] = {}
    start = time.perf_counter()
    try:
        shutil.copy(onnx_path, work / "model.onnx")
        np.save(work / _SAMPLE, np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32))
        os.chdir(work)
        os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + previous_path  # the onnxsim CLI
        kwargs = {}
        if "int8" in precisions:
            kwargs["custom_input_op_name_np_data_path"] = [
                ["input", str(calibration), np.asarray(mean, np.float32).reshape(1, 1, 1, 3),
                 np.asarray(std, np.float32).reshape(1, 1, 1, 3)]]
        errors = []
        for attempt, simplify, extra in _attempts(onnx_path):
            try:
                if simplify:
                    _simplify(work / "model.onnx")
                # output_signaturedefs: the intermediate SavedModel is written through tf_keras'
                # ExportArchive, which skips the legacy Keras metadata that took 22 of 27 s for
                # MobileAgeNet; the TFLite files are made from the same concrete function either way
                onnx2tf.convert(input_onnx_file_path=str(work / "model.onnx"), output_folder_path=str(work / "out"),
                                non_verbose=True, copy_onnx_input_output_names_to_tflite=True,
                                output_signaturedefs=True,
                                output_dynamic_range_quantized_tflite="dynamic-int8" in precisions,
                                output_integer_quantized_tflite="int8" in precisions, **kwargs, **extra)
                if "overwrite_input_shape" not in extra:
                    _per_image(work / "out" / "model_float32.tflite")
                break
            except BaseException as error:  # onnx2tf raises anything from SystemExit to TF errors
                errors.append(f"{attempt}: {type(error).__name__}: {error}".strip())
                shutil.copy(onnx_path, work / "model.onnx")  # onnx2tf may have rewritten its input
                shutil.rmtree(work / "out", ignore_errors=True)
        else:
            message = "onnx2tf failed, " + "\n".join(errors)
            return {p: {"error": message[:2000]} for p in precisions}
        seconds = time.perf_counter() - start
        for precision in precisions:
            produced = work / "out" / f"model_{_OUTPUTS[precision]}.tflite"
            if produced.exists():
                target = out_dir / f"model_{precision}.tflite"
                shutil.move(produced, target)
                results[precision] = {"path": str(target), "seconds": seconds}
            else:
                results[precision] = {"error": f"onnx2tf produced no {produced.name}"}
        return results
    finally:
        os.chdir(previous_dir)
        os.environ["PATH"] = previous_path
        shutil.rmtree(work, ignore_errors=True)
