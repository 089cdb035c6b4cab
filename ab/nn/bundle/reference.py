"""Reference implementation of this bundle's photo -> age pipeline, in numpy, Pillow and LiteRT
only: what an app ports. Everything it needs is in this folder; ``pipeline.json`` holds the numbers.

    python reference.py photo.jpg [more.jpg ...]        # one JSON line per face

0. Files: only files listed in ``pipeline.json`` by a plain name, with the sha256 they have, are
   opened.
1. Detect: letterbox the photo into the detector's square input (scaled to fit with PIL bilinear,
   centred on black, pixels to [-1, 1]); BlazeFace gives 16 numbers and a logit per anchor: box
   centre, size and six keypoints (x, y), relative to the anchor, in input pixels. Keep scores
   (sigmoid) above ``min_score``, merge overlapping ones by weighted non-maximum suppression, map
   back through the letterbox. With a ``check``, keep only faces whose region (the box's centre,
   its longer side times ``roi_scale``, turned so the eyes are level, warped PIL bilinear into the
   check model's square input, pixels to [0, 1]) the face-mesh model gives a face-presence
   probability (sigmoid of its one-number output) above ``min_presence``, with its eyes, nose tip
   and mouth within ``max_disagreement`` eye distances of the detector's (``passes``).
2. Align: the similarity transform (least squares, no reflection) taking the face's eyes, nose
   and mouth onto the template's. With ``refine``, look again: warp the photo through it into a
   canvas twice the crop's size with the crop at its centre, detect there (without the check), and
   fit again to those landmarks (mapped back to the photo). Warp the photo through the fit into a
   200x200 crop (PIL bilinear, black outside).
3. Age: resize the crop to the model's input (PIL bilinear), scale to [0, 1], subtract the mean,
   divide by the std, feed the TFLite model (NHWC), read the age in years. Where ``pipeline.json``
   has an ``age_calibration`` (a per-age map fitted on the model's validation images), read the age
   through it: linear between its knots (``predicted`` -> ``calibrated``), flat beyond the outermost.
"""
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from PIL import Image, ImageOps

HERE = Path(__file__).resolve().parent


def anchors(size, strides, per_cell):
    out, layer = [], 0
    while layer < len(strides):
        stride, repeats = strides[layer], 0
        while layer < len(strides) and strides[layer] == stride:
            repeats += per_cell
            layer += 1
        cells = size // stride
        for y in range(cells):
            for x in range(cells):
                out += [((x + 0.5) / cells, (y + 0.5) / cells)] * repeats
    return np.array(out, np.float32)


def iou(box, boxes):
    x0, y0 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x1, y1 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda b: np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)  # noqa: E731
    union = area(box) + area(boxes) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0)


def similarity(src, dst):
    """2x3 matrix of the least-squares similarity transform src -> dst (Umeyama)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    u, sigma, vt = np.linalg.svd(d.T @ s / len(s))
    flip = np.diag([1.0, -1.0 if np.linalg.det(u) * np.linalg.det(vt) < 0 else 1.0])
    scale = np.trace(np.diag(sigma) @ flip) / ((s ** 2).sum() / len(s))
    linear = scale * (u @ flip @ vt)
    return np.hstack([linear, (md - linear @ ms)[:, None]])


def invert(m):
    linear = np.linalg.inv(m[:, :2])
    return np.hstack([linear, -linear @ m[:, 2:]])


def warp(image, m, size):
    """The size x size view whose pixel q shows the photo at m^-1 q (m: photo -> view)."""
    return image.transform((size, size), Image.Transform.AFFINE, tuple(invert(m).reshape(6)),
                           resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))


def bundle_file(folder, config, name):
    """A file of the bundle: a plain name listed in pipeline.json, with the sha256 listed there."""
    entry = config["files"].get(name) if isinstance(name, str) else None
    path = folder / str(name)
    if entry is None or Path(name).name != name or name in (".", "..") or path.is_symlink() or not path.is_file():
        raise ValueError(f"pipeline.json names {name!r}, which is not a file of this bundle listed with its sha256")
    if hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
        raise ValueError(f"{name} does not match its sha256 in pipeline.json")
    return str(path)


class Pipeline:
    def __init__(self, folder=HERE, threads=1):
        folder = Path(folder)
        self.config = json.loads((folder / "pipeline.json").read_text())
        det = self.config["detector"]
        self.det = Interpreter(model_path=bundle_file(folder, self.config, det["file"]), num_threads=threads)
        self.det.allocate_tensors()
        outputs = self.det.get_output_details()
        self.det_boxes = next(o["index"] for o in outputs if o["shape"][-1] == 16)
        self.det_scores = next(o["index"] for o in outputs if o["shape"][-1] == 1)
        self.anchors = anchors(det["input_size"], det["strides"], det["anchors_per_cell"])
        self.check = None
        if det.get("check"):
            self.check = Interpreter(model_path=bundle_file(folder, self.config, det["check"]["file"]),
                                     num_threads=threads)
            self.check.allocate_tensors()
        self.age_model = Interpreter(model_path=bundle_file(folder, self.config, self.config["age_model"]["tflite"]),
                                     num_threads=threads)
        self.age_model.allocate_tensors()
        template = self.config["template"]
        self.template = np.array(template["mean"], np.float64)[template["align_points"]]
        self.align_points = template["align_points"]

    def detect(self, image, checked=True):
        """[(box (4,), landmarks (6, 2), score), ...] in photo pixels; ``checked=False`` skips the check."""
        det = self.config["detector"]
        size = det["input_size"]
        scale = size / max(image.size)
        w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
        left, top = (size - w) // 2, (size - h) // 2
        canvas = Image.new("RGB", (size, size))
        canvas.paste(image.resize((w, h), Image.Resampling.BILINEAR), (left, top))
        x = np.asarray(canvas, np.float32) * (2.0 / 255.0) - 1.0
        self.det.set_tensor(self.det.get_input_details()[0]["index"], x[None])
        self.det.invoke()
        raw = self.det.get_tensor(self.det_boxes)[0].reshape(-1, 8, 2) / size
        logits = np.clip(self.det.get_tensor(self.det_scores)[0, :, 0], -80, 80)
        scores = 1 / (1 + np.exp(-logits))
        keep = scores > det["min_score"]
        raw, scores, anchor = raw[keep], scores[keep], self.anchors[keep]
        centre, half = raw[:, 0] + anchor, raw[:, 1] / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        points = raw[:, 2:] + anchor[:, None]
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, points, scores = boxes[valid], points[valid], scores[valid]
        order = np.argsort(-scores, kind="stable")
        boxes, points, scores = boxes[order], points[order], scores[order]
        faces, remaining = [], np.arange(len(scores))
        while remaining.size:  # weighted non-maximum suppression
            overlap = iou(boxes[remaining[0]], boxes[remaining])
            group = remaining[overlap > det["nms_iou"]]
            w = scores[group] / scores[group].sum()
            box = (w @ boxes[group]).reshape(2, 2) * size
            marks = np.tensordot(w, points[group], axes=1) * size
            faces.append((((box - (left, top)) / scale).reshape(4).astype(np.float32),
                          ((marks - (left, top)) / scale).astype(np.float32), float(scores[remaining[0]])))
            remaining = remaining[overlap <= det["nms_iou"]]
        if self.check is None or not checked:
            return faces
        return [face for face in faces if self.passes(image, face[0], face[1])]

    def passes(self, image, box, marks):
        """The face check: the face-mesh model, run on the detection's region, gives a face-presence
        probability above min_presence, and its eyes, nose tip and mouth (midpoints of mesh_points)
        lie within max_disagreement eye distances (mean) of the detector's."""
        check = self.config["detector"]["check"]
        size = int(self.check.get_input_details()[0]["shape"][1])
        box = np.asarray(box, np.float64)
        centre = (box[:2] + box[2:]) / 2
        side = check["roi_scale"] * max(box[2] - box[0], box[3] - box[1])
        eyes = np.asarray(marks[1], np.float64) - marks[0]
        t = np.arctan2(eyes[1], eyes[0])
        linear = (size / side) * np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
        m = np.hstack([linear, (size / 2 - linear @ centre)[:, None]])
        x = np.asarray(warp(image, m, size), np.float32)
        self.check.set_tensor(self.check.get_input_details()[0]["index"], (x / 255.0)[None])
        self.check.invoke()
        outputs = self.check.get_output_details()
        logit = self.check.get_tensor(next(o for o in outputs if int(np.prod(o["shape"])) == 1)["index"])
        mesh = self.check.get_tensor(next(o for o in outputs if int(np.prod(o["shape"])) >= 3 * 468)["index"])
        mesh = mesh.reshape(-1, 3)[:, :2].astype(np.float64)
        theirs = np.array([(mesh[a] + mesh[b]) / 2 for a, b in check["mesh_points"]])
        ours = np.asarray(marks, np.float64)[:4] @ m[:, :2].T + m[:, 2]
        eye_distance = max(float(np.linalg.norm(ours[1] - ours[0])), 1e-6)
        disagreement = np.linalg.norm(ours - theirs, axis=1).mean() / eye_distance
        presence = 1 / (1 + np.exp(-np.clip(float(logit.reshape(-1)[0]), -80, 80)))
        return presence > check["min_presence"] and disagreement < check["max_disagreement"]

    def align(self, image, landmarks):
        """The 200x200 crop with the template's geometry."""
        size = self.config["crop_size"]
        m = similarity(np.asarray(landmarks)[self.align_points], self.template)
        if self.config["refine"]:
            view = m.copy()
            view[:, 2] += size / 2
            for box, marks, _ in self.detect(warp(image, view, 2 * size), checked=False):
                if np.all(np.abs(box.reshape(2, 2).mean(axis=0) - size) < size / 4):
                    back = marks[self.align_points] @ invert(view)[:, :2].T + invert(view)[:, 2]
                    m = similarity(back, self.template)
                    break
        return warp(image, m, size)

    def age(self, crop):
        spec = self.config["input"]
        size = spec["input_size"]
        x = np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR), np.uint8).astype(np.float32)
        x = x * np.float32(1.0 / spec["scale"])
        x = (x - np.array(spec["mean"], np.float32)) / np.array(spec["std"], np.float32)
        detail = self.age_model.get_input_details()[0]
        if self.config["tflite_layout"] == "NCHW":
            x = x.transpose(2, 0, 1)
        self.age_model.set_tensor(detail["index"], np.ascontiguousarray(x[None], np.float32))
        self.age_model.invoke()
        age = float(self.age_model.get_tensor(self.age_model.get_output_details()[0]["index"]).reshape(-1)[0])
        calibration = self.config.get("age_calibration")
        if calibration:  # the per-age map fitted on validation: linear between knots, flat beyond them
            age = float(np.interp(age, calibration["predicted"], calibration["calibrated"]))
        return age

    def __call__(self, image):
        image = ImageOps.exif_transpose(image).convert("RGB")
        return [{"box": [float(v) for v in box], "landmarks": np.asarray(marks).tolist(), "score": score,
                 "age": self.age(self.align(image, marks))} for box, marks, score in self.detect(image)]


def main(paths):
    pipeline = Pipeline()
    for path in paths:
        with Image.open(path) as image:
            faces = pipeline(image)
        for face in faces:
            print(json.dumps({"file": path, **face}))
        if not faces:
            print(json.dumps({"file": path, "faces": 0}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
