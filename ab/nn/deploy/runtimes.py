"""The three runtimes an exported age model runs in: PyTorch (eager, ``inference_mode``),
onnxruntime and the LiteRT (TFLite) interpreter. Each takes NCHW float32 batches, as produced by
the evaluation transform, and returns ages of shape (N,); ``predict(native(x), native=True)`` skips
the layout change, for timing an artifact as a deployed app would call it."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np


@contextmanager
def torch_threads(threads: int):
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class Runtime:
    name: str

    def native(self, batch: np.ndarray) -> np.ndarray:
        """``batch`` (NCHW) in the model's own input layout."""
        return batch


class TorchRuntime(Runtime):
    """Runs with torch's current thread count: wrap calls in ``torch_threads`` to fix it (outside
    any timed region: changing the count resizes torch's thread pool)."""

    name = "pytorch"

    def __init__(self, model):
        self.model = model.eval()

    def predict(self, batch: np.ndarray, native: bool = False) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model(torch.from_numpy(batch)).reshape(-1).float().numpy()


class OnnxRuntime(Runtime):
    name = "onnxruntime"

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def predict(self, batch: np.ndarray, native: bool = False) -> np.ndarray:
        return self.session.run(None, {self.input: batch})[0].reshape(-1).astype(np.float32)


class LiteRtRuntime(Runtime):
    """LiteRT interpreter; NHWC inputs are transposed here, int8 inputs quantised with the model's
    own scale and zero point, int8 outputs dequantised."""

    name = "litert"

    def __init__(self, path: Path, threads: int):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        detail = self.interpreter.get_input_details()[0]
        self.nhwc = int(detail["shape"][-1]) == 3 and int(detail["shape"][1]) != 3
        signature = detail.get("shape_signature", detail["shape"])
        # a model converted with a static batch (see tflite_convert) need not resize: feed it slices
        self.fixed_batch = int(signature[0]) if int(signature[0]) > 0 else None
        self.batch = None

    @property
    def layout(self) -> str:
        return "NHWC" if self.nhwc else "NCHW"

    def _prepare(self, n: int) -> None:
        if self.batch != n:
            detail = self.interpreter.get_input_details()[0]
            shape = list(detail["shape"])
            shape[0] = n
            self.interpreter.resize_tensor_input(detail["index"], shape, strict=False)
            self.interpreter.allocate_tensors()
            self.batch = n
            self.input_detail = self.interpreter.get_input_details()[0]
            self.output_detail = self.interpreter.get_output_details()[0]

    def native(self, batch: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(batch.transpose(0, 2, 3, 1)) if self.nhwc else batch

    def predict(self, batch: np.ndarray, native: bool = False) -> np.ndarray:
        """Ages for an NCHW ``batch``, or for one already in the model's layout when ``native``."""
        step = self.fixed_batch
        if step is not None and batch.shape[0] != step:
            return np.concatenate([self.predict(batch[i:i + step], native) for i in range(0, len(batch), step)])
        self._prepare(batch.shape[0])
        data = batch if native else self.native(batch)
        detail, out_detail = self.input_detail, self.output_detail
        if detail["dtype"] != np.float32:
            scale, zero = detail["quantization"]
            info = np.iinfo(detail["dtype"])
            data = np.clip(np.round(data / scale + zero), info.min, info.max).astype(detail["dtype"])
        self.interpreter.set_tensor(detail["index"], data)
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(out_detail["index"])
        if out_detail["dtype"] != np.float32:
            scale, zero = out_detail["quantization"]
            out = (out.astype(np.float32) - zero) * scale
        return out.reshape(-1).astype(np.float32)
