"""Imports and copies remap every id: a database rebuilt from its own JSON mirror holds the same trials and
resumes; two machines that ran the same config on the same data (same Optuna study names and numbers)
merge into one database without error and without cross-links; running trials arrive reclaimable; doing
it twice adds nothing; the reconciler then adds what was imported to the Optuna studies. Sources are
written the way the runner writes them (StatStore, our study definition and its real Optuna copy, a
replica group, leases), on SQLite and PostgreSQL."""
import json
import sqlite3
from pathlib import Path

import optuna
import pandas as pd
import pytest
from sqlalchemy import func, select

from ab.nn import api, registry
from ab.nn.config import Config
from ab.nn.stat import __main__ as stat_cli
from ab.nn.stat import bulk, copy as stat_copy, json_import, lease, mirror, studies, versions
from ab.nn.stat.accuracy_scale import ScaleError
from ab.nn.stat.copy import copy_database
from ab.nn.stat.schema import Prediction, Stat, Trial
from ab.nn.stat.states import COMPLETE, FAILED
from ab.nn.stat.store import StatStore
from ab.nn.stat.untrusted import BadRecord
from tests import helpers
from tests.helpers import optuna_links

CONFIG = "age-regression_utkface_mae_MobileAgeNet"
KEY = "paper-42-abc123"
STUDY = f"{CONFIG}@{KEY}/e2"
DEFINITION = studies.StudyDef(STUDY, CONFIG, KEY, 2)
LOCAL = ["id", "lease_id", "replica_of"]
"""Columns that mean something only in the database they were written in."""


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def target(request, tmp_path) -> str:
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else f"sqlite:///{tmp_path / 'target.db'}"
    versions.upgrade(url)  # as import-json and copy make their target current
    return url


def new(path: Path) -> str:
    """A new database at ``path``, made current as ``import-json`` and ``copy`` make their target."""
    url = f"sqlite:///{path}"
    versions.upgrade(url)
    return url


def workspace(folder: Path, *, running_first: bool = False, running_lease: int | None = None,
              predictions: int = 0) -> tuple[str, Path]:
    """A database written the way the runner writes it: two plain trials, a replica group of three (its
    first trial ``running`` if asked), a failed trial, each with its own Optuna trial of one study,
    epochs, test numbers and ``predictions`` per-image predictions; and its JSON mirror (export-json)."""
    url = f"sqlite:///{folder / 'db' / 'ab.nn.db'}"
    store = helpers.new_store(url)
    store.save_code(registry.MODEL, "MobileAgeNet", f"class Net:  # {folder.name}\n    pass\n")
    store.save_code(registry.METRIC, "mae", "def create_metric(out_shape): ...\n")
    store.save_code(registry.TRANSFORM, "norm_64", "def transform(norm): ...\n")
    with store.transaction() as session:
        studies.define(session, DEFINITION)
    study = studies.open_study(studies.storage(url), DEFINITION)
    config = Config.parse(CONFIG)

    def trial(seed: int, *, group: int | None = None, status: str | None = COMPLETE) -> int:
        if group is None:
            [trial_id] = store.reserve_trials(config, 2, None, data_key=KEY, study=STUDY, seed=seed,
                                              host=folder.name, pid=4242, lease_id=running_lease)
        else:
            [(trial_id, _)] = store.reserve_replicas(config, 2, None, data_key=KEY, group=group, seeds=[seed],
                                                     study=STUDY, host=folder.name, pid=4242)
        asked = study.ask()
        store.assign_trial(trial_id, number=asked.number, optuna_trial_id=asked._trial_id,
                           prm={"lr": 0.001 * seed, "batch": 32, "transform": "norm_64"}, split="paper/42")
        accuracy = 0.5 + 0.01 * seed
        for epoch in (1, 2):
            store.record_epoch(trial_id, epoch, accuracy=accuracy, duration=10 ** 9 * epoch,
                               metrics={"mae": (1 - accuracy) * 20, "metric_mae": accuracy},
                               train_stat={"train_loss": 3.0 / epoch, "lr": 0.001 * seed, "truncated": False})
        if predictions:
            store.record_predictions(trial_id, "test", [20.0 + i for i in range(predictions)],
                                     [21.0 + i for i in range(predictions)], [f"img{i}" for i in range(predictions)])
            export = store.add_export(trial_id, format="onnx", precision="fp32", status="ok", path=f"/out/{trial_id}.onnx")
            store.add_latency(export, trial_id, runtime="onnxruntime", threads=1, batch=1, median_ms=1.5 * seed,
                              status="ok")
        if status is not None:
            store.finish_trial(trial_id, status, error=None if status == COMPLETE else "boom")
            study.tell(asked, (1 - accuracy) * 20 if status == COMPLETE else None,
                       state=None if status == COMPLETE else optuna.trial.TrialState.FAIL)
        return trial_id

    trial(1)
    first = trial(2, status=None if running_first else COMPLETE)
    store.update_trial(first, replica_of=first)
    trial(3, group=first)
    trial(4, group=first)
    trial(5)
    trial(6, status=FAILED)
    tree = folder / "stat" / "train"
    mirror.export_tree(url, tree)
    return url, tree


def groups(url: str) -> dict[str, str | None]:
    """Each replica's uid -> the uid of the trial its ``replica_of`` points at (``None``: a dangling id)."""
    frame = api.trials(db=url)
    uid_of = dict(zip(frame.id, frame.uid))
    return {uid: uid_of.get(int(first)) for uid, first in zip(frame.uid, frame.replica_of) if not pd.isna(first)}


def _trials(url: str) -> pd.DataFrame:
    """Trials by uid, times in UTC without their zone (SQLite gives them so, PostgreSQL with it)."""
    frame = api.trials(db=url).set_index("uid")
    for column in ("started_at", "finished_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True).dt.tz_localize(None)
    return frame


def same_trials(source: str, target: str) -> None:
    """The target holds every trial of the source, every column equal but the source's local ids (and
    Optuna's numbering, which no frame shows: the reconciler gives it in the target)."""
    before = _trials(source).sort_index()
    after = _trials(target).loc[before.index]
    pd.testing.assert_frame_equal(after.drop(columns=LOCAL + ["prm"]), before.drop(columns=LOCAL + ["prm"]),
                                  check_dtype=False)  # a column with NULLs of other trials is float there
    assert list(after.prm) == list(before.prm)
    links = optuna_links(target).set_index("uid").loc[before.index]
    assert links.number.isna().all() and links.optuna_trial_id.isna().all()  # the reconciler's to give


def test_a_database_rebuilt_from_its_mirror_holds_the_same_trials_and_resumes(tmp_path):
    url, tree = workspace(tmp_path / "a")
    rebuilt = new(tmp_path / "rebuilt.db")
    summary = json_import.import_tree(rebuilt, tree, progress=False)
    assert (summary.trials, summary.records, summary.replica_links_dropped) == (6, 12, 0)
    same_trials(url, rebuilt)
    assert list(api.trials(db=rebuilt).id) == list(api.trials(db=url).id)  # an empty target keeps the ids
    assert groups(rebuilt) == groups(url) and len(groups(url)) == 3
    columns = ["id", "trial_id", "epoch", "accuracy", "mae", "accuracy_scale", "prm_id", "nn_id", "transform_id"]
    pd.testing.assert_frame_equal(api.data(db=rebuilt)[columns].sort_values("id").reset_index(drop=True),
                                  api.data(db=url)[columns].sort_values("id").reset_index(drop=True))

    # the resumed sweep defines its study (the mirror holds no definition) and the reconciler adds the
    # imported trials to its Optuna copy, numbered there; new trials are asked after them
    store, config = StatStore(rebuilt), Config.parse(CONFIG)
    with store.transaction() as session:
        studies.define(session, DEFINITION)
    storage = studies.storage(rebuilt)
    found = studies.reconcile(rebuilt, storage, STUDY)
    assert [(f.problem, f.repaired) for f in found] == [("no Optuna copy", True)]  # made from our trials
    assert sorted(optuna_links(rebuilt).number) == list(range(6))
    # a second machine's mirror imported into it: the reconciler adds those trials to the existing copy
    _, b_tree = workspace(tmp_path / "b")
    assert json_import.import_tree(rebuilt, b_tree, progress=False).trials == 6
    assert optuna_links(rebuilt).number.isna().sum() == 6
    found = studies.reconcile(rebuilt, storage, STUDY)
    assert len(found) == 6 and all("missing in Optuna" in f.problem and f.repaired for f in found)
    linked = optuna_links(rebuilt)
    assert sorted(linked.number) == list(range(12)) and linked.optuna_trial_id.notna().all()
    study = studies.open_study(storage, DEFINITION)
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE"] * 10 + ["FAIL"] * 2
    assert studies.reconcile(rebuilt, storage, STUDY) == []  # now the copy agrees
    [trial_id] = store.reserve_trials(config, 2, None, data_key=KEY, study=STUDY)
    asked = study.ask()
    store.assign_trial(trial_id, number=asked.number, optuna_trial_id=asked._trial_id, prm={"lr": 0.1})
    assert asked.number == 12
    again = json_import.import_tree(rebuilt, tree, progress=False)
    assert (again.trials, again.records) == (0, 0)


def test_two_machines_mirrors_merge_into_one_database_without_cross_links(tmp_path, target):
    a_url, a_tree = workspace(tmp_path / "a")
    b_url, b_tree = workspace(tmp_path / "b")
    a, b = optuna_links(a_url), optuna_links(b_url)
    assert list(a.number) == list(b.number) and list(a.id) == list(b.id)  # the same study, numbers and ids
    assert json_import.import_tree(target, a_tree, progress=False).trials == 6
    assert json_import.import_tree(target, b_tree, progress=False).trials == 6
    merged = api.trials(db=target)
    assert len(merged) == 12 and merged.uid.is_unique and set(merged.study) == {STUDY}
    same_trials(a_url, target)
    same_trials(b_url, target)
    assert groups(target) == {**groups(a_url), **groups(b_url)}  # each replica points at its own group's first
    assert len(api.data(db=target)) == 24
    with sqlite3.connect(b_url.removeprefix("sqlite:///")) as con:  # b's code travels with its rows
        b_code = con.execute("select id from nn").fetchone()[0]
    assert set(api.data(db=target).nn_id) == {b_code, api.data(db=a_url).nn_id[0]}
    again = json_import.import_tree(target, b_tree, progress=False)
    assert (again.trials, again.records) == (0, 0) and len(api.trials(db=target)) == 12


def test_a_group_whose_first_trial_was_running_keeps_no_link_outside_the_import(tmp_path):
    url, tree = workspace(tmp_path / "a", running_first=True)
    target = new(tmp_path / "target.db")
    summary = json_import.import_tree(target, tree, progress=False)
    # the mirror lists finished trials only: the group's first trial (running) and its epochs stay behind
    assert (summary.trials, summary.records, summary.replica_links_dropped, summary.without_trial) == (5, 10, 2, 2)
    assert "replica links to trials outside the import set to NULL" in str(summary)
    assert groups(target) == {}


def _counts(url: str) -> dict[str, int]:
    store = StatStore(url)
    with store.transaction() as session:
        return {table.__tablename__: session.scalar(select(func.count()).select_from(table))
                for table in (Trial, Stat, Prediction)}


def test_copies_of_two_machines_merge_and_running_trials_arrive_reclaimable(tmp_path, target, monkeypatch):
    monkeypatch.setattr(stat_copy, "BATCH", 7)  # several batches per table, a batch across trials
    monkeypatch.setattr(bulk, "IN_CHUNK", 3)
    a_store = helpers.new_store(f"sqlite:///{tmp_path / 'a' / 'db' / 'ab.nn.db'}")
    with lease.RunnerLease(a_store) as alive:  # machine a is still training one trial
        a_url, _ = workspace(tmp_path / "a", predictions=20)
        [running] = a_store.reserve_trials(Config.parse(CONFIG), 2, None, data_key=KEY, study=STUDY,
                                           lease_id=alive.id, host="a", pid=4242)
        b_url, _ = workspace(tmp_path / "b", predictions=20)
        first = copy_database(a_url, target)
        assert _lease(a_store, alive.id).alive  # alive where it was taken ...
    assert (first["trials added"], first["running trials released"], first["replica links dropped"]) == (7, 1, 0)
    second = copy_database(b_url, target)
    assert second["trials added"] == 6
    merged = api.trials(db=target).set_index("uid")
    assert len(merged) == 13 and set(merged.study) == {STUDY} and optuna_links(target).number.isna().all()
    same_trials(a_url, target)
    same_trials(b_url, target)
    assert groups(target) == {**groups(a_url), **groups(b_url)}
    copied = merged.loc[api.trials(db=a_url).set_index("id").uid[running]]
    assert copied.status == "running"
    state = _lease(StatStore(target), int(copied.lease_id))
    assert not state.alive and "released" in state.reason  # ... and reclaimable at once in the copy
    for url in (a_url, b_url):
        for uid, trial in api.trials(db=url).set_index("uid").iterrows():
            here = int(merged.loc[uid].id)
            assert len(api.predictions(trial_id=here, split="test", db=target)) == (20 if trial.status != "running"
                                                                                  else 0)
            assert list(api.exports(db=target).query("trial_id == @here").path) == \
                list(api.exports(db=url).query("trial_id == @trial.id").path)
    assert len(api.data(db=target)) == 24
    before = _counts(target)
    assert copy_database(a_url, target)["trials added"] == 0 and copy_database(b_url, target)["trials added"] == 0
    assert _counts(target) == before  # twice adds nothing

    back = new(tmp_path / "back.db")  # and the merged database (PostgreSQL too) copies out whole
    copy_database(target, back)
    same_trials(target, back)
    assert list(api.trials(db=back).id) == list(api.trials(db=target).id) and _counts(back) == before

    # the study's definition came along: the reconciler reclaims the released trial and adds every trial
    found = studies.reconcile(target, studies.storage(target), STUDY)
    assert "no Optuna copy" in [f.problem for f in found] and all(f.repaired for f in found)
    reconciled = api.trials(db=target)
    links = optuna_links(target)
    assert sorted(links.number) == list(range(13)) and links.optuna_trial_id.notna().all()
    assert reconciled.set_index("uid").loc[copied.name].status == "interrupted"


def _lease(store: StatStore, lease_id: int) -> lease.LeaseState:
    with store.transaction() as session:
        return lease.states(session, [lease_id])[lease_id]


def _lemur_tree(folder: Path, records: dict[str, list[dict]]) -> Path:
    """stat/train/<config>/<epoch>.json files with these records ({"<config>/<epoch>": [...]})."""
    tree = folder / "stat" / "train"
    for where, body in records.items():
        path = tree / f"{where}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(body, indent=4))
    return tree


def _lemur(accuracy: float, uid: str, **extra) -> dict:
    return {"accuracy": accuracy, "batch": 64, "duration": 123456789, "lr": 0.01, "transform": "norm_64",
            "uid": uid, **extra}


def test_an_import_whose_records_imply_different_scales_is_refused(tmp_path, capsys):
    tree = _lemur_tree(tmp_path, {f"{CONFIG}/1": [_lemur(0.6, "a", test_mae=6.0), _lemur(0.5, "b", test_mae=7.5)],
                                  f"{CONFIG}/2": [_lemur(0.6, "c", test_mae=8.0)]})  # 1 - 6/15, 1 - 7.5/15; 1 - 8/20
    db = tmp_path / "mixed.db"
    for scale in (None, 20.0):  # a given scale applies to records without raw MAE only: it settles nothing here
        with pytest.raises(ScaleError) as refused:
            json_import.import_tree(f"sqlite:///{db}", tree, progress=False, lemur_mae_scale=scale)
        message = str(refused.value)
        assert "different accuracy scales" in message and "\n" not in message
        assert f"1 - MAE/15 for 2 record(s) (e.g. {tree / CONFIG / '1.json'})" in message
        assert f"1 - MAE/20 for 1 record(s) (e.g. {tree / CONFIG / '2.json'})" in message
    with pytest.raises(SystemExit, match="2"):
        stat_cli.cli(["import-json", "--db", f"sqlite:///{db}", "--dir", str(tree)])
    assert "different accuracy scales" in capsys.readouterr().err
    assert not db.exists() or api.data(db=db).empty


def test_a_given_scale_applies_only_to_records_without_raw_mae(tmp_path):
    tree = _lemur_tree(tmp_path, {f"{CONFIG}/1": [_lemur(0.6, "a", test_mae=6.0), _lemur(0.7, "b")],
                                  "img-classification_cifar-10_acc_Net/1": [_lemur(0.9, "c")]})
    db = tmp_path / "ok.db"
    summary = json_import.import_tree(new(db), tree, progress=False, lemur_mae_scale=20)
    assert summary.scales == "1 - MAE/15 for 1 (raw MAE), 1 - MAE/20 for 1 (--lemur-mae-scale)"
    rows = api.data(db=db).set_index("prm_id")
    assert (rows.loc["a"].accuracy_scale, rows.loc["a"].mae) == (15.0, 6.0)  # detected, whatever was given
    assert rows.loc["b"].accuracy_scale == 20.0 and rows.loc["b"].mae == pytest.approx(6.0)
    assert pd.isna(rows.loc["c"].accuracy_scale) and pd.isna(rows.loc["c"].mae)  # not an MAE metric


BAD_FOLDERS = {
    "a newline": f"{CONFIG}\n",
    "three parts": "age-regression_utkface_mae",
    "a dot in the model name": "age-regression_utkface_mae_Mobile.AgeNet",
    "a space": "age-regression_utkface_mae_Mobile AgeNet",
}
BAD_RECORDS = {
    "a parent folder in the transform": {"transform": "../../etc/passwd"},
    "an absolute transform": {"transform": "/etc/passwd"},
    "a NUL byte": {"transform": "norm\x0064"},
    "an over-long transform": {"transform": "t" * 500},
    "a code id that is a path": {"ab_nn": {"stat_id": "s1", "code": {"nn": "../../../code"}}},
    "a code id with a NUL": {"ab_nn": {"stat_id": "s1", "code": {"metric": "0" * 31 + "\x00"}}},
    "half of a surrogate pair": {"epoch_max": "{X\udbf3"},  # no UTF-8 for it: found by test_import_fuzz
}
BAD_TRIALS = {
    "a config that is a path": {"config": "../../x_utkface_mae_Net"},
    "an over-long model": {"config": f"age-regression_utkface_mae_{'N' * 300}", "nn": "N" * 300},
    "a model that is not the config's": {"nn": "OtherNet"},
    "a code id that is a path": {"nn_code_id": "../../x"},
    "an unknown status": {"status": "resurrected"},
    "an id that is not a number": {"id": "7; drop table trial"},
}


@pytest.mark.parametrize("name", BAD_FOLDERS.values(), ids=BAD_FOLDERS.keys())
def test_bad_folder_names_are_refused_naming_the_folder(tmp_path, name):
    tree = _lemur_tree(tmp_path, {f"{CONFIG}/1": [_lemur(0.6, "a", test_mae=6.0)]})
    (tree / name).mkdir()
    (tree / name / "1.json").write_text(json.dumps([_lemur(0.5, "b", test_mae=7.5)]))
    with pytest.raises(BadRecord) as refused:
        json_import.import_tree(new(tmp_path / "x.db"), tree, progress=False)
    assert refused.value.where == str(tree / name) and "\n" not in str(refused.value)


@pytest.mark.parametrize("fields", BAD_RECORDS.values(), ids=BAD_RECORDS.keys())
def test_bad_names_and_ids_in_records_are_refused_naming_the_file(tmp_path, fields, capsys):
    tree = _lemur_tree(tmp_path, {f"{CONFIG}/3": [_lemur(0.6, "a", test_mae=6.0, **fields)]})
    db = tmp_path / "x.db"
    with pytest.raises(BadRecord) as refused:
        json_import.import_tree(new(db), tree, progress=False)
    assert refused.value.where == str(tree / CONFIG / "3.json") and "\n" not in str(refused.value)
    with pytest.raises(SystemExit, match="2"):
        stat_cli.cli(["import-json", "--db", f"sqlite:///{db}", "--dir", str(tree)])
    last = capsys.readouterr().err.splitlines()[-1]  # after the progress bar
    assert last == f"python -m ab.nn.stat: error: {refused.value}"


@pytest.mark.parametrize("fields", BAD_TRIALS.values(), ids=BAD_TRIALS.keys())
def test_bad_trial_records_are_refused_naming_the_file(tmp_path, fields):
    _, tree = workspace(tmp_path / "a")
    trial_file = tree.parent / "trial" / f"{CONFIG}.json"
    trials = json.loads(trial_file.read_text())
    trials[1].update(fields)
    trial_file.write_text(json.dumps(trials))
    with pytest.raises(BadRecord) as refused:
        json_import.import_tree(new(tmp_path / "x.db"), tree, progress=False)
    assert refused.value.where.startswith(f"{trial_file} (trial ") and "\n" not in str(refused.value)


def test_code_whose_checksum_is_not_its_id_is_refused(tmp_path):
    _, tree = workspace(tmp_path / "a")
    [code] = (tree.parent / "code" / "nn").glob("*.json")
    record = json.loads(code.read_text())
    code.write_text(json.dumps(dict(record, code=record["code"] + "import os; os.system('x')\n")))
    with pytest.raises(BadRecord, match="does not have the checksum") as refused:
        json_import.import_tree(new(tmp_path / "x.db"), tree, progress=False)
    assert refused.value.where == str(code)


def test_copy_refuses_a_source_whose_names_are_paths(tmp_path):
    url, _ = workspace(tmp_path / "a")
    with sqlite3.connect(url.removeprefix("sqlite:///")) as con:
        con.execute("update trial set transform = '../../etc' where id = 3")
    with pytest.raises(BadRecord, match=r"trial \(id=3\): '../../etc' is not a valid transform name"):
        copy_database(url, new(tmp_path / "copy.db"))
