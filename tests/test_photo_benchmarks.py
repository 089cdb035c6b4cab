"""The photo benchmarks judge on the test part of the split training uses, never on other images."""
import argparse

from ab.nn import workspace
from ab.nn.dataset import utkface
from ab.nn.dataset.settings import DataSettings
from tests import helpers


def test_the_alignment_benchmark_samples_the_trainings_test_part(utk_dir, tmp_path):
    entries, ages, blobs, test_size = helpers.benchmark("face_alignment").test_crops(utk_dir, tmp_path / "cache", 5, 0)
    split = utkface.plan(utk_dir, tmp_path / "cache", DataSettings(), progress=False)
    test_names = {split.catalog.entries[i].name for i in split.parts["test"]}
    assert test_size == len(split.parts["test"]) and len(entries) == 5 == len(ages)
    assert {e.name for e in entries} <= test_names
    assert len(list(blobs)) == 5


def test_the_latency_benchmarks_photo_is_a_test_image(utk_dir, tmp_path):
    args = argparse.Namespace(root=str(tmp_path / "ws"), data_dir=str(utk_dir), db=None)
    name = helpers.benchmark("photo_latency").make_photo(args, tmp_path / "photo.jpg")
    split = utkface.plan(utk_dir, workspace.from_arguments(args).cache_dir(utkface.NAME), DataSettings(),
                         progress=False)
    assert name == split.catalog.entries[int(split.parts["test"][0])].name
    assert (tmp_path / "photo.jpg").stat().st_size > 0


def test_the_hard_scenes_benchmark_counts_with_exact_intervals_and_finds_the_pasted_face():
    hard = helpers.benchmark("photo_hard_scenes")
    low, high = hard.clopper_pearson(0, 300)
    assert low == 0 and abs(high - (1 - 0.025 ** (1 / 300))) < 1e-9  # the exact bound for no event
    low, high = hard.poisson_rate(0, 100)
    assert low == 0 and abs(high - 3.689 / 100) < 1e-3
    row = {"side": 200, "matrix": [[1, 0, 100], [0, 1, 50]]}  # the crop pasted at (100, 50), unscaled
    assert hard.found([140, 80, 260, 200], row) and not hard.found([0, 0, 100, 100], row)
    assert not hard.found([195, 145, 205, 155], row)  # on the face's centre, but far too small a box


def test_the_hard_scenes_benchmark_records_every_scene_with_the_check_s_measures():
    from ab.nn.face.detect import FaceDetector
    from ab.nn.face.scenes import EDGES, FACELESS, skin_blobs
    from ab.nn.face.verify import FaceCheck

    hard = helpers.benchmark("photo_hard_scenes")
    crops = [skin_blobs(200, 200, seed=s) for s in range(70)]
    rows = hard.run(crops, [0], 1, 1, FaceDetector(), FaceCheck())
    assert len(rows) == len(FACELESS) * (1 + len(EDGES))
    assert {(r["kind"], r["edge"]) for r in rows} == {(k, e) for k in FACELESS for e in (None, *EDGES)}
    for face in (f for r in rows for f in r["faces"]):
        assert 0 <= face["presence"] <= 1 and face["disagreement"] >= 0 and len(face["landmarks"]) == 6
    lines, numbers = hard.summarise(rows, 0.999, 0.3)
    assert numbers["BlazeFace > 0.5 | faceless textured"]["n"] == 3
    assert numbers["BlazeFace > 0.5 | faces textured"]["n"] == 9
    assert any("(the check)" in line for line in lines)
