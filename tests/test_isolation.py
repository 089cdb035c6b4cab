"""Sweeps that survive: crashing trials, limits, kill -9 of the runner, several workers on one study."""
import os
import signal
import sqlite3
import subprocess
import sys
import time

import optuna
import pytest

from ab.nn import api
from tests.test_sweep_cli import FAST, run

pytestmark = pytest.mark.slow
ISOLATED = [a for a in FAST if a != "--in-process"]

@pytest.mark.parametrize("how, args, reason", [
    ("segfault", [], "died from signal SIGSEGV"),
    ("exit", [], "exited with code 3"),
    ("memory", ["--trial-memory-gb", "2"], "memory limit of 2 GB hit"),
    ("sleep", ["--trial-timeout-minutes", "0.1"], "wall-clock limit of 0.1 minutes hit"),
])
def test_a_crashing_trial_is_recorded_and_the_sweep_goes_on(root, utk_dir, misbehaving, monkeypatch, how, args,
                                                            reason):
    monkeypatch.setenv("MISBEHAVE_HOW", how)
    code = subprocess.run([sys.executable, "-m", "ab.nn.train", "--root", str(root), "--data-dir", str(utk_dir),
                           *ISOLATED, "-c", misbehaving, "-t", "1", *args], capture_output=True, text=True,
                          timeout=300).returncode
    assert code == 0
    trials = api.trials(db=root / "db" / "ab.nn.db").sort_values("number")
    assert list(trials.status) == ["failed", "complete"]
    assert reason in trials.error.iloc[0]


def _count(db, sql):
    with sqlite3.connect(db) as con:
        return con.execute(sql).fetchone()[0]


def test_kill_9_of_the_runner_then_the_same_command_resumes(root, utk_dir, misbehaving, monkeypatch):
    monkeypatch.setenv("MISBEHAVE_HOW", "slow")
    command = [sys.executable, "-m", "ab.nn.train", "--root", str(root), "--data-dir", str(utk_dir), *ISOLATED,
               "-c", misbehaving, "-t", "3", "-e", "3"]
    runner = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    db = root / "db" / "ab.nn.db"
    deadline = time.time() + 240
    while time.time() < deadline:  # wait until one trial is done and the next one is half-way
        time.sleep(0.5)
        if db.exists() and _count(db, "select count(*) from trial where status='complete'") >= 1 and \
                _count(db, "select count(*) from trial where status='running' and epochs_done >= 1") == 1:
            break
    else:
        runner.kill()
        pytest.fail("the runner never reached the middle of its second trial")
    os.killpg(runner.pid, signal.SIGKILL)
    runner.wait()
    time.sleep(1)
    assert subprocess.run(command, capture_output=True, timeout=300).returncode == 0
    trials = api.trials(db=db).sort_values("number")
    assert (trials.status == "complete").sum() == 3
    interrupted = trials[trials.status == "failed"]
    assert len(interrupted) == 1 and interrupted.error.iloc[0].startswith("interrupted")
    assert _count(db, "select count(*) from trial where status='running'") == 0
    # no half-written rows: every epoch row has its train_stat and its metrics, every trial its epochs
    assert _count(db, "select count(*) from stat where id not in (select stat_id from train_stat)") == 0
    assert _count(db, "select count(*) from stat where id not in (select stat_id from stat_metric)") == 0
    assert _count(db, "select count(*) from trial t where epochs_done != "
                      "(select count(*) from stat s where s.trial_id = t.id)") == 0
    study = optuna.load_study(study_name=trials.study.iloc[0], storage=f"sqlite:///{db}")
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE"] * 3 + ["FAIL"]


def _workers(root, utk_dir, config, db_args, total, count, extra=()):
    command = [sys.executable, "-m", "ab.nn.train", "--root", str(root), "--data-dir", str(utk_dir), *FAST,
               "-c", config, "-t", str(total), *db_args, *extra]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(count)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-800:] for o in outputs]
    return "\n".join(o[1] for o in outputs)


def test_several_workers_share_one_sqlite_study(root, utk_dir, tiny_model):
    config = f"age-regression_utkface_mae_{tiny_model}"
    errors = _workers(root, utk_dir, config, [], total=8, count=3)
    assert "locked" not in errors.lower()
    trials = api.trials(db=root / "db" / "ab.nn.db")
    assert (trials.status == "complete").sum() == 8 and len(trials) == 8
    assert sorted(trials.number) == list(range(8)) and trials.pid.nunique() >= 2
    assert len(api.data(db=root / "db" / "ab.nn.db")) == 8


@pytest.mark.postgres
def test_several_workers_share_one_postgresql_study(root, utk_dir, tiny_model, postgres_url, tmp_path):
    config = f"age-regression_utkface_mae_{tiny_model}"
    _workers(root, utk_dir, config, ["--db", postgres_url], total=6, count=2)
    trials = api.trials(config=config, db=postgres_url)
    assert (trials.status == "complete").sum() == 6 and sorted(trials.number) == list(range(6))
    frame = api.data(nn=tiny_model, db=postgres_url)
    assert len(frame) == 6 and frame.mae.notna().all() and isinstance(frame.prm[0]["lr"], float)
    assert api.data(nn="x' OR '1'='1", db=postgres_url).empty
    local = tmp_path / "copy.db"
    from ab.nn.stat import __main__ as stat_cli

    assert stat_cli.cli(["copy", "--from", postgres_url, "--to", f"sqlite:///{local}"]) == 0
    copied = api.data(nn=tiny_model, db=local)
    assert sorted(copied.id) == sorted(frame.id)
    assert optuna.load_study(study_name=config, storage=f"sqlite:///{local}").trials[0].state.name == "COMPLETE"
