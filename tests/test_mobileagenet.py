"""MobileAgeNet: architecture, bounded output, two-stage fine-tuning, pretrained weights."""
import copy
import os

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from torchvision.models import MobileNet_V3_Large_Weights, mobilenet_v3_large

from ab.nn import api, registry
from tests.test_sweep_cli import CONFIG, run

BASE = {"lr": 1e-2, "momentum": 0.9, "dropout": 0.2, "pretrained": 0, "freeze": 0.0, "backbone_lr_mult": 0.1,
        "bounded": 1, "sgd": 0, "smooth_l1": 0, "onecycle": 0, "epoch_max": 4}


def build(size=64, **prm):
    module = registry.load(registry.MODEL, "MobileAgeNet")
    model = module.Net((1, 3, size, size), (1,), {**BASE, **prm}, "cpu")
    model.train_setup({**BASE, **prm})
    return model


def batches(n=8, size=64):
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(n, 3, size, size), torch.linspace(5, 80, n).reshape(-1, 1))
    return DataLoader(data, batch_size=4)


def test_parameter_count_matches_the_paper():
    assert sum(p.numel() for p in build().parameters()) == 3_218_225


def test_bounded_output_stays_in_the_age_range():
    model = build().eval()
    with torch.no_grad():
        model.head[-1].weight.mul_(1e4)
        out = torch.cat([model(torch.full((2, 3, 64, 64), v)) for v in (-1e4, -10.0, 0.0, 10.0, 1e4)])
    assert out.shape == (10, 1) and torch.all((out >= 0) & (out <= 116))


def test_unbounded_output_can_leave_the_range():
    torch.manual_seed(3)
    bounded = build(bounded=1).eval()
    unbounded = build(bounded=0).eval()
    unbounded.load_state_dict(bounded.state_dict())
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        for model in (bounded, unbounded):
            model.head[-1].bias.fill_(500.0)
        assert torch.all(bounded(x) <= 116)
        assert torch.all(unbounded(x) > 116)


def test_untrained_head_starts_at_the_given_age():
    for bounded in (1, 0):
        model = build(bounded=bounded)
        model.start_at_age(33.3)
        with torch.no_grad():
            model.head[-1].weight.zero_()
            out = model.eval()(torch.randn(2, 3, 64, 64))
        assert torch.allclose(out, torch.full_like(out, 33.3), atol=1e-3)


class AgedDataset(TensorDataset):
    """Like the UTKFace datasets: exposes its ages."""

    @property
    def ages(self):
        return self.tensors[1].reshape(-1).tolist()


def test_first_epoch_starts_the_head_at_the_training_mean():
    model = build(lr=0.0)
    data = AgedDataset(torch.randn(6, 3, 64, 64), torch.tensor([[10.0], [20.0], [30.0], [40.0], [50.0], [60.0]]))

    model.learn(DataLoader(data, batch_size=3))  # a plain DataLoader has .dataset, as the runner's DataRoll
    assert abs(float(torch.sigmoid(model.head[-1].bias.detach())) * 116 - 35.0) < 1e-3


def test_stage_one_trains_only_the_head_and_keeps_batchnorm_statistics():
    model = build(freeze=0.5)
    backbone = copy.deepcopy(model.features.state_dict())
    head = copy.deepcopy(model.head.state_dict())
    model.learn(batches())
    assert model.backbone_frozen
    assert all(torch.equal(backbone[k], v) for k, v in model.features.state_dict().items())  # BN buffers too
    assert any(not torch.equal(head[k], v) for k, v in model.head.state_dict().items())


def test_stage_switch_happens_at_the_right_epoch():
    model = build(freeze=0.5, epoch_max=4)
    frozen = []
    for _ in range(4):
        before = copy.deepcopy(model.features.state_dict())
        model.learn(batches())
        frozen.append(all(torch.equal(before[k], v) for k, v in model.features.state_dict().items()))
    assert frozen == [True, True, False, False]
    groups = {g["name"]: g for g in model.optimizer.param_groups}
    assert groups["backbone"]["initial_lr"] == pytest.approx(0.1 * groups["head"]["initial_lr"])


def test_single_stage_trains_the_backbone_from_the_start():
    model = build(freeze=0.0)
    before = copy.deepcopy(model.features.state_dict())
    model.learn(batches())
    assert not all(torch.equal(before[k], v) for k, v in model.features.state_dict().items())


@pytest.mark.parametrize("choice, optimizer, loss", [({}, torch.optim.AdamW, torch.nn.L1Loss),
                                                     ({"sgd": 1, "smooth_l1": 1, "onecycle": 1}, torch.optim.SGD,
                                                      torch.nn.SmoothL1Loss)])
def test_optimiser_loss_and_schedule_are_hyperparameters(choice, optimizer, loss):
    model = build(**choice)
    model.learn(batches())
    assert isinstance(model.optimizer, optimizer) and isinstance(model.criteria[0].regression, loss)
    expected = torch.optim.lr_scheduler.OneCycleLR if choice else torch.optim.lr_scheduler.CosineAnnealingLR
    assert isinstance(model.scheduler, expected) and model.total_steps == 2 * 4


def _write_imagenet_like_state_dict(path):
    """A real torchvision MobileNetV3-Large state dict (random weights, seed 7) written by the test
    itself: ImageNet weights cannot be downloaded on this project's machines."""
    torch.manual_seed(7)
    state = mobilenet_v3_large(weights=None).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def test_pretrained_weights_come_from_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("LEMUR_OFFLINE", "1")
    monkeypatch.delenv("MOBILEAGENET_WEIGHTS", raising=False)
    name = os.path.basename(MobileNet_V3_Large_Weights.IMAGENET1K_V2.url)
    state = _write_imagenet_like_state_dict(tmp_path / "torch" / "hub" / "checkpoints" / name)
    model = build(pretrained=1)
    for key, value in model.features.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, state[f"features.{key}"]), key


def test_pretrained_weights_from_a_file_named_by_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILEAGENET_WEIGHTS", str(tmp_path / "mnv3.pth"))
    state = _write_imagenet_like_state_dict(tmp_path / "mnv3.pth")
    model = build(pretrained=1)
    assert torch.equal(model.features[0][0].weight, state["features.0.0.weight"])


def test_pretrained_without_weights_is_a_recorded_failure(root, utk_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch"))
    monkeypatch.setenv("LEMUR_OFFLINE", "1")
    monkeypatch.delenv("MOBILEAGENET_WEIGHTS", raising=False)
    assert run(root, utk_dir, "-c", CONFIG, "-t", "1", "-a", "1", "--pretrained", "1") == 1
    trial = api.trials(db=root / "db" / "ab.nn.db").iloc[0]
    assert trial.status == "failed" and trial.prm["pretrained"] == 1
    assert trial.error.startswith("PretrainedWeightsUnavailable: pretrained=1 needs ImageNet weights")
    assert "mobilenet_v3_large" in trial.error.splitlines()[0]
