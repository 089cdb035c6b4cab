"""A database written by the previous schema opens, migrates and keeps every row."""
import sqlite3
from pathlib import Path

import pandas as pd

from ab.nn import api
from ab.nn.dataset.identity import data_key
from ab.nn.dataset.settings import DataSettings
from ab.nn.stat import engine as engines, migrations
from ab.nn.stat.store import StatStore

FIXTURE = Path(__file__).parent / "fixtures" / "schema_v1.sqlite.sql"
CONFIG = "age-regression_utkface_mae_MobileAgeNet"


def _old_database(path: Path) -> None:
    """The previous schema, with three trials: two on paper/42 (one a smoke run), one on lemur/42."""
    with sqlite3.connect(path) as con:
        con.executescript(FIXTURE.read_text())
        con.execute("insert into nn values ('MobileAgeNet', 'code', 'abc')")
        con.execute("insert into metric values ('mae', 'code', 'def')")
        con.execute("insert into transform values ('norm_64', 'code', 'ghi')")
        con.execute("insert into prm values ('u1', 'lr', 0.001)")
        for tid, split, cap, status, mae in ((1, "paper/42", None, "complete", 6.1), (2, "paper/42", 8, "complete", 3.0),
                                             (3, "lemur/42", None, "complete", 5.0)):
            con.execute("insert into trial (id, config, task, dataset, metric, nn, transform, prm, study, number, status,"
                        " seed, split, epoch_max, epochs_done, max_samples, eval_accuracy, eval_mae) values "
                        "(?, ?, 'age-regression', 'utkface', 'mae', 'MobileAgeNet', 'norm_64', 'u1', ?, ?, ?, 42, ?, "
                        "1, 1, ?, ?, ?)", (tid, CONFIG, CONFIG, tid - 1, status, split, cap, 1 - mae / 20, mae))
            con.execute("insert into stat (id, accuracy, epoch, duration, task, dataset, nn, transform, metric, prm, "
                        "trial_id, mae) values (?, ?, 1, 10, 'age-regression', 'utkface', 'MobileAgeNet', 'norm_64', "
                        "'mae', 'u1', ?, ?)", (f"s{tid}", 1 - mae / 20, tid, mae))
            con.execute("insert into stat_metric values (?, 'eval', 'mae', ?)", (f"s{tid}", mae))


def _counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as con:
        tables = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
        return {t: con.execute(f'select count(*) from "{t}"').fetchone()[0] for t in tables}


def test_an_old_database_migrates_and_keeps_every_row(tmp_path):
    path = tmp_path / "old.db"
    _old_database(path)
    before = _counts(path)
    engines.dispose_all()
    StatStore(f"sqlite:///{path}")  # the first writer brings it up to date
    after = _counts(path)
    assert {t: n for t, n in after.items() if t in before} == before  # no row lost or added
    with sqlite3.connect(path) as con:
        assert con.execute("select max(version) from ab_nn_schema").fetchone()[0] == migrations.CURRENT
        keys = dict(con.execute("select id, data_key from trial"))
        seeds = {r[0] for r in con.execute("select split_seed from trial")}
    assert keys[1] == data_key("utkface", DataSettings(), None)
    assert len(set(keys.values())) == 3 and seeds == {42}  # smoke run and other split: keys of their own
    ranked = api.ranked_trials(config=CONFIG, db=path)
    assert list(ranked.id) == [1]  # the full paper/42 trial, not the lucky smoke run (MAE 3.0)
    assert list(api.ranked_trials(config=CONFIG, all_data=True, db=path).id) == [2, 3, 1]
    assert list(api.ranked_trials(config=CONFIG, data_key=keys[3], db=path).id) == [3]


def test_migrating_twice_changes_nothing(tmp_path):
    path = tmp_path / "old.db"
    _old_database(path)
    engines.dispose_all()
    StatStore(f"sqlite:///{path}")
    first = pd.read_sql("select * from trial", sqlite3.connect(path))
    engines.dispose_all()
    StatStore(f"sqlite:///{path}")
    assert pd.read_sql("select * from trial", sqlite3.connect(path)).equals(first)
    with sqlite3.connect(path) as con:
        assert con.execute("select count(*) from ab_nn_schema").fetchone()[0] == 1


def test_version_4_renames_the_old_lemur_split_and_fills_code_and_scale(tmp_path):
    """Trials recorded as ``lemur`` before version 4 used random_split 70/30, now ``lemur-random``; epochs of
    recorded trials get the checksums of their code, and their accuracy scale."""
    path = tmp_path / "old.db"
    _old_database(path)
    engines.dispose_all()
    StatStore(f"sqlite:///{path}")
    with sqlite3.connect(path) as con:
        splits = dict(con.execute("select id, split from trial"))
        key = con.execute("select data_key from trial where id=3").fetchone()[0]
        rows = con.execute("select nn_code_id, transform_code_id, metric_code_id, accuracy_scale from stat").fetchall()
        versions = set(con.execute("select kind, id, name, code from code_version"))
    assert splits == {1: "paper/42", 2: "paper/42", 3: "lemur-random/42"}
    assert key == data_key("utkface", DataSettings(split="lemur-random"), None)
    assert set(rows) == {("abc", "ghi", "def", 20.0)}
    assert versions == {("nn", "abc", "MobileAgeNet", "code"), ("metric", "def", "mae", "code"),
                        ("transform", "ghi", "norm_64", "code")}
    assert api.data(with_code=True, db=path).nn_code.eq("code").all()
