"""PyTorch -> ONNX: one self-contained file, named input/output, dynamic batch, checked, with metadata.

Two exporters, tried in order: TorchScript's (``dynamo=False``) and torch.export's (``dynamo=True``, the
default of ``torch.onnx.export`` since PyTorch 2.9, which deprecates the other). Every model of the zoo
exports and converts to TFLite with either, with the same fidelity, but the TorchScript exporter took
about 1 s for MobileAgeNet where the dynamo exporter took 17 s (5.5 s of ``torch.export`` and 13.6 s of
translation), on a trial's export that is otherwise about 20 s. Where the first fails (a model it cannot
export, a tracer warning that the trace may hold the example's control flow or values, or a PyTorch that
no longer has it), the next is used; the exporter is recorded with the file."""
from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Mapping

import torch

from ab.nn.deploy.options import EXPORTERS

INPUT_NAME = "input"
OUTPUT_NAME = "age"
OPSET = 20


def exporter_name(exporter: str) -> str:
    """What export rows record as the ONNX file's converter."""
    return f"torch.onnx ({exporter}) {torch.__version__}"


def export_onnx(model: torch.nn.Module, in_shape, path: Path, metadata: Mapping[str, object] | None = None,
                dynamic_batch: bool = True, exporters: tuple[str, ...] = EXPORTERS) -> Path:
    """Export ``model`` (NCHW float input of ``in_shape``) and run ``onnx.checker`` on the result."""
    return export(model, in_shape, path, metadata, dynamic_batch, exporters)[0]


def export(model: torch.nn.Module, in_shape, path: Path, metadata: Mapping[str, object] | None = None,
           dynamic_batch: bool = True, exporters: tuple[str, ...] = EXPORTERS) -> tuple[Path, str]:
    """``export_onnx`` that also says which exporter made the file (``exporter_name``)."""
    import onnx

    unknown = [e for e in exporters if e not in EXPORTERS]
    if unknown or not exporters:
        raise ValueError(f"unknown ONNX exporter(s) {unknown or exporters}; choose from {', '.join(EXPORTERS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a channels_last model (faster training on CPU) would export extra shape ops that onnx2tf rejects
    exported = copy.deepcopy(model).cpu().eval().to(memory_format=torch.contiguous_format)
    errors = []
    for exporter in exporters:
        try:
            _EXPORT[exporter](exported, in_shape, path, dynamic_batch)
            proto = onnx.load(str(path))
            onnx.checker.check_model(proto, full_check=True)
            break
        except Exception as error:
            errors.append(f"{exporter}: {type(error).__name__}: {error}".strip())
            path.unlink(missing_ok=True)
    else:
        raise RuntimeError("ONNX export failed with every exporter:\n" + "\n".join(errors))
    if metadata:
        del proto.metadata_props[:]
        for key, value in sorted(metadata.items()):
            entry = proto.metadata_props.add()
            entry.key, entry.value = str(key), str(value)
        onnx.save(proto, str(path))
    return path, exporter_name(exporter)


def _example(in_shape, dynamic_batch: bool) -> torch.Tensor:
    batch = 2 if dynamic_batch else 1  # an example batch of 1 would let an exporter specialise the dimension
    return torch.rand((batch, *tuple(in_shape)[1:]))


def _torchscript(model, in_shape, path: Path, dynamic_batch: bool) -> None:
    import onnx

    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    example = _example(in_shape, dynamic_batch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore", (FutureWarning, DeprecationWarning, UserWarning))
        warnings.simplefilter("always", torch.jit.TracerWarning)
        torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=OPSET, dynamic_axes=axes, verbose=False)
    traced = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    if traced:  # the trace may hold this example's control flow or values: torch.export's turn
        raise RuntimeError(f"the tracer warned: {str(traced[0].message).splitlines()[0]}")
    # the tracer leaves an output dimension it computed (a flip-averaged head's) undeclared; the file
    # declares what the model gives, as torch.export's does: (batch, 1) for ages, never logits
    with torch.no_grad():
        shape = tuple(model(example).shape)
    proto = onnx.load(str(path))
    dims = proto.graph.output[0].type.tensor_type.shape.dim
    if len(dims) == len(shape) and any(not d.dim_value for d in dims[1:]):
        for dim, size in zip(dims[1:], shape[1:]):
            dim.dim_value = size  # replaces a symbolic name the tracer made up
        onnx.save(proto, str(path))


def _dynamo(model, in_shape, path: Path, dynamic_batch: bool) -> None:
    kwargs = {}
    if dynamic_batch:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=4096)},)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (FutureWarning, DeprecationWarning, UserWarning))
        torch.onnx.export(model, (_example(in_shape, dynamic_batch),), str(path), dynamo=True, external_data=False,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=OPSET,
                          verbose=False, **kwargs)


_EXPORT = {"torchscript": _torchscript, "dynamo": _dynamo}
