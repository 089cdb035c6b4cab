"""Torch threads of a trial's training: one core per DataLoader worker is left to it by default, and
``--threads`` sets them; the trial's own process trains with that many (read by the model itself)."""
from __future__ import annotations

import dataclasses

import pytest

from ab.nn import train
from ab.nn.config import Config
from ab.nn.dataset.settings import DataSettings
from ab.nn.sweep.trial_spec import TrialSpec
from ab.nn.util import system
from ab.nn.workspace import Workspace
from tests import helpers

SWEEP = ["-f", "norm_64", "--min-batch-binary-power", "4", "-b", "4", "--quiet", "--pretrained", "0",
         "--export", "none", "-e", "1", "-t", "1", "--max-samples", "16", "--in-process", "--unsafe"]
COUNTING = helpers.TINY_MODEL.replace("    def learn(self, train_data):\n", '''    def learn(self, train_data):
        import os
        with open(os.environ["AB_NN_TEST_THREADS_FILE"], "a") as seen:
            seen.write(f"{torch.get_num_threads()}\\n")
''')


@pytest.mark.parametrize("cores, workers, threads", [(2, 2, 1), (2, 0, 2), (16, 2, 14), (1, 4, 1)])
def test_the_default_leaves_a_core_to_each_dataloader_worker(monkeypatch, cores, workers, threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(system, "cpu_count", lambda: cores)
    assert system.training_threads(workers) == threads


def test_threads_travel_to_the_trial_child(tmp_path):
    spec = TrialSpec(config=Config.parse("age-regression_utkface_mae_X"), prm={}, trial_id=1, db_url="sqlite://",
                     workspace=Workspace(tmp_path), data=DataSettings(), seed=1, threads=3)
    assert TrialSpec.from_json(spec.to_json()).threads == 3
    assert TrialSpec.from_json(dataclasses.replace(spec, threads=None).to_json()).threads is None


@pytest.mark.parametrize("flags, expected", [(["--threads", "1"], lambda: 1), ([], lambda: system.cpu_count())])
def test_a_trial_trains_with_the_threads_asked_or_the_default(root, utk_dir, tmp_path, monkeypatch, flags, expected):
    seen = tmp_path / "threads.txt"
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("AB_NN_TEST_THREADS_FILE", str(seen))
    helpers.write_model(root, "CountsThreads", COUNTING)
    assert train.cli(["--root", str(root), "--data-dir", str(utk_dir), "-c", "age-regression_utkface_mae_CountsThreads",
                      "-w", "0", *SWEEP, *flags]) == 0
    assert set(seen.read_text().split()) == {str(expected())}


def test_the_dry_run_says_how_many_threads_a_trial_trains_with(root, utk_dir, capsys):
    helpers.write_model(root, "CountsThreads", COUNTING)
    assert train.cli(["--root", str(root), "--data-dir", str(utk_dir), "-c", "age-regression_utkface_mae_CountsThreads",
                      "-w", "1", "--threads", "3", "--dry-run", *SWEEP]) == 0
    assert "training: 3 torch threads per trial (--threads)" in capsys.readouterr().out


@pytest.mark.parametrize("value, threads", [("3", 3), ("1", 1), ("0", 2), ("many", 2), ("", 2)])
def test_omp_num_threads_is_the_users_share_of_the_machine(monkeypatch, value, threads):
    monkeypatch.setattr(system, "cpu_count", lambda: 2)
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert system.training_threads(0) == threads
