"""The fault matrix (issue 39, item 8): a real sweep (``python -m ab.nn.train`` in its own process group,
each trial in a child process) meets the faults a long sweep meets: SIGTERM and SIGKILL of the runner at
each named fault point (``ab.nn.util.faults``), SIGKILL of the trial process, a JSON mirror on a full disk,
an ambiguous commit, a lease reclaimed from a runner that was only stalled, and a database rebuilt from its
JSON mirror.

After each, the same command runs again and resumes. Then, whatever the fault: no trial is lost or
counted twice, ``-t 1`` ends with exactly one trained trial, Optuna's copy and the JSON mirror agree with
our tables (checked here and by ``python -m ab.nn.stat check``, which must say so), and no process of the
faulted run is left (psutil: every process of its tree, recorded at the fault, and every process that
carries the run's marker in its environment is found, reparented or not).

Cost: the faulted run is a real runner process (with its real trial process); the run that resumes it and
the check run in the test's own process (``--in-process``: torch is imported once), which is what keeps the
matrix within a few minutes. Every fault runs on SQLite and on PostgreSQL, except the ambiguous commits,
which run on PostgreSQL only (SQLite has no connection to drop); the test suite runs PostgreSQL's
representative cases (``POSTGRES_IN_SUITE``) and ``python -m tests.fault_matrix`` all of them.

``python -m tests.fault_matrix -n 2`` runs this file and writes the outcomes to docs/guide/fault-matrix.md.
"""
from __future__ import annotations

import contextlib
import errno
import gc
import io
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import optuna
import psutil
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ab.nn import train
from ab.nn.stat import __main__ as stat_cli, engine as engines, studies
from ab.nn.stat.states import RESULT_STATES, RUNNING
from tests import helpers

pytestmark = pytest.mark.slow

NN = "FaultTiny"
CONFIG = f"age-regression_utkface_mae_{NN}"
TRIALS = 1
SWEEP = ["-c", CONFIG, "-e", "1", "-f", "norm_64", "--min_batch_binary_power", "4", "-b", "4",
         "--min_learning_rate", "1e-4", "-l", "1e-3", "--pretrained", "0", "--export", "none", "-w", "0", "--quiet"]
"""The command every case runs (later flags win: a case adds ``-w 1``, ``--export onnx`` ...)."""
PHASES = ("reserve", "workers", "train", "test", "export", "tell", "mirror")
"""The runner's fault points in the order a trial meets them."""
PHASE_FLAGS = {"workers": ["-w", "1"],
               "export": ["--export", "onnx", "--export-unlearned", "--latency-runs", "1", "--latency-warmup", "0"]}
"""DataLoader workers exist only with ``-w 1`` or more; an export only with ``--export``."""
SIGNALS = ("SIGTERM", "SIGKILL")
POSTGRES_IN_SUITE = {"runner SIGKILL at train", "runner SIGTERM at export", "runner SIGKILL at tell",
                     "ambiguous commit of a trial's end", "ambiguous commit of a reservation",
                     "lease reclaimed from a stalled runner", "database rebuilt from its JSON mirror"}
"""The PostgreSQL cases the test suite runs: a dead runner's trial reclaimed by the server's clock, a trial
that finished while its runner was told to stop, one complete here that Optuna was never told, and every
case that only PostgreSQL has or that differs there. ``python -m tests.fault_matrix`` runs every case on
both (``FULL_MATRIX``); the suite leaves the other PostgreSQL cases to it, to stay within CI's time."""
FULL_MATRIX = "AB_NN_FULL_FAULT_MATRIX"
FAULTS = [*(f"runner {sig} at {phase}" for phase in PHASES for sig in SIGNALS),
          "trial process SIGKILL", "mirror on a full disk", "ambiguous commit of a trial's end",
          "ambiguous commit of a reservation", "lease reclaimed from a stalled runner",
          "database rebuilt from its JSON mirror"]
"""The matrix's rows, in order (``tests/fault_matrix.py`` prints them so)."""
SECONDS = 900
"""Limit of one whole run on a loaded two-core machine (a run takes well under a minute alone)."""
KILLED_SECONDS = 4
"""A killed run's processes must be gone this soon: shorter than the 5 s in which PyTorch's own watchdog
ends a DataLoader worker whose parent died, so that only the runner's own measures can pass."""


@dataclass(frozen=True)
class Sweep:
    """A workspace with its own tiny model file (``<root>/nn/``: no package file, so cases run in parallel),
    generated images and a database (``url``; ``None``: the workspace's SQLite file)."""
    root: Path
    images: Path
    url: str | None

    @property
    def db(self) -> str:
        return self.url or f"sqlite:///{self.root / 'db' / 'ab.nn.db'}"

    def database(self, url: str | None = None) -> list[str]:
        url = url or self.url
        return ["--root", str(self.root), *(["--db", url] if url else [])]

    def arguments(self, *extra: str, trials: int = TRIALS, url: str | None = None) -> list[str]:
        return [*self.database(url), "--data-dir", str(self.images), *SWEEP, "-t", str(trials), *extra]

    def command(self, *extra: str, trials: int = TRIALS, url: str | None = None) -> list[str]:
        """The sweep as a user starts it: a runner process whose trials run in child processes."""
        return [sys.executable, "-m", "ab.nn.train", *self.arguments(*extra, trials=trials, url=url)]

    def train_here(self, *extra: str, trials: int = TRIALS) -> tuple[int, str]:
        """The same sweep run to its end in this process (trials ``--in-process``): exit code and output."""
        return _here(train.cli, self.arguments(*extra, "--in-process", "--unsafe", trials=trials))

    def check(self) -> tuple[int, str]:
        """``python -m ab.nn.stat check``, in this process: exit code and output."""
        return _here(stat_cli.cli, ["check", *self.database()])


def _here(cli, argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            code = cli(argv)
    except SystemExit as exit:
        code = exit.code
    finally:
        engines.dispose_all()  # no pooled connection outlives the call (a deleted SQLite file, PG's limit)
        gc.collect()  # Optuna's storages' engines with it
    return code, out.getvalue()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images") / "UTKFace"
    helpers.make_utkface(folder, count=60)
    folder.parent.chmod(0o755)  # a shared data folder: the sandbox user reads it too (pytest makes it 0700)
    return folder.parent


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request) -> str:
    return request.param


def in_this_run(backend: str, fault: str) -> None:
    """Skip a PostgreSQL case the suite leaves to the full matrix (``POSTGRES_IN_SUITE``)."""
    if backend == "postgresql" and fault not in POSTGRES_IN_SUITE and not os.environ.get(FULL_MATRIX):
        pytest.skip(f"the suite runs PostgreSQL's representative cases; python -m tests.fault_matrix runs this one")


@pytest.fixture
def sweep(backend, images, tmp_path, request, record_property) -> Sweep:
    record_property("backend", {"sqlite": "SQLite", "postgresql": "PostgreSQL"}[backend])
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else None
    root = tmp_path / "ws"
    (root / "nn").mkdir(parents=True)
    (root / "nn" / f"{NN}.py").write_text(helpers.TINY_MODEL)
    return Sweep(root, images, url)


# -- processes ----------------------------------------------------------------------------------------
def _alive(process: psutil.Process) -> bool:
    """Still running (the same process: pid and start time), and not a zombie (a zombie has ended)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _descends(pid: int, ancestor: int) -> bool:
    return ancestor in (p.pid for p in psutil.Process(pid).parents())


def _describe(process: psutil.Process) -> str:
    try:
        return f"{process.pid} ({' '.join(process.cmdline()[:4])}, parent {process.ppid()})"
    except psutil.Error:
        return f"{process.pid} (gone)"


class Run:
    """One runner, started in its own process group. Every process of its tree (the trial process, its
    DataLoader workers) carries a marker in its environment, so that one reparented after its parent died
    is still found; the tree is also recorded at the fault (no watcher polls it meanwhile: scanning every
    process 20 times a second would cost the test more CPU than the sweep)."""

    def __init__(self, command: list[str], folder: Path, fault: str | None = None):
        self.marker = uuid.uuid4().hex
        self.faults = folder / f"faults-{self.marker[:8]}"
        self.faults.mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AB_NN_FAULT")}
        env["AB_NN_FAULT_RUN"] = self.marker
        if fault is not None:
            env.update(AB_NN_FAULT=fault, AB_NN_FAULT_DIR=str(self.faults))
        self.out, self.err = folder / f"{self.marker[:8]}.out", folder / f"{self.marker[:8]}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=err, start_new_session=True)
        self.seen: dict[tuple[int, float], psutil.Process] = {}

    @property
    def pid(self) -> int:
        return self.process.pid

    def snapshot(self) -> None:
        try:
            leader = psutil.Process(self.pid)
            tree = [leader, *leader.children(recursive=True)]
        except psutil.Error:
            return
        for process in tree:
            try:
                self.seen.setdefault((process.pid, process.create_time()), process)
            except psutil.Error:
                continue

    def marked(self) -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter():
            try:
                if process.environ().get("AB_NN_FAULT_RUN") == self.marker:
                    found.append(process)
            except psutil.Error:
                continue
        return found

    def host_pid(self, pid: int) -> int:
        """``pid`` as a process of this run wrote it: the host's pid of the marked process that has it in
        an inner pid namespace (``NSpid``: the host's pid first, its own namespace's last), else ``pid``."""
        for process in self.marked():
            try:
                with open(f"/proc/{process.pid}/status") as status:
                    spaces = next(line.split()[1:] for line in status if line.startswith("NSpid:"))
            except (OSError, StopIteration):
                continue
            if len(spaces) > 1 and int(spaces[-1]) == pid:
                return process.pid
        return pid

    def recorded(self) -> list[psutil.Process]:
        return list(self.seen.values())

    def wait_point(self, name: str) -> int:
        """The pid of the process holding at fault point ``name``, once one is there (the host's pid of a
        sandboxed trial's process, which writes its pid in the sandbox's pid namespace)."""
        deadline = time.monotonic() + SECONDS
        while time.monotonic() < deadline:
            held = [p for p in self.faults.glob(f"{name}.*") if p.suffix != ".go"]
            if held:
                self.snapshot()
                return self.host_pid(int(held[0].suffix[1:]))
            if self.process.poll() is not None:
                pytest.fail(f"the runner ended (exit {self.process.returncode}) before reaching the fault point "
                            f"{name}:\n{self.tail()}")
            time.sleep(0.05)
        pytest.fail(f"no process reached the fault point {name} in {SECONDS} s:\n{self.tail()}")

    def release(self, name: str) -> None:
        (self.faults / f"{name}.go").touch()

    def kill(self, sig: int) -> None:
        """Signal the runner's process group (the trial process leads a group of its own)."""
        self.snapshot()
        os.killpg(self.pid, sig)

    def wait(self, seconds: float = SECONDS) -> int:
        try:
            return self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the runner did not end within {seconds} s:\n{self.tail()}")

    def left(self, seconds: float = 10) -> list[str]:
        """Processes of this run still running ``seconds`` after it ended (or was killed)."""
        deadline = time.monotonic() + seconds
        while True:
            alive = {p.pid: p for p in self.recorded() + self.marked() if _alive(p)}
            if not alive or time.monotonic() > deadline:
                return [_describe(p) for p in alive.values()]
            time.sleep(0.2)

    def end(self) -> None:
        """After a test: nothing this run started outlives it, whatever the test found."""
        for process in self.recorded() + self.marked():
            if _alive(process):
                try:
                    process.kill()
                except psutil.Error:
                    pass
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    @property
    def stdout(self) -> str:
        return self.out.read_text()

    @property
    def stderr(self) -> str:
        return self.err.read_text()

    def tail(self) -> str:
        return f"stdout:\n{self.stdout[-2000:]}\nstderr:\n{self.stderr[-4000:]}"


class Runs:
    def __init__(self, folder: Path):
        self.folder, self.started = folder, []

    def start(self, command: list[str], fault: str | None = None) -> Run:
        run = Run(command, self.folder, fault)
        self.started.append(run)
        return run

    def complete(self, command: list[str]) -> Run:
        """Run ``command`` to its end: exit 0, and nothing of it left running."""
        run = self.start(command)
        code = run.wait()
        assert code == 0, run.tail()
        assert run.left() == [], "processes of a finished run are still running"
        return run


@pytest.fixture
def runs(tmp_path):
    made = Runs(tmp_path / "runs")
    yield made
    for run in made.started:
        run.end()


# -- what must hold after every fault -----------------------------------------------------------------
def trials(url: str) -> dict[int, str]:
    """Every trial of the config: id -> status."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return dict(connection.execute(text("SELECT id, status FROM trial WHERE config = :c"), {"c": CONFIG}).all())
    finally:
        engine.dispose()


def counted(statuses) -> str:
    """``2 complete, 1 interrupted``: what a table cell says."""
    counts = Counter(statuses.values() if isinstance(statuses, dict) else statuses)
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))) or "none"


def assert_one_record(sweep: Sweep, before: dict[int, str], trials: int = TRIALS) -> dict[int, str]:
    """What must hold after any fault and the run that resumed it; returns every trial's status."""
    engine = create_engine(sweep.db)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT id, status, study, number, optuna_trial_id, uid FROM trial "
                                           "WHERE config = :c"), {"c": CONFIG}).all()
            epochs = connection.execute(text("SELECT s.id, s.trial_id, s.epoch FROM stat s JOIN trial t ON "
                                             "t.id = s.trial_id WHERE t.config = :c"), {"c": CONFIG}).all()
            queued = connection.execute(text("SELECT trial_id, COUNT(*), COUNT(done_at) FROM outbox GROUP BY "
                                             "trial_id")).all()
    finally:
        engine.dispose()
    status = {row.id: row.status for row in rows}
    assert [i for i, s in status.items() if s == RUNNING] == [], f"trials left running: {status}"
    assert set(before) <= set(status), f"trials lost: {sorted(set(before) - set(status))}"
    changed = {i: (was, status[i]) for i, was in before.items() if was != RUNNING and status[i] != was}
    assert changed == {}, f"finished trials whose outcome changed (before, after): {changed}"
    trained = [i for i, s in status.items() if s in RESULT_STATES]
    assert len(trained) == trials, f"-t {trials} ended with {len(trained)} trained: {status}"

    unlinked = [row.id for row in rows if row.number is None or row.optuna_trial_id is None]
    assert unlinked == [], f"trials with no Optuna copy: {unlinked}"
    twice = [k for k, n in Counter((row.study, row.number) for row in rows).items() if n > 1]
    assert twice == [], f"study and number used twice: {twice}"
    twice = [k for k, n in Counter((trial, epoch) for _, trial, epoch in epochs).items() if n > 1]
    assert twice == [], f"epochs recorded twice (trial, epoch): {twice}"
    assert [(trial, n, done) for trial, n, done in queued if (n, done) != (1, 1)] == [], \
        "trials queued for the JSON mirror more than once, or never written (trial, entries, written)"

    storage = studies.storage(sweep.db)
    for name in {row.study for row in rows}:
        copies = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
        ours = [c.user_attrs[studies.TRIAL_ATTR] for c in copies if studies.TRIAL_ATTR in c.user_attrs]
        assert [k for k, n in Counter(ours).items() if n > 1] == [], f"{name}: one trial of ours told twice: {ours}"
        state = {c.user_attrs[studies.TRIAL_ATTR]: c.state for c in copies if studies.TRIAL_ATTR in c.user_attrs}
        mine = {row.id: studies.STATES[row.status] for row in rows if row.study == name}
        assert state == mine, f"{name}: Optuna's copy {state} disagrees with our tables {mine}"
    storage.engine.dispose()

    mirror = sweep.root / "stat"
    listed = Counter(r["uid"] for r in json.loads((mirror / "trial" / f"{CONFIG}.json").read_text()))
    assert listed == Counter(row.uid for row in rows), "the JSON mirror's trial list is not our trials, once each"
    written = Counter(r["ab_nn"]["stat_id"] for path in (mirror / "train" / CONFIG).glob("*.json")
                      for r in json.loads(path.read_text()))
    assert written == Counter(stat_id for stat_id, _, _ in epochs), "the JSON mirror's epochs are not ours, once each"
    assert list(mirror.rglob("*.tmp-*")) == [], "temporary mirror files left behind"

    code, said = sweep.check()
    assert code == 0 and "agree" in said, f"python -m ab.nn.stat check exited {code}:\n{said}"
    return status


def resume(sweep: Sweep, record_property, before: dict[int, str], faulted: str, *extra: str,
           trials: int = TRIALS) -> dict[int, str]:
    """Run the same command again; then everything of ``assert_one_record`` must hold."""
    record_property("after_fault", faulted)
    code, out = sweep.train_here(*extra, trials=trials)
    assert code == 0, f"the run that resumed exited {code}:\n{out[-3000:]}"
    after = assert_one_record(sweep, before, trials)
    record_property("after_resume", counted(after))
    return after


def _exit(code: int) -> str:
    return f"exit {code}" if code >= 0 else f"killed by {signal.Signals(-code).name}"


# -- the runner killed at each phase --------------------------------------------------------------------
@pytest.mark.parametrize("sig", SIGNALS)
@pytest.mark.parametrize("phase", PHASES)
def test_a_runner_killed_at_each_phase_resumes(backend, sweep, runs, phase, sig, record_property):
    """SIGTERM (a scheduler's pre-emption) lets the runner record the trial and stop its trial process;
    SIGKILL leaves that to the trial process dying with its parent, to DataLoader workers that check their
    parent after starting, and to the next runner reclaiming the dead runner's trial."""
    record_property("fault", f"runner {sig} at {phase}")
    in_this_run(backend, f"runner {sig} at {phase}")
    flags = PHASE_FLAGS.get(phase, [])
    run = runs.start(sweep.command(*flags), fault=phase)
    held = run.wait_point(phase)
    if phase == "workers":  # a DataLoader worker, started by the trial process (in its sandbox)
        trial = psutil.Process(held).ppid()
        assert trial != run.pid and _descends(trial, run.pid)
    run.kill(getattr(signal, sig))
    code = run.wait(120)
    assert code == (128 + signal.SIGTERM if sig == "SIGTERM" else -signal.SIGKILL), run.tail()
    recorded = run.recorded()
    assert run.left(KILLED_SECONDS) == [], f"the killed run's processes outlived it ({[p.pid for p in recorded]})"
    if phase in ("workers", "train", "test", "export"):  # held in the trial process or its DataLoader worker
        assert len(recorded) >= 2 + (phase == "workers"), "the trial's processes were not seen"
    before = trials(sweep.db)
    assert before, "the killed run reserved no trial"
    resume(sweep, record_property, before, f"{_exit(code)}; {counted(before)}; processes seen {len(recorded)}, left 0",
           *flags)


def test_a_killed_trial_process_is_recorded_failed_and_the_sweep_goes_on(backend, sweep, runs, record_property):
    """The trial process alone is killed (as the kernel's OOM killer would): the runner records the trial
    failed, with the signal, and trains the slots."""
    record_property("fault", "trial process SIGKILL")
    in_this_run(backend, "trial process SIGKILL")
    run = runs.start(sweep.command(), fault="train")
    child = run.wait_point("train")
    assert _descends(child, run.pid)  # its child, or its sandbox launcher's
    os.kill(child, signal.SIGKILL)
    run.release("train")  # the next trials go on
    assert run.wait() == 0, run.tail()
    assert run.left() == []
    before = trials(sweep.db)
    assert Counter(s in RESULT_STATES for s in before.values()) == {True: TRIALS, False: 1}, before
    assert Counter(before.values())["failed"] == 1, before
    engine = create_engine(sweep.db)
    with engine.connect() as connection:
        error = connection.execute(text("SELECT error FROM trial WHERE status = 'failed'")).scalar_one()
    engine.dispose()
    assert "TrialCrashed: the trial's process died from signal SIGKILL" in error
    resume(sweep, record_property, before, f"{_exit(0)}; {counted(before)}; processes seen {len(run.recorded())}, left 0")


# -- a mirror that cannot be written --------------------------------------------------------------------
def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:  # unbuffered: nothing left to write when it is closed
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return filler


def test_a_mirror_on_a_full_disk_leaves_the_trials_as_recorded(backend, sweep, record_property):
    """The JSON mirror's folder is a full tmpfs: every trial is still recorded and counted, the mirror stays
    queued in the database's outbox (``check`` says so), and once there is room again the same command
    writes it."""
    record_property("fault", "mirror on a full disk")
    in_this_run(backend, "mirror on a full disk")
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs over the workspace's stat/ needs root (CI runs as root)")
    stat = sweep.root / "stat"
    stat.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(stat)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"this machine does not allow mounting a tmpfs: {mounted.stderr.strip()}")
    try:
        filler = _fill(stat)
        code, out = sweep.train_here()
        assert code == 0 and f"this run trained {TRIALS}, failed 0" in out, out[-3000:]
        before = trials(sweep.db)
        assert len([s for s in before.values() if s in RESULT_STATES]) == TRIALS == len(before), before
        assert "JSON mirror:" in out and "still queued" in out, out[-3000:]
        checked, said = sweep.check()
        assert checked == 1 and "queued but not yet written" in said, said
        assert not (stat / "trial" / f"{CONFIG}.json").exists()
        filler.unlink()  # room again
        resume(sweep, record_property, before, f"exit 0; {counted(before)}; mirror queued, check exit 1")
    finally:
        subprocess.run(["umount", "-l", str(stat)], capture_output=True)


# -- an ambiguous commit --------------------------------------------------------------------------------
class AmbiguousCommit:
    """A TCP proxy between the store and PostgreSQL. Once, for the first transaction that sends
    ``statement``, it forwards the COMMIT, waits until the server has answered it (so the commit is applied)
    and then drops the client's connection without passing the answer on: the client cannot tell whether
    its write was applied. Everything else passes through."""

    COMMIT = b"Q\x00\x00\x00\x0bCOMMIT\x00"
    ANSWERED = b"C\x00\x00\x00\x0bCOMMIT\x00"

    def __init__(self, target: tuple[str, int], statement: bytes):
        self.target, self.statement = target, statement
        self.fired, self.applied = threading.Event(), threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            withhold = threading.Event()
            threading.Thread(target=self._upstream, args=(client, server, withhold), daemon=True).start()
            threading.Thread(target=self._downstream, args=(server, client, withhold), daemon=True).start()

    def _upstream(self, client: socket.socket, server: socket.socket, withhold: threading.Event) -> None:
        """Client to server, message by message (startup messages have no type byte)."""
        buffer, started, armed = b"", False, False
        try:
            while data := client.recv(65536):
                buffer += data
                while True:
                    head = 0 if not started else 1
                    if len(buffer) < head + 4:
                        break
                    size = head + int.from_bytes(buffer[head:head + 4], "big")
                    if len(buffer) < size:
                        break
                    message, buffer = buffer[:size], buffer[size:]
                    if not started:
                        started = int.from_bytes(message[4:8], "big") == 196608  # StartupMessage, protocol 3.0
                    elif message[:1] in (b"P", b"Q") and self.statement in message:
                        armed = True
                    elif message == self.COMMIT and armed and not self.fired.is_set():
                        self.fired.set()
                        withhold.set()  # before the server can answer
                    elif message[:1] == b"Q":
                        armed = False
                    server.sendall(message)
        except OSError:
            pass
        _close(client, server)

    def _downstream(self, server: socket.socket, client: socket.socket, withhold: threading.Event) -> None:
        held = b""
        try:
            while data := server.recv(65536):
                if withhold.is_set():
                    held += data
                    if self.ANSWERED in held:
                        self.applied.set()
                        break
                    continue
                client.sendall(data)
        except OSError:
            pass
        _close(client, server)

    def close(self) -> None:
        self.listener.close()


def _close(*sockets: socket.socket) -> None:
    for s in sockets:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"])
@pytest.mark.parametrize("write, statement", [("a trial's end", b"UPDATE trial SET status="),
                                              ("a reservation", b"INSERT INTO trial (")], ids=["end", "reservation"])
def test_an_ambiguous_commit_has_the_effect_of_one(sweep, runs, write, statement, record_property):
    """The connection drops after the server applied the COMMIT and before its answer arrived: the store
    retries the write, and the retry must find it done (one end, one outbox entry; the same slot, no
    phantom reservation). SQLite has no connection to drop."""
    record_property("fault", f"ambiguous commit of {write}")
    address = make_url(sweep.url)
    proxy = AmbiguousCommit((address.host, address.port), statement)
    try:
        through = address.set(host="127.0.0.1", port=proxy.port,
                              query={"sslmode": "disable", "gssencmode": "disable"})
        command = sweep.command(url=through.render_as_string(hide_password=False))
        first = runs.complete(command)
        assert proxy.fired.is_set() and proxy.applied.wait(5), "the proxy never dropped a committed write"
        assert "trying again" in first.stderr, first.tail()  # the store saw the error and retried
        assert f"this run trained {TRIALS}, failed 0" in first.stdout, first.tail()
        before = trials(sweep.db)
        assert len(before) == TRIALS, f"a phantom or lost slot: {before}"
        resume(sweep, record_property, before, f"exit 0; {counted(before)}; 1 retried write")
    finally:
        proxy.close()


# -- a lease reclaimed while its runner still writes -------------------------------------------------------
def _freeze(groups: list[int], sqlite_file: Path | None) -> None:
    """SIGSTOP the process groups, at a moment when none holds SQLite's write lock (a frozen holder
    would stall every writer: a limit of SQLite, not of the runner)."""
    for _ in range(100):
        for group in groups:
            os.killpg(group, signal.SIGSTOP)
        if sqlite_file is None or _writable(sqlite_file):
            return
        for group in groups:
            os.killpg(group, signal.SIGCONT)
        time.sleep(0.1)
    pytest.fail("the runner always held SQLite's write lock")


def _writable(path: Path) -> bool:
    connection = sqlite3.connect(path, timeout=0.5, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        connection.close()


def test_a_reclaimed_lease_refuses_the_stalled_runners_writes(sweep, runs, backend, record_property):
    """A runner (and its trial process) stalls past its lease's lapse, as a frozen VM would; a second runner
    reclaims its trial and trains the slots; when the first comes back, its next epoch is refused and its
    trial is not counted."""
    record_property("fault", "lease reclaimed from a stalled runner")
    heartbeat = 1.0
    flags = ["-e", "2", "--heartbeat-seconds", str(heartbeat)]
    stalled = runs.start(sweep.command(*flags), fault="train")
    child = os.getpgid(stalled.wait_point("train"))  # epoch 1 recorded; the group of the sandbox it runs in
    _freeze([stalled.pid, child], sweep.root / "db" / "ab.nn.db" if backend == "sqlite" else None)
    try:
        time.sleep(4 * heartbeat + 3)  # LAPSE_BEATS missed beats, by the database's clock
        code, second = sweep.train_here(*flags)
    finally:
        for group in (child, stalled.pid):
            os.killpg(group, signal.SIGCONT)
    stalled.release("train")
    assert stalled.wait() == 0, stalled.tail()
    assert stalled.left() == []
    assert code == 0 and f"this run trained {TRIALS}, failed 0" in second, second[-3000:]
    assert "this run trained 0, failed 0, lost 1 to other runners" in stalled.stdout, stalled.tail()
    engine = create_engine(sweep.db)
    with engine.connect() as connection:
        mine = connection.execute(text("SELECT id, status, epochs_done FROM trial WHERE pid = :pid"),
                                  {"pid": stalled.pid}).all()
        epochs = connection.execute(text("SELECT COUNT(*) FROM stat WHERE trial_id = :t"), {"t": mine[0].id}).scalar()
    engine.dispose()
    assert [(row.status, row.epochs_done) for row in mine] == [("interrupted", 1)] and epochs == 1, \
        "the stalled runner's second epoch was recorded, or its trial counted"
    before = trials(sweep.db)
    resume(sweep, record_property, before,
           f"stalled runner: exit 0, lost 1 (epoch 2 refused); second runner: {counted(before)}", *flags)


# -- a database rebuilt from its JSON mirror ---------------------------------------------------------------
def test_a_database_rebuilt_from_its_json_mirror_resumes_its_sweep(sweep, record_property):
    """The database is lost after one trial; its JSON mirror is imported into a new one, and the sweep
    resumes there: exactly one more trial to reach ``-t 2``."""
    record_property("fault", "database rebuilt from its JSON mirror")
    code, out = sweep.train_here()
    assert code == 0, out[-3000:]
    if sweep.url is None:
        for path in (sweep.root / "db").glob("ab.nn.db*"):
            path.unlink()
        rebuilt = sweep
    else:
        rebuilt = replace(sweep, url=helpers.new_postgres_database(sweep.url))
    code, out = _here(stat_cli.cli, ["import-json", *rebuilt.database()])
    assert code == 0, out[-3000:]
    before = trials(rebuilt.db)
    assert Counter(s in RESULT_STATES for s in before.values()) == {True: 1}, before
    resume(rebuilt, record_property, before, f"imported: {counted(before)}", trials=2)
