"""Detect and align in one step: every face the detector finds, warped by the similarity transform
that puts its eyes, nose and mouth on the template's, into a crop with UTKFace's geometry. Shared
by inference (``ab.nn.predict``) and by the in-the-wild loader, so both see the same crops."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ab.nn.face import align
from ab.nn.face.detect import Detection, FaceDetector, model_file
from ab.nn.face.template import Template
from ab.nn.util.digest import sha256_of

REFINE = True

@dataclass(frozen=True)
class AlignedFace:
    detection: Detection
    matrix: np.ndarray  # 2x3, photo pixels -> crop pixels
    crop: object        # PIL image, template.size x template.size, RGB


class FaceAligner:
    """``refine``: look a second time. The first fit puts the face upright at the template's scale;
    the detector then runs again on that view, the crop at the centre of a canvas twice its size
    (how the template was measured), and the fit is redone from those landmarks. BlazeFace's
    keypoints depend on the face's scale and rotation in its input; the second look sees every
    face as it saw the training crops. The second look skips the detector's check (the face passed
    it already; only its landmarks are wanted)."""

    def __init__(self, detector: FaceDetector, template: Template, refine: bool = REFINE):
        if template.detector != detector.name:
            raise ValueError(f"the alignment template was measured with {template.detector}, but the detector is "
                             f"{detector.name}: measure a template with the same detector")
        self.detector, self.template, self.refine = detector, template, refine

    def fit(self, image, landmarks: np.ndarray) -> np.ndarray:
        """The photo -> crop matrix for a face with these landmarks (refined when asked)."""
        points, size = list(self.template.align_points), self.template.size
        matrix = align.similarity(landmarks[points], self.template.points)
        if not self.refine:
            return matrix
        view = matrix.copy()
        view[:, 2] += size / 2  # the crop at the centre of a 2x canvas
        for face in self.detector(align.warp(image, view, 2 * size), checked=False):
            centre = face.box.reshape(2, 2).mean(axis=0)
            if np.all(np.abs(centre - size) < size / 4):
                return align.similarity(align.apply(align.invert(view), face.landmarks[points]), self.template.points)
        return matrix

    def align(self, image, detection: Detection) -> AlignedFace:
        matrix = self.fit(image, detection.landmarks)
        return AlignedFace(detection, matrix, align.warp(image, matrix, self.template.size))

    def __call__(self, image) -> list[AlignedFace]:
        """Every face in ``image`` (a PIL image), best score first."""
        return [self.align(image, detection) for detection in self.detector(image)]


class TemplateAlignment:
    """Aligning onto the template file at ``path`` from the image cache's decoding threads: one
    ``FaceAligner`` per thread (a LiteRT interpreter is not thread-safe). What the UTKFace loader and
    AgeMoE hand to the dataset for ``--align`` (``ab.nn.dataset.sources.Alignment``); nothing is read
    before the first call."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local, self._lock, self._template = threading.local(), threading.Lock(), None

    def recipe(self) -> str:
        """The SHA-256 of the template file and of the detector's weights, read now (``TemplateMissing``,
        ``ValueError`` for a file that is no template, ``DetectorUnavailable``)."""
        detector = model_file(Template.load(self.path).detector.removeprefix("blazeface-"))
        return f"aligned onto template {sha256_of(self.path)} with detector {sha256_of(detector)}"

    def aligner(self) -> FaceAligner:
        """This thread's aligner; the template is read once, by the first."""
        if not hasattr(self._local, "aligner"):
            with self._lock:
                if self._template is None:
                    self._template = Template.load(self.path)
            template = self._template
            self._local.aligner = FaceAligner(FaceDetector(template.detector.removeprefix("blazeface-")), template)
        return self._local.aligner
