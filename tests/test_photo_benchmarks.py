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
