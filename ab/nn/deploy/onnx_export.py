"""PyTorch -> ONNX: one self-contained file, named input/output, dynamic batch, checked, with metadata."""
from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Mapping

import torch

INPUT_NAME = "input"
OUTPUT_NAME = "age"
OPSET = 20


def export_onnx(model: torch.nn.Module, in_shape, path: Path, metadata: Mapping[str, object] | None = None,
                dynamic_batch: bool = True) -> Path:
    """Export ``model`` (NCHW float input of ``in_shape``) and run ``onnx.checker`` on the result."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a channels_last model (faster training on CPU) would export extra shape ops that onnx2tf rejects
    exported = copy.deepcopy(model).cpu().eval().to(memory_format=torch.contiguous_format)
    batch = 2 if dynamic_batch else 1  # an example batch of 1 would let torch.export specialise the dimension
    example = torch.rand((batch, *tuple(in_shape)[1:]))
    kwargs = {}
    if dynamic_batch:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=4096)},)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (FutureWarning, DeprecationWarning, UserWarning))
        torch.onnx.export(exported, (example,), str(path), dynamo=True, external_data=False,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=OPSET,
                          verbose=False, **kwargs)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    if metadata:
        del proto.metadata_props[:]
        for key, value in sorted(metadata.items()):
            entry = proto.metadata_props.add()
            entry.key, entry.value = str(key), str(value)
        onnx.save(proto, str(path))
    return path
