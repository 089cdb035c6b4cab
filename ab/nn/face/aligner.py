"""Detect and align in one step: every face the detector finds, warped by the similarity transform
that puts its eyes, nose and mouth on the template's, into a crop with UTKFace's geometry. Shared
by inference (``ab.nn.predict``) and by the in-the-wild loader, so both see the same crops."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ab.nn.face import align
from ab.nn.face.detect import Detection, FaceDetector
from ab.nn.face.template import Template


@dataclass(frozen=True)
class AlignedFace:
    detection: Detection
    matrix: np.ndarray  # 2x3, photo pixels -> crop pixels
    crop: object        # PIL image, template.size x template.size, RGB


class FaceAligner:
    def __init__(self, detector: FaceDetector, template: Template):
        if template.detector != detector.name:
            raise ValueError(f"the alignment template was measured with {template.detector}, but the detector is "
                             f"{detector.name}: measure a template with the same detector")
        self.detector, self.template = detector, template

    def align(self, image, detection: Detection) -> AlignedFace:
        points = list(self.template.align_points)
        matrix = align.similarity(detection.landmarks[points], self.template.points)
        return AlignedFace(detection, matrix, align.warp(image, matrix, self.template.size))

    def __call__(self, image) -> list[AlignedFace]:
        """Every face in ``image`` (a PIL image), best score first."""
        return [self.align(image, detection) for detection in self.detector(image)]
