"""PyTorch -> TFLite with litert-torch (LEMUR's converter), the second converter beside onnx2tf.

    <converter python> litert_torch_convert.py JOB.json RESULT.json

litert-torch requires torch < 2.15 and so cannot be installed beside the project's torch; it lives
in its own environment (``scripts/setup_litert_torch.sh``) and this file runs there as a plain
script: it imports nothing from ``ab`` (a path to the project's site-packages would bring the
other torch along). The model is built again from its LEMUR model file, ``Net(in_shape, out_shape,
prm, device)``, with the trial's weights, and wrapped to take NHWC input like onnx2tf's output.

Precisions (the names of ``tflite_convert.PRECISIONS``):
  fp32          ``litert_torch.convert``
  fp16          fp16 weights of the fp32 file (ai-edge-quantizer's float casting, float compute)
  dynamic-int8  PT2E dynamic quantization: int8 weights, activations quantized at run time
  int8          PT2E static quantization calibrated on training images: int8 input and output
"""
from __future__ import annotations

import importlib.util
import json
import sys
import time
import traceback
from importlib.metadata import version
from pathlib import Path

PRECISIONS = ("fp32", "fp16", "dynamic-int8", "int8")
FILE = "model_litert-torch_{precision}.tflite"


def converter_name() -> str:
    import torch

    return f"litert-torch {version('litert-torch')} (torch {torch.__version__.split('+')[0]})"


def build(job: dict):
    """The trial's model in eval mode, rebuilt from its model file and weights."""
    import torch

    spec = importlib.util.spec_from_file_location(f"_litert_model_{Path(job['model_file']).stem}", job["model_file"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.Net(tuple(job["in_shape"]), tuple(job["out_shape"]), dict(job["prm"]), torch.device("cpu"))
    model.load_state_dict(torch.load(job["weights"], map_location="cpu", weights_only=True), strict=True)
    return model.eval()


def _pt2e(nhwc, sample, dynamic: bool, calibration):
    """A PT2E-quantized graph of ``nhwc`` and the quantizer litert-torch lowers it with."""
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic))
    graph = prepare_pt2e(torch.export.export(nhwc, (sample,)).module(), quantizer)
    with torch.no_grad():
        for batch in calibration:
            graph(batch)
    return convert_pt2e(graph, fold_quantize=False), quantizer


def _calibration(job: dict, sample):
    """Training images as normalised NHWC batches of one (the static quantizer's observers)."""
    import numpy as np
    import torch

    if not job.get("calibration"):
        return [sample]
    images = np.load(job["calibration"]).astype(np.float32)  # NHWC in [0, 1]
    mean, std = np.asarray(job["mean"], np.float32), np.asarray(job["std"], np.float32)
    return [torch.from_numpy((image[None] - mean) / std) for image in images]


def _fp16(fp32_path: Path, path: Path) -> None:
    from ai_edge_quantizer import qtyping, quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    casting = quantizer.Quantizer(str(fp32_path))
    casting.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                   granularity=qtyping.QuantGranularity.TENSORWISE,
                                   algorithm_key=AlgorithmName.FLOAT_CASTING)
    casting.quantize().export_model(str(path), overwrite=True)


def convert(job: dict) -> dict:
    """``{precision: {"path", "seconds"} | {"error"}}`` for each precision asked."""
    import litert_torch
    import torch

    unknown = set(job["precisions"]) - set(PRECISIONS)
    if unknown:
        raise ValueError(f"unknown TFLite precision(s) {sorted(unknown)}; known: {PRECISIONS}")
    if "int8" in job["precisions"] and not job.get("calibration"):
        raise ValueError("full int8 needs calibration images")
    out_dir = Path(job["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    nhwc = litert_torch.to_channel_last_io(build(job), args=[0]).eval()
    channels, height, width = job["in_shape"][1:]
    sample = torch.randn(1, height, width, channels)
    results: dict[str, dict] = {}
    # fp16 is cast from the fp32 file, so fp32 is converted first whenever either is asked
    for precision in sorted(job["precisions"], key=PRECISIONS.index):
        path = out_dir / FILE.format(precision=precision)
        start = time.perf_counter()
        try:
            if precision == "fp32":
                litert_torch.convert(nhwc, (sample,)).export(str(path))
            elif precision == "fp16":
                fp32 = out_dir / FILE.format(precision="fp32")
                if "fp32" not in results:
                    litert_torch.convert(nhwc, (sample,)).export(str(fp32))
                elif "error" in results["fp32"]:
                    raise RuntimeError("no fp32 file to cast: " + results["fp32"]["error"])
                _fp16(fp32, path)
                if "fp32" not in job["precisions"]:
                    fp32.unlink(missing_ok=True)
            else:
                static = precision == "int8"
                graph, quantizer = _pt2e(nhwc, sample, dynamic=not static,
                                         calibration=_calibration(job, sample) if static else [sample])
                from litert_torch.quantize.quant_config import QuantConfig

                litert_torch.convert(graph, (sample,), quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(
                    str(path))
            results[precision] = {"path": str(path), "seconds": time.perf_counter() - start}
        except Exception as error:  # one precision failing leaves the others
            results[precision] = {"error": f"litert-torch failed: {type(error).__name__}: {error}"[:2000]}
    return results


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    job = json.loads(Path(argv[0]).read_text())
    try:
        result = {"converter": converter_name(), "results": convert(job)}
    except Exception as error:
        result = {"error": f"{type(error).__name__}: {error}"[:2000], "traceback": traceback.format_exc()[-4000:]}
    Path(argv[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
