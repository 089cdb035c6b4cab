"""benchmarks/flip_average.py: a trained trial judged again on its own test images, as trained and as the
mean over the face and its mirror image; the plain pass must reproduce the recorded test MAE."""
import json

import pytest
import torch
from torch import nn

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


@pytest.mark.slow
def test_replicas_are_judged_again_on_their_test_images(root, utk_dir, capsys):
    prm = json.dumps({"lr": 0.001, "batch": 16, "head": "dex"})
    assert run(root, utk_dir, "-c", CONFIG, "-e", "1", "-t", "-1", "--seeds", "2", "-p", prm, "--save_pth_weights") == 0
    trials = api.trials(db=root / "db" / "ab.nn.db").sort_values("id")
    ids = [str(i) for i in trials.id]
    bench = flip_benchmark()
    assert bench.main(["--trial", *ids, "--root", str(root), "--data-dir", str(utk_dir)]) == 0
    out = capsys.readouterr().out
    assert f"data key {trials.data_key.iloc[0]}" in out
    for trial in trials.itertuples():
        assert f"| {trial.id} | {trial.seed} | " in out and f"| {trial.test_mae:.3f} |" in out
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
