"""Workers on several machines share one PostgreSQL database: 4 "hosts" (each its own PID and UTS namespace,
so its own host name and pids, as separate machines have) x 2 workers run one sweep of ``-t 64``. One host
is killed whole (its namespace's init, so every process of it) while both its workers are in the middle of
a trial and the others have trained every other slot; the others wait, reclaim its trials once its lease
lapses, and run them again. Afterwards: 64 trained, none lost, none twice, ``check`` agrees, no process of
the killed host left, and no host held more connections than the pool settings allow. And a host that was
only stalled while it asked Optuna for a point leaves one Optuna trial, not two."""
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import optuna
import psutil
import pytest
from sqlalchemy import create_engine, event, text, update

from ab.nn import api
from ab.nn.config import Config
from ab.nn.stat import engine as engines, mirror, studies
from ab.nn.stat.__main__ import cli as stat_cli
from ab.nn.stat.check import check
from ab.nn.stat.engine import PoolSettings
from ab.nn.stat.lease import RunnerLease
from ab.nn.stat.schema import Lease, Trial
from ab.nn.stat.states import RESULT_STATES
from ab.nn.stat.states import LeaseLost
from ab.nn.sweep.search import Search
from ab.nn.sweep.study import SweepStudy, sampler
from tests import helpers

HOSTS, WORKERS, TRIALS = 4, 2, 64
VICTIM = HOSTS - 1
HEARTBEAT = 3.0  # a lapsed lease is reclaimed after 4 beats (live runners' beats were seen 6 s apart at load 20)
TRAIN = ["-e", "1", "-f", "norm_64", "-l", "1e-3", "--min_learning_rate", "1e-4", "-w", "0", "--quiet",
         "--pretrained", "0", "--export", "none", "--in-process", "--unsafe", "--heartbeat-seconds", str(HEARTBEAT)]

HOST_INIT = """
hostname "$1"; shift
for w in $(seq 1 "$WORKERS"); do
    ("$@" >"$OUT/$(hostname)-$w.log" 2>&1; echo $? >"$OUT/$(hostname)-$w.rc") &
done
wait
"""
"""PID 1 of a host: names the host, starts its workers, waits for them."""


def _kernel_refuses_namespaces() -> str | None:
    """Why this test cannot make PID and UTS namespaces here, when it is the kernel that says no (no
    CAP_SYS_ADMIN in a container, user namespaces disabled); any other failure is the test's to report."""
    made = subprocess.run(["unshare", "--pid", "--fork", "--uts", "--mount", "--mount-proc", "hostname", "x"],
                          capture_output=True, text=True)
    if made.returncode == 0:
        return None
    if re.search(r"Operation not permitted|Permission denied", made.stderr):
        return f"the kernel refuses new PID and UTS namespaces to this user: {made.stderr.strip()}"
    pytest.fail(f"unshare failed: {made.stderr.strip()}")


@pytest.fixture
def namespaces():
    if shutil.which("unshare") is None:
        pytest.fail("unshare is missing (util-linux)")
    why = _kernel_refuses_namespaces()
    if why is not None:
        pytest.skip(why)


class Host:
    """One machine: ``unshare`` (outside) and its child, PID 1 of the new namespaces."""

    def __init__(self, index: int, out: Path, command: list[str], env: dict):
        self.name = f"ab-nn-host-{index}"
        with (out / f"{self.name}.log").open("w") as log:  # unshare says there how its child ended
            self.process = subprocess.Popen(
                ["unshare", "--pid", "--fork", "--uts", "--mount", "--mount-proc", "sh", "-c", HOST_INIT, "sh",
                 self.name, *command], env={**env, "OUT": str(out), "WORKERS": str(WORKERS)}, stderr=log,
                start_new_session=True)
        self.out = out

    @property
    def init(self) -> psutil.Process:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            children = psutil.Process(self.process.pid).children()
            if children:
                return children[0]
            time.sleep(0.05)
        raise AssertionError(f"{self.name}: its PID 1 did not start")

    def processes(self) -> list[psutil.Process]:
        init = self.init
        return [init, *init.children(recursive=True)]

    def kill(self) -> None:
        """Every process of this host, through its PID 1 (what the test does to the victim, and to all at the end
        of a failed run)."""
        try:
            for init in psutil.Process(self.process.pid).children():
                init.kill()
        except psutil.NoSuchProcess:
            pass
        self.process.wait(timeout=30)

    def exit_codes(self) -> list[str | None]:
        return [(self.out / f"{self.name}-{w}.rc").read_text().strip() if (self.out / f"{self.name}-{w}.rc").exists()
                else None for w in range(1, WORKERS + 1)]

    def log(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.out.glob(f"{self.name}*.log")))


class Connections(threading.Thread):
    """The most connections each host held at once (``application_name`` is ``ab.nn@<host>``)."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.engine = create_engine(url, pool_size=1, max_overflow=0)
        self.peak: dict[str, int] = {}
        self.stop = threading.Event()

    def run(self):
        with self.engine.connect() as connection:
            while not self.stop.wait(0.2):
                for name, count in connection.execute(text(
                        "SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND application_name LIKE 'ab.nn@%' GROUP BY 1")):
                    self.peak[name] = max(self.peak.get(name, 0), count)
                connection.rollback()
        self.engine.dispose()


def _scalar(engine, sql: str, **params):
    with engine.connect() as connection:
        return connection.execute(text(sql), params).scalar()


def _wait(condition, seconds: float, what: str, hosts):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {seconds:.0f} s\n" + "\n".join(h.log() for h in hosts))
        time.sleep(0.2)


@pytest.mark.postgres
@pytest.mark.slow
def test_four_hosts_share_one_sweep_and_a_dead_host_is_reclaimed(postgres_url, namespaces, tiny_model, utk_dir,
                                                                 tmp_path):
    config = f"age-regression_utkface_mae_{tiny_model}"
    out, faults = tmp_path / "out", tmp_path / "faults"
    out.mkdir()
    faults.mkdir()
    engine = create_engine(postgres_url)
    watcher = Connections(postgres_url)
    started = time.monotonic()
    hosts = []
    try:
        for index in range(HOSTS):
            helpers.write_model(tmp_path / f"host-{index}", tiny_model, helpers.TINY_MODEL)  # each host's own copy
            command = [sys.executable, "-m", "ab.nn.train", "-c", config, "-t", str(TRIALS), "--db", postgres_url,
                       "--root", str(tmp_path / f"host-{index}"), "--data-dir", str(utk_dir), *TRAIN]
            env = dict(os.environ)
            if index == VICTIM:  # its workers stop in their first trial, after its epoch (before its test pass)
                env.update(AB_NN_FAULT="train", AB_NN_FAULT_DIR=str(faults))
            hosts.append(Host(index, out, command, env))
        victim = hosts[VICTIM]
        _wait(lambda: _scalar(engine, "SELECT to_regclass('trial') IS NOT NULL"), 120, "no database", hosts)
        watcher.start()
        results = f"SELECT count(*) FROM trial WHERE status IN ({', '.join(repr(s) for s in RESULT_STATES)})"
        _wait(lambda: len(list(faults.glob("train.*"))) == WORKERS and _scalar(engine, results) >= TRIALS - WORKERS,
              240, f"the victim's {WORKERS} workers are not both in a trial with {TRIALS - WORKERS} trained", hosts)
        doomed = victim.processes()
        assert len([p for p in doomed if p.name().startswith("python")]) == WORKERS
        held = _scalar(engine, "SELECT count(*) FROM trial WHERE status = 'running' AND host = :h", h=victim.name)
        assert held == WORKERS
        killed_at, killed_wall = time.monotonic(), datetime.now(timezone.utc)
        victim.kill()  # PID 1 of a namespace: the kernel kills every process in it
        for host in hosts:
            host.process.wait(timeout=240)
        took = time.monotonic() - started
    finally:
        watcher.stop.set()
        for host in hosts:
            if host.process.poll() is None:
                host.kill()
        watcher.join(timeout=10)
    logs = "\n".join(h.log() for h in hosts)

    # every process of the killed host is gone; the others ended well
    time.sleep(1)
    left = [p for p in doomed if p.is_running()]
    assert not left, f"processes of the killed host left: {left}"
    assert victim.exit_codes() == [None] * WORKERS
    assert all(h.exit_codes() == ["0"] * WORKERS for h in hosts if h is not victim), logs
    waited = [h.name for h in hosts if f"waiting for {WORKERS} trial(s) other runners hold" in h.log()]
    assert waited, logs  # the others had trained every other slot: they waited for the victim's, not ended short

    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, uid, study, number, optuna_trial_id, status, host, error, "
                                       "epochs_done, started_at, finished_at FROM trial WHERE config = :c"),
                                  {"c": config}).mappings().all()
        leases = connection.execute(text("SELECT host, released_at FROM lease")).mappings().all()
    trained = [r for r in rows if r["status"] in RESULT_STATES]
    assert len(trained) == TRIALS, logs  # the cap held across hosts, and the killed slots were run again
    assert not [r for r in rows if r["status"] == "running"]  # none lost: every slot has an end
    assert len({r["uid"] for r in rows}) == len(rows)
    numbered = [(r["study"], r["number"]) for r in rows if r["number"] is not None]
    assert len(set(numbered)) == len(numbered) == len(rows)
    assert len({r["optuna_trial_id"] for r in rows}) == len(rows)
    reclaimed = [r for r in rows if r["host"] == victim.name]
    assert len(reclaimed) == WORKERS
    for trial in reclaimed:  # killed in the middle: an epoch recorded, then its lease lapsed and others took it
        assert trial["status"] == "interrupted" and trial["epochs_done"] == 1
        assert f"on {victim.name}) stopped heartbeating" in trial["error"], trial["error"]
    assert {r["host"] for r in trained} == {h.name for h in hosts if h is not victim}
    assert sum(1 for lease in leases if lease["released_at"] is None) == WORKERS  # only the killed host's

    # Optuna's copy holds each of our trials once, in the same state
    optuna_trials = optuna.load_study(study_name=rows[0]["study"], storage=studies.storage(postgres_url)).trials
    labels = sorted(t.user_attrs.get("ab_nn_trial") for t in optuna_trials)
    assert labels == sorted(r["id"] for r in rows), ([(t.number, t.state.name, t.user_attrs) for t in optuna_trials
                                                       if labels.count(t.user_attrs.get("ab_nn_trial")) != 1], logs)
    assert {t.user_attrs["ab_nn_trial"]: t.state for t in optuna_trials} == {r["id"]: studies.STATES[r["status"]]
                                                                              for r in rows}
    assert stat_cli(["check", "--db", postgres_url, "--root", str(tmp_path / "checker")]) == 0
    results = tmp_path / "results"  # collected as the guide says: copied into SQLite, checked there too
    assert stat_cli(["copy", "--from", postgres_url, "--to", f"sqlite:///{results / 'db' / 'ab.nn.db'}"]) == 0
    assert stat_cli(["check", "--root", str(results)]) == 1  # copy leaves Optuna's tables out: no copy yet
    assert stat_cli(["check", "--repair", "--root", str(results)]) == 0  # rebuilt from our trials
    assert stat_cli(["check", "--root", str(results)]) == 0
    copied = api.trials(config=config, db=results / "db" / "ab.nn.db")
    assert sorted(copied.uid) == sorted(r["uid"] for r in rows) and copied.status.isin(RESULT_STATES).sum() == TRIALS

    engine.dispose()
    bound = WORKERS * PoolSettings.from_environment().per_process  # --in-process: one process per worker
    assert watcher.peak and max(watcher.peak.values()) <= bound, watcher.peak
    lapse = max((r["finished_at"] - killed_wall).total_seconds() for r in reclaimed)
    print(f"\n{HOSTS} hosts x {WORKERS} workers, {TRIALS} trials: {took:.0f} s in all; the killed host's trials "
          f"reclaimed {lapse:.0f} s after the kill, the last host ended {took - (killed_at - started):.0f} s after it; "
          f"connections per host at most {max(watcher.peak.values())} (bound {bound})")


def test_a_stalled_host_that_was_asking_optuna_leaves_one_optuna_trial(tmp_path):
    """Its lease lapsed between asking Optuna for a point (labelled with our trial id) and linking it: the
    runner that reclaims the trial tells that Optuna trial, instead of adding a second one that would leave
    the first RUNNING for ever; the stalled runner's later writes are refused."""
    url = f"sqlite:///{tmp_path / 'ab.nn.db'}"
    store = helpers.new_store(url)
    config, key = Config.parse("age-regression_utkface_mae_Fake"), "k" * 12
    definition = studies.StudyDef(f"{config.name}@{key}/e1", config.name, key, 1)
    storage = studies.storage(url)
    with RunnerLease(store, heartbeat=3600) as stalled, RunnerLease(store, heartbeat=3600) as other:
        mine, theirs = (SweepStudy.open(store, storage, definition, Search(), 1, sampler(42, lease.id))
                        for lease in (stalled, other))
        trial_id = store.reserve_trials(config, 1, 4, data_key=key, study=definition.name, lease_id=stalled.id)[0]
        asked = mine.ask(trial_id)
        with store.transaction() as session:  # then the stalled host misses its heartbeats
            session.execute(update(Lease).where(Lease.id == stalled.id).values(beat_at=datetime(2000, 1, 1)))
        assert theirs.reclaim() == [trial_id]  # in the other runner's loop
        with pytest.raises(LeaseLost):
            store.assign_trial(trial_id, number=asked.number, optuna_trial_id=asked._trial_id, prm={"lr": 0.01},
                               fence=stalled.id)
        mine.tell(trial_id)
    [frozen] = optuna.load_study(study_name=definition.name, storage=storage).trials
    assert frozen._trial_id == asked._trial_id and frozen.state.name == "FAIL"
    assert frozen.user_attrs["status"] == "interrupted" and "stopped heartbeating" in frozen.user_attrs["reason"]
    with store.transaction() as session:
        assert session.get(Trial, trial_id).optuna_trial_id == asked._trial_id
    mirror.flush(url, tmp_path / "stat" / "train")  # as the runner does after each trial
    assert check(url, tmp_path / "stat" / "train").ok


@pytest.mark.parametrize("meanwhile", ["asked", "finished"])
def test_a_worker_joining_late_agrees_with_what_another_runner_does_meanwhile(tmp_path, meanwhile):
    """A runner that starts reconciles the study while others run. One of them may reserve a trial and ask
    Optuna for its point in the middle of it: that Optuna trial runs and is not linked yet, and taking it for
    an orphan (failing it) fails the other runner's trial ("Trial#0 has already finished and can not be
    updated"), as a pod or array task joining a fleet late did. Or it may ask, link and finish a trial
    between the reads of the two stores: that trial is not "missing in Optuna" (no second Optuna trial)."""
    url = f"sqlite:///{tmp_path / 'ab.nn.db'}"
    store = helpers.new_store(url)
    config, key = Config.parse("age-regression_utkface_mae_Fake"), "k" * 12
    definition = studies.StudyDef(f"{config.name}@{key}/e1", config.name, key, 1)
    storage = studies.storage(url)
    reader, asked = engines.engine(url, writer=False), []

    def other_runner(_connection, _cursor, statement, *_):
        if asked or (meanwhile == "asked" and not re.search(r"\bFROM trial\b", statement)):
            return
        trial_id = store.reserve_trials(config, 1, 4, data_key=key, study=definition.name, lease_id=running.id)[0]
        asked.append(other.ask(trial_id))
        if meanwhile == "finished":
            store.assign_trial(trial_id, number=asked[0].number, optuna_trial_id=asked[0]._trial_id, prm={},
                               fence=running.id)
            assert store.finish_trial(trial_id, "failed", error="RuntimeError: boom", fence=running.id)
            other.tell(trial_id)

    # "asked": once the joining runner has read our trials; "finished": as it starts reading them
    hook = "after_cursor_execute" if meanwhile == "asked" else "before_cursor_execute"
    with RunnerLease(store, heartbeat=3600) as running, RunnerLease(store, heartbeat=3600) as joining:
        other = SweepStudy.open(store, storage, definition, Search(), 1, sampler(42, running.id))
        event.listen(reader, hook, other_runner)
        try:
            findings = SweepStudy.open(store, storage, definition, Search(), 1, sampler(42, joining.id)).findings
        finally:
            event.remove(reader, hook, other_runner)
        assert asked, "the joining runner never read our trials"
        assert not findings, findings
        [frozen] = optuna.load_study(study_name=definition.name, storage=storage).trials
        assert frozen.state.name == ("RUNNING" if meanwhile == "asked" else "FAIL")
