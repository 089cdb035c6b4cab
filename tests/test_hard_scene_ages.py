"""benchmarks/hard_scene_ages.py: each scene's age is paired with the same model's age of the very
crop that was pasted (never a decoy detection, never another crop), replica by replica; the
intervals are those of the mean over faces and replicas; bad arguments are one-line errors."""
import numpy as np
import pytest
from PIL import Image

from ab.nn.face.scenes import background, paste
from ab.nn.predict import Face
from tests import helpers


@pytest.fixture(scope="module")
def ages():
    return helpers.benchmark("hard_scene_ages")


class StandIn:
    """A synthetic photo path and age model: ``predict`` reports the faces given for each image,
    ``ages`` a crop's mean red value plus ``offset``."""

    def __init__(self, faces: dict, offset: float):
        self.faces, self.offset = faces, offset

    def predict(self, image):
        return self.faces.get(id(image), [])

    def ages(self, crops):
        return np.array([np.asarray(c)[..., 0].mean() + self.offset for c in crops])


def _face(box, age, crop, score=0.9):
    return Face(tuple(float(v) for v in box), np.zeros((6, 2)), score, age, crop)


def test_the_pasted_face_is_paired_with_its_own_crop_for_every_replica(ages):
    crops = [Image.new("RGB", (200, 200), (red, 0, 0)) for red in (10, 20, 30)]
    aligned = Image.new("RGB", (200, 200), (14, 0, 0))  # what the photo path recovered of crop 1
    scene, lost = background(seed=1), background(seed=2)
    matrix = paste(scene, crops[1], 150, 300, 100)  # crop 1 at (300, 100), 150 px
    paste(lost, crops[2], 150, 100, 100)
    decoy = _face((0, 0, 40, 40), 99.0, crops[2], score=0.99)
    faces = {id(scene): [decoy, _face((300, 100, 450, 250), 12.5, aligned)], id(lost): [decoy]}
    scenes = [{"image": scene, "seed": 0, "kind": "skin", "edge": "soft", "crop": 1, "side": 150,
               "matrix": matrix.tolist()},
              {"image": lost, "seed": 0, "kind": "plain", "edge": "hard", "crop": 2, "side": 150,
               "matrix": [[0.75, 0, 100], [0, 0.75, 100]]}]
    rows = ages.measure([StandIn(faces, 0.0), StandIn({}, 5.0)], crops, scenes)
    assert rows[0] == {"seed": 0, "kind": "skin", "edge": "soft", "crop": 1, "found": True,
                       "scene_ages": [12.5, 19.0], "crop_ages": [20.0, 25.0]}
    assert rows[1] == {"seed": 0, "kind": "plain", "edge": "hard", "crop": 2, "found": False}


def test_shift_and_mae_are_paired_per_face_and_replica_with_intervals_of_their_means(ages):
    truth = np.array([30.0, 40.0, 50.0])
    rows = [{"crop": 0, "found": True, "scene_ages": [33, 35], "crop_ages": [31, 31]},
            {"crop": 1, "found": True, "scene_ages": [38, 42], "crop_ages": [40, 40]},
            {"crop": 2, "found": False}]
    got = ages.paired(rows, truth)
    assert (got["scenes"], got["n"]) == (3, 2)
    for name, mean in (("shift", 1.5), ("mae_scene", 3.0), ("mae_crop", 0.5), ("mae_difference", 2.5)):
        assert got[name][0] == pytest.approx(mean)
        assert got[name][1] <= mean <= got[name][2]
    assert -2 <= got["shift"][1] and got["shift"][2] <= 4  # never beyond the values themselves
    assert ages.paired([{"crop": 2, "found": False}], truth) == {"scenes": 1, "n": 0}

    steady = [{"crop": i % 3, "found": True, "scene_ages": [truth[i % 3] + 2], "crop_ages": [truth[i % 3]]}
              for i in range(30)]
    assert ages.paired(steady, truth)["shift"] == pytest.approx([2.0, 2.0, 2.0])
    seeds_differ = [{**r, "scene_ages": [r["crop_ages"][0] + 1, r["crop_ages"][0] + 3],
                     "crop_ages": r["crop_ages"] * 2} for r in steady]
    mean, low, high = ages.paired(seeds_differ, truth)["shift"]
    assert mean == pytest.approx(2.0) and low < 2.0 < high  # the replicas are resampled too


def test_the_verdict_holds_the_interval_to_the_bar(ages):
    def numbers(mean, low, high):
        return {"soft, textured": {"scenes": 10, "n": 10, "shift": [mean, low, high]}}

    assert "within 0.5 years, interval and all" in ages.verdict(numbers(0.1, -0.2, 0.4))
    assert "beyond 0.5 years, interval and all" in ages.verdict(numbers(0.9, 0.6, 1.2))
    assert "beyond 0.5 years, interval and all" in ages.verdict(numbers(-0.9, -1.2, -0.6))
    assert "not shown within 0.5 years" in ages.verdict(numbers(0.3, 0.0, 0.6))
    assert "not shown within 0.5 years" in ages.verdict(numbers(0.9, 0.2, 1.6))
    assert ages.verdict({"soft, textured": {"scenes": 3, "n": 0}}) == "soft: no face found"
    labels = set(ages.groups([]))
    assert {"soft, textured", "cutout, textured", "hard, plain", "soft, mosaic"} <= labels


@pytest.mark.parametrize("argv, message", [(["--model", "trial:1", "--faces", "0"], "--faces must be at least 1"),
                                           (["--model", "trial:1", "--crops", "10"], "--crops must be at least 65")])
def test_bad_arguments_are_one_line_errors(ages, argv, message, capsys):
    with pytest.raises(SystemExit) as exit:
        ages.main(argv)
    assert exit.value.code == 2 and message in capsys.readouterr().err


def test_a_missing_model_is_a_one_line_error(ages, tmp_path, capsys):
    assert ages.main(["--model", str(tmp_path / "gone.onnx"), "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "gone.onnx" in err and "\n" not in err


def test_a_run_against_another_pairs_the_faces_both_found_and_refuses_other_scenes(ages):
    truth = np.array([30.0, 40.0, 50.0])

    def row(crop, scene=None, crop_age=None):
        found = scene is not None
        return {"seed": 5, "kind": "skin", "edge": "soft", "crop": crop, "found": found,
                **({"scene_ages": scene, "crop_ages": crop_age} if found else {})}

    mine = [row(0, [31, 33], [30, 30]), row(1, [41, 41], [40, 40]), row(2, [52, 52], [50, 50])]
    theirs = [row(0, [34], [30]), row(1, [44], [40]), row(2)]  # crop 2 not found by the other run
    lines = ages.against(mine, theirs, truth)
    soft = next(line for line in lines if line.startswith("| soft, textured |"))
    cells = [c.strip() for c in soft.strip("|").split("|")]
    assert cells[1] == "2" and cells[2] == "+1.50" and cells[3] == "+4.00"  # crop 2 left out of both
    assert cells[4].startswith("-2.50 [") and cells[5].startswith("-2.50 [")
    low, high = (float(v) for v in cells[4].split("[")[1].rstrip("]").split(","))
    assert low <= -2.5 <= high and high < 0
    assert "| hard, plain | 0 |" in "\n".join(lines)
    with pytest.raises(ValueError, match="not this run's"):
        ages.against(mine, theirs[:2] + [row(1)], truth)


def test_against_a_run_of_other_scenes_is_refused_before_measuring(ages, tmp_path, capsys):
    other = tmp_path / "plain.json"
    other.write_text('{"models": ["trial:1"], "seeds": [5], "rows": []}')
    assert ages.main(["--model", "trial:1", "--seeds", "6", "--against", str(other), "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --against") and "\n" not in err
