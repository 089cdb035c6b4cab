"""Photo -> ages: detect every face, align it onto the UTKFace template, preprocess it as training
did, and run the age model in PyTorch, onnxruntime or LiteRT."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ab.nn.dataset.decode import open_image
from ab.nn.face.aligner import REFINE, FaceAligner
from ab.nn.face.detect import KEYPOINTS, MIN_SCORE, FaceDetector
from ab.nn.face.template import Template, TemplateMissing, default_path
from ab.nn.face.verify import MIN_PRESENCE, FaceCheck
from ab.nn.predict import models
from ab.nn.predict.models import ResolvedModel


@dataclass
class Face:
    """One face: ``box`` (x0, y0, x1, y1) and ``landmarks`` (6, 2, in ``KEYPOINTS`` order) in
    photo pixels, the detector's ``score``, the estimated ``age`` in years and the aligned 200x200
    ``crop`` (PIL) the age model saw (before its own resize)."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float
    age: float
    crop: object

    def to_json(self) -> dict:
        return {"box": [round(float(v), 1) for v in self.box],
                "landmarks": {name: [round(float(x), 1), round(float(y), 1)]
                              for name, (x, y) in zip(KEYPOINTS, self.landmarks)},
                "score": round(float(self.score), 4), "age": round(float(self.age), 3)}


def open_photo(source, max_pixels: int | None = None):
    """An RGB PIL image from a path, bytes or a PIL image, turned upright by its EXIF orientation.
    A path or bytes is decoded by ``ab.nn.dataset.decode`` (at most ``max_pixels`` pixels, else
    ``ImageTooLarge``; anything else wrong, ``ImageUnreadable``)."""
    from PIL import Image, ImageOps

    if isinstance(source, Image.Image):
        return ImageOps.exif_transpose(source).convert("RGB")
    return open_image(source, upright=True, limit=max_pixels)


def _age_runtime(model: ResolvedModel, runtime: str, threads: int):
    from ab.nn.deploy.runtimes import LiteRtRuntime, OnnxRuntime, TorchRuntime

    path = model.files[runtime]
    if runtime == "onnx":
        return OnnxRuntime(path, threads)
    if runtime == "tflite":
        return LiteRtRuntime(path, threads)
    import torch

    from ab.nn import checkpoint

    torch.set_num_threads(threads)
    net, _ = checkpoint.load(path)
    return TorchRuntime(net)


def resolve_template(model: ResolvedModel, template, workspace) -> Template:
    """The template given (a Template or a file), else the model's own, else the workspace's."""
    if isinstance(template, Template):
        return template
    if template is not None:
        return Template.load(Path(template))
    if model.info.template is not None:
        return model.info.template
    from ab.nn.workspace import Workspace

    path = default_path(workspace or Workspace.resolve())
    try:
        return Template.load(path)
    except TemplateMissing:
        raise TemplateMissing(f"{model.reference} carries no alignment template and the workspace has none at "
                              f"{path}; measure it once with: python -m ab.nn.face.template --data-dir "
                              f"<UTKFace folder> [--root ...], or use a bundle (python -m ab.nn.bundle)") from None


class AgeEstimator:
    """Ages of the faces in photos. Build it with ``from_model``; ``predict`` takes a path, bytes
    or a PIL image and returns a ``Face`` per detected face, best detector score first."""

    def __init__(self, model: ResolvedModel, runtime: str, aligner: FaceAligner, threads: int,
                 calibrated: bool = True):
        self.model, self.runtime_name, self.aligner, self.threads = model, runtime, aligner, threads
        self.info = model.info
        self.calibration = model.info.calibration if calibrated else None
        self.runtime = _age_runtime(model, runtime, threads)

    @classmethod
    def from_model(cls, reference: str | Path, runtime: str | None = None, threads: int | None = None,
                   template: Template | str | Path | None = None, detector: str | None = None,
                   min_score: float = MIN_SCORE, workspace=None, *, root=None, face_check: bool = True,
                   min_presence: float | None = None, calibrated: bool | None = None) -> "AgeEstimator":
        """``reference``: ``best:<config>``, ``trial:<id>``, a trial or bundle folder, or an
        ``.onnx``/``.tflite`` file (see ``ab.nn.predict.models``). ``runtime``: ``torch``,
        ``onnx`` or ``tflite`` (default: the first the model has of TFLite, ONNX, PyTorch).
        ``threads``: default every core. ``template``: default the model's own (a bundle's), else
        the workspace's measured one. ``root`` (or its older name ``workspace``): the workspace, a path
        or a ``Workspace``, whose database, trial folders and template are used (default: the
        environment's). ``face_check``: every detection must also pass the face-mesh check
        (``ab.nn.face.verify``; a bundle's own, as its ``pipeline.json`` records it, and none for a
        bundle written without one); ``min_presence`` its threshold (default the bundle's, else
        ``MIN_PRESENCE``). ``calibrated``: read the ages through the model's per-age calibration
        (``ab.nn.stat.calibration``; a trial folder's ``calibration.json``, a bundle's
        ``age_calibration``); default: where the model carries one; True: it must carry one."""
        from ab.nn.workspace import active, of

        if root is not None and workspace is not None:
            raise ValueError("from_model: give root= or workspace=, not both")
        workspace = of(root if root is not None else workspace)
        model = models.resolve(str(reference), workspace)
        if calibrated and model.info.calibration is None:
            raise models.ModelNotFound(f"{reference} carries no age calibration; fit one on its validation part "
                                       f"with: python -m ab.nn.stat calibrate --trial ID")
        chosen = model.runtime(runtime)
        threads = threads or os.cpu_count() or 1
        the_template = resolve_template(model, template, workspace)
        if model.bundle is not None and detector is None:
            recorded = model.detector.get("check") if face_check else None
            check = None if recorded is None else FaceCheck(
                recorded["min_presence"] if min_presence is None else min_presence, threads,
                model.bundle / recorded["file"], recorded["max_disagreement"])
            face_detector = FaceDetector(model.detector["model"], threads=threads, min_score=min_score,
                                         model_path=model.bundle / model.detector["file"], check=check)
        else:
            check = FaceCheck(MIN_PRESENCE if min_presence is None else min_presence, threads) if face_check else None
            face_detector = FaceDetector(detector or the_template.detector.removeprefix("blazeface-"),
                                         threads=threads, min_score=min_score, check=check)
        refine = REFINE if model.refine is None else model.refine
        with active.use(workspace):  # a model file of that workspace's nn/ folder is found too
            return cls(model, chosen, FaceAligner(face_detector, the_template, refine), threads,
                       calibrated=calibrated is not False)

    def ages(self, crops) -> np.ndarray:
        """Ages of aligned 200x200 crops (PIL images), one model call for all of them."""
        if not crops:
            return np.zeros(0, np.float32)
        ages = self.runtime.predict(self.info.preprocess(crops))
        return ages if self.calibration is None else self.calibration(ages).astype(np.float32)

    def predict(self, image) -> list[Face]:
        photo = open_photo(image)
        aligned = self.aligner(photo)
        ages = self.ages([face.crop for face in aligned])
        return [Face(tuple(float(v) for v in a.detection.box), a.detection.landmarks, a.detection.score, float(age),
                     a.crop) for a, age in zip(aligned, ages)]

    def describe(self) -> dict:
        """What produced the ages: model, runtime, detector and its settings, template (for ``--json``)."""
        template, detector = self.aligner.template, self.aligner.detector
        calibration = None if self.calibration is None else {
            "method": self.calibration.method, "images": self.calibration.images,
            "knots": len(self.calibration.predicted)}
        return {"model": {"reference": self.model.reference, **self.info.provenance, **self.info.to_json(),
                          "calibration": calibration},
                "runtime": self.runtime_name, "threads": self.threads, "detector": detector.name,
                "detector_settings": detector.settings(),
                "template": {"images": template.images, "refine": self.aligner.refine,
                             "align_points": [template.keypoints[i] for i in template.align_points]}}
