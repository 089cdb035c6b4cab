"""Sweeps that survive real faults, and record what happened: crashing trials and exports, limits that end
a trial's whole process group, kill -9 and SIGTERM of the runner, runners sharing a host name, several
workers on one study."""
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from ab.nn import api
from ab.nn.sweep import resume
from tests import helpers
from tests.helpers import optuna_links
from tests.test_sweep_cli import FAST, run

pytestmark = pytest.mark.slow
ISOLATED = [a for a in FAST if a not in ("--in-process", "--unsafe")]

@pytest.mark.parametrize("how, args, reason", [
    ("segfault", [], "died from signal SIGSEGV"),
    ("exit", [], "exited with code 3"),
    ("memory", ["--trial-memory-gb", "2"], "memory limit of 2 GB hit"),
    ("sleep", ["--trial-timeout-minutes", "0.4"], "wall-clock limit of 0.4 minutes hit"),
])
def test_a_crashing_trial_is_recorded_and_the_sweep_goes_on(root, utk_dir, misbehaving, monkeypatch, how, args,
                                                            reason):
    monkeypatch.setenv("AB_NN_FAULT_MISBEHAVE", how)
    code = subprocess.run([sys.executable, "-m", "ab.nn.train", "--root", str(root), "--data-dir", str(utk_dir),
                           *ISOLATED, "-c", misbehaving, "-t", "1", *args], capture_output=True, text=True,
                          timeout=300).returncode
    assert code == 0
    trials = api.trials(db=root / "db" / "ab.nn.db").sort_values("id")
    assert list(trials.status) == ["failed", "complete"]
    assert reason in trials.error.iloc[0]


def _runner(root, utk_dir, *args) -> list[str]:
    return [sys.executable, "-m", "ab.nn.train", "--root", str(root), "--data-dir", str(utk_dir), *ISOLATED, *args]


def test_an_export_crash_is_recorded_on_the_export_and_the_trained_trial_stands(root, utk_dir, misbehaving,
                                                                                 monkeypatch):
    monkeypatch.setenv("AB_NN_FAULT_MISBEHAVE", "export-segfault")
    done = subprocess.run(_runner(root, utk_dir, "-c", misbehaving, "-t", "2", "-a", "1", "--export", "onnx",
                                  "--export-unlearned",
                                  "--latency-runs", "2", "--latency-warmup", "0"),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]  # not given up: an export is not a trial failure
    db = root / "db" / "ab.nn.db"
    trials = api.trials(db=db)
    assert list(trials.status) == ["complete", "complete"] and trials.error.isna().all()
    crashes = api.exports(format="export", db=db)
    assert len(crashes) == 2 and (crashes.status == "failed").all()
    assert crashes.error.str.contains("died from signal SIGSEGV after training; the trained result is kept").all()
    study = optuna.load_study(study_name=trials.study[0], storage=f"sqlite:///{db}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert all(t.value == pytest.approx(mae) for t, mae in zip(study.trials, trials.eval_mae))


def test_a_timeout_ends_the_trials_whole_process_group(root, utk_dir, misbehaving, monkeypatch):
    """The trial and the process it started carry $AB_NN_FAULT_DIR in their environment: neither outlives
    the limit (their pids, written from inside the sandbox's pid namespace, are not the host's)."""
    monkeypatch.setenv("AB_NN_FAULT_MISBEHAVE", "grandchild")
    done = subprocess.run(_runner(root, utk_dir, "-c", misbehaving, "-t", "1", "--trial-timeout-minutes", "0.75"),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    folder = os.environ["AB_NN_FAULT_DIR"]
    assert len((Path(folder) / "pids").read_text().split()) == 2  # the grandchild was started
    time.sleep(0.5)
    assert _processes_with(f"AB_NN_FAULT_DIR={folder}\0") == [], "processes outlived their trial"
    trials = api.trials(db=root / "db" / "ab.nn.db").sort_values("id")
    assert list(trials.status) == ["failed", "complete"] and "wall-clock limit" in trials.error.iloc[0]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def _wait_for(db, sql, seconds=300):
    deadline = time.time() + seconds
    while time.time() < deadline:
        time.sleep(0.5)
        if db.exists():
            try:
                if _count(db, sql):
                    return
            except sqlite3.OperationalError:
                continue
    pytest.fail(f"timed out waiting for: {sql}")


def test_sigterm_records_the_trial_interrupted_and_the_next_run_continues(root, utk_dir, misbehaving, monkeypatch):
    """SIGTERM once epoch 1's resume file is out of the sandbox: the next run continues that trial, then
    draws the second (a SIGTERM before any resume file leaves the trial interrupted: tests/test_resume.py)."""
    monkeypatch.setenv("AB_NN_FAULT_MISBEHAVE", "slow")
    command = _runner(root, utk_dir, "-c", misbehaving, "-t", "2", "-e", "4")
    runner = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = root / "db" / "ab.nn.db"
    _wait_for(db, "select count(*) from trial where status='running' and epochs_done >= 1")
    saved = resume.path_of(root / "out" / misbehaving / "1")
    deadline = time.time() + 300
    while not saved.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert saved.exists(), "no resume file after epoch 1"
    runner.send_signal(signal.SIGTERM)
    _, err = runner.communicate(timeout=120)
    assert runner.returncode == 143 and "interrupted by SIGTERM" in err
    trials = api.trials(db=db)
    assert list(trials.status) == ["interrupted"] and trials.error[0] == "interrupted: Terminated: SIGTERM"
    assert _count(db, "select count(*) from lease where released_at is null") == 0
    study = optuna.load_study(study_name=trials.study[0], storage=f"sqlite:///{db}")
    assert [t.state.name for t in study.trials] == ["FAIL"]
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "trial 1 continued from epoch" in again.stdout + again.stderr
    trials = api.trials(db=db).sort_values("id")
    assert list(trials.id) == [1, 2] and list(trials.status) == ["complete", "complete"]
    assert list(trials.epochs_done) == [4, 4]


def test_a_second_worker_trains_the_next_seed_of_a_group_beside_the_first(root, utk_dir, misbehaving, monkeypatch):
    """``--seeds 2`` with two workers: the replicas of one hyperparameter set train side by side (one
    slot is claimed at a time), not one after the other in the worker that sampled the set."""
    gate = Path(os.environ["AB_NN_FAULT_DIR"]) / "gate"
    monkeypatch.setenv("AB_NN_FAULT_MISBEHAVE", "gated")
    command = _runner(root, utk_dir, "-c", misbehaving, "-t", "1", "--seeds", "2", "-e", "2")
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = root / "db" / "ab.nn.db"
    _wait_for(db, "select count(*) from trial where status='running' and seed is not null")
    time.sleep(2)
    assert _count(db, "select count(*) from trial") == 1  # the first worker holds only the slot it trains
    second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(db, "select count(*) from trial where status='running' and seed = 43")
    gate.touch()  # both train now
    outputs = [p.communicate(timeout=600) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, [o[1][-2000:] for o in outputs]
    trials = api.trials(db=db).sort_values("id")
    assert list(trials.status) == ["complete", "complete"] and list(trials.seed) == [42, 43]
    assert (trials.replica_of == trials.id.iloc[0]).all() and trials.prm_id.nunique() == 1
    assert trials.pid.nunique() == 2  # each worker trained one replica, side by side


def test_a_worker_joins_only_replica_groups_of_its_own_fixed_hyperparameters(root, utk_dir, misbehaving, monkeypatch):
    """Two ``--seeds 2`` workers told different ``-p`` share one study: each trains its own values only
    (before: the second joined the first's open group and trained the other learning rate)."""
    gate = Path(os.environ["AB_NN_FAULT_DIR"]) / "gate"
    monkeypatch.setenv("AB_NN_FAULT_MISBEHAVE", "gated")
    db = root / "db" / "ab.nn.db"
    workers = {}
    for lr in (0.01, 0.02):
        workers[lr] = subprocess.Popen(_runner(root, utk_dir, "-c", misbehaving, "-t", "-1", "--seeds", "2", "-e", "2",
                                               "-p", f'{{"lr": {lr}}}'), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True)
        _wait_for(db, f"select count(*) from trial where status='running' and seed is not null and "
                      f"pid = {workers[lr].pid}")
    gate.touch()
    outputs = {lr: w.communicate(timeout=600) for lr, w in workers.items()}
    assert all(w.returncode == 0 for w in workers.values()), [o[1][-2000:] for o in outputs.values()]
    trials = api.trials(db=db)
    assert (trials.status == "complete").all() and len(trials) == 4
    for lr, worker in workers.items():
        mine = trials[trials.pid == worker.pid]
        assert len(mine) == 2 and all(prm["lr"] == lr for prm in mine.prm), (lr, mine[["id", "seed", "prm"]])
        assert sorted(mine.seed) == [42, 43] and mine.replica_of.nunique() == 1


def test_runners_sharing_a_host_name_leave_each_others_trials_alone(root, utk_dir, misbehaving, monkeypatch):
    """Host networking: two containers share a host name, not their pids. A pid that does not exist here
    proves nothing; only the other runner's lapsed heartbeat would."""
    monkeypatch.setenv("AB_NN_FAULT_MISBEHAVE", "slow")
    first = subprocess.Popen(_runner(root, utk_dir, "-c", misbehaving, "-t", "1", "-e", "3", "--heartbeat-seconds", "1"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = root / "db" / "ab.nn.db"
    _wait_for(db, "select count(*) from trial where status='running' and epochs_done >= 1")
    with sqlite3.connect(db) as con:  # what the other container sees: a pid that is not in its namespace
        con.execute("update trial set pid = 4000000")
        con.execute("update lease set pid = 4000000, pid_namespace = 'pid:[1]'")
    second = subprocess.run(_runner(root, utk_dir, "-c", misbehaving, "-t", "-1", "-e", "3", "--heartbeat-seconds", "1"),
                            capture_output=True, text=True, timeout=600)
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, err[-2000:] + second.stderr[-2000:]
    trials = api.trials(db=db)
    assert list(trials.status) == ["complete", "complete"] and trials.error.isna().all()


def _count(db, sql):
    with sqlite3.connect(db) as con:
        return con.execute(sql).fetchone()[0]


def _processes_with(marker: str) -> list[int]:
    """Live processes whose environment holds ``marker`` (a runner's trial and every worker it started)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if marker.encode() in f.read() and _alive(int(entry)):
                        found.append(int(entry))
            except OSError:
                continue
    return found


def test_kill_9_of_the_runner_then_the_same_command_resumes(root, utk_dir, misbehaving, monkeypatch):
    monkeypatch.setenv("AB_NN_FAULT_MISBEHAVE", "slow")
    command = _runner(root, utk_dir, "-c", misbehaving, "-t", "2", "-e", "3", "-w", "2", "--heartbeat-seconds", "1")
    runner = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    db = root / "db" / "ab.nn.db"
    try:  # wait until one trial is done and the next one is half-way, its first epoch saved to continue from
        _wait_for(db, "select (select count(*) from trial where status='complete') >= 1 and "
                      "(select count(*) from trial where status='running' and epochs_done >= 1) = 1", seconds=900)
        running = _count(db, "select id from trial where status='running'")
        saved = root / "out" / misbehaving / str(running) / "resume.pt"
        deadline = time.time() + 300
        while not saved.exists() and time.time() < deadline:
            time.sleep(0.2)
        assert saved.exists(), "the running trial wrote no resume file after its first epoch"
    except BaseException:
        os.killpg(runner.pid, signal.SIGKILL)
        raise
    os.killpg(runner.pid, signal.SIGKILL)
    runner.wait()
    time.sleep(1)
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"trial {running} continued from epoch" in again.stdout + again.stderr  # the same trial, not a new one
    trials = api.trials(db=db).sort_values("id")
    assert list(trials.status) == ["complete", "complete"]
    left = _processes_with(f"AB_NN_FAULT_DIR={os.environ['AB_NN_FAULT_DIR']}\0")
    assert left == []  # its trial and DataLoader workers died with it
    assert _count(db, "select count(*) from trial where status='running'") == 0
    # no half-written rows: every epoch row has its train_stat and its metrics, every trial its epochs
    assert _count(db, "select count(*) from stat where id not in (select stat_id from train_stat)") == 0
    assert _count(db, "select count(*) from stat where id not in (select stat_id from stat_metric)") == 0
    assert _count(db, "select count(*) from trial t where epochs_done != "
                      "(select count(*) from stat s where s.trial_id = t.id)") == 0
    study = optuna.load_study(study_name=trials.study.iloc[0], storage=f"sqlite:///{db}")
    # the interrupted attempt stays FAIL in Optuna, which cannot reopen it; the continued trial has a new copy
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE"] * 2 + ["FAIL"]


def _workers(root, utk_dir, config, db_args, total, count, extra=()):
    command = [sys.executable, "-m", "ab.nn.train", "--root", str(root), "--data-dir", str(utk_dir), *FAST,
               "-c", config, "-t", str(total), *db_args, *extra]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(count)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-800:] for o in outputs]
    return "\n".join(o[1] for o in outputs)


def test_four_workers_share_one_sqlite_study_and_never_sample_the_same_point(root, utk_dir, tiny_model):
    config = f"age-regression_utkface_mae_{tiny_model}"
    errors = _workers(root, utk_dir, config, ["-b", "6"], total=12, count=4)  # batch 16, 32 or 64
    assert "locked" not in errors.lower()
    trials = api.trials(db=root / "db" / "ab.nn.db")
    assert (trials.status == "complete").sum() == 12 and len(trials) == 12, trials.error.dropna().tolist()
    assert trials.pid.nunique() >= 2
    points = {(p["lr"], p["momentum"], p["batch"]) for p in trials.prm}
    assert len(points) == 12  # every worker sampled its own points
    assert len(api.data(db=root / "db" / "ab.nn.db")) == 12


@pytest.mark.postgres
@pytest.mark.parametrize("attempt", range(4))
def test_workers_starting_together_on_a_new_postgresql_database_all_start(postgres_url, attempt):
    """Optuna creates its tables check-then-create: unguarded, eight workers opening a new database at
    once failed with 'relation "studies" already exists' in 4 of 10 databases. Each worker first
    upgrades our schema, as the runner does (under its own lock)."""
    assert helpers.open_together(postgres_url, 8, timeout=120) == ["ok"] * 8


@pytest.mark.postgres
def test_several_workers_share_one_postgresql_study(root, utk_dir, tiny_model, postgres_url, tmp_path):
    config = f"age-regression_utkface_mae_{tiny_model}"
    _workers(root, utk_dir, config, ["--db", postgres_url], total=6, count=2)
    trials = api.trials(config=config, db=postgres_url)
    assert (trials.status == "complete").sum() == 6 and sorted(optuna_links(postgres_url).number) == list(range(6))
    frame = api.data(nn=tiny_model, db=postgres_url)
    assert len(frame) == 6 and frame.mae.notna().all() and isinstance(frame.prm[0]["lr"], float)
    assert api.data(nn="x' OR '1'='1", db=postgres_url).empty
    local = tmp_path / "copy.db"
    from ab.nn.stat import __main__ as stat_cli

    assert stat_cli.cli(["copy", "--from", postgres_url, "--to", f"sqlite:///{local}"]) == 0
    copied = api.data(nn=tiny_model, db=local)
    assert sorted(copied.id) == sorted(frame.id)
    assert stat_cli.cli(["check", "--repair", "--db", f"sqlite:///{local}", "--root", str(tmp_path / "w")]) == 0
    study = api.trials(db=local).study[0]  # Optuna's copy is rebuilt from our trials (copy leaves it out)
    assert optuna.load_study(study_name=study, storage=f"sqlite:///{local}").trials[0].state.name == "COMPLETE"


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_workers_starting_together_register_the_same_model_code_once(tmp_path, request, backend):
    """Every worker saves its model's code on start; two doing so at the same instant collided on the
    code table's key (CI saw PostgreSQL's UniqueViolation end a worker)."""
    import threading

    from ab.nn import registry
    from ab.nn.stat.schema import CodeVersion, Nn

    url = (request.getfixturevalue("postgres_url") if backend == "postgresql"
           else f"sqlite:///{tmp_path / 'ab.nn.db'}")
    stores = [helpers.new_store(url) for _ in range(8)]
    code = "class Net: pass  # " + backend
    start, errors, checksums = threading.Barrier(len(stores)), [], []

    def register(store):
        start.wait()
        try:
            checksums.append(store.save_code(registry.MODEL, "RaceNet", code))
        except Exception as error:  # noqa: BLE001 - the assertion below shows it
            errors.append(error)

    threads = [threading.Thread(target=register, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(set(checksums)) == 1
    with stores[0].transaction() as session:
        assert session.get(Nn, "RaceNet").code == code
        assert session.query(CodeVersion).filter_by(name="RaceNet").count() == 1
    newer = code + " changed"
    stores[1].save_code(registry.MODEL, "RaceNet", newer)
    with stores[0].transaction() as session:
        assert session.get(Nn, "RaceNet").code == newer
