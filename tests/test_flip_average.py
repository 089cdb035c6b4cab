"""benchmarks/flip_average.py: a trained trial judged again on its own test images, plain and as the mean
over the face and its mirror image; the pass it was trained with must reproduce its recorded test MAE."""
import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from ab.nn import api
from tests import helpers
from tests.test_sweep_cli import CONFIG, run


def flip_benchmark():
    return helpers.benchmark("flip_average")


class LeftColumn(nn.Module):
    """An 'age' that sees only the image's leftmost pixel column: its mirror sees only the rightmost."""

    def forward(self, x):
        return 100 * x[..., 0].mean(dim=(1, 2)).reshape(-1, 1)


def test_flip_average_is_the_mean_over_the_image_and_its_mirror():
    x = torch.rand(3, 3, 8, 8)
    got = flip_benchmark().FlipAveraged(LeftColumn())(x)
    expected = 100 * (x[..., 0].mean(dim=(1, 2)) + x[..., -1].mean(dim=(1, 2))) / 2
    assert got.shape == (3, 1) and torch.allclose(got.reshape(-1), expected)


class LeftColumnWithSwitch(LeftColumn):
    """Like MobileAgeNet with ``flip_average``: averages over the mirror by itself while the switch is on."""
    flip_average = True

    def forward(self, x):
        plain = super().forward(x)
        return (plain + super().forward(torch.flip(x, dims=(-1,)))) / 2 if self.flip_average else plain


def test_a_model_that_averages_by_itself_is_judged_with_its_switch_off_then_on():
    x, ages = torch.rand(5, 3, 8, 8), torch.full((5, 1), 50.0)
    left, right = 100 * x[..., 0].mean(dim=(1, 2)), 100 * x[..., -1].mean(dim=(1, 2))
    model = LeftColumnWithSwitch()
    plain, averaged = flip_benchmark().two_passes(model, True, TensorDataset(x, ages), 2, "switch")
    assert np.allclose(plain, (left - 50).abs().numpy(), atol=1e-4)
    assert np.allclose(averaged, ((left + right) / 2 - 50).abs().numpy(), atol=1e-4)
    assert model.flip_average  # as it was trained
    wrapped_plain, wrapped = flip_benchmark().two_passes(LeftColumn(), False, TensorDataset(x, ages), 2, "wrapped")
    assert np.allclose(wrapped_plain, plain) and np.allclose(wrapped, averaged)


@pytest.mark.slow
def test_replicas_are_judged_again_on_their_test_images(root, utk_dir, capsys):
    prm = json.dumps({"lr": 0.001, "batch": 16, "head": "dex", "flip_average": 0})
    assert run(root, utk_dir, "-c", CONFIG, "-e", "1", "-t", "-1", "--seeds", "2", "-p", prm, "--save_pth_weights") == 0
    trials = api.trials(db=root / "db" / "ab.nn.db").sort_values("id")
    ids = [str(i) for i in trials.id]
    bench = flip_benchmark()
    assert bench.main(["--trial", *ids, "--root", str(root), "--data-dir", str(utk_dir)]) == 0
    out = capsys.readouterr().out
    assert f"data key {trials.data_key.iloc[0]}" in out
    for trial in trials.itertuples():
        assert f"| {trial.id} | {trial.seed} | 0 | " in out and f"| {trial.test_mae:.3f} |" in out
    assert "| 2 trials |" in out

    weights = root / "out" / CONFIG / ids[0] / "model.pth"
    state = torch.load(weights)
    state["head.4.bias"][:20] += 10.0  # another model than the one the trial recorded: it answers children
    torch.save(state, weights)
    with pytest.raises(SystemExit) as stopped:
        bench.main(["--trial", ids[0], "--root", str(root), "--data-dir", str(utk_dir)])
    assert stopped.value.code == 3 and "not the model or not the images" in capsys.readouterr().err

    weights.unlink()
    with pytest.raises(SystemExit) as stopped:
        bench.main(["--trial", ids[0], "--root", str(root), "--data-dir", str(utk_dir)])
    assert stopped.value.code == 2 and "has no checkpoint" in capsys.readouterr().err

    prm = json.dumps({"lr": 0.001, "batch": 16, "head": "dex", "flip_average": 1})
    assert run(root, utk_dir, "-c", CONFIG, "-e", "1", "-t", "-1", "-p", prm, "--save_pth_weights") == 0
    averaged = api.trials(db=root / "db" / "ab.nn.db").sort_values("id").iloc[-1]
    assert bench.main(["--trial", str(averaged.id), "--root", str(root), "--data-dir", str(utk_dir)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(f"| {averaged.id} |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[2] == "1" and cells[5] == f"{averaged.test_mae:.3f}"  # its own switch: the averaged pass recorded
