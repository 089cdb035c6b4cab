"""Data problems stop a sweep before any trial is reserved, with one line; files no trial can use are
named in a log that the summary points to. Run through the real CLI, in a child process."""
import os
import sqlite3
import subprocess
import sys

from ab.nn.dataset import skipped
from tests import helpers

CONFIG = "age-regression_utkface_mae_MobileAgeNet"
FAST = ["-f", "norm_64", "--min_batch_binary_power", "4", "-b", "4", "-w", "0", "--quiet", "--pretrained", "0",
        "--export", "none", "--in-process", "-t", "1", "-a", "1", "--max-samples", "8"]


def train(root, data, *extra):
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9"}
    return subprocess.run([sys.executable, "-m", "ab.nn.train", "--root", str(root), "--data-dir", str(data),
                           "-c", CONFIG, *FAST, *extra], capture_output=True, text=True, env=env, timeout=600)


def reserved(root) -> int:
    with sqlite3.connect(root / "db" / "ab.nn.db") as con:
        return con.execute("select count(*) from trial").fetchone()[0]


def one_line_error(done) -> str:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m ab.nn.train: error: "), done.stderr
    return lines[0]


def test_a_data_dir_that_does_not_exist_is_named_and_not_created(root, tmp_path):
    missing = tmp_path / "typo"
    line = one_line_error(train(root, missing))
    assert f"the data folder {missing} (--data-dir / $LEMUR_DATA) does not exist" in line
    assert not missing.exists() and reserved(root) == 0


def test_a_folder_of_non_images_stops_before_any_trial_and_lists_them(root, tmp_path):
    folder = tmp_path / "fake" / "UTKFace"
    folder.mkdir(parents=True)
    names = [helpers.utk_name(20 + i, 0, 0, i) for i in range(3)]
    for name in names:
        (folder / name).write_text("an HTML error page saved as .jpg")
    (folder / "notes.jpg").write_text("no age in this name")
    line = one_line_error(train(root, folder.parent, "--no-download"))
    assert f"none of the 3 images of the split in folder {folder} can be decoded" in line
    log = line.rsplit("listed in ", 1)[1]
    listed = skipped.read(log)
    assert set(listed) == {*names, "notes.jpg"}
    assert all(listed[n].startswith("undecodable image") for n in names)
    assert listed["notes.jpg"].startswith("name without a readable age")
    assert reserved(root) == 0


def test_a_folder_without_images_stops_with_one_line(root, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    line = one_line_error(train(root, empty, "--no-download"))
    assert f"no UTKFace images in {empty}: put UTKFace/*.jpg.chip.jpg, UTKFace.tar.gz" in line
    assert reserved(root) == 0


def test_skipped_files_are_named_in_the_log_the_summary_gives(root, tmp_path):
    folder = tmp_path / "utk" / "UTKFace"
    helpers.make_utkface(folder, count=24)
    corrupt = helpers.utk_name(33, 1, 2, 99)
    (folder / corrupt).write_bytes(b"\xff\xd8\xff not really a jpeg")
    (folder / "holiday.jpg").write_bytes(next(folder.iterdir()).read_bytes())
    done = train(root, folder.parent, "--max-samples", "64")
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if "skipped data files:" in line)
    assert "2 files, listed in " in line
    listed = skipped.read(line.split("listed in ", 1)[1])
    assert listed["holiday.jpg"].startswith("name without a readable age")
    assert listed[corrupt].startswith("undecodable image")
    assert reserved(root) == 1
    assert ", 1 epoch), val MAE" in done.stdout  # not "1 epochs"
    shown = subprocess.run([sys.executable, "-m", "ab.nn.stat", "trials", "--root", str(root)], capture_output=True,
                           text=True, timeout=600).stdout
    assert shown.splitlines()[0].startswith("| trial | config | status | epochs done | epochs asked | val MAE (years) "
                                            "| test MAE (years) | test MAE 95% CI low (years) |")
