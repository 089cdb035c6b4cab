"""Statistics from LEMUR 2.2.11's JSON and back: files shaped exactly as LEMUR writes them (its nested
2.2.11 layout, and the older flat layout of its shipped age runs with test_mae/train_mae), imported
faithfully, and read back by LEMUR's own importer (re-implemented below from LEMUR's code, independently
of ours) from our mirror with the same rows."""
import hashlib
import json
import re
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from ab.nn import api
from ab.nn.stat import json_import, mirror, versions
from ab.nn.stat.accuracy_scale import LEMUR_SHIPPED_SCALE, ScaleError

CONFIG = "age-regression_utkface_mae_MobileAgeNet"
FIRST_ACCURACY = 0.4473859155493013


# -- LEMUR 2.2.11, re-implemented from ab/nn/util/db/Write.py and Init.py (not from ab.nn) -------------------
def lemur_uuid4(obj) -> str:
    return hashlib.md5(re.sub("\\s", "", str(obj)).encode()).hexdigest()


LEMUR_TRAIN_STAT = ("train_loss", "test_loss", "train_accuracy", "gradient_norm", "samples_per_second", "epoch_max",
                    "cpu_count", "cpu_type", "cpu_usage_percent", "total_ram_kb", "occupied_ram_kb",
                    "ram_usage_percent", "gpu_type", "gpu_memory_kb", "gpu_total_memory_kb", "occupied_gpu_memory_kb",
                    "gpu_memory_usage_percent")


def lemur_db(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path)
    for table in ("nn", "transform", "metric"):
        con.execute(f"CREATE TABLE {table} (name TEXT PRIMARY KEY, code TEXT NOT NULL, id TEXT NOT NULL)")
    con.execute("CREATE TABLE prm (uid TEXT NOT NULL, name TEXT NOT NULL, value OBJECT NOT NULL)")
    con.execute("CREATE TABLE stat (id TEXT PRIMARY KEY, accuracy REAL, epoch INTEGER, duration INTEGER, task, "
                "dataset, nn, transform, metric, prm)")
    con.execute(f"CREATE TABLE train_stat (stat_id TEXT PRIMARY KEY, {', '.join(LEMUR_TRAIN_STAT)})")
    return con


def lemur_code_to_db(cursor, table, code_file: Path):
    code = code_file.read_text()
    if cursor.execute(f"SELECT code FROM {table} WHERE name = ?", (code_file.stem,)).fetchone() is None:
        cursor.execute(f"INSERT INTO {table} (name, code, id) VALUES (?, ?, ?)",
                       (code_file.stem, code, lemur_uuid4(code)))


def lemur_save_stat(config_ext, prm, cursor):
    prm = dict(prm)
    train_stat = prm.pop("train_stat", {})
    transform = prm["transform"]
    uid = prm.pop("uid")
    duration, accuracy = prm.pop("duration", None), prm.pop("accuracy", None)
    for name, value in prm.items():
        cursor.execute("INSERT OR IGNORE INTO prm (uid, name, value) VALUES (?, ?, ?)", (uid, name, value))
    values = [transform, uid, *config_ext, duration, accuracy]
    stat_id = lemur_uuid4(values)
    cursor.execute("INSERT OR IGNORE INTO stat (id, transform, prm, task, dataset, metric, nn, epoch, duration, "
                   "accuracy) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (stat_id, *values))
    if train_stat:
        cursor.execute(f"INSERT OR REPLACE INTO train_stat (stat_id, {', '.join(LEMUR_TRAIN_STAT)}) VALUES "
                       f"({', '.join(['?'] * (len(LEMUR_TRAIN_STAT) + 1))})",
                       [stat_id] + [train_stat.get(f) for f in LEMUR_TRAIN_STAT])


def lemur_json_train_to_db(stat_train_dir: Path, code_root: Path, db: Path) -> dict:
    """LEMUR's ``json_train_to_db``: every <config>/<epoch>.json; a file that fails is skipped."""
    con = lemur_db(db)
    cursor = con.cursor()
    for folder in stat_train_dir.iterdir():
        if not folder.is_dir():
            continue
        for epoch_file in folder.iterdir():
            try:
                epoch = int(epoch_file.stem)
            except ValueError:
                continue
            try:
                for trial in json.loads(epoch_file.read_text(encoding="utf-8", errors="replace")):
                    task, dataset, metric, nn = folder.name.split("_")
                    lemur_code_to_db(cursor, "nn", code_root / "nn" / f"{nn}.py")
                    for single in metric.split(","):
                        lemur_code_to_db(cursor, "metric", code_root / "metric" / f"{single.strip()}.py")
                    if trial["transform"]:
                        lemur_code_to_db(cursor, "transform", code_root / "transform" / f"{trial['transform']}.py")
                    extracted = trial.get("train_stat") if isinstance(trial.get("train_stat"), dict) else {}
                    trial = {k: v for k, v in trial.items() if not isinstance(v, (dict, list))}
                    if extracted:
                        trial["train_stat"] = extracted
                    lemur_save_stat((task, dataset, metric, nn, epoch), trial, cursor)
            except Exception as error:  # LEMUR prints a warning and goes on
                raise AssertionError(f"LEMUR would skip {epoch_file}: {error}") from error
    con.commit()
    rows = {"stat": sorted(con.execute("SELECT * FROM stat").fetchall()),
            "prm": sorted(set(con.execute("SELECT uid, name, value FROM prm").fetchall()), key=str),
            "train_stat": sorted(con.execute("SELECT * FROM train_stat").fetchall(), key=str)}
    con.close()
    return rows


# -- files shaped as LEMUR writes them -----------------------------------------------------------------------
def flat_record(accuracy: float, uid: str, duration: int, lr: float = 0.0003, **extra) -> dict:
    """The older flat layout of LEMUR's shipped age runs (results/.../metrics/<n>.json): 38 sorted keys."""
    test_mae = (1 - accuracy) * 15
    record = {"accuracy": accuracy, "backbone_lr_mult": 0.1, "batch": 64, "best_accuracy": accuracy, "best_epoch": 1,
              "bounded_output": True, "cpu_count": 32, "cpu_type": "x86_64", "cpu_usage_percent": 12.5,
              "dropout": 0.2, "duration": duration, "epoch_max": 100, "freeze_epochs": 2, "gpu_memory_kb": 4194304,
              "gpu_memory_usage_percent": 17.3, "gpu_total_memory_kb": 25165824, "gpu_type": "NVIDIA GeForce RTX 3090",
              "gradient_norm": 1.7, "lr": lr, "lr_now": lr * 0.9, "max_age": 116, "min_age": 0, "momentum": 0.9,
              "occupied_gpu_memory_kb": 4294967, "occupied_ram_kb": 8123456.25, "ram_usage_percent": 23.1,
              "samples_per_second": 812.4, "test_accuracy": accuracy, "test_loss": test_mae * 1.1,
              "test_mae": test_mae, "total_ram_kb": 65843212.5, "train_accuracy": accuracy - 0.05,
              "train_loss": 9.2, "train_mae": (1 - accuracy + 0.05) * 15, "train_max_age": 116.0,
              "train_min_age": 1.0, "transform": "Resize_ColorJit_Flip_Blur", "uid": uid}
    record.update(extra)
    return dict(sorted(record.items()))


def nested_record(accuracy: float, uid: str, duration: int, lr: float, check_nn: bool = False) -> dict:
    """LEMUR 2.2.11's Train.py record: sorted keys (hyperparameters, duration_seconds, epoch/epoch_max,
    metric_<m>, train_stat, transform, uid), then task, dataset, metric, model appended."""
    train_stat = {"train_loss": 7.5, "test_loss": 8.1, "train_accuracy": accuracy - 0.02, "gradient_norm": 0.93,
                  "samples_per_second": 120.5, "best_accuracy": accuracy, "best_epoch": 2, "epoch_max": 3,
                  "cpu_count": 2, "cpu_type": "x86_64", "cpu_usage_percent": 97.1, "total_ram_kb": 24607300.11,
                  "occupied_ram_kb": 1913204.5, "ram_usage_percent": 31.2, "gpu_type": "No GPU", "gpu_memory_kb": None,
                  "gpu_total_memory_kb": None, "occupied_gpu_memory_kb": None, "gpu_memory_usage_percent": None}
    record = {"accuracy": accuracy, "batch": 32, "duration": duration, "duration_seconds": round(duration / 1e9, 2),
              ("epoch" if check_nn else "epoch_max"): 3, "lr": lr, "metric_mae": accuracy, "momentum": 0.9,
              "train_stat": train_stat, "transform": "norm_64", "uid": uid}
    record = dict(sorted(record.items()))
    record.update(task="age-regression", dataset="utkface", metric="mae", model="MobileAgeNet")
    return record


@pytest.fixture
def lemur_tree(tmp_path) -> Path:
    """stat/train/<config>/<epoch>.json in both layouts, as LEMUR writes them (indent 4, best first)."""
    train = tmp_path / "lemur" / "stat" / "train"
    flat = [flat_record(FIRST_ACCURACY, "1ffeb462f185231bf70fc91d02f0a240", 66316807608),
            flat_record(0.3861, "2a6f3b1c0d9e8f7a6b5c4d3e2f1a0b9c", 66901234567, lr=0.001),
            flat_record(0.3542, "3b7e4c2d1e0f9a8b7c6d5e4f3a2b1c0d", 67012345678, lr=0.01)]
    # two records of one uid whose values differ (LEMUR's uid is not unique per record): nothing may be lost
    twin = flat_record(0.5012, "4c8f5d3e2f1a0b9c8d7e6f5a4b3c2d1e", 132001234567, lr=0.002)
    flat2 = [twin, dict(twin, accuracy=0.4903, test_mae=(1 - 0.4903) * 15, lr=0.0025, duration=132111111111)]
    nested = [nested_record(0.6123, "61e2505e790ee278b8f8979dd00bad60", 123456789012, 0.001),
              nested_record(0.0, "7d9f6e4a3b2c1d0e9f8a7b6c5d4e3f2a", 98765432100, 0.5)]
    check_nn = [nested_record(0.5811, "8e0a7f5b4c3d2e1f0a9b8c7d6e5f4a3b", 45678901234, 0.003, check_nn=True)]
    for config, epoch, records in ((CONFIG, 1, flat), (CONFIG, 2, flat2), (CONFIG, 3, nested),
                                   ("age-regression_utkface_mae_rag-ebd02dde0123456789abcdef01234567", 3, check_nn)):
        folder = train / config
        folder.mkdir(parents=True, exist_ok=True)
        records = sorted(records, key=lambda r: r["accuracy"], reverse=True)
        (folder / f"{epoch}.json").write_text(json.dumps(records, indent=4))
    return train


@pytest.fixture
def code_root(tmp_path) -> Path:
    """The code files LEMUR's importer reads for every name (it skips an epoch file without them)."""
    root = tmp_path / "lemur-code"
    for kind, name in (("nn", "MobileAgeNet"), ("nn", "rag-ebd02dde0123456789abcdef01234567"), ("metric", "mae"),
                       ("transform", "Resize_ColorJit_Flip_Blur"), ("transform", "norm_64")):
        (root / kind).mkdir(parents=True, exist_ok=True)
        (root / kind / f"{name}.py").write_text(f"# LEMUR's {kind} {name}\n")
    return root


def test_ids_are_lemurs():
    """LEMUR's uuid4: md5 of str(obj) without any whitespace (the notes' test vectors)."""
    from ab.nn.util.lemur_hash import lemur_md5

    assert lemur_md5(["Resize_ColorJit_Flip_Blur", "1ffeb462f185231bf70fc91d02f0a240", "age-regression", "utkface",
                      "mae", "MobileAgeNet", 1, 66316807608, FIRST_ACCURACY]) == "1b1cda389eb671e490739ae36d163b2f"
    assert lemur_md5("import torch\nclass Net: pass\n") == "f052fa11ad960742c592faf66c76d3d2"


def _import(db: Path, tree: Path, lemur_mae_scale: float | None = None):
    """``import-json`` into ``db`` as the command does it: the database made current first."""
    versions.upgrade(f"sqlite:///{db}")
    return json_import.import_tree(f"sqlite:///{db}", tree, progress=False, lemur_mae_scale=lemur_mae_scale)


def test_lemur_json_imports_faithfully(lemur_tree, tmp_path):
    db = tmp_path / "ours.db"
    with pytest.raises(ScaleError, match=r"3 record\(s\) of an MAE metric carry no raw MAE .*the records that carry "
                                         r"it imply 1 - MAE/15: pass --lemur-mae-scale 20"):
        _import(db, lemur_tree)
    assert api.data(db=db).empty  # refused before anything was written
    summary = _import(db, lemur_tree, LEMUR_SHIPPED_SCALE)
    assert summary.records == 8 and summary.scales == "1 - MAE/15 for 5 (raw MAE), 1 - MAE/15 for 3 (--lemur-mae-scale)"
    frame = api.data(with_code=True, db=db)
    first = frame[frame.accuracy == FIRST_ACCURACY].iloc[0]
    assert first.id == "1b1cda389eb671e490739ae36d163b2f"  # LEMUR's stat id for LEMUR's own first record
    flat = frame[frame.epoch.isin([1, 2])]
    assert flat.accuracy_scale.eq(15.0).all()  # all of LEMUR's age rows fit 1 - test_mae/15
    assert ((1 - flat.mae / 15) - flat.accuracy).abs().max() < 1e-9 and flat.eval_mae.equals(flat.mae)
    assert first.prm == {"backbone_lr_mult": 0.1, "batch": 64, "bounded_output": 1, "dropout": 0.2, "epoch_max": 100,
                         "freeze_epochs": 2, "lr": 0.0003, "max_age": 116, "min_age": 0, "momentum": 0.9,
                         "transform": "Resize_ColorJit_Flip_Blur"}  # diagnostics are not hyperparameters
    nested = frame[frame.epoch == 3].set_index("prm_id")
    good = nested.loc["61e2505e790ee278b8f8979dd00bad60"]
    assert good.accuracy_scale == LEMUR_SHIPPED_SCALE and good.mae == pytest.approx((1 - 0.6123) * 15)
    assert pd.isna(nested.loc["7d9f6e4a3b2c1d0e9f8a7b6c5d4e3f2a"].mae)  # accuracy clipped at 0: MAE unknown
    assert frame.nn_code.isna().all() and frame.nn_id.isna().all()  # LEMUR's JSON has no code
    assert frame.transform_code.isna().all() and frame.metric_code.isna().all()
    with sqlite3.connect(db) as con:
        assert con.execute("select count(*) from train_stat where train_loss is not null").fetchone()[0] == 8
        assert set(con.execute("select name from metric")) == {("mae",)}
    assert _import(db, lemur_tree, LEMUR_SHIPPED_SCALE).records == 0  # twice adds nothing


def test_known_code_is_never_attached_to_lemur_rows(lemur_tree, tmp_path):
    """A database that already holds this checkout's MobileAgeNet keeps it for its own rows, and LEMUR's rows of
    that name still have unknown code."""
    from ab.nn import registry
    from tests import helpers

    db = tmp_path / "ours.db"
    helpers.new_store(f"sqlite:///{db}").save_code(registry.MODEL, "MobileAgeNet")
    _import(db, lemur_tree, LEMUR_SHIPPED_SCALE)
    frame = api.data(nn="MobileAgeNet", with_code=True, db=db)
    assert len(frame) == 7 and frame.nn_code.isna().all()


def test_lemur_reads_our_mirror_with_the_same_rows(lemur_tree, code_root, tmp_path):
    original = lemur_json_train_to_db(lemur_tree, code_root, tmp_path / "lemur-original.db")
    db = tmp_path / "ours.db"
    _import(db, lemur_tree, LEMUR_SHIPPED_SCALE)
    ours = tmp_path / "mirror" / "stat" / "train"
    mirror.export_tree(f"sqlite:///{db}", ours)
    again = lemur_json_train_to_db(ours, code_root, tmp_path / "lemur-again.db")
    assert len(original["stat"]) == 8 and len(original["train_stat"]) == 3
    assert again == original
    first = next(r for r in again["stat"] if r[0] == "1b1cda389eb671e490739ae36d163b2f")
    assert first[1] == FIRST_ACCURACY

    # and our own importer rebuilds the same database from the mirror
    copy = tmp_path / "copy.db"
    _import(copy, ours)
    columns = ["id", "epoch", "accuracy", "duration", "prm_id", "mae", "accuracy_scale", "nn_id"]
    left = api.data(db=db)[columns + ["prm"]].sort_values("id").reset_index(drop=True)
    right = api.data(db=copy)[columns + ["prm"]].sort_values("id").reset_index(drop=True)
    pd.testing.assert_frame_equal(left, right)
    twice = tmp_path / "mirror-2" / "stat" / "train"
    mirror.export_tree(f"sqlite:///{copy}", twice)
    assert lemur_json_train_to_db(twice, code_root, tmp_path / "lemur-3.db") == original


def test_our_mirror_carries_the_code_of_each_row(tmp_path, root, utk_dir, tiny_model):
    """Rows of our own trials keep the code they were trained with, through export-json and import-json, even
    after the file changed."""
    from ab.nn import registry
    from tests.test_sweep_cli import run

    config = f"age-regression_utkface_mae_{tiny_model}"
    assert run(root, utk_dir, "-c", config, "-t", "1", "--max-samples", "16") == 0
    path = root / "nn" / f"{tiny_model}.py"
    trained_code = path.read_text()
    path.write_text(trained_code + "\n# changed after training\n")
    ws_db = root / "db" / "ab.nn.db"
    folder = tmp_path / "exported" / "stat" / "train"
    mirror.export_tree(f"sqlite:///{ws_db}", folder)
    copy = tmp_path / "copy.db"
    _import(copy, folder)
    for database in (ws_db, copy):
        row = api.data(nn=tiny_model, with_code=True, db=database).iloc[0]
        assert row.nn_code == trained_code and row.nn_id == registry.checksum(trained_code)
        assert row.accuracy_scale == 20.0 and row.metric_code == registry.source(registry.METRIC, "mae")
