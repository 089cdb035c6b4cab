"""``--split lemur`` is LEMUR 2.2.11's UTKFace split: the same membership as LEMUR's algorithm on the same
parquet rows. LEMUR's algorithm is written out here again from its code (ab/nn/loader/utkface.py of
nn-dataset 2.2.11), independently of ab.nn.dataset.splits."""
import io
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ab.nn.dataset import splits, utkface
from ab.nn.dataset.settings import DataSettings
from tests import helpers


def lemur_stratified_split_indices(ages, train_ratio=0.70, val_ratio=0.10, seed=42):
    rng = random.Random(seed)
    bins = {}
    for idx, age in enumerate(ages):
        bins.setdefault(int(age // 5), []).append(idx)
    train, val, test = [], [], []
    for idxs in bins.values():
        rng.shuffle(idxs)
        n = len(idxs)
        n_tr = int(round(n * train_ratio))
        n_va = int(round(n * val_ratio))
        if n >= 3:
            n_tr = min(max(1, n_tr), n - 2)
            n_va = min(max(1, n_va), n - n_tr - 1)
        else:
            n_tr, n_va = 1, 0
        train += idxs[:n_tr]
        val += idxs[n_tr:n_tr + n_va]
        test += idxs[n_tr + n_va:]
    rng.shuffle(train)
    rng.shuffle(val)
    rng.shuffle(test)
    return train, val, test


def lemur_rows(table: pa.Table) -> list[int]:
    """LEMUR's ``_UTKFace`` filter: rows with an image and an age in [0, 116], in row order."""
    kept = []
    for row, (image, age) in enumerate(zip(table.column("image").to_pylist(), table.column("age").to_pylist())):
        if age is None or image is None:
            continue
        try:
            age = float(age)
        except (TypeError, ValueError):
            continue
        if 0.0 <= age <= 116.0:
            kept.append(row)
    return kept


def _jpeg(age: int, seed: int) -> bytes:
    buffer = io.BytesIO()
    helpers.make_face(age, size=16, seed=seed).save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


@pytest.fixture
def parquet_folder(tmp_path):
    """A Hugging Face-style parquet file (image struct + age) in an arbitrary row order, with rows LEMUR
    drops: no age, no image, an age above 116."""
    rng = np.random.default_rng(7)
    ages = [int(a) for a in rng.permutation(helpers.ages_like_utkface(300) + [1, 2, 3, 116, 58, 59])]
    images = [{"bytes": _jpeg(age, i), "path": f"{i}.jpg"} for i, age in enumerate(ages)]
    ages[5], images[9], ages[17] = None, None, 120
    table = pa.table({"image": images, "age": ages})
    (tmp_path / "hf" / "data").mkdir(parents=True)
    pq.write_table(table, tmp_path / "hf" / "data" / "train-00000-of-00001.parquet", row_group_size=64)
    return tmp_path / "hf", table


def test_lemur_split_has_lemurs_membership_on_the_same_parquet(parquet_folder, tmp_path):
    folder, table = parquet_folder
    plan = utkface.plan(folder, tmp_path / "cache", DataSettings(split="lemur"), progress=False)
    ours = {part: {int(plan.catalog.entries[i].key.rsplit("#", 1)[1]) for i in indices}
            for part, indices in plan.parts.items()}
    rows = lemur_rows(table)
    ages = [float(table.column("age")[r].as_py()) for r in rows]
    parts = lemur_stratified_split_indices(ages)
    theirs = dict(zip(("train", "eval", "test"), ({rows[i] for i in part} for part in parts)))
    assert ours == theirs
    assert {5, 9, 17}.isdisjoint(set().union(*ours.values()))  # no age, no image, age 120
    assert sum(map(len, ours.values())) == len(rows) == 303


def test_lemur_split_follows_the_source_order_not_the_content():
    """Defined on row order: the same images in another order are split otherwise (why it equals LEMUR's
    only on LEMUR's own parquet rows)."""
    ages = [float(a) for a in helpers.ages_like_utkface(200)]
    ids = [f"img{i}" for i in range(200)]
    first = splits.assign(ids, ages, DataSettings(split="lemur"))
    order = list(reversed(range(200)))
    second = splits.assign([ids[i] for i in order], [ages[i] for i in order], DataSettings(split="lemur"))
    back = {ids[order[i]] for i in second["test"]}
    assert back != {ids[i] for i in first["test"]}


def test_lemur_split_vectors_from_lemurs_own_code():
    """Vectors produced by executing LEMUR 2.2.11's two functions (research notes, section 4)."""
    ages = [float((i * 37) % 117) for i in range(60)]
    assert splits.lemur_stratified(ages, 42) == (
        [26, 17, 23, 29, 50, 25, 5, 37, 22, 12, 38, 36, 52, 59, 15, 10, 27, 28, 20, 49, 43, 35, 32, 19],
        [30, 44, 46, 39, 57, 21, 33, 4, 53, 56, 3, 45, 54],
        [47, 18, 16, 40, 2, 11, 9, 48, 34, 42, 6, 55, 0, 13, 41, 1, 51, 7, 58, 8, 31, 14, 24])
    assert splits.lemur_stratified([3.0, 7, 8, 12, 13, 14, 50, 51, 52, 53, 54], 42) == ([9, 2, 5, 0, 8, 6], [10, 4],
                                                                                          [3, 7, 1])


@pytest.mark.parametrize("n, sizes", [(1, (1, 0, 0)), (2, (1, 0, 1)), (3, (1, 1, 1)), (4, (2, 1, 1)), (5, (3, 1, 1)),
                                      (10, (7, 1, 2)), (15, (10, 2, 3)), (25, (18, 2, 5)), (35, (24, 4, 7)),
                                      (45, (31, 4, 10)), (5034, (3524, 503, 1007))])
def test_lemur_bin_sizes(n, sizes):
    """LEMUR's rounding (Python floats, round half to even) and small-bin rules, per bin."""
    parts = splits.lemur_stratified([30.0] * n, 42)
    assert tuple(map(len, parts)) == sizes


def test_lemur_random_is_the_old_protocol():
    ages = [float(a) for a in helpers.ages_like_utkface(100)]
    parts = splits.assign([str(i) for i in range(100)], ages, DataSettings(split="lemur-random"))
    assert (len(parts["train"]), len(parts["eval"]), len(parts["test"])) == (70, 30, 0)


@pytest.mark.real_data
@pytest.mark.slow
def test_lemur_split_sizes_on_the_real_folder(real_utkface, tmp_path):
    """LEMUR's per-bin rounding on the 23,707 real files gives 16593 / 2371 / 4743 (research notes,
    section 4; LEMUR's own reports evaluate on 2372, so its Hugging Face rows differ in at least one)."""
    plan = utkface.plan(real_utkface, tmp_path / "cache", DataSettings(split="lemur", progress=False), progress=False)
    assert (plan.counts["train"], plan.counts["eval"], plan.counts["test"]) == (16593, 2371, 4743)
