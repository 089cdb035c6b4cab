"""AgeMoE: bias correction and gating on known biases, the reusable file, and the whole command
with trial experts (checkpoints) and an external ONNX expert."""
import json

import numpy as np
import pytest
import torch

from ab.nn import api
from ab.nn.deploy.onnx_export import export_onnx
from ab.nn.moe import __main__ as moe_cli
from ab.nn.moe.experts import OnnxSpec
from ab.nn.moe.fusion import AgeMoE
from ab.nn.report import __main__ as report_cli
from ab.nn.stat import engine as engines
from tests import helpers
from tests.test_sweep_cli import run


def biased_experts(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    true = rng.uniform(1, 90, n)
    young_too_old = np.where(true < 20, true + 9, true) + rng.normal(0, 3, n)   # like DEX on children
    old_too_young = np.where(true > 55, true - 12, true) + rng.normal(0, 3, n)
    return np.stack([young_too_old, old_too_young], axis=1), true


@pytest.mark.parametrize("calibrator", ["mlp", "bins"])
def test_mixture_corrects_biases_and_beats_each_expert(calibrator):
    ages, true = biased_experts()
    model = AgeMoE(2, calibrator=calibrator)
    model.fit(ages[:2000], true[:2000], steps=400)
    mixed = np.abs(model.predict(ages[2000:]) - true[2000:]).mean()
    experts = np.abs(ages[2000:] - true[2000:, None]).mean(axis=0)
    assert mixed < experts.min() - 0.5
    children = true[2000:] < 20
    assert np.abs(model.predict(ages[2000:])[children] - true[2000:][children]).mean() < \
        np.abs(ages[2000:, 0][children] - true[2000:][children]).mean() - 3  # the children bias is gone


def test_gate_weights_are_a_softmax_and_the_file_round_trips(tmp_path):
    ages, true = biased_experts(800)
    model = AgeMoE(2, spread=True)
    model.fit(ages, true, steps=100)
    with torch.no_grad():
        weights = model.weights(model.corrected(torch.tensor(ages[:10], dtype=torch.float32)))
    assert torch.allclose(weights.sum(dim=1), torch.ones(10)) and (weights >= 0).all()
    path = model.save(tmp_path / "m.pt", [{"name": "a"}, {"name": "b"}])
    again, experts = AgeMoE.load(path)
    assert np.allclose(again.predict(ages), model.predict(ages)) and experts[1]["name"] == "b"


def test_onnx_spec_turns_outputs_into_ages():
    spec = OnnxSpec(name="d", input_size=8, output="distribution", ages=(10.0, 20.0, 30.0), softmax=False)
    assert np.allclose(spec.to_age(np.array([[0.0, 1.0, 1.0]])), [25.0])
    bgr = OnnxSpec(name="b", input_size=2, layout="NHWC", color="BGR", scale=1.0)
    pixels = np.zeros((1, 2, 2, 3), np.uint8)
    pixels[..., 0] = 200
    assert bgr.preprocess(pixels)[0, 0, 0].tolist() == [0.0, 0.0, 200.0]


class DistributionNet(torch.nn.Module):
    """An external age model answering scores over 10-year bins (expectation = age)."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 13)

    def forward(self, x):
        return torch.softmax(self.linear(x.mean(dim=(2, 3))), dim=1)


def test_fit_command_records_the_mixture(root, utk_dir, tiny_model, tmp_path, capsys):
    for _ in range(2):
        assert run(root, utk_dir, "-c", f"age-regression_utkface_mae_{tiny_model}", "-t", "-1", "-e", "2",
                   "--save_pth_weights", "-p", '{"lr": 0.01}') == 0
    external = tmp_path / "external.onnx"
    torch.manual_seed(0)
    export_onnx(DistributionNet().eval(), (1, 3, 48, 48), external)
    external.with_suffix(".json").write_text(json.dumps({
        "name": "external", "input_size": 48, "scale": 255, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
        "output": "distribution", "ages": list(range(0, 130, 10))}))
    assert moe_cli.cli(["fit", "--experts", "trial:1", "trial:2", f"onnx:{external}", "--steps", "150",
                        "--root", str(root), "--data-dir", str(utk_dir)]) == 0
    printed = capsys.readouterr().out
    assert "AgeMoE" in printed and "TinyAge#1" in printed and "external" in printed and "mixture MAE" in printed
    assert "paired test against" in printed
    db = root / "db" / "ab.nn.db"
    trial = api.trials(config="age-regression_utkface_mae_AgeMoE", db=db).iloc[0]
    assert trial.status == "complete" and trial.prm["experts"] == "TinyAge#1,TinyAge#2,external"
    assert trial.eval_mae > 0 and trial.test_mae > 0 and trial.split == "paper/42"
    assert trial.test_mae_low < trial.test_mae < trial.test_mae_high
    experts = api.trials(config=f"age-regression_utkface_mae_{tiny_model}", db=db)
    assert (experts.data_key == trial.data_key).all()  # judged on the same data as its experts
    assert len(api.predictions(trial_id=int(trial.id), split="test", db=db)) == trial.n_test
    groups = api.age_groups(trial_id=int(trial.id), db=db)
    assert not groups.empty and {"mae", "bias", "n"} <= set(groups.columns)
    saved = root / "out" / "age-regression_utkface_mae_AgeMoE" / str(int(trial.id)) / "agemoe.pt"
    model, experts = AgeMoE.load(saved)
    assert [e["name"] for e in experts] == ["TinyAge#1", "TinyAge#2", "external"]
    with engines.engine(f"sqlite:///{db}", writer=False).connect() as con:
        row = con.exec_driver_sql("select experts, parameters from fusion").fetchone()
    assert "external" in row[0] and "gate" in row[1]
    assert moe_cli.cli(["show", "--root", str(root)]) == 0
    assert "AgeMoE" in capsys.readouterr().out
    assert report_cli.cli(["--root", str(root), "--data-dir", str(utk_dir)]) == 0  # a mixture is no Optuna study
    report = (root / "report" / "README.md").read_text()
    assert "AgeMoE mixtures on this data" in report and (root / "report" / "mae_by_age_group.png").exists()


def test_experts_must_share_the_data_but_seed_replicas_may(root, utk_dir, tiny_model, capsys):
    config = f"age-regression_utkface_mae_{tiny_model}"
    assert run(root, utk_dir, "-c", config, "-t", "1", "--seeds", "2") == 0  # training seeds 42 and 43
    assert run(root, utk_dir, "-c", config, "-t", "1", "--split-seed", "7") == 0
    assert moe_cli.cli(["fit", "--experts", "trial:1", "trial:2", "--steps", "20", "--root", str(root),
                        "--data-dir", str(utk_dir)]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        moe_cli.cli(["fit", "--experts", "trial:1", "trial:3", "--root", str(root), "--data-dir", str(utk_dir)])
    err = capsys.readouterr().err.strip()
    assert stopped.value.code == 2 and len(err.splitlines()) == 1
    assert "expert TinyAge#3 was judged on data key" in err and "split paper/7" in err and "paper/42" in err
