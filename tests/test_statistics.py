"""The statistics store: LEMUR JSON round trip, the query API, and what it refuses to do."""
import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from ab.nn import api, train
from ab.nn.config import Config
from ab.nn.stat import __main__ as stat_cli
from ab.nn.stat import filters
from ab.nn.stat.store import StatStore
from tests.helpers import optuna_links
from tests.test_sweep_cli import CONFIG, run


@pytest.fixture
def swept(root, utk_dir, tiny_model):
    assert run(root, utk_dir, "-c", CONFIG, f"age-regression_utkface_mae_{tiny_model}", "-e", "2", "-t", "2") == 0
    return root


def _comparable(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["prm"] = frame["prm"].map(lambda p: json.dumps(p, sort_keys=True))
    return frame.sort_values("id").reset_index(drop=True)


def test_lemur_json_round_trip(swept, tmp_path):
    original = api.data(db=swept / "db" / "ab.nn.db")
    trials = api.trials(db=swept / "db" / "ab.nn.db")
    metrics = api.metrics(db=swept / "db" / "ab.nn.db")
    assert len(original) == 8
    copy = tmp_path / "copy.db"
    assert stat_cli.cli(["import-json", "--db", f"sqlite:///{copy}", "--dir", str(swept / "stat" / "train")]) == 0
    pd.testing.assert_frame_equal(_comparable(api.data(db=copy)), _comparable(original))
    # a lease belongs to the database it was taken in; the constant predictor's rows are computed by the runner
    # from the labels (the mirror does not carry them: the next runner on that data key writes them again)
    local = ["prm", "lease_id", "baseline_eval_mae", "baseline_test_mae", "beats_baseline"]
    # Optuna's ids are given by the reconciler when it adds the trials to their study
    assert optuna_links(copy)[["number", "optuna_trial_id"]].isna().all().all()
    pd.testing.assert_frame_equal(api.trials(db=copy).drop(columns=local), trials.drop(columns=local))
    assert list(api.trials(db=copy).prm) == list(trials.prm)
    pd.testing.assert_frame_equal(api.metrics(db=copy), metrics)
    assert stat_cli.cli(["import-json", "--db", f"sqlite:///{copy}", "--dir", str(swept / "stat" / "train")]) == 0
    assert len(api.data(db=copy)) == 8  # importing twice adds nothing


def _records(folder):
    return {p.relative_to(folder): sorted(json.dumps(r, sort_keys=True) for r in json.loads(p.read_text()))
            for p in folder.rglob("*.json")}


def test_the_appended_mirror_holds_what_export_rewrites(swept):
    """Finished trials are appended to the mirror as they end; export-json rewrites it from the database,
    best accuracy first: the same records either way."""
    mirror = swept / "stat"
    appended = _records(mirror)
    assert len(appended[Path("trial") / f"{CONFIG}.json"]) == 2
    for path in mirror.rglob("*.json"):
        path.unlink()
    assert stat_cli.cli(["export-json", "--root", str(swept)]) == 0
    assert _records(mirror) == appended
    records = json.loads((mirror / "train" / CONFIG / "2.json").read_text())
    assert records[0]["accuracy"] >= records[1]["accuracy"]


def test_appending_keeps_the_list_whole_and_adds_a_record_once(tmp_path):
    from ab.nn.stat.mirror import Malformed, _append

    path = tmp_path / "1.json"
    _append(path, [{"a": 1}])
    _append(path, [{"a": 2}, {"a": 3}])
    assert json.loads(path.read_text()) == [{"a": 1}, {"a": 2}, {"a": 3}]
    path.write_text("[]")
    record = {"accuracy": 0.5, "ab_nn": {"stat_id": "s1"}}
    _append(path, [record])
    _append(path, [record, {"uid": "t1"}])  # a flush cut short before its entry was marked done, repeated
    _append(path, [{"uid": "t1"}])
    assert json.loads(path.read_text()) == [record, {"uid": "t1"}]
    assert not list(tmp_path.glob(".*tmp*"))  # every write was a rename of a finished file
    path.write_text('{"not": "a list"}')
    with pytest.raises(Malformed, match="not a list"):
        _append(path, [{"c": 1}])


def test_lemur_own_json_imports(tmp_path):
    folder = tmp_path / "stat" / "train" / CONFIG
    folder.mkdir(parents=True)
    (folder / "5.json").write_text(json.dumps([
        {"accuracy": 0.76, "batch": 64, "dropout": 0.18, "lr": 0.0014, "momentum": 0.9, "transform": "norm_224",
         "uid": "abc", "duration": 123456789, "train_loss": 4.1, "cpu_type": "x"}]))
    target = tmp_path / "lemur.db"
    with pytest.raises(SystemExit, match="2"):  # an MAE record without its raw MAE: the scale must be given
        stat_cli.cli(["import-json", "--db", f"sqlite:///{target}", "--dir", str(folder.parent)])
    assert stat_cli.cli(["import-json", "--db", f"sqlite:///{target}", "--dir", str(folder.parent),
                         "--lemur-mae-scale", "20"]) == 0
    row = api.data(db=target, with_code=True).iloc[0]
    assert row.accuracy_scale == 20 and row.mae == pytest.approx(0.24 * 20)
    assert (row.nn, row.epoch, row.accuracy, row.duration, row.prm_id) == ("MobileAgeNet", 5, 0.76, 123456789, "abc")
    assert row.prm == {"batch": 64, "dropout": 0.18, "lr": 0.0014, "momentum": 0.9, "transform": "norm_224"}
    assert pd.isna(row.status)
    assert row.nn_code is None and row.nn_id is None  # LEMUR's JSON has no code: never this checkout's file


def test_query_filters_and_types(swept):
    path = swept / "db" / "ab.nn.db"
    everything = api.data(db=path)
    assert set(api.data(nn=("MobileAgeNet", "TinyAge"), db=path).id) == set(everything.id)
    assert set(api.data(nn="TinyAge", db=path).nn) == {"TinyAge"}
    assert set(api.data(nn_prefixes=("Tiny",), db=path).nn) == {"TinyAge"}
    assert len(api.data(max_rows=3, db=path)) == 3
    assert set(api.data(epoch=2, db=path).epoch) == {2}
    best = api.data(only_best_accuracy=True, db=path)
    assert len(best) == 4  # 2 models x 2 epochs
    for _, row in best.iterrows():
        same = everything[(everything.nn == row.nn) & (everything.epoch == row.epoch)]
        assert row.accuracy == same.accuracy.max()
    assert len(api.data(unique_nn=True, db=path)) == 2
    prm = everything.prm[0]
    assert isinstance(prm["batch"], int) and isinstance(prm["lr"], float) and isinstance(prm["transform"], str)
    ranked = api.ranked_trials(config=CONFIG, db=path)
    assert len(ranked) == 2 and ranked.eval_accuracy.is_monotonic_decreasing
    assert ranked.eval_accuracy.iloc[0] == api.trials(config=CONFIG, db=path).eval_accuracy.max()
    with pytest.raises(filters.UnknownValue, match="config='age-regression_utkface_mae_Nothing' names nothing"):
        api.ranked_trials(config="age-regression_utkface_mae_Nothing", db=path)
    _filters_name_what_exists(path)
    first, second = api.data(db=path), api.data(db=path)
    first.loc[0, "accuracy"] = -1
    assert second.loc[0, "accuracy"] != -1  # a fresh frame every call


def _filters_name_what_exists(path):
    """A filter naming nothing is an error with a hint; one naming a known model with no trials is empty."""
    refused = {
        lambda: api.data(nn="MobileAgNet", db=path): "nn='MobileAgNet' names nothing .*did you mean 'MobileAgeNet'",
        lambda: api.data(task="age_regression", db=path): "did you mean 'age-regression'",
        lambda: api.trials(config=CONFIG + "x", db=path): f"did you mean '{CONFIG}'",
        lambda: api.ranked_trials(config="MobileAgeNet", db=path): f"configs are task_dataset_metric_nn, e.g. '{CONFIG}'",
        lambda: api.metrics(name="MAE", db=path): "name='MAE' names nothing",
        lambda: api.latency(nn=["TinyAge", "TinyAg3"], db=path): "nn='TinyAg3'",
    }
    for call, message in refused.items():
        with pytest.raises(filters.UnknownValue, match=message):
            call()
    assert api.trials(config="age-regression_utkface_mae_ResNet18", db=path).empty  # a model file, not yet trained
    assert api.data(nn="b7c0f3a1e9d2", db=path).empty  # LEMUR's answer for a new model (NN-GPT asks this)
    assert not api.metrics(name="mae", split="eval", db=path).empty


def test_store_and_api_agree_on_the_best_trial_and_skip_diverged_ones(swept):
    """keep_best_only (store) must keep the artifacts of the trial that deploy/moe/report (api) call best."""
    path = swept / "db" / "ab.nn.db"
    store = StatStore(f"sqlite:///{path}")
    config = Config.parse(CONFIG)
    ranked = api.ranked_trials(config=CONFIG, db=path)
    key = ranked.data_key.iloc[0]
    assert store.best_trial(config, key) == ranked.id.iloc[0]
    with sqlite3.connect(path) as con:  # what a diverged trial looks like (a finished status never changes)
        con.execute("update trial set status='diverged', eval_accuracy=1.0 where id=?", (int(ranked.id.iloc[1]),))
    assert store.best_trial(config, key) == ranked.id.iloc[0] == api.ranked_trials(config=CONFIG, db=path).id.iloc[0]
    with sqlite3.connect(path) as con:
        con.execute("update trial set status='diverged' where id=?", (int(ranked.id.iloc[0]),))
    assert store.best_trial(config, key) is None and api.ranked_trials(config=CONFIG, db=path).empty


@pytest.mark.parametrize("kwargs", [
    {"nn": "x' OR '1'='1"}, {"nn": "MobileAgeNet'; DROP TABLE stat; --"}, {"task": "1 OR 1=1"},
    {"nn_prefixes": ("%",)}, {"nn_prefixes": ("_obileAgeNet",)}, {"nn_prefixes": ("' OR 1=1 --",)},
])
def test_sql_in_arguments_cannot_inject(swept, kwargs):
    path = swept / "db" / "ab.nn.db"
    assert api.data(db=path, **kwargs).empty
    with sqlite3.connect(path) as con:
        assert con.execute("select count(*) from stat").fetchone()[0] == 8


def test_missing_database_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no statistics database"):
        api.data(db=tmp_path / "none.db")


def test_plain_sql_on_the_file_works(swept):
    with sqlite3.connect(swept / "db" / "ab.nn.db") as con:
        rows = con.execute("select s.nn, s.epoch, s.accuracy, s.mae, p.value from stat s "
                           "join prm p on p.uid = s.prm and p.name = 'lr' order by s.nn, s.epoch").fetchall()
    assert len(rows) == 8 and all(isinstance(r[4], float) for r in rows)
