"""Age heads (issue 18): every head of MobileAgeNet and of the torchvision comparison models is
chosen alike by name and by LEMUR's number, trains, keeps its ages in [0, 116], starts at the
training mean, scores the loss its paper defines, and exports (ONNX, TFLite fp32) to files that
answer the same ages as PyTorch: the expected-age readout is part of the graph."""
import copy
import json
import math

import numpy as np
import onnx
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ab.nn import api, nn_template, registry
from ab.nn.deploy import worker
from ab.nn.deploy.onnx_export import export_onnx
from ab.nn.deploy.runtimes import LiteRtRuntime, OnnxRuntime
from ab.nn.util.macs import count_macs
from tests import helpers
from tests.test_sweep_cli import run

HEADS = ("regression", "dex", "dldl", "mean-variance")
DISTRIBUTIONS = HEADS[1:]
WITH_HEADS = ("MobileAgeNet", *(backbone.name for backbone in nn_template.BACKBONES))
"""MobileAgeNet and every torchvision model generated from ab/nn/nn_template.py."""
TRAINED = ("MobileAgeNet", "ResNet18")
"""Trained and exported here with every head; the contract test trains and exports all models."""
CONVERTED = {("MobileAgeNet", head) for head in HEADS} | {("ResNet18", "mean-variance")}
"""Also converted to TFLite. Every file's readout is the same few operators (ONNX proves each file's
copy): converting every head once, and the torchvision backbone once, proves the converter keeps
them; each conversion costs about 20 s of CI time."""
NUMBER = {"regression": 0.1, "dex": 0.3, "dldl": 0.6, "mean-variance": 0.9}
"""LEMUR samples every hyperparameter in [0, 1]: the heads are its quarters, in HEADS' order."""
SIZE = 32
BASE = {"lr": 1e-3, "momentum": 0.9, "dropout": 0.1, "pretrained": 0, "epoch_max": 2}


def build(name, head=None, seed=0, **extra):
    module = registry.load(registry.MODEL, name)
    prm = {**BASE, **extra} | ({} if head is None else {"head": head})
    torch.manual_seed(seed)
    return module.Net((1, 3, SIZE, SIZE), (1,), prm, torch.device("cpu")), module, prm


class AgedDataset(TensorDataset):
    """Like the UTKFace datasets: exposes its ages, from which the head's prior is set."""

    @property
    def ages(self):
        return self.tensors[1].reshape(-1).numpy()


def batches(n=8):
    generator = torch.Generator().manual_seed(1)
    ages = torch.tensor([2.0, 9.0, 18.0, 26.0, 35.0, 47.0, 63.0, 99.0])[:n].reshape(-1, 1)
    return DataLoader(AgedDataset(torch.randn(n, 3, SIZE, SIZE, generator=generator), ages), batch_size=4)


# -- choosing a head --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", WITH_HEADS)
def test_head_is_declared_for_both_runners(name):
    module = registry.load(registry.MODEL, name)
    assert "head" in module.supported_hyperparameters()  # LEMUR samples it in [0, 1]
    space = module.search_space()
    assert space["head"] == {"choices": list(HEADS)}
    for key, rule in space.items():
        assert key in module.supported_hyperparameters() or key == "batch", key
        if "choices" in rule:
            assert set(rule) == {"choices"} and len(rule["choices"]) >= 2, key
        else:
            assert set(rule) == {"low", "high", "log"} and 0 < rule["low"] < rule["high"], key
            assert isinstance(rule["log"], bool), key


@pytest.mark.parametrize("name", WITH_HEADS)
def test_names_and_lemur_numbers_pick_the_same_head(name):
    module = registry.load(registry.MODEL, name)
    assert [module.head_choice(v) for v in (0.0, 0.2499, 0.25, 0.4999, 0.5, 0.7499, 0.75, 1.0, 1, np.float32(0.3))] \
        == ["regression", "regression", "dex", "dex", "dldl", "dldl", "mean-variance", "mean-variance", "mean-variance",
            "dex"]
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    for head in HEADS:
        by_name, by_number = build(name, head)[0].eval(), build(name, NUMBER[head])[0].eval()
        assert by_name.readout.head == by_number.readout.head == head
        assert by_name.head[-1].out_features == (1 if head == "regression" else 117)
        with torch.no_grad():
            assert torch.equal(by_name(x), by_number(x))
    unset = build(name)[0]
    assert unset.readout.head == "regression" and unset.head[-1].out_features == 1  # old trials, LEMUR


@pytest.mark.parametrize("name", WITH_HEADS)
@pytest.mark.parametrize("bad", ["softmax", "DEX", 1.5, -0.01, float("nan"), True, [0.3]])
def test_a_bad_head_is_a_one_line_error(name, bad):
    with pytest.raises(ValueError) as error:
        build(name, bad)
    assert str(error.value) == f"head must be one of regression, dex, dldl, mean-variance or a number in [0, 1], " \
                               f"got {bad!r}"


@pytest.mark.parametrize("name", WITH_HEADS)
def test_every_value_search_space_can_produce_is_accepted(name):
    module = registry.load(registry.MODEL, name)
    x = torch.randn(2, 3, SIZE, SIZE)
    for key, rule in module.search_space().items():
        values = rule["choices"] if "choices" in rule else [rule["low"], rule["high"]]
        for value in values:
            model, _, prm = build(name, **{key: value})
            model.train_setup({**prm, key: value})
            with torch.no_grad():
                out = model.eval()(x)
            assert out.shape == (2, 1) and torch.isfinite(out).all(), (key, value)


@pytest.mark.parametrize("name", WITH_HEADS)
def test_lemur_numbers_for_every_hyperparameter_still_work(name):
    module = registry.load(registry.MODEL, name)
    rng = np.random.default_rng(0)
    for _ in range(3):
        prm = {key: float(rng.random()) for key in module.supported_hyperparameters()}
        prm.update(lr=1e-3, pretrained=0, epoch_max=1)  # LEMUR's lr is log-uniform; no ImageNet weights here
        torch.manual_seed(0)
        model = module.Net((1, 3, SIZE, SIZE), (1,), prm, torch.device("cpu"))
        model.train_setup(prm)
        assert model.readout.head == module.head_choice(prm["head"])
        with torch.no_grad():
            out = model.eval()(torch.randn(2, 3, SIZE, SIZE))
        assert out.shape == (2, 1) and torch.isfinite(out).all()
        assert not model.readout.bounded or torch.all((out >= 0) & (out <= 116))


# -- training -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", TRAINED)
@pytest.mark.parametrize("head", HEADS)
def test_every_head_trains_one_step(name, head):
    model, _, prm = build(name, head)
    model.train_setup(prm)
    before = copy.deepcopy(model.state_dict())
    loss = model.learn(batches())
    assert math.isfinite(loss) and loss > 0
    changed = [k for k, v in model.state_dict().items() if v.dtype.is_floating_point and not torch.equal(before[k], v)]
    assert any(k.startswith("head.") for k in changed) and len(changed) > 10
    with torch.no_grad():
        out = model.eval()(torch.randn(3, 3, SIZE, SIZE))
    assert out.shape == (3, 1) and torch.all((out >= 0) & (out <= 116))


@pytest.mark.parametrize("name", TRAINED)
@pytest.mark.parametrize("head", HEADS)
def test_outputs_stay_in_the_age_range_for_extreme_inputs(name, head):
    model = build(name, head)[0].eval()
    generator = torch.Generator().manual_seed(2)
    inputs = [torch.full((2, 3, SIZE, SIZE), v) for v in (-1e4, -10.0, 0.0, 10.0, 1e4)]
    inputs.append(torch.randn(4, 3, SIZE, SIZE, generator=generator) * 1e3)
    with torch.no_grad():
        model.head[-1].weight.mul_(1e4)
        out = torch.cat([model(x) for x in inputs])
        model.train()  # batch statistics instead of running ones
        out = torch.cat([out, model(inputs[-1])])
    assert out.shape == (18, 1) and torch.all((out >= 0) & (out <= 116))


@pytest.mark.parametrize("head", DISTRIBUTIONS)
def test_bounded_0_leaves_the_distribution_heads_bounded(head):
    model = build("MobileAgeNet", head, bounded=0)[0].eval()
    assert model.bounded and model.readout.bounded
    with torch.no_grad():
        model.head[-1].bias.fill_(0.0)
        model.head[-1].bias[116] = 1e4  # all mass on the last bin
        assert torch.all(model(torch.randn(2, 3, SIZE, SIZE)) <= 116)


@pytest.mark.parametrize("name", TRAINED)
@pytest.mark.parametrize("head", HEADS)
def test_untrained_head_starts_at_the_training_mean(name, head):
    model = build(name, head)[0].eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    for age, spread in ((4.0, 3.0), (33.3, 19.9), (81.5, 10.0), (50.0, 10.0)):
        model.start_at_age(age, spread)
        with torch.no_grad():
            model.head[-1].weight.zero_()
            out = model(x)
        assert torch.allclose(out, torch.full_like(out, age), atol=1e-3), (age, spread, out)
    if head != "regression":  # the prior's spread is the one asked for (50 +- 10 is far from both ends)
        p = torch.softmax(model.head[-1].bias.detach().double(), 0)
        assert float((p * (torch.arange(117) - 50.0) ** 2).sum()) ** 0.5 == pytest.approx(10.0, abs=0.05)
    trained, _, prm = build(name, head, lr=0.0)
    trained.train_setup(prm)
    trained.learn(batches())  # sets the prior from the dataset's ages, then steps with lr 0
    with torch.no_grad():
        trained.head[-1].weight.zero_()
        out = trained.eval()(x)
    assert torch.allclose(out, torch.full_like(out, 37.375), atol=1e-3)  # the mean of batches()' ages


def reference_loss(head: str, z: np.ndarray, ages: np.ndarray) -> float:
    """The papers' losses written out in NumPy, for 117 one-year bins and clipped ages (B,)."""
    bins = np.arange(117.0)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    mean = p @ bins
    cross_entropy = -np.log(p[np.arange(len(ages)), np.round(ages).astype(int)]).mean()
    if head == "dex":
        return cross_entropy
    if head == "dldl":  # DLDL-v2: KL(target || p) + 1 * |E[p] - age|, sigma 2
        target = np.exp(-((bins[None] - ages[:, None]) ** 2) / (2 * 2.0 ** 2))
        target /= target.sum(1, keepdims=True)
        kl = np.where(target > 0, target * (np.log(np.maximum(target, 1e-300)) - np.log(p)), 0).sum(1).mean()
        return kl + np.abs(mean - ages).mean()
    variance = (p * (bins[None] - mean[:, None]) ** 2).sum(1)
    return cross_entropy + 0.2 * ((mean - ages) ** 2).mean() / 2 + 0.05 * variance.mean()


@pytest.mark.parametrize("name", TRAINED)
@pytest.mark.parametrize("head", DISTRIBUTIONS)
def test_losses_are_the_papers(name, head):
    model, _, prm = build(name, head)
    model.train_setup(prm)
    rng = np.random.default_rng(4)
    z = rng.normal(0, 3, (5, 117)).astype(np.float64)
    ages = np.array([1.0, 7.0, 33.0, 62.0, 95.0])
    got = model.criteria[0](torch.from_numpy(z).float(), torch.from_numpy(ages).float().reshape(-1, 1))
    assert float(got) == pytest.approx(reference_loss(head, z, ages), rel=1e-4)
    near, far = np.full((1, 117), -20.0), np.full((1, 117), -20.0)
    near[0, 40], far[0, 50] = 20.0, 20.0
    loss = [float(model.criteria[0](torch.from_numpy(v).float(), torch.tensor([[40.0]]))) for v in (near, far)]
    assert loss[0] < loss[1]


def test_regression_head_keeps_its_l1_and_smooth_l1_choice():
    model, _, prm = build("MobileAgeNet", "regression", smooth_l1=1)
    model.train_setup({**prm, "smooth_l1": 1})
    z = torch.tensor([[0.0], [2.0]])
    expected = torch.nn.functional.smooth_l1_loss(model.readout(z), torch.tensor([[50.0], [90.0]]), beta=1.0)
    assert torch.allclose(model.criteria[0](z, torch.tensor([[50.0], [90.0]])), expected)


# -- export ---------------------------------------------------------------------------------------
def deployable(name: str, head: str, **extra):
    """One training step, BatchNorm statistics estimated (as training does), and the last layer
    scaled so that the logits spread like a trained head's (a few units): a random head's logits
    span hundreds of units, and the expected age then turns on float round-off in the backbone."""
    model, _, prm = build(name, head, **extra)
    model.train_setup(prm)
    model.learn(batches())
    estimate_batchnorm(model)
    x = torch.from_numpy(inputs())
    with torch.no_grad():
        spread = float(model.logits(x).std(dim=1 if head != "regression" else 0).mean())
        model.head[-1].weight.mul_((3.0 if head != "regression" else 1.0) / spread)
    return model.eval()


def inputs(n=6, seed=7) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-2, 2, (n, 3, SIZE, SIZE)).astype(np.float32)  # normalised images


def estimate_batchnorm(model):
    """BatchNorm's running statistics from inputs like the test's (one learn step leaves them
    near their initial values)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for seed in range(4):
            model(torch.from_numpy(inputs(8, seed)))
    model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAINED)
@pytest.mark.parametrize("head", HEADS)
def test_onnx_and_tflite_answer_the_same_ages(name, head, tmp_path):
    model = deployable(name, head)
    x = inputs()
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).reshape(-1).numpy()
    assert np.all((expected >= 0) & (expected <= 116)) and np.ptp(expected) > 0.5  # ages, and not all one

    graph = assert_exports_answer(model, x, expected, tmp_path, convert=(name, head) in CONVERTED)
    assert ("Softmax" in {n.op_type for n in graph.node}) == (head != "regression")


def assert_exports_answer(model, x: np.ndarray, expected: np.ndarray, folder, convert: bool):
    """The model's ONNX file (and, with ``convert``, its TFLite fp32 file) answers ``expected`` for
    ``x``, one age per image; returns the ONNX graph."""
    path = export_onnx(model, (1, 3, SIZE, SIZE), folder / "model.onnx")
    graph = onnx.load(str(path)).graph
    assert [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim][1:] == [1]  # ages, not logits
    got = OnnxRuntime(path, 1).predict(x)
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-3
    if convert:
        converted = worker.run({"kind": "convert", "onnx": str(path), "out_dir": str(folder), "precisions": ["fp32"],
                                "calibration": None, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]})
        assert "path" in converted["results"]["fp32"], converted
        runtime = LiteRtRuntime(converted["results"]["fp32"]["path"], 1)
        got = runtime.predict(x)
        assert runtime.layout == "NHWC" and got.shape == expected.shape and np.abs(got - expected).max() < 1e-2
    return graph


# -- flip averaging -------------------------------------------------------------------------------
def test_flip_average_is_the_mean_over_the_face_and_its_mirror_at_evaluation_only():
    model = deployable("MobileAgeNet", "dex", dropout=0.0, flip_average=1)
    assert model.flip_average and not build("MobileAgeNet", "dex")[0].flip_average  # missing (older trials): off
    x = torch.from_numpy(inputs())
    with torch.no_grad():
        got = model(x)
        model.flip_average = False
        as_given, mirrored = model(x), model(torch.flip(x, dims=(-1,)))
        assert got.shape == (6, 1) and torch.allclose(got, (as_given + mirrored) / 2, atol=1e-4)
        assert (as_given - got).abs().max() > 0.05  # the mirror changes the answer: the test can fail
        model.train()
        plain_training = model(x)
        model.flip_average = True
        assert torch.equal(model(x), plain_training)  # training sees the images as given
    model.flip_average = False
    plain_macs = count_macs(model, (1, 3, SIZE, SIZE))
    model.flip_average = True
    assert count_macs(model, (1, 3, SIZE, SIZE)) == 2 * plain_macs  # the cheaper latency proxy sees the cost


@pytest.mark.slow
def test_exported_files_average_over_the_mirror_too(tmp_path):
    model = deployable("MobileAgeNet", "mean-variance", flip_average=1)
    x = inputs()
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).reshape(-1).numpy()
        model.flip_average = False
        as_given = model(torch.from_numpy(x)).reshape(-1).numpy()
        model.flip_average = True
    assert np.abs(as_given - expected).max() > 0.05  # a file without the mirror would not pass
    assert_exports_answer(model, x, expected, tmp_path, convert=True)


@pytest.mark.slow
def test_a_trial_with_a_distribution_head_records_its_fidelity_and_latency(root, utk_dir_large):
    """The runner's path: LEMUR's number 0.6 picks dldl, averaged over the mirror image; the exports are
    measured against PyTorch (their validation MAE is the trial's: they average too)."""
    config = "age-regression_utkface_mae_MobileAgeNet"
    prm = '{"lr": 0.001, "batch": 16, "head": 0.6, "flip_average": 1}'
    assert run(root, utk_dir_large, "-c", config, "-t", "1", "-e", "2", "-p", prm,
               "--export", "onnx,tflite-fp32", "--export-unlearned", "--latency-runs", "3", "--latency-warmup", "1") == 0
    db = root / "db" / "ab.nn.db"
    trial = api.trials(db=db).iloc[0]
    assert trial.status == "complete" and trial.prm["head"] == 0.6 and trial.prm["flip_average"] == 1
    exports = api.exports(trial_id=int(trial.id), db=db)
    rows = {(r.format, r.precision): r for r in exports.itertuples()}
    assert set(rows) == {("pytorch", "fp32"), ("onnx", "fp32"), ("tflite", "fp32"), ("pipeline", "-")}
    assert all(r.status == "ok" for r in exports.itertuples()), exports[["format", "precision", "error"]]
    assert rows[("onnx", "fp32")].eval_max_diff < 1e-3 and rows[("tflite", "fp32")].eval_max_diff < 1e-2
    assert abs(rows[("onnx", "fp32")].eval_mae - trial.eval_mae) < 1e-3
    meta = {p.key: p.value for p in onnx.load(rows[("onnx", "fp32")].path).metadata_props}
    assert meta["age_range"] == "0,116"
    latency = api.latency(trial_id=int(trial.id), db=db)
    assert set(latency.runtime) == {"pytorch", "onnxruntime", "litert"} and (latency.status == "ok").all()


def test_fixed_recipes_stay_on_the_regression_head():
    """``head`` is now sampled unless fixed: the ablations fix it, and still count trials recorded
    before it existed (no ``head`` in their prm) as the regression head they trained."""
    from types import SimpleNamespace

    ablations = helpers.experiment("ablations")
    reference = ablations.VARIANTS[0]
    assert registry.load(registry.MODEL, "MobileAgeNet").head_choice(ablations.BASE["head"]) == "regression"
    for command in (ablations.command(v, 1, None, []) for v in ablations.VARIANTS):
        assert '"head": 0' in command[command.index("-p") + 1]
    old = {k: v for k, v in ablations.BASE.items() if k != "head"} | {"transform": reference.transform, "epoch_max": 5}
    assert ablations._matches(SimpleNamespace(prm=old, max_samples=float("nan")), reference, 5, None)
    dex = old | {"head": 0.3}
    assert not ablations._matches(SimpleNamespace(prm=dex, max_samples=float("nan")), reference, 5, None)


# -- the heads benchmark (benchmarks/age_heads.py) --------------------------------------------------
def heads_benchmark():
    return helpers.benchmark("age_heads")


def test_benchmark_dry_run_fixes_the_recipe_and_names_the_head(capsys):
    assert heads_benchmark().main(["--dry-run", "--epochs", "26", "--seeds", "3", "--data-dir", "/data"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    for line, head in zip(lines, HEADS):
        assert f'"head": "{head}"' in line and "-e 26 -t -1 --seeds 3 -f norm_96_aug" in line and "--data-dir=/data" in line
        assert '"lr": 0.001' in line and '"onecycle": 1' in line and "--pretrained 0" in line


def test_benchmark_prints_a_spread_only_over_several_seeds():
    spread = heads_benchmark().spread
    assert spread([]) == spread([float("nan")]) == "-"
    assert spread([5.5321]) == "5.532"
    assert spread([5.0, 6.0]) == "5.500 +- 0.707"


@pytest.mark.slow
def test_benchmark_table_reads_the_heads_trials(root, utk_dir):
    """Trials of the recipe with a head given as LEMUR's number count for that head's row."""
    bench = heads_benchmark()
    for number in (0.0, 0.3):
        prm = json.dumps({**bench.RECIPE, "head": number, "batch": 16})
        assert run(root, utk_dir, "-c", "age-regression_utkface_mae_MobileAgeNet", "-e", "1", "-t", "-1",
                   "--seeds", "2", "-p", prm) == 0
    bench.RECIPE = {**bench.RECIPE, "batch": 16}
    frame = bench.results(root / "db" / "ab.nn.db", 1, "norm_64", None).set_index("head")
    assert frame.loc["regression", "seeds"] == 2 and frame.loc["dex", "seeds"] == 2
    assert frame.loc["regression", "training seeds"] == frame.loc["dex", "training seeds"] == "42, 43"
    assert frame.loc["dldl", "seeds"] == 0 and frame.loc["dldl", "test MAE"] == "-"
    assert "+-" in frame.loc["dex", "test MAE"]
    compared = frame.loc["dex", "test MAE - regression [95% CI], p"]
    assert "[" in compared and "p=" in compared and ("tie" in compared or "lower" in compared)
    assert frame.loc["regression", "test MAE - regression [95% CI], p"] == "-"
