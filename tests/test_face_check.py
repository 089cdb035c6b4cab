"""The face check (ab.nn.face.verify): textures BlazeFace alone calls faces are rejected, real faces
pasted onto such textures (hard, feathered, cut out) are kept, and its settings travel with the
detector. The hard scenes themselves: deterministic by seed, masks as documented."""
import numpy as np
import pytest
from PIL import Image

from ab.nn.face import align, scenes, verify
from ab.nn.face.detect import Detection, FaceDetector
from tests import photo

HARD_SKIN = (0, 3, 5, 10)
"""``scenes.skin_texture`` seeds on which BlazeFace alone reports a face (score 0.74-0.83)."""
HARD_MOSAIC = 4
"""A ``face_mosaic`` of generated tiles (``_generated_tiles``) on which BlazeFace alone reports one."""


@pytest.fixture(scope="module")
def detectors():
    return FaceDetector(), FaceDetector(check=verify.FaceCheck())


def _generated_tiles():
    return [scenes.skin_blobs(200, 200, seed=s) for s in range(8)] + [scenes.skin_texture(200, 200, seed=s)
                                                                       for s in range(8)]


def test_textures_blazeface_alone_calls_faces_are_rejected(detectors):
    alone, checked = detectors
    hard = [scenes.skin_texture(seed=s) for s in HARD_SKIN] + [scenes.face_mosaic(_generated_tiles(), seed=HARD_MOSAIC)]
    for i, image in enumerate(hard):
        assert alone(image), f"scene {i} no longer fools BlazeFace: pick another seed"
        assert checked(image) == [], i


def test_the_region_is_mediapipes_eyes_level_box_centred_one_and_a_half_times_its_side():
    eyes = np.array([[130.0, 140.0], [170.0, 160.0]])
    face = Detection(np.array([100, 100, 200, 220], np.float32), np.vstack([eyes, np.zeros((4, 2))]), 0.9)
    matrix = verify.region(face, 192)
    centre, (right, left) = align.apply(matrix, [[150, 160]])[0], align.apply(matrix, eyes)
    assert np.allclose(centre, 96) and right[1] == pytest.approx(left[1]) and left[0] > right[0]
    assert np.linalg.norm(left - right) == pytest.approx(np.hypot(40, 20) * 192 / (1.5 * 120))


def test_the_check_travels_with_the_detector_s_settings():
    check = verify.FaceCheck(min_presence=0.9)
    settings = FaceDetector(check=check).settings()
    assert settings["model"] == "blazeface-back" and settings["min_score"] == 0.5
    assert settings["check"]["min_presence"] == 0.9 and settings["check"]["roi_scale"] == verify.ROI_SCALE
    assert FaceDetector().settings()["check"] is None
    with pytest.raises(ValueError, match="min_presence"):
        verify.FaceCheck(min_presence=1.0)


def test_hard_scenes_are_deterministic_by_seed_and_their_masks_are_as_documented():
    tiles = _generated_tiles()[:4]
    for kind in scenes.FACELESS:
        a, b = scenes.faceless(kind, seed=7, crops=tiles), scenes.faceless(kind, seed=7, crops=tiles)
        assert a.size == (640, 480) and np.array_equal(np.asarray(a), np.asarray(b)), kind
        assert not np.array_equal(np.asarray(a), np.asarray(scenes.faceless(kind, seed=8, crops=tiles))), kind
    hard, soft, cut = (np.asarray(scenes.edge_mask(200, e)) for e in scenes.EDGES)
    assert hard.min() == 255 and soft[100, 100] == 255 and soft[0, 0] < 5 and soft[100, 15] < 200
    assert cut[100, 100] == 255 and cut[0, 0] == 0 and cut[100, 0] == 0 and cut[100, 30] == 255
    with pytest.raises(ValueError, match="unknown scene kind"):
        scenes.faceless("crowd")
    crop = Image.new("RGB", (200, 200), (200, 150, 120))
    matrices = [scenes.paste(scenes.skin_texture(seed=1), crop, 150, 100, 80, 12.0, edge) for edge in scenes.EDGES]
    assert all(np.allclose(m, matrices[0]) for m in matrices)


@pytest.mark.real_data
def test_real_faces_pasted_onto_textures_are_kept(real_utkface, detectors):
    _, checked = detectors
    crops = [Image.open(p).convert("RGB") for p in photo.real_crops(real_utkface, 6, seed=5)]
    rng = np.random.default_rng(3)
    for i, (kind, edge) in enumerate([(k, e) for k in ("skin", "blobs") for e in scenes.EDGES]):
        backdrop = scenes.faceless(kind, seed=40 + i)
        image, matrix, side, _ = scenes.random_scene(crops[i], rng, scene=backdrop, edge=edge, span=(0.25, 0.5))
        centres = [f.box.reshape(2, 2).mean(axis=0) for f in checked(image)]
        inside = [c for c in centres if np.all(np.abs(align.apply(align.invert(matrix), [c])[0] - 100) < 50)]
        assert inside, (kind, edge)


@pytest.mark.parametrize("value", ["1.0", "-0.1", "nan"])
def test_predict_refuses_a_presence_threshold_outside_0_to_1(value, capsys):
    from ab.nn.predict import __main__ as predict_cli

    with pytest.raises(SystemExit) as stopped:
        predict_cli.main(["photo.jpg", "--model", "model.onnx", "--min-presence", value])
    assert stopped.value.code == 2 and "--min-presence must be at least 0 and below 1" in capsys.readouterr().err
