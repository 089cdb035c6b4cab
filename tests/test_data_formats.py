"""Every UTKFace layout reads to the same labelled images: folder, tar.gz, zip, parquet, in-the-wild."""
import io
import tarfile
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ab.nn.dataset import utkface
from ab.nn.dataset.settings import DataSettings
from ab.nn.dataset.sources import ArchiveSource, FolderSource, ParquetSource, WildSource, landmark_box
from ab.nn.transform import norm_64
from tests import helpers

NORM = utkface.IMAGENET_NORM


def _load(folder, cache):
    return utkface.load(folder, cache, norm_64.transform(NORM), norm_64.eval_transform(NORM), DataSettings(),
                        progress=False)


def _summary(parts):
    return {k: sorted(zip(d.names, d.ages.tolist())) for k, d in (("train", parts.train), ("eval", parts.eval),
                                                                   ("test", parts.test))}


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "plain" / "UTKFace"
    helpers.make_utkface(folder, count=30)
    return folder


def test_tar_gz_and_zip_read_like_the_folder(images, tmp_path):
    reference = _load(images.parent, tmp_path / "c0")
    tar_dir, zip_dir = tmp_path / "tar", tmp_path / "zip"
    tar_dir.mkdir(), zip_dir.mkdir()
    with tarfile.open(tar_dir / "UTKFace.tar.gz", "w:gz") as archive:
        archive.add(images, arcname="UTKFace")
    with zipfile.ZipFile(zip_dir / "UTKFace.zip", "w") as archive:
        for path in sorted(images.iterdir()):
            archive.write(path, f"UTKFace/{path.name}")
    for folder, kind in ((tar_dir, ArchiveSource), (zip_dir, ArchiveSource)):
        assert isinstance(utkface.find_source(folder), kind)
        parts = _load(folder, tmp_path / f"c-{folder.name}")
        assert _summary(parts) == _summary(reference)
        assert np.array_equal(parts.train.pixels(), reference.train.pixels())


def _all_pixels(parts) -> set[bytes]:
    return {image.tobytes() for d in (parts.train, parts.eval, parts.test) for image in d.pixels()}


def test_hugging_face_parquet_layout(images, tmp_path):
    from ab.nn.dataset.utkface.names import parse

    paths = sorted(images.iterdir())
    ages = [parse(p.name).age for p in paths]
    table = pa.table({"image": [{"bytes": p.read_bytes(), "path": None} for p in paths], "age": ages})
    (tmp_path / "hf" / "data").mkdir(parents=True)
    pq.write_table(table.slice(0, 17), tmp_path / "hf" / "data" / "train-00000-of-00002.parquet")
    pq.write_table(table.slice(17), tmp_path / "hf" / "data" / "train-00001-of-00002.parquet")
    assert isinstance(utkface.find_source(tmp_path / "hf"), ParquetSource)
    parts = _load(tmp_path / "hf", tmp_path / "c")
    got = sorted(np.concatenate([parts.train.ages, parts.eval.ages, parts.test.ages]).tolist())
    assert got == sorted(float(a) for a in ages)
    assert _all_pixels(parts) == _all_pixels(_load(images.parent, tmp_path / "c0"))


def test_in_the_wild_images_are_cropped_by_their_landmarks(tmp_path):
    from PIL import Image

    root = tmp_path / "wild"
    lines = []
    for part, count in (("part1", 4), ("part2", 3)):
        (root / part).mkdir(parents=True)
        for i in range(count):
            age = 20 + 10 * i
            name = helpers.utk_name(age, 0, 0, i + 10 * len(part)).replace(".chip.jpg", "")
            canvas = Image.new("RGB", (300, 240), (0, 0, 255))
            canvas.paste(Image.new("RGB", (60, 60), (255, 0, 0)), (100, 80))   # the "face" at x 100-160, y 80-140
            canvas.save(root / part / name)
            points = [100, 80, 160, 80, 100, 140, 160, 140] + [130, 110] * 4
            lines.append(" ".join([name, *map(str, points)]))
    (root / "part3").mkdir()
    Image.new("RGB", (50, 50)).save(root / "part3" / "40_1_1_20170101000000000.jpg")  # no landmarks
    (root / "landmark_list_all.txt").write_text("\n".join(lines) + "\n")
    source = utkface.find_source(root)
    assert isinstance(source, WildSource)
    assert landmark_box([100, 80, 160, 140]) == (76, 56, 184, 164)
    parts = _load(root, tmp_path / "c")
    catalog = utkface.catalog(source, tmp_path / "c")
    assert len(catalog.entries) == 7 and catalog.skipped["in-the-wild image without landmarks"] == 1
    pixels = np.concatenate([d.pixels() for d in (parts.train, parts.eval, parts.test)])
    centre = pixels[:, 24:40, 24:40].reshape(-1, 3).mean(axis=0)
    assert centre[0] > 200 and centre[2] < 50  # the crop is centred on the face, not the blue background


def test_folder_with_images_directly_and_skip_hidden_files(images, tmp_path):
    (images / ".DS_Store").write_bytes(b"junk")
    assert isinstance(utkface.find_source(images), FolderSource)
    assert len(FolderSource(images).entries()) == 30
