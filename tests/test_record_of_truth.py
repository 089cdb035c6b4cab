"""One record of truth: our tables say what happened to a trial, and Optuna's study and the JSON mirror are
copies derived from them. Writes retried after an ambiguous commit have the effect of one, a runner whose
lease was reclaimed can no longer write, and ``python -m ab.nn.stat check [--repair]`` finds and repairs
every copy that disagrees."""
import json
import os
from datetime import datetime, timedelta

import optuna
import pytest
from sqlalchemy import func, select, update

from ab.nn import registry
from ab.nn.config import Config
from ab.nn.deploy.keep_best import keep_best_only
from ab.nn.stat import mirror, ranking, studies
from ab.nn.stat.__main__ import cli as stat_cli
from ab.nn.stat.check import check
from ab.nn.stat.lease import RunnerLease
from ab.nn.stat.schema import Export, Latency, Outbox, Stat, Trial
from ab.nn.stat.states import LeaseLost
from ab.nn.stat.store import StatStore, reclaim_lapsed
from tests import helpers

CONFIG = Config.parse("age-regression_utkface_mae_Fake")
KEY = "k" * 12
STUDY = f"{CONFIG.name}@{KEY}/e2"


@pytest.fixture
def url(tmp_path):
    made = f"sqlite:///{tmp_path / 'ab.nn.db'}"
    store = helpers.new_store(made)
    store.save_code(registry.MODEL, CONFIG.nn, "class Net: pass\n")
    store.save_code(registry.METRIC, CONFIG.metric, "def create_metric(out_shape): pass\n")
    return made


def _study(url, objectives=("mae",), max_latency_ms=None):
    definition = studies.StudyDef(STUDY, CONFIG.name, KEY, 2, objectives, max_latency_ms)
    store = StatStore(url)
    with store.transaction() as session:
        studies.define(session, definition)
    return definition, studies.open_study(studies.storage(url), definition)


def _trial(url, optuna_study, lease_id=None, status="complete", mae=5.0, link=True):
    """A trial trained to ``status`` with two epochs; Optuna's copy asked (and left RUNNING) when ``link``."""
    store = StatStore(url)
    trial_id = store.reserve_trials(CONFIG, 2, None, data_key=KEY, study=STUDY, lease_id=lease_id)[0]
    asked = optuna_study.ask() if link else None
    if asked is not None:
        asked.suggest_float("lr", 1e-4, 1e-2, log=True)
    store.assign_trial(trial_id, number=asked.number if asked else None,
                       optuna_trial_id=asked._trial_id if asked else None, prm={"lr": 0.001, "batch": 8},
                       search_params=studies.search_params(asked) if asked else None, fence=lease_id)
    stat_id = None
    for epoch in (1, 2):
        stat_id = store.record_epoch(trial_id, epoch, accuracy=1 - (mae + 2 - epoch) / 20, duration=epoch * 10 ** 9,
                                     metrics={"mae": mae + 2 - epoch}, train_stat={"epoch_max": 2}, fence=lease_id)
    if status != "running":
        store.record_test(trial_id, stat_id, 1 - mae / 20, {"mae": mae}, fence=lease_id)
        assert store.finish_trial(trial_id, status, fence=lease_id)
    return trial_id


def _optuna_state(url, trial_id):
    with StatStore(url).transaction() as session:
        optuna_id = session.get(Trial, trial_id).optuna_trial_id
    return studies.storage(url).get_trial(optuna_id)


def test_a_trial_recorded_complete_that_optuna_still_runs_is_found_and_repaired(url, tmp_path):
    """The runner died after the trial process recorded the end but before it told Optuna: Optuna's copy
    stays RUNNING (TPE's constant liar would treat it as pending forever) until a check repairs it."""
    _, made = _study(url)
    trial_id = _trial(url, made)
    assert _optuna_state(url, trial_id).state.name == "RUNNING"
    found = check(url, tmp_path / "stat" / "train")
    assert not found.ok and any("complete here, RUNNING in Optuna" in str(f) for f in found.findings)
    assert check(url, tmp_path / "stat" / "train", repair=True).ok
    frozen = _optuna_state(url, trial_id)
    assert frozen.state.name == "COMPLETE" and frozen.value == pytest.approx(5.0)  # MAE in years, minimised
    assert frozen.intermediate_values == {1: pytest.approx(6.0), 2: pytest.approx(5.0)}
    assert frozen.user_attrs["ab_nn_trial"] == trial_id
    assert check(url, tmp_path / "stat" / "train").ok


def test_a_repair_that_finds_the_trial_told_since_it_read_it_accepts_the_tell(url):
    """Runners opening a study at once repair what they read: one reads Optuna's copy RUNNING, the trial's own
    runner tells it before the repair writes, and whichever write of the repair comes first finds it
    finished. The repair then judges what Optuna holds; it never raises (it used to end that runner)."""
    definition, made = _study(url)
    trial_id = _trial(url, made)
    snapshot = _optuna_state(url, trial_id)
    assert snapshot.state.name == "RUNNING" and not snapshot.intermediate_values

    class ReadBeforeTheTell(optuna.storages.RDBStorage):
        stale = True

        def get_trial(self, optuna_id):
            if self.stale and optuna_id == snapshot._trial_id:
                self.stale = False
                return snapshot
            return super().get_trial(optuna_id)

    made.tell(snapshot.number, 5.0)  # the trial's own runner, after the repairer's read
    repairer = optuna.load_study(study_name=STUDY, storage=ReadBeforeTheTell(url))
    with StatStore(url).transaction() as session:
        assert studies.push(session, repairer, session.get(Trial, trial_id), definition) is True
    frozen = _optuna_state(url, trial_id)
    assert frozen.state.name == "COMPLETE" and frozen.value == pytest.approx(5.0)


def test_optuna_copy_that_disagrees_after_finishing_is_rebuilt_from_our_tables(url, tmp_path):
    """Ours complete, Optuna FAIL (what SIGTERM during an export used to leave): Optuna refuses to change a
    finished trial, so the study is rebuilt from our tables, sampled values and links kept."""
    _, made = _study(url)
    good = _trial(url, made)
    storage = studies.storage(url)
    sampled = _optuna_state(url, good).params
    storage.set_trial_state_values(_optuna_state(url, good)._trial_id, optuna.trial.TrialState.FAIL)
    orphan = made.ask()  # asked by a runner that died before recording its trial: runs forever in Optuna
    assert orphan._trial_id
    assert check(url, tmp_path / "stat" / "train", repair=True).ok
    frozen = _optuna_state(url, good)
    assert frozen.state.name == "COMPLETE" and frozen.params == sampled and "lr" in frozen.distributions
    rebuilt = optuna.load_study(study_name=STUDY, storage=storage)
    assert [t.user_attrs.get("ab_nn_trial") for t in rebuilt.trials] == [good]  # the orphan is gone
    assert check(url, tmp_path / "stat" / "train").ok


def test_a_study_made_by_an_older_version_is_rebuilt_minimising_mae(url, tmp_path):
    storage = studies.storage(url)
    old = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
    old.set_metric_names(["accuracy = 1 - MAE/20 (validation)"])
    trial_id = _trial(url, old)
    old_params = _optuna_state(url, trial_id).params  # kept by the old copy only
    with StatStore(url).transaction() as session:
        session.execute(update(Trial).where(Trial.id == trial_id).values(search_params=None))  # as recorded then
        session.execute(studies.Study.__table__.delete())
    report = check(url, tmp_path / "stat" / "train", repair=True)
    assert report.ok, report.lines()
    rebuilt = optuna.load_study(study_name=STUDY, storage=storage)
    assert rebuilt.direction.name == "MINIMIZE" and rebuilt.metric_names == ["val MAE (years)"]
    assert rebuilt.trials[0].params == old_params and rebuilt.trials[0].value == pytest.approx(5.0)
    assert check(url, tmp_path / "stat" / "train").ok


def test_retried_writes_have_the_effect_of_one(url):
    """What a retry after an applied commit does (the ambiguous commit itself is made for real on
    PostgreSQL in the fault matrix): the same request key, the same rows."""
    store = StatStore(url)
    uids = ["a" * 32]
    first = store._reserve(CONFIG, 2, 5, KEY, STUDY, uids, [{}], None, {})
    assert store._reserve(CONFIG, 2, 5, KEY, STUDY, uids, [{}], None, {}) == first  # no phantom slot
    trial_id = first[0][0]
    again = [store.record_epoch(trial_id, 1, accuracy=0.5, duration=1, metrics={"mae": 10.0}, train_stat={})
             for _ in range(2)]
    assert again[0] == again[1]
    export = store._add_keyed(Export, "key-1", trial_id, None, dict(format="onnx", precision="fp32", status="ok"))
    assert store._add_keyed(Export, "key-1", trial_id, None, dict(format="onnx", precision="fp32",
                                                                    status="ok")) == export
    assert store.finish_trial(trial_id, "complete") and store.finish_trial(trial_id, "complete")  # the retry: True
    assert not store.finish_trial(trial_id, "failed")  # another end is refused
    with store.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Trial)) == 1
        assert session.scalar(select(func.count()).select_from(Stat)) == 1
        assert session.scalar(select(func.count()).select_from(Export)) == 1
        assert session.scalar(select(func.count()).select_from(Outbox)) == 1  # the mirror queued once


def test_a_runner_whose_lease_was_reclaimed_can_no_longer_write(url):
    store = StatStore(url)
    with RunnerLease(store, heartbeat=3600) as old:
        trial_id = store.reserve_trials(CONFIG, 2, None, data_key=KEY, study=STUDY, lease_id=old.id)[0]
        store.record_epoch(trial_id, 1, accuracy=0.5, duration=1, metrics={"mae": 10.0}, train_stat={}, fence=old.id)
        with store.transaction() as session:  # its heartbeat stopped long ago (a stalled host, a partition)
            session.execute(update(studies.Study.__table__.metadata.tables["lease"]).values(
                beat_at=datetime.utcnow() - timedelta(days=1)))
            assert [t for t, _ in reclaim_lapsed(session, STUDY)] == [trial_id]
        with pytest.raises(LeaseLost, match=f"trial {trial_id} is no longer this runner's"):
            store.record_epoch(trial_id, 2, accuracy=0.9, duration=2, metrics={"mae": 2.0}, train_stat={},
                               fence=old.id)
        with pytest.raises(LeaseLost):
            store.record_test(trial_id, "x", 0.9, {"mae": 2.0}, fence=old.id)
        assert not store.finish_trial(trial_id, "complete", fence=old.id)
    assert store.trial_status(trial_id) == "interrupted"


def test_a_mirror_that_cannot_be_written_never_changes_the_outcome_and_is_written_later(url, tmp_path):
    stat_dir = tmp_path / "stat" / "train"
    stat_dir.parent.mkdir(parents=True)
    (stat_dir.parent / "trial").write_text("a file where the folder should be")  # like a full or read-only disk
    _, made = _study(url)
    trial_id = _trial(url, made, link=False)
    flushed = mirror.flush(url, stat_dir)
    assert flushed.done == 0 and flushed.errors and StatStore(url).trial_status(trial_id) == "complete"
    assert not check(url, stat_dir).ok  # still queued: said, not hidden
    (stat_dir.parent / "trial").unlink()
    assert check(url, stat_dir, repair=True).ok
    records = json.loads((stat_dir / CONFIG.name / "2.json").read_text())
    assert [r["ab_nn"]["trial_id"] for r in records] == [trial_id]
    assert mirror.flush(url, stat_dir).done == 0  # nothing queued twice


def test_a_torn_mirror_file_is_rewritten_from_the_database_never_spliced_into(url, tmp_path):
    stat_dir = tmp_path / "stat" / "train"
    _, made = _study(url)
    first = _trial(url, made, link=False)
    mirror.flush(url, stat_dir)
    path = stat_dir / CONFIG.name / "1.json"
    path.write_text(path.read_text()[:40])  # cut short, as by a crash of another writer
    second = _trial(url, made, link=False, mae=4.0)
    assert mirror.flush(url, stat_dir).done == 1
    records = json.loads(path.read_text())
    assert sorted(r["ab_nn"]["trial_id"] for r in records) == [first, second]
    assert not mirror.malformed_files(stat_dir)


def test_keep_best_only_keeps_the_feasible_best_under_a_latency_limit(url, tmp_path):
    """The best by MAE is slower than the study's --max-latency-ms: the best within the limit is kept,
    as the summary and Optuna choose it, and the infeasible one's files are deleted."""
    _study(url, max_latency_ms=10.0)
    made = optuna.load_study(study_name=STUDY, storage=studies.storage(url))
    fast, slow = _trial(url, made, mae=6.0), _trial(url, made, mae=4.0)
    store, out = StatStore(url), tmp_path / "out"
    for trial_id, ms in ((fast, 5.0), (slow, 50.0)):
        path = out / CONFIG.name / str(trial_id) / "model.onnx"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"onnx")
        export = store.add_export(trial_id, format="onnx", precision="fp32", status="ok", path=str(path))
        store.add_latency(export, trial_id, runtime="onnxruntime", threads=1, batch=1, median_ms=ms, status="ok")
    with store.transaction() as session:
        assert ranking.best(session, CONFIG.name, KEY) == fast
        assert [r.trial_id for r in ranking.rank(session, CONFIG.name, KEY)] == [fast, slow]
    deleted = keep_best_only(store, CONFIG, KEY, out)
    assert [p.parent.name for p in deleted] == [str(slow)]
    assert (out / CONFIG.name / str(fast) / "model.onnx").exists()


def test_the_check_command_exits_non_zero_until_repaired(url, tmp_path, capsys):
    _, made = _study(url)
    _trial(url, made)
    db = url.removeprefix("sqlite:///")
    assert stat_cli(["check", "--db", url, "--dir", str(tmp_path / "stat" / "train")]) == 1
    assert "RUNNING in Optuna" in capsys.readouterr().out
    assert stat_cli(["check", "--repair", "--db", url, "--dir", str(tmp_path / "stat" / "train")]) == 0
    assert stat_cli(["check", "--db", url, "--dir", str(tmp_path / "stat" / "train")]) == 0
    assert "agree" in capsys.readouterr().out and os.path.exists(db)
