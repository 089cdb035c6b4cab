"""Every model file honours the LEMUR contract, the package's (ab/nn/nn/) and the workspace's (<root>/nn/,
the workspace of $LEMUR_ROOT or the current directory when the tests are collected): a contributor's
new file is covered without editing this test. It builds from (in_shape, out_shape, prm, device),
answers (B, 1) ages, trains a step that changes its weights, and exports to ONNX that onnxruntime runs
alike."""
import copy

import numpy as np
import onnx
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ab.nn import registry
from ab.nn.deploy.onnx_export import export_onnx
from ab.nn.deploy.runtimes import OnnxRuntime
from ab.nn.workspace import Workspace, active
from tests import helpers

SIZE = 64
WORKSPACE = Workspace.resolve()
with active.use(WORKSPACE):
    MODELS = registry.names(registry.MODEL)


def prm_for(module) -> dict:
    prm = {name: 0.5 for name in module.supported_hyperparameters()}
    prm.update(lr=1e-3, momentum=0.9, dropout=0.1, pretrained=0, epoch_max=2, batch=4, transform="norm_64")
    return {k: v for k, v in prm.items() if k in module.supported_hyperparameters() or k in ("epoch_max", "batch",
                                                                                             "transform")}


def build(name):
    module = registry.load(registry.MODEL, name)  # under the workspace the caller made active
    torch.manual_seed(0)
    return module.Net((1, 3, SIZE, SIZE), (1,), prm_for(module), torch.device("cpu")), module


def batches():
    torch.manual_seed(1)
    data = TensorDataset(torch.randn(8, 3, SIZE, SIZE), torch.tensor([[3.0], [12.0], [25.0], [31.0], [44.0],
                                                                      [52.0], [67.0], [80.0]]))
    return DataLoader(data, batch_size=4)


def calibrate_batchnorm(model):
    """An untrained network keeps BatchNorm's initial statistics, and its eval-mode outputs then
    swing with float round-off; estimate them on a few batches so the ONNX comparison is fair."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for seed in range(4):
            model(torch.randn(8, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)) * 0.5)
    model.eval()


def test_the_zoo_has_the_comparison_models():
    assert {"MobileAgeNet", "ResNet18", "ResNet50", "EfficientNetB0", "MobileNetV2", "ShuffleNetV2", "SSRNet",
            "C3AE"} <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_contract(name, tmp_path):
    with active.use(WORKSPACE):
        check_contract(name, tmp_path)


def test_a_workspace_model_file_is_covered(tmp_path):
    ws = Workspace.resolve(tmp_path / "ws")
    (ws.root / "nn").mkdir(parents=True)
    (ws.root / "nn" / "WorkspaceTiny.py").write_text(helpers.TINY_MODEL)
    with active.use(ws):
        assert "WorkspaceTiny" in registry.names(registry.MODEL)
        assert registry.origin(registry.MODEL, "WorkspaceTiny") == registry.WORKSPACE
        check_contract("WorkspaceTiny", tmp_path)


def check_contract(name, tmp_path):
    model, module = build(name)
    assert module.__doc__ and len(module.__doc__.strip()) > 40, "a docstring naming the source"
    hyper = module.supported_hyperparameters()
    assert isinstance(hyper, set) and {"lr"} <= hyper
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(3, 3, SIZE, SIZE))
    assert out.shape == (3, 1) and torch.isfinite(out).all()

    model.train_setup(prm_for(module))
    assert getattr(model, "optimizer", None) is not None and getattr(model, "criteria", None)
    before = copy.deepcopy(model.state_dict())
    model.train()
    model.learn(batches())
    changed = [k for k, v in model.state_dict().items() if v.dtype.is_floating_point and not torch.equal(before[k], v)]
    assert changed, "one learn() call must change the weights"

    calibrate_batchnorm(model)
    path = export_onnx(model, (1, 3, SIZE, SIZE), tmp_path / f"{name}.onnx")
    onnx.checker.check_model(onnx.load(str(path)))
    x = np.random.default_rng(2).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32) * 0.5
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).reshape(-1).numpy()
    got = OnnxRuntime(path, 1).predict(x)
    assert got.shape == (2,) and np.abs(got - expected).max() < 0.05
