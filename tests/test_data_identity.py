"""An image's identity is its content, so every layout of the same images gives the same split."""
import tarfile
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ab.nn.dataset import identity, utkface
from ab.nn.dataset.settings import DataSettings
from ab.nn.dataset.sources import ArchiveSource, FolderSource, ParquetSource
from ab.nn.dataset.utkface.names import parse
from tests import helpers


@pytest.fixture
def layouts(tmp_path):
    """The same 40 generated images as a folder, a tar.gz, a zip and (unnamed rows, shuffled) parquet."""
    folder = tmp_path / "folder" / "UTKFace"
    helpers.make_utkface(folder, count=40)
    paths = sorted(folder.iterdir())
    tar_dir, zip_dir, hf_dir = tmp_path / "tar", tmp_path / "zip", tmp_path / "hf" / "data"
    for made in (tar_dir, zip_dir, hf_dir):
        made.mkdir(parents=True)
    with tarfile.open(tar_dir / "UTKFace.tar.gz", "w:gz") as archive:
        archive.add(folder, arcname="UTKFace")
    with zipfile.ZipFile(zip_dir / "UTKFace.zip", "w") as archive:
        for path in reversed(paths):  # another member order
            archive.write(path, f"UTKFace/{path.name}")
    rows = paths[::2] + paths[1::2]  # another row order, and no file names at all
    table = pa.table({"image": [{"bytes": p.read_bytes(), "path": None} for p in rows],
                      "age": [parse(p.name).age for p in rows]})
    pq.write_table(table.slice(0, 25), hf_dir / "train-00000-of-00002.parquet")
    pq.write_table(table.slice(25), hf_dir / "train-00001-of-00002.parquet")
    return {"folder": folder.parent, "tar": tar_dir, "zip": zip_dir, "parquet": hf_dir.parent}


def _parts(plan) -> dict[str, list[str]]:
    return {part: sorted(plan.catalog.ids[i] for i in indices) for part, indices in plan.parts.items()}


@pytest.mark.parametrize("settings", [DataSettings(), DataSettings(split="kfold", fold=2),
                                      DataSettings(split_seed=7, max_samples=9)], ids=["paper", "kfold", "capped"])
def test_folder_tar_zip_and_parquet_give_identical_parts_and_digests(layouts, tmp_path, settings):
    kinds = {"folder": FolderSource, "tar": ArchiveSource, "zip": ArchiveSource, "parquet": ParquetSource}
    plans = {}
    for name, location in layouts.items():
        assert isinstance(utkface.find_source(location), kinds[name])
        plans[name] = utkface.plan(location, tmp_path / f"cache-{name}", settings, progress=False)
    reference = plans["folder"]
    if settings.max_samples is None:
        assert sum(reference.counts.values()) == 40
    else:
        assert max(reference.counts.values()) == settings.max_samples
    for name, plan in plans.items():
        assert _parts(plan) == _parts(reference), name
        assert plan.digests == reference.digests, name
    assert len({identity.DataIdentity("utkface", settings, p.digests).key for p in plans.values()}) == 1


def test_the_digest_changes_with_the_images_and_the_split_seed(layouts, tmp_path):
    base = utkface.plan(layouts["folder"], tmp_path / "a", DataSettings(), progress=False)
    other_seed = utkface.plan(layouts["folder"], tmp_path / "a", DataSettings(split_seed=43), progress=False)
    assert base.digests["test"] != other_seed.digests["test"]
    helpers.make_face(33, seed=999).save(layouts["folder"] / "UTKFace" / helpers.utk_name(33, 0, 0, 999))
    utkface._catalogs.clear()
    grown = utkface.plan(layouts["folder"], tmp_path / "a", DataSettings(), progress=False)
    assert sum(grown.counts.values()) == 41 and grown.digests != base.digests


def test_ids_are_remembered_per_version_of_the_files(layouts, tmp_path):
    cache = tmp_path / "ids"
    utkface.plan(layouts["zip"], cache, DataSettings(), progress=False)
    assert len(list(cache.glob("ids-*.json"))) == 1
    utkface._catalogs.clear()
    utkface.plan(layouts["zip"], cache, DataSettings(), progress=False)
    assert len(list(cache.glob("ids-*.json"))) == 1  # read back, not computed again
