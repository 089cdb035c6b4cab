"""UTKFace: labels from names, splits, the decode-once cache, transforms."""
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from ab.nn.dataset import splits, utkface
from ab.nn.dataset.cache import open_or_build
from ab.nn.dataset.settings import DataSettings
from ab.nn.dataset.sources import FolderSource
from ab.nn.dataset.utkface.names import Unparseable, parse
from ab.nn.transform import norm_64, norm_64_aug
from ab.nn.transform._deterministic import eval_transform_for
from tests import helpers

NORM = utkface.IMAGENET_NORM


@pytest.mark.parametrize("name, age, gender, race", [
    ("100_0_0_20170112213500903.jpg.chip.jpg", 100, 0, 0),
    ("39_1_20170116174525125.jpg.chip.jpg", 39, 1, None),           # race missing (real file)
    ("24_0_1_20170116220224657 .jpg.chip.jpg", 24, 0, 1),           # space before the extension (real)
    ("55_0_0_20170116232725357jpg.chip.jpg", 55, 0, 0),             # dot missing (real)
    ("7_1_4_20170103.jpg", 7, 1, 4),
])
def test_names_with_an_unambiguous_age_parse(name, age, gender, race):
    label = parse(name)
    assert (label.age, label.gender, label.race) == (age, gender, race)


@pytest.mark.parametrize("name", ["abc.jpg", "x_0_0_20170116232725357.jpg", "25.jpg", "130_0_0_20170101.jpg",
                                  "25_7_0_20170116232725357.jpg", "25_0_9_20170116232725357.jpg",
                                  "25_0_0_1_20170116232725357.jpg"])
def test_names_without_an_unambiguous_age_are_rejected(name):
    with pytest.raises(Unparseable):
        parse(name)


def _load(folder: Path, cache: Path, transform=norm_64.transform, **settings):
    return utkface.load(folder, cache, transform(NORM), eval_transform_for(transform, NORM),
                        DataSettings(**settings), progress=False)


def test_bad_names_and_broken_images_are_skipped_and_counted_once(tmp_path, caplog):
    folder = tmp_path / "UTKFace"
    helpers.make_utkface(folder, count=40)
    (folder / "not_a_face.jpg").write_bytes(b"x")                       # unparseable name
    (folder / "30_0_0_20170101000000001.jpg.chip.jpg").write_bytes(b"")  # zero bytes
    good = next(folder.glob("3*_*.jpg.chip.jpg")).read_bytes()
    (folder / "31_0_0_20170101000000002.jpg.chip.jpg").write_bytes(good[: len(good) // 3])  # truncated JPEG
    (folder / "32_0_0_20170101000000003.jpg.chip.jpg").write_bytes(b"\xff\xd8garbage")     # corrupt JPEG
    with caplog.at_level(logging.WARNING, logger="ab.nn.dataset.utkface"):
        parts = _load(tmp_path, tmp_path / "cache")
        _load(tmp_path, tmp_path / "cache")
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "skipped 4 of 44 files" in warnings[0] and "undecodable image" in warnings[0]
    assert sum(parts.skipped.values()) == 4
    sizes = len(parts.train) + len(parts.eval) + len(parts.test)
    assert sizes == 40
    for dataset in (parts.train, parts.eval, parts.test):
        for i in range(len(dataset)):
            image, label = dataset[i]
            assert image.shape == (3, 64, 64) and image.dtype == torch.float32
            assert label.shape == (1,) and label.dtype == torch.float32


def test_data_not_found_says_where_to_put_the_files(tmp_path):
    with pytest.raises(utkface.DataNotFound) as error:
        utkface.find_source(tmp_path)
    message = str(error.value)
    assert str(tmp_path) in message and "UTKFace.tar.gz" in message and "parquet" in message


def _names(count, seed=0):
    ages = helpers.ages_like_utkface(count)
    return [helpers.utk_name(a, 0, 0, i) for i, a in enumerate(ages)], ages


def test_paper_split_is_stratified_70_10_20_and_disjoint():
    names, ages = _names(2000)
    parts = splits.assign(names, ages, DataSettings())
    sizes = {k: len(v) for k, v in parts.items()}
    assert sizes["train"] == 1400 and abs(sizes["eval"] - 200) <= 1 and abs(sizes["test"] - 400) <= 1
    assert len(np.unique(np.concatenate(list(parts.values())))) == 2000
    ages = np.array(ages)
    for part in parts.values():  # each part has the same age profile, within a year
        assert abs(ages[part].mean() - ages.mean()) < 1.0


def test_split_depends_on_names_not_order_and_barely_moves_when_files_are_added():
    names, ages = _names(1000)
    parts = splits.assign(names, ages, DataSettings())
    order = np.random.default_rng(0).permutation(1000)
    shuffled = splits.assign([names[i] for i in order], [ages[i] for i in order], DataSettings())
    by_name = {names[i]: k for k, v in parts.items() for i in v}
    assert all(by_name[names[order[i]]] == k for k, v in shuffled.items() for i in v)
    more_names, more_ages = names + [helpers.utk_name(30, 1, 1, 5000 + i) for i in range(10)], ages + [30] * 10
    grown = splits.assign(more_names, more_ages, DataSettings())
    moved = sum(by_name[more_names[i]] != k for k, v in grown.items() for i in v if i < 1000)
    assert moved <= 2 * 25  # at most a boundary image per bin and boundary


def test_other_seed_gives_another_split():
    names, ages = _names(500)
    a, b = splits.assign(names, ages, DataSettings(split_seed=1)), splits.assign(names, ages, DataSettings(split_seed=2))
    assert not np.array_equal(a["test"], b["test"])


def test_lemur_random_split_is_torch_random_split_70_30():
    names, ages = _names(101)
    parts = splits.assign(names, ages, DataSettings(split="lemur-random"))
    train, evaluation = torch.utils.data.random_split(range(101), [0.7, 0.3],
                                                      generator=torch.Generator().manual_seed(42))
    assert parts["train"].tolist() == sorted(train) and parts["eval"].tolist() == sorted(evaluation)
    assert len(parts["test"]) == 0


def test_kfold_tests_every_image_exactly_once():
    names, ages = _names(503)
    tested = np.concatenate([splits.assign(names, ages, DataSettings(split="kfold", fold=f))["test"]
                             for f in range(5)])
    assert sorted(tested.tolist()) == list(range(503))
    fold = splits.assign(names, ages, DataSettings(split="kfold", fold=2))
    assert set(fold["eval"]) == set(splits.assign(names, ages, DataSettings(split="kfold", fold=3))["test"])
    assert abs(len(fold["train"]) / 503 - 0.6) < 0.01


def test_cache_is_built_once_and_rebuilt_when_damaged(tmp_path):
    folder = tmp_path / "UTKFace"
    helpers.make_utkface(folder, count=12)
    source = FolderSource(folder)
    entries = source.entries()
    first = open_or_build(source, entries, 32, tmp_path / "cache", progress=False)
    stamp = first.path.stat().st_mtime_ns
    again = open_or_build(source, entries, 32, tmp_path / "cache", progress=False)
    assert again.path.stat().st_mtime_ns == stamp
    pixels = np.array(first.array())

    with open(first.path, "r+b") as f:  # flip bytes in place: same size, different content
        f.seek(100)
        f.write(b"\x00\x01\x02\x03" * 8)
    from ab.nn.dataset import cache as cache_module

    cache_module._verified.clear()  # a new process would not have verified it yet
    rebuilt = open_or_build(source, entries, 32, tmp_path / "cache", progress=False)
    assert np.array_equal(np.array(rebuilt.array()), pixels)

    with open(first.path, "r+b") as f:
        f.truncate(1000)
    rebuilt = open_or_build(source, entries, 32, tmp_path / "cache", progress=False)
    assert np.array_equal(np.array(rebuilt.array()), pixels)


def test_cache_key_follows_the_source_files(tmp_path):
    folder = tmp_path / "UTKFace"
    helpers.make_utkface(folder, count=6)
    source = FolderSource(folder)
    first = open_or_build(source, source.entries(), 16, tmp_path / "cache", progress=False)
    helpers.make_face(50, seed=99).save(folder / helpers.utk_name(50, 0, 0, 77))
    second = open_or_build(source, source.entries(), 16, tmp_path / "cache", progress=False)
    assert first.path != second.path and second.count == 7


def test_eval_transform_is_deterministic_and_train_transform_augments(tmp_path):
    folder = tmp_path / "UTKFace"
    helpers.make_utkface(folder, count=4)
    parts = _load(tmp_path, tmp_path / "cache", transform=norm_64_aug.transform)
    first = [parts.eval[0][0] for _ in range(5)]
    assert all(torch.equal(first[0], x) for x in first)
    torch.manual_seed(0)
    augmented = [parts.train[0][0] for _ in range(8)]
    assert any(not torch.equal(augmented[0], x) for x in augmented)


def test_foreign_torchvision_transform_gets_a_deterministic_eval_version():
    from torchvision import transforms as T

    def lemur_style(norm):
        return T.Compose([T.RandomResizedCrop(32), T.RandomHorizontalFlip(), T.ColorJitter(0.5), T.ToTensor(),
                          T.Normalize(*norm)])

    deterministic = eval_transform_for(lemur_style, NORM)
    assert [type(t).__name__ for t in deterministic.transforms] == ["Resize", "CenterCrop", "ToTensor", "Normalize"]
    image = helpers.make_face(40, size=48)
    assert torch.equal(deterministic(image), deterministic(image))


@pytest.mark.parametrize("settings", [DataSettings(), DataSettings(split="lemur", split_seed=7, max_samples=50),
                                      DataSettings(split="lemur-random", split_seed=7),
                                      DataSettings(split="kfold", split_seed=3, fold=2, folds=4),
                                      DataSettings(align=True), DataSettings(split="kfold", fold=1, align=True)])
def test_settings_round_trip_through_their_label(settings):
    again = DataSettings.from_label(settings.label, settings.max_samples)
    assert (again.split, again.split_seed, again.fold, again.folds, again.max_samples, again.align) == \
        (settings.split, settings.split_seed, settings.fold, settings.folds, settings.max_samples, settings.align)
