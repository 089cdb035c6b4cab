"""Balanced sampling of the training part (--balance, ab.nn.dataset.balance): the weights, the sampler a
trial trains with, the flag's checks, and that balanced and plain trials are never replicas of each other."""
import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from ab.nn.dataset import balance
from ab.nn.dataset.utkface.attributes import Attributes
from ab.nn.sweep import groups, hyperparameters
from ab.nn.sweep.hyperparameters import HyperparameterError


def test_rare_ages_weigh_more_and_the_weights_average_one():
    ages = np.r_[np.full(900, 25.0), np.full(90, 5.0), np.full(10, 80.0)]
    w = balance.weights("age", ages)
    assert w.mean() == pytest.approx(1.0)
    assert w[ages == 80].mean() > w[ages == 5].mean() > w[ages == 25].mean()
    # inverse square root of the smoothed density: ten times rarer weighs about sqrt(10) times more
    assert w[ages == 5][0] / w[ages == 25][0] == pytest.approx(np.sqrt(10), rel=0.05)


def test_race_weights_use_each_race_s_share_and_combine_with_age():
    ages = np.full(400, 30.0)
    races = ["White"] * 300 + ["Black"] * 75 + ["unknown"] * 25
    w = balance.weights("race", ages, races)
    assert w[300] / w[0] == pytest.approx(2.0) and w[-1] / w[0] == pytest.approx(np.sqrt(12))
    both = balance.weights("race,age", ages, races)  # the same as age,race; constant ages add nothing
    assert np.allclose(both, w)
    with pytest.raises(ValueError, match="race label of every"):
        balance.weights("race", ages)
    for bad in ("gender", "", "age,gender", 1):
        with pytest.raises(ValueError, match="balance must be one of"):
            balance.parse(bad)
    with pytest.raises(ValueError, match="finite age"):
        balance.weights("age", [1.0, float("nan")])


class _Faces(Dataset):
    def __init__(self, ages, races):
        self.ages = np.asarray(ages, np.float32)
        self.attributes = [Attributes(float(a), "male", r, "file name", "file name", "file name")
                           for a, r in zip(ages, races)]

    def __len__(self):
        return len(self.ages)

    def __getitem__(self, index):
        return torch.tensor([float(index)]), torch.tensor([self.ages[index]])


def test_a_balanced_trial_draws_rare_ages_as_often_as_their_weight_says(tmp_path):
    from types import SimpleNamespace

    from ab.nn.sweep.trial import _loader

    ages = np.r_[np.full(950, 30.0), np.full(50, 3.0)]
    faces = _Faces(ages, ["White"] * 1000)
    spec = SimpleNamespace(workers=0, seed=7)
    loader = _loader(faces, 100, True, spec, torch.device("cpu"), balance="age")
    drawn = np.concatenate([x.numpy().reshape(-1) for _ in range(20) for x, _ in loader]).astype(int)
    share = (ages[drawn] < 10).mean()
    w = balance.weights("age", ages)
    expected = w[ages < 10].sum() / w.sum()
    assert abs(share - expected) < 0.02 and share > 0.15  # plain shuffling would give 0.05
    plain = np.concatenate([x.numpy().reshape(-1) for x, _ in _loader(faces, 100, True, spec, torch.device("cpu"))])
    assert sorted(plain.astype(int)) == list(range(1000))  # without balance: each image once per epoch
    with pytest.raises(ValueError, match="states its ages"):
        _loader(torch.utils.data.TensorDataset(torch.zeros(4, 1)), 2, True, spec, torch.device("cpu"), balance="age")


def test_the_flag_is_checked_and_carried_in_prm_and_plain_trials_are_not_its_replicas():
    hyperparameters.check_fixed({"balance": "age"}, ["lr"], ["norm_64"])
    with pytest.raises(HyperparameterError, match="--balance: balance must be one of"):
        hyperparameters.check_fixed({"balance": "gender"}, ["lr"], ["norm_64"])
    with pytest.raises(HyperparameterError, match="spelled 'age,race'"):
        hyperparameters.check_fixed({"balance": "race,age"}, ["lr"], ["norm_64"])
    plain = {"lr": 0.01, "transform": "norm_64", "batch": 16}
    balanced = {**plain, "balance": "age"}
    assert groups.agrees(balanced, {"balance": "age"}, ["norm_64"])
    assert not groups.agrees(plain, {"balance": "age"}, ["norm_64"])
    assert not groups.agrees(balanced, {}, ["norm_64"])
    assert groups.agrees(plain, {}, ["norm_64"])


def test_a_sweep_with_balance_records_it_and_trains(root, utk_dir, tiny_model, capsys):
    from ab.nn import api
    from tests.test_sweep_cli import run

    assert run(root, utk_dir, "-c", f"age-regression_utkface_mae_{tiny_model}", "-t", "1", "--balance",
               "race, age", "-p", '{"lr": 0.01}') == 0
    trial = api.trials(db=root / "db" / "ab.nn.db").iloc[0]
    assert trial.status == "complete" and trial.prm["balance"] == "age,race"
    with pytest.raises(SystemExit):
        run(root, utk_dir, "-c", f"age-regression_utkface_mae_{tiny_model}", "-t", "1", "--balance", "gender")
    assert "--balance: balance must be one of age, race, age,race, got 'gender'" in capsys.readouterr().err
