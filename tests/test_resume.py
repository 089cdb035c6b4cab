"""Interrupted trials continue (``ab.nn.sweep.resume``): a runner killed after an epoch leaves a resume file,
and the next run continues the same trial from it, ending with the very accuracies and weights of a trial
that was never interrupted; a resume file that cannot be used gives a fresh trial and says why;
``--no-resume`` gives a fresh trial; a trial that ended leaves no resume file; of two runners claiming one
interrupted trial, one continues it.

Cost: one runner process with its sandboxed trial process (the runner killed at the fault point ``resume``
after epoch 1 of 3, as the fault matrix kills runners); the rest in this process, on copies of the killed
run's workspace: the continued trial in a sandboxed child (the file goes into its sandbox and the epochs
after it come out), the reference and the fresh trials ``--in-process``."""
from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import sys
import threading
from pathlib import Path

import optuna
import pytest
import torch

from ab.nn.config import Config
from ab.nn.stat import engine as engines, studies
from ab.nn.stat.states import INTERRUPTED, RUNNING
from ab.nn.stat.store import StatStore, reclaim_lapsed
from ab.nn.sweep import resume
from tests import helpers
from tests.test_fault_matrix import Run, _here, images  # noqa: F401 (images: the fault matrix's fixture)

NN = "ResumeProbe"
CONFIG = f"age-regression_utkface_mae_{NN}"
EPOCHS = 3
PRM = {"dropout": 0.3}
SWEEP = ["-c", CONFIG, "-e", str(EPOCHS), "-t", "1", "-f", "norm_64", "--min_batch_binary_power", "3", "-b", "3",
         "--min_learning_rate", "0.01", "-l", "0.01", "--min_momentum", "0.9", "--max_momentum", "0.9",
         "-p", json.dumps(PRM), "--pretrained", "0", "--export", "none", "-w", "0", "--quiet", "--in-process",
         "--unsafe"]
"""Every hyperparameter fixed, so that the reference trial and the interrupted one are the same trial."""

PROBE = '''"""A small age regressor whose training holds every kind of state a resume must carry: BatchNorm
buffers, AdamW's moments, a per-batch OneCycleLR made in the first epoch, an epoch counter, dropout
(torch's generator), noise from numpy's and Python's generators, and shuffled batches (the loader's)."""
import random

import numpy as np
import torch
from torch import nn


def supported_hyperparameters():
    return {"lr", "momentum", "dropout"}


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        self.conv = nn.Conv2d(in_shape[1], 4, 3, stride=4)
        self.norm = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(float(prm["dropout"]))
        self.linear = nn.Linear(4, out_shape[0])
        nn.init.constant_(self.linear.bias, 40.0)
        self.epoch = 0

    def forward(self, x):
        return self.linear(self.drop(torch.relu(self.norm(self.conv(x))).mean(dim=(2, 3))))

    def train_setup(self, prm):
        self.criteria = (nn.L1Loss(),)
        self.optimizer = torch.optim.AdamW(self.parameters(), lr=prm["lr"], betas=(prm["momentum"], 0.999))
        self.scheduler = None
        self.epoch_max = int(prm["epoch_max"])

    def learn(self, train_data):
        self.epoch += 1
        if self.scheduler is None:
            self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
                self.optimizer, max_lr=self.optimizer.param_groups[0]["lr"],
                total_steps=len(train_data) * self.epoch_max)
        for x, y in train_data:
            x = x + 0.01 * float(np.random.rand()) + 0.01 * random.random() + 0.001 * self.epoch
            self.optimizer.zero_grad()
            loss = self.criteria[0](self(x.to(self.device)), y.to(self.device))
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
        return loss.item()
'''


def _workspace(folder: Path) -> Path:
    helpers.write_model(folder, NN, PROBE)
    return folder


def _sweep(root: Path, images: Path, *extra: str, isolated: bool = False) -> tuple[int, str]:
    """The sweep in this process (``isolated``: its trial in a sandboxed child, as by default)."""
    from ab.nn import train

    return _here(train.cli, ["--root", str(root), "--data-dir", str(images), *_arguments(isolated), *extra])


def _arguments(isolated: bool) -> list[str]:
    return [a for a in SWEEP if a not in ("--in-process", "--unsafe")] if isolated else SWEEP


def _db(root: Path) -> sqlite3.Connection:
    return sqlite3.connect(root / "db" / "ab.nn.db")


def _trials(root: Path) -> dict[int, tuple[str, str | None]]:
    with _db(root) as con:
        return {i: (s, e) for i, s, e in con.execute("select id, status, error from trial order by id")}


def _epochs(root: Path, trial: int) -> list[tuple[int, float]]:
    with _db(root) as con:
        return con.execute("select epoch, accuracy from stat where trial_id = ? order by epoch", (trial,)).fetchall()


def _folder(root: Path, trial: int) -> Path:
    return root / "out" / CONFIG / str(trial)


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory) -> Path:
    """The same trial, never interrupted."""
    root = _workspace(tmp_path_factory.mktemp("reference"))
    code, out = _sweep(root, images)
    assert code == 0, out
    assert _trials(root) == {1: ("complete", None)}
    assert not resume.path_of(_folder(root, 1)).exists(), "a complete trial left its resume file"
    return root


@pytest.fixture(scope="module")
def killed(images, tmp_path_factory) -> Path:
    """A workspace whose runner was killed (SIGKILL) after epoch 1's resume file was written."""
    base = tmp_path_factory.mktemp("killed")
    root = _workspace(base / "ws")
    run = Run([sys.executable, "-m", "ab.nn.train", "--root", str(root), "--data-dir", str(images), *_arguments(True)],
              base / "runs", fault="resume")
    try:
        run.wait_point("resume")
        run.kill(signal.SIGKILL)
        assert run.wait(60) == -signal.SIGKILL
    finally:
        run.end()
    assert _trials(root) == {1: (RUNNING, None)}
    assert [e for e, _ in _epochs(root, 1)] == [1]
    return root


@pytest.fixture
def workspace(killed, tmp_path) -> Path:
    """A copy of the killed run's workspace, for one test to change."""
    return Path(shutil.copytree(killed, tmp_path / "ws"))


def test_a_killed_trial_continues_to_the_same_accuracies_and_weights(workspace, images, reference):
    code, out = _sweep(workspace, images, isolated=True)  # its sandbox is given the file the killed one left
    assert code == 0, out
    assert "trial 1 continued from epoch 2" in out
    assert _trials(workspace) == {1: ("complete", None)}, "the trial was not continued as itself"
    assert _epochs(workspace, 1) == _epochs(reference, 1)  # bit for bit: CPU training is deterministic here
    ours = torch.load(_folder(workspace, 1) / "model.pth", weights_only=True)
    theirs = torch.load(_folder(reference, 1) / "model.pth", weights_only=True)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    with _db(workspace) as con, _db(reference) as ref:
        query = "select prm, seed, eval_mae, test_mae, epochs_done from trial"
        assert con.execute(query).fetchall() == ref.execute(query).fetchall()
    assert not resume.path_of(_folder(workspace, 1)).exists(), "a complete trial left its resume file"

    url = f"sqlite:///{workspace / 'db' / 'ab.nn.db'}"
    storage = studies.storage(url)
    with _db(workspace) as con:
        study, optuna_id = con.execute("select study, optuna_trial_id from trial where id = 1").fetchone()
    copies = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    linked = next(c for c in copies if c._trial_id == optuna_id)
    assert linked.state == optuna.trial.TrialState.COMPLETE and sorted(linked.intermediate_values) == [1, 2, 3]
    assert [c.state for c in copies if c._trial_id != optuna_id] in ([], [optuna.trial.TrialState.FAIL])
    storage.engine.dispose()
    from ab.nn.stat import __main__ as stat_cli

    code, said = _here(stat_cli.cli, ["check", "--root", str(workspace)])
    assert code == 0 and "agree" in said, said


def test_a_truncated_resume_file_gives_a_fresh_trial_and_says_why(workspace, images):
    path = resume.path_of(_folder(workspace, 1))
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    why = "is unreadable"
    code, out = _sweep(workspace, images)
    assert code == 0, out
    assert "trial 1 not continued: resume file" in out and why in out
    trials = _trials(workspace)
    assert trials[1][0] == INTERRUPTED and f"not continued: resume file {path}" in trials[1][1] and why in trials[1][1]
    assert trials[2] == ("complete", None) and len(trials) == 2
    assert not path.exists(), "the unusable resume file was left to be tried again"


def test_no_resume_gives_a_fresh_trial(workspace, images):
    code, out = _sweep(workspace, images, "--no-resume")
    assert code == 0, out
    assert "continued" not in out
    trials = _trials(workspace)
    assert trials[1][0] == INTERRUPTED and trials[2] == ("complete", None)
    assert [e for e, _ in _epochs(workspace, 2)] == [1, 2, 3]
    assert resume.path_of(_folder(workspace, 1)).exists(), "--no-resume removed what a later run may continue"


def test_a_trial_interrupted_before_its_first_resume_file_stays_interrupted(workspace, images):
    """What a runner ended between an epoch's record and its resume file leaves: nothing to continue from."""
    resume.path_of(_folder(workspace, 1)).unlink()
    code, out = _sweep(workspace, images)
    assert code == 0, out
    assert "continued" not in out
    trials = _trials(workspace)
    assert trials[1][0] == INTERRUPTED and trials[2] == ("complete", None) and len(trials) == 2


def test_two_runners_claiming_one_interrupted_trial_continue_it_once(workspace):
    url = f"sqlite:///{workspace / 'db' / 'ab.nn.db'}"
    store = StatStore(url)
    with store.transaction() as session:
        assert [t for t, _ in reclaim_lapsed(session)] == [1]
    config = Config.parse(CONFIG)
    data_key = store.trial_row(1)["data_key"]
    start, answers = threading.Barrier(2), {}

    def claim(lease: int) -> None:
        mine = StatStore(url)
        start.wait()
        answers[lease] = mine.continue_trial(config, 1, EPOCHS, 1, data_key=data_key, lease_id=lease, host="h", pid=lease)

    threads = [threading.Thread(target=claim, args=(lease,)) for lease in (101, 102)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winner = [lease for lease, won in answers.items() if won]
    assert len(winner) == 1, answers
    row = store.trial_row(1)
    assert (row["status"], row["lease_id"]) == (RUNNING, winner[0])
    assert store.continue_trial(config, 1, EPOCHS, 1, data_key=data_key, lease_id=winner[0])  # its retry: still its
    engines.dispose_all()


def test_an_interrupted_replica_is_not_continued_where_its_seed_was_trained_again(workspace):
    """A --seeds group's replica continues in its own seed slot, and only while no other trial holds that seed
    (a worker that found the slot missing may have reserved it anew)."""
    url = f"sqlite:///{workspace / 'db' / 'ab.nn.db'}"
    store = StatStore(url)
    with store.transaction() as session:
        reclaim_lapsed(session)
    config, row = Config.parse(CONFIG), store.trial_row(1)
    with _db(workspace) as con:  # trial 1 as the first of a group of replicas
        con.execute("update trial set replica_of = 1 where id = 1")
    again = store.reserve_replicas(config, EPOCHS, None, data_key=row["data_key"], group=1, seeds=[row["seed"]])
    assert [seed for _, seed in again] == [row["seed"]]  # the interrupted one holds no slot
    assert not store.continue_trial(config, 1, EPOCHS, None, data_key=row["data_key"], lease_id=101)
    with _db(workspace) as con:
        con.execute("update trial set status = 'failed' where id = ?", (again[0][0],))
    assert store.continue_trial(config, 1, EPOCHS, None, data_key=row["data_key"], lease_id=101)
    engines.dispose_all()


def test_a_resume_file_is_read_as_untrusted(killed, tmp_path):
    folder = tmp_path / "t"
    folder.mkdir()
    shutil.copy(resume.path_of(_folder(killed, 1)), resume.path_of(folder))
    state = resume.read(folder, trial_id=1, epoch_max=EPOCHS, seed=state_seed(killed))
    assert state["epoch"] == 1 and set(state["rng"]) == {"torch", "cuda", "numpy", "python", "generators"}
    torch.save({"code": print}, resume.path_of(folder))  # what weights_only refuses to unpickle
    with pytest.raises(resume.ResumeError, match="is unreadable") as raised:
        resume.read(folder, trial_id=1, epoch_max=EPOCHS, seed=state_seed(killed))
    assert "\n" not in str(raised.value)
    for changed, why in ((dict(epoch=EPOCHS), "not one that training continues from"), (dict(trial_id=7), "trial 7's"),
                         (dict(model={"w": [1.0]}), "not a mapping of tensors"),
                         (dict(rng={**state["rng"], "python": {"keys": [1]}}), "random states are incomplete")):
        torch.save({**state, **changed}, resume.path_of(folder))
        with pytest.raises(resume.ResumeError, match=why):
            resume.read(folder, trial_id=1, epoch_max=EPOCHS, seed=state_seed(killed))


def state_seed(root: Path) -> int:
    with _db(root) as con:
        return con.execute("select seed from trial where id = 1").fetchone()[0]
