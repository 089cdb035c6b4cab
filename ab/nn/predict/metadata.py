"""What it takes to feed an age model and read its answer, read from whatever travels with it:
the ONNX file's metadata properties, a trial folder's ``meta.json`` (with its transform's
normalisation), or a bundle's ``pipeline.json``. The one reader of model metadata.

A ``.tflite`` file carries none (onnx2tf writes no metadata): it is read from a sidecar in its
folder, in this order: the bundle's ``pipeline.json``, the ``model.onnx`` it was converted from,
the trial's ``meta.json``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ab.nn.bundle.manifest import PIPELINE_FILE
from ab.nn.face.template import Template
from ab.nn.stat import calibration as age_calibration
from ab.nn.stat.calibration import AgeCalibration

META_FILE = "meta.json"
ONNX_FILE = "model.onnx"
TEMPLATE_KEY = "align_template"
"""ONNX metadata property that may hold the template as JSON (exports do not write it yet)."""


class MetadataError(ValueError):
    """A model whose input cannot be described; the message says what is missing where."""


@dataclass(frozen=True)
class ModelInfo:
    """The age model's input contract. Pixels: RGB, scaled to [0, 1], then ``(x - mean) / std``,
    NCHW as our runtimes take it (they transpose for NHWC TFLite files themselves)."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    color: str = "RGB"
    layout: str = "NCHW"
    age_range: tuple[float, float] | None = None
    template: Template | None = None
    provenance: dict = field(default_factory=dict)
    calibration: AgeCalibration | None = None  # per-age map fitted on validation (ab.nn.stat.calibration)

    def preprocess(self, crops) -> np.ndarray:
        """Aligned 200x200 crops (PIL) -> the model's float32 NCHW batch, exactly as training saw
        them: PIL bilinear resize to the input size (the decode-once cache), then the evaluation
        transform's scaling and normalisation."""
        from PIL import Image

        size = (self.input_size, self.input_size)
        pixels = np.stack([np.asarray(c.convert("RGB").resize(size, Image.Resampling.BILINEAR), np.uint8)
                           for c in crops])
        if self.color == "BGR":
            pixels = pixels[..., ::-1]
        # torchvision's ToDtype(scale=True) and Normalize, in float32 and in their order of operations
        x = pixels.astype(np.float32) * np.float32(1.0 / 255.0)
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def with_template(self, template: Template) -> "ModelInfo":
        return replace(self, template=template)

    def to_json(self) -> dict:
        return {"input_size": self.input_size, "layout": self.layout, "color": self.color,
                "mean": list(self.mean), "std": list(self.std), "scale": 255,
                "age_range": list(self.age_range) if self.age_range else None}


def _floats(text, where: str, key: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in (text.split(",") if isinstance(text, str) else text))
    except (TypeError, ValueError):
        raise MetadataError(f"{where}: {key} is not a list of numbers: {text!r}") from None
    return values


def _size_from_shape(shape, where: str) -> int:
    try:
        dims = [int(v) for v in (shape.split("x") if isinstance(shape, str) else shape)]
    except (TypeError, ValueError):
        dims = []
    if len(dims) != 4 or dims[1] != 3 or dims[2] != dims[3]:
        raise MetadataError(f"{where}: expected an input shape 1x3xSxS, got {shape!r}")
    return dims[2]


def onnx_properties(path: Path) -> dict[str, str]:
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as error:
        raise MetadataError(f"{path}: not a readable ONNX file ({type(error).__name__})") from None
    return {p.key: p.value for p in proto.metadata_props}


def from_onnx(path: Path) -> ModelInfo:
    props = onnx_properties(path)
    where = str(path)
    missing = [k for k in ("input_shape", "mean", "std") if k not in props]
    if missing:
        raise MetadataError(f"{where}: no {', '.join(missing)} in the ONNX metadata; export it with ab.nn "
                            f"(python -m ab.nn.deploy) or use a bundle")
    if props.get("layout", "NCHW") != "NCHW":
        raise MetadataError(f"{where}: layout {props['layout']} is not supported (NCHW expected)")
    age_range = _floats(props["age_range"], where, "age_range") if props.get("age_range") else None
    template = Template.from_json(json.loads(props[TEMPLATE_KEY]), where) if props.get(TEMPLATE_KEY) else None
    provenance = {k: int(props[k]) if k == "trial_id" and props[k].isdigit() else props[k]
                  for k in ("model", "config", "trial_id", "split", "producer") if k in props}
    return ModelInfo(input_size=_size_from_shape(props["input_shape"], where),
                     mean=_floats(props["mean"], where, "mean"), std=_floats(props["std"], where, "std"),
                     age_range=age_range, template=template, provenance=provenance)


def from_meta_json(folder: Path) -> ModelInfo:
    """A trial folder's ``meta.json``: the size from ``in_shape``, mean/std from its transform's
    evaluation pipeline fed the loader's normalisation (as training did)."""
    from ab.nn import registry
    from ab.nn.dataset import utkface
    from ab.nn.transform._deterministic import eval_transform_for

    path = Path(folder) / META_FILE
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise MetadataError(f"cannot read {path}: {error}") from None
    where = str(path)
    pre = meta.get("preprocessing") or {}
    if pre.get("mean") is not None:
        from ab.nn.config import Config

        template = Template.from_json(pre["align_template"], where) if pre.get("align_template") else None
        return ModelInfo(input_size=int(pre["input_size"]), mean=tuple(pre["mean"]), std=tuple(pre["std"]),
                         color=pre.get("color", "RGB"), age_range=tuple(pre["age_range"]) if pre.get("age_range")
                         else None, template=template,
                         provenance={"model": Config.parse(meta["config"]).nn, "config": meta["config"],
                                     "trial_id": meta.get("trial_id"), "transform": meta["prm"].get("transform")})
    transform_name = (meta.get("prm") or {}).get("transform")  # checkpoints from before ``preprocessing``
    if not transform_name:
        raise MetadataError(f"{where}: no transform in prm; cannot tell the model's normalisation")
    module = registry.load(registry.TRANSFORM, transform_name)
    pipeline = eval_transform_for(module.transform, utkface.IMAGENET_NORM)
    mean, std = getattr(pipeline, "mean", None), getattr(pipeline, "std", None)
    if mean is None:
        raise MetadataError(f"{where}: transform {transform_name} does not expose mean/std")
    size = _size_from_shape(meta["in_shape"], where)
    provenance = {"config": meta.get("config"), "trial_id": meta.get("trial_id"), "transform": transform_name}
    from ab.nn.config import Config

    model = Config.parse(meta["config"]).nn if meta.get("config") else None
    return ModelInfo(input_size=size, mean=tuple(mean), std=tuple(std),
                     provenance={"model": model, **{k: v for k, v in provenance.items() if v is not None}})


def from_pipeline_json(path: Path) -> ModelInfo:
    try:
        values = json.loads(Path(path).read_text())
        model = values["input"]
        return ModelInfo(input_size=int(model["input_size"]), mean=tuple(map(float, model["mean"])),
                         std=tuple(map(float, model["std"])), color=model.get("color", "RGB"),
                         age_range=tuple(values["age_range"]) if values.get("age_range") else None,
                         template=Template.from_json(values["template"], str(path)),
                         provenance=dict(values.get("provenance", {})),
                         calibration=AgeCalibration.from_json(values["age_calibration"])
                         if values.get("age_calibration") is not None else None)
    except (OSError, ValueError, KeyError, TypeError, OverflowError, RecursionError) as error:
        raise MetadataError(f"cannot read the bundle's {path}: {error}") from None


def for_tflite(path: Path) -> ModelInfo:
    """A ``.tflite`` file's metadata from its sidecar (see the module's docstring)."""
    folder = Path(path).parent
    if (folder / PIPELINE_FILE).is_file():
        return from_pipeline_json(folder / PIPELINE_FILE)
    if (folder / ONNX_FILE).is_file():
        return _calibrated(from_onnx(folder / ONNX_FILE), folder)
    if (folder / META_FILE).is_file():
        return _calibrated(from_meta_json(folder), folder)
    raise MetadataError(f"{path}: a .tflite file carries no metadata; put the {ONNX_FILE} it was converted from, "
                        f"the trial's {META_FILE} or a bundle's {PIPELINE_FILE} beside it")


def for_trial_folder(folder: Path) -> ModelInfo:
    """A trial folder: its ONNX file's metadata where it was exported, else ``meta.json``."""
    folder = Path(folder)
    return _calibrated(from_onnx(folder / ONNX_FILE) if (folder / ONNX_FILE).is_file() else from_meta_json(folder),
                       folder)


def _calibrated(info: ModelInfo, folder: Path) -> ModelInfo:
    """``info`` with the trial folder's age calibration, where it has one."""
    try:
        return replace(info, calibration=age_calibration.load(folder))
    except ValueError as error:
        raise MetadataError(str(error)) from None
