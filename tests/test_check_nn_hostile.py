"""check_nn with hostile generated code (issue 40): each case is one real check_nn call whose code
misbehaves where it runs, in the sandboxed trial child that trains it (or, where said, in the sandboxed
probe that checks it). Each must end as a clear failure within its limit, with the caller alive, the code
quarantined (in the database with the reason, not in <root>/nn/), and the file system outside the scratch
folders byte-identical afterwards: the ``guard`` fixture of tests/test_sandbox.py hashes the project,
a canary folder outside and a canary home folder before and after each test."""
from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import psutil
import pytest

from ab.nn import api, quarantine
from ab.nn.check_nn import CheckNNError, LearnTimeException, check_nn, model_name, registry_name
from ab.nn.sandbox.limits import GiB
from ab.nn.stat import versions
from ab.nn.train import list_configs
from ab.nn.workspace import Workspace
from tests import helpers
from tests.test_sandbox import SLACK, _no_children_left, guard, no_bwrap  # noqa: F401  (fixtures)

TASK = ("age-regression", "utkface", "mae")
PRM = {"lr": 0.01, "momentum": 0.9, "batch": 8, "transform": "norm_64", "epoch": 1}
LEARN = "    def learn(self, train_data):\n"
INIT = "        super().__init__()\n"


def hostile(guard, body: str, where: str = "learn", **extra) -> str:
    """The tiny model with ``body`` (a template of ``guard.values``) run first thing in ``learn()``, in
    ``__init__`` or at import."""
    body = textwrap.dedent(body) % guard.values(**extra)
    if where == "import":
        return body + helpers.TINY_MODEL
    anchor = LEARN if where == "learn" else INIT
    return helpers.TINY_MODEL.replace(anchor, anchor + textwrap.indent(body, " " * 8))


def refused(root, utk_dir, code: str, raises=CheckNNError, **extra) -> tuple[CheckNNError, float]:
    """check_nn of ``code``, which must fail with ``raises``; the failure and the seconds it took. The code
    is quarantined: the database keeps it with the reason, the workspace's nn/ folder does not."""
    started = time.monotonic()
    with pytest.raises(raises) as raised:
        check_nn(code, *TASK, dict(PRM), root=root, data_dir=utk_dir, max_samples=8, progress=False, **extra)
    took = time.monotonic() - started
    name = registry_name(model_name(code))
    trial = api.trials(db=root / "db" / "ab.nn.db").set_index("id").loc[raised.value.trial_id]
    assert trial.status == "failed" and trial.nn == name and trial.error.splitlines()[0] in str(raised.value)
    assert not (root / "nn" / f"{name}.py").exists()
    with sqlite3.connect(root / "db" / "ab.nn.db") as db:
        assert db.execute("select code from nn where name = ?", (name,)).fetchone()[0] == code
    return raised.value, took


EPOCH_LIMIT = 0.1  # minutes: with the runner's grace of 30 s, a phase ends 36 s after it started
CALL_LIMIT = 1.0  # minutes for a whole check_nn call (the probe's start and the trial child's start in it)
IMPORT_LIMIT = 15  # seconds for the probe
STARTING = 180  # seconds a trial child may take to start on a loaded machine (isolation.START_PHASE_SECONDS)
SLEEP = "import time\ntime.sleep(10 ** 6)\n"


@dataclass
class Case:
    """One hostile check_nn call: ``body`` run ``where``, the failure it must raise with ``says`` in it (a
    regular expression), within ``seconds`` where the case is about time."""
    body: str
    says: str
    where: str = "learn"
    raises: type = CheckNNError
    options: dict = field(default_factory=dict)
    seconds: float | None = None


FORGERIES = {
    "a write about an artifact it did not add": (
        "channel.send({'type': 'call', 'id': 'x', 'method': 'update_export', 'args': {'export_id': 1, 'status': 'ok'}})",
        "sent a forbidden message: an update of artifact row 1, which it did not add"),
    "a call about another trial": (
        "channel.send({'type': 'call', 'id': 'x', 'method': 'finish_trial', "
        "'args': {'trial_id': 1, 'status': 'complete', 'error': None}})",
        "sent a forbidden message: finish_trial: unexpected key 'trial_id'"),
    "the end of a trial": (
        "channel.send({'type': 'end', 'id': '0' * 32, 'status': 'complete', 'error': None, 'fatal': False})",
        "sent a forbidden message: an end of another trial"),
    "malformed bytes": ("import os\nos.write(channel.write_fd, b'\\x00\\x00\\x00\\x05{bad}')",
                        "the trial's process sent a malformed message"),
}
FILE_ERROR = r"(FileNotFound|Permission|OS)Error: .*(No such file|Permission denied|Read-only file system)"
CRAFTED_RESULT = """
    import json, os, pickle
    class Payload:
        def __reduce__(self):
            return (open, (%(marker)r, "w"))
    for folder in (os.getcwd(), "/tmp", os.path.dirname(__file__)):
        try:
            for name in ("outcome.pkl", "outcome.pkl.tmp"):
                with open(os.path.join(folder, name), "wb") as f:
                    pickle.dump((Payload(), True), f)
            with open(os.path.join(folder, "result.json"), "w") as f:
                json.dump({"error": None}, f)
        except OSError:
            pass
    os._exit(0)
    """
"""The old trial child reported through a pickle file: the code leaves one (whose loading would create a
marker file), and the JSON the old probe read, wherever a reader might look, then exits quietly."""
SOCKETS = """
    import socket
    try:
        socket.create_connection(("1.1.1.1", 53), 5)
    except OSError as error:
        remote = error
    socket.create_connection(("127.0.0.1", %(port)d), 5)
    """
FORKS = """
    import os, time
    for _ in range(1000):
        if os.fork() == 0:
            time.sleep(3600)
            os._exit(0)
    """
EXIT_UNLESS_PROBED = "import os\nif not __name__.startswith('_ab_nn_probed_'):\n    os._exit(7)\n"
"""The issue's exit 7: code that exits only where its module is not the probe's, which killed the caller
and then every sweep of the workspace."""

CASES = {
    # the slow ones first, so that their waiting overlaps the others' work
    "sleeps forever in __init__": Case(
        SLEEP, rf"time limit of {EPOCH_LIMIT:g} minutes per epoch passed in setup \(loading the data", "__init__",
        LearnTimeException, {"epoch_limit_minutes": EPOCH_LIMIT}, STARTING + EPOCH_LIMIT * 60 + 30),
    "sleeps forever in learn": Case(
        SLEEP, rf"time limit of {EPOCH_LIMIT:g} minutes per epoch passed in learn\(\) of epoch 1", "learn",
        LearnTimeException, {"epoch_limit_minutes": EPOCH_LIMIT}, STARTING + 2 * (EPOCH_LIMIT * 60 + 30)),
    "sleeps forever in learn, under a whole-call limit": Case(
        SLEEP, r"wall-clock limit of [\d.]+ minutes hit", "learn", LearnTimeException,
        {"timeout_minutes": CALL_LIMIT}, CALL_LIMIT * 60),
    "sleeps forever at import": Case(
        SLEEP, f"InvalidModelCode: probing the code failed: the wall-clock limit of {IMPORT_LIMIT} s passed",
        "import", options={"validate_timeout": IMPORT_LIMIT}, seconds=IMPORT_LIMIT),
    "deletes a file outside its scratch folder": Case("import os\nos.remove(%(canary)r)\n", FILE_ERROR),
    "writes into the project": Case("open(%(evil_model)r, 'w').write('evil')\n", FILE_ERROR),
    "writes into the project's README": Case("open(%(readme)r, 'a').write('evil')\n", FILE_ERROR),
    "writes into ~": Case("import os\nopen(os.path.expanduser('~/.bashrc'), 'a').write('evil')\n", FILE_ERROR),
    "writes into the caller's ~": Case("open(%(home_canary)r, 'a').write('evil')\n", FILE_ERROR),
    "opens sockets": Case(SOCKETS, "ConnectionRefusedError"),
    "forks 1,000 processes": Case(FORKS, re.escape("BlockingIOError: [Errno 11] Resource temporarily unavailable")),
    "allocates 50 GB": Case("hog = bytearray(%(size)d)\n", "MemoryError"),
    "exits where it is not probed": Case(EXIT_UNLESS_PROBED, "the trial's process exited with code 7 before reporting",
                                         "import"),
    "writes a crafted result file": Case(CRAFTED_RESULT, "the trial's process exited with code 0 before reporting"),
    **{f"forges {what}": Case("from ab.nn.sandbox import child\nchannel = child.channel()\n"
                              + forge.replace("%", "%%") + "\nchannel.receive()\n", re.escape(why))
       for what, (forge, why) in FORGERIES.items()},
}


def test_hostile_code_fails_clearly_within_its_limits_and_changes_nothing(guard, utk_dir, tmp_path):
    """Every case of the issue, each one real check_nn call in a workspace of its own, six at a time (most of
    a call is waiting for its children); then the file system outside the scratch folders is compared
    (``guard``), no sandbox process is left, and the listening socket was never reached."""
    marker = guard.models / "unpickled"
    size = max(50 * GiB, 2 * psutil.virtual_memory().total)  # more than the machine has: the per-process limit
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        values = {"port": server.getsockname()[1], "size": size, "marker": str(marker)}
        roots = {name: tmp_path / f"ws{i}" for i, name in enumerate(CASES)}
        for root in roots.values():  # the schema first: Alembic's migration context is one per process
            root.mkdir()
            versions.upgrade(Workspace.resolve(root).db_url)
        with ThreadPoolExecutor(6) as pool:
            calls = {name: pool.submit(refused, roots[name], utk_dir, hostile(guard, case.body, case.where, **values),
                                       case.raises, **case.options) for name, case in CASES.items()}
            outcomes = {name: call.result() for name, call in calls.items()}
        with pytest.raises(BlockingIOError):
            server.accept()
    for name, (error, took) in outcomes.items():
        case = CASES[name]
        assert re.search(case.says, str(error)), f"{name}: {error}"
        assert case.seconds is None or took < case.seconds + SLACK, f"{name}: {took:.0f} s"
    assert outcomes["sleeps forever in learn"][0].epoch_limit_minutes == EPOCH_LIMIT
    assert not marker.exists()
    _no_children_left()
    exited = Workspace.resolve(roots["exits where it is not probed"], data_dir=utk_dir)
    code = hostile(guard, EXIT_UNLESS_PROBED, "import")
    assert registry_name(model_name(code)) not in list_configs(exited)  # (in this process: it would be dead)
    _quarantine_lists_and_restores(exited, code, CASES["exits where it is not probed"].says)


def _quarantine_lists_and_restores(ws: Workspace, code: str, reason: str) -> None:
    name = registry_name(model_name(code))
    listed = subprocess.run([sys.executable, "-m", "ab.nn.quarantine", "--root", str(ws.root)], capture_output=True,
                            text=True, timeout=300)
    assert listed.returncode == 0 and re.search(rf"^{name} +trial \d+ +failed +TrialCrashed: {reason}",
                                                listed.stdout, re.M), listed.stdout + listed.stderr[-2000:]
    with pytest.raises(ValueError, match="is not a quarantined model"):
        quarantine.restore(ws, "TinyNotThere")
    path = quarantine.restore(ws, name)
    assert path == ws.root / "nn" / f"{name}.py" and path.read_text() == code
    assert quarantine.quarantined(ws) == []  # restored: a workspace model again (trained only in the sandbox)


def test_a_valid_model_is_trained_in_the_sandbox_and_accepted(guard, root, utk_dir):
    name, accuracy, _, _ = check_nn(helpers.TINY_MODEL, *TASK, dict(PRM), root=root, data_dir=utk_dir, max_samples=8,
                                    progress=False)
    trial = api.trials(db=root / "db" / "ab.nn.db").iloc[0]
    assert (trial.status, trial.sandbox, trial.eval_accuracy) == ("complete", "bubblewrap", accuracy)
    assert (root / "nn" / f"{name}.py").read_text() == helpers.TINY_MODEL  # accepted: it joins the zoo
    for args in (["--list-configs"], ["-c", f"age-regression_utkface_mae_{name}", "--dry-run"]):
        listed = subprocess.run(
            [sys.executable, "-m", "ab.nn.train", "--root", str(root), "--data-dir", str(utk_dir), *args],
            capture_output=True, text=True, timeout=300)
        assert listed.returncode == 0 and f"age-regression_utkface_mae_{name}" in listed.stdout, listed.stderr[-2000:]
    # (the model is only in root/nn, and the commands ran in the project: they read the --root workspace)


def test_without_a_sandbox_check_nn_refuses_unless_unsafe(no_bwrap, root, utk_dir):
    """A machine without bubblewrap: the code is refused and quarantined with the reason; ``unsafe=True``
    trains it as a plain child process, warns, and the trial says so."""
    error, _ = refused(root, utk_dir, helpers.TINY_MODEL)
    assert "SandboxUnavailable: no sandbox for untrusted code on this machine: bubblewrap (bwrap) is not " \
           "installed" in str(error) and "pass unsafe=True" in str(error)
    assert api.trials(db=root / "db" / "ab.nn.db").sandbox.tolist() == ["none: no sandbox"]
    with pytest.warns(RuntimeWarning, match="this machine has no sandbox, and unsafe=True runs"):
        name, *_ = check_nn(helpers.TINY_MODEL, *TASK, dict(PRM), root=root, data_dir=utk_dir, max_samples=8,
                            progress=False, unsafe=True)
    trial = api.trials(db=root / "db" / "ab.nn.db").set_index("id").iloc[-1]
    assert trial.status == "complete" and trial.sandbox.startswith("none: unsafe=True (bubblewrap (bwrap) is not")
    assert (root / "nn" / f"{name}.py").exists()


CALLER = '''\
import sys
from ab.nn.check_nn import check_nn
check_nn(open(sys.argv[1]).read(), "age-regression", "utkface", "mae",
         {"lr": 0.01, "momentum": 0.9, "batch": 8, "transform": "norm_64", "epoch": 1},
         root=sys.argv[2], data_dir=sys.argv[3], max_samples=8, progress=False)
'''


def test_a_killed_caller_leaves_nothing_running_behind(guard, root, utk_dir, tmp_path):
    """A caller killed with SIGKILL while its code trains: the sandbox dies with it; the next call records
    the trial interrupted and removes the caller's temporary folders."""
    code = tmp_path / "sleeper.py"
    code.write_text(hostile(guard, "import time\ntime.sleep(10 ** 6)\n"))
    script = tmp_path / "caller.py"
    script.write_text(CALLER)
    caller = subprocess.Popen([sys.executable, str(script), str(code), str(root), str(utk_dir)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = root / "db" / "ab.nn.db"
    deadline = time.monotonic() + 600
    while not _learning(db) and time.monotonic() < deadline and caller.poll() is None:
        time.sleep(1)
    assert caller.poll() is None, "the caller ended before its code trained"
    mine = [p for p in _temporary() if f".{caller.pid}." in p]
    assert mine, "the caller made no temporary folder"
    caller.send_signal(signal.SIGKILL)
    caller.wait()
    deadline = time.monotonic() + 30
    while _sandboxes_of(caller.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _sandboxes_of(caller.pid), "the sandbox outlived its caller"
    assert api.trials(db=db).status.tolist() == ["running"]

    refused(root, utk_dir, "def broken(:\n", raises=SyntaxError)  # the next call, however short
    assert api.trials(db=db).status.tolist() == ["interrupted", "failed"]
    assert not [p for p in _temporary() if f".{caller.pid}." in p]


def _learning(db) -> bool:
    if not db.exists():
        return False
    try:
        with sqlite3.connect(db) as con:
            return bool(con.execute("select count(*) from trial where status = 'running' and n_train > 0").fetchone()[0])
    except sqlite3.OperationalError:
        return False


def _temporary() -> list[str]:
    import tempfile

    return [entry.path for entry in os.scandir(tempfile.gettempdir()) if entry.name.startswith("ab-nn-")]


def _sandboxes_of(pid: int) -> list[int]:
    """Processes working in a sandbox scratch folder that ``pid`` made."""
    found = []
    for process in psutil.process_iter():
        try:
            if "/ab-nn-sandbox." in process.cwd() and f".{pid}." in process.cwd():
                found.append(process.pid)
        except psutil.Error:
            continue
    return found
