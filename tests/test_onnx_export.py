"""PyTorch -> ONNX with TorchScript's exporter first (about 1 s where torch.export's took 17 s for
MobileAgeNet) and torch.export's where it fails; the file says which made it, and both give the model's
ages."""
import numpy as np
import pytest
import torch

from ab.nn.deploy import onnx_export, options
from ab.nn.deploy.runtimes import OnnxRuntime


class Differences(torch.nn.Module):
    """``torch.diff`` has no TorchScript ONNX symbolic; torch.export decomposes it."""

    def forward(self, x):
        return torch.diff(x, dim=1).mean(dim=(1, 2, 3)).unsqueeze(1)


class Pooled(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x).mean(dim=(1, 2, 3)).unsqueeze(1) + 30.0


def _ages(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).reshape(-1).numpy()


def test_the_torchscript_exporter_comes_first_and_either_gives_the_same_ages(tmp_path):
    torch.manual_seed(0)
    model = Pooled().eval()
    x = np.random.default_rng(0).standard_normal((5, 3, 16, 16)).astype(np.float32)  # a batch of 5: dynamic
    path, exporter = onnx_export.export(model, (1, 3, 16, 16), tmp_path / "a.onnx", metadata={"model": "Pooled"})
    assert exporter == f"torch.onnx (torchscript) {torch.__version__}"
    other, by = onnx_export.export(model, (1, 3, 16, 16), tmp_path / "b.onnx", exporters=("dynamo",))
    assert "(dynamo)" in by
    for file in (path, other):
        assert np.abs(OnnxRuntime(file, 1).predict(x) - _ages(model, x)).max() < 1e-4


def test_a_model_torchscript_cannot_export_is_exported_by_dynamo(tmp_path):
    model = Differences().eval()
    x = np.random.default_rng(1).standard_normal((3, 3, 8, 8)).astype(np.float32)
    path, exporter = onnx_export.export(model, (1, 3, 8, 8), tmp_path / "m.onnx")
    assert "(dynamo)" in exporter
    assert np.abs(OnnxRuntime(path, 1).predict(x) - _ages(model, x)).max() < 1e-4
    with pytest.raises(RuntimeError, match="every exporter:\ntorchscript: UnsupportedOperatorError"):
        onnx_export.export(model, (1, 3, 8, 8), tmp_path / "t.onnx", exporters=("torchscript",))
    assert not (tmp_path / "t.onnx").exists()


class Branching(torch.nn.Module):
    """Python control flow on a tensor's value: the tracer would keep the example's branch."""

    def forward(self, x):
        mean = x.mean(dim=(1, 2, 3)).unsqueeze(1)
        return mean + 40.0 if bool(mean.sum() > 0) else mean + 20.0


class Constants(torch.nn.Module):
    def forward(self, x):
        scale = torch.tensor([0.5, 1.0, 2.0])  # a tracer warning that happens to be harmless
        return (x * scale.view(1, 3, 1, 1)).mean(dim=(1, 2, 3)).unsqueeze(1)


def test_a_trace_the_tracer_warns_about_is_never_kept(tmp_path):
    path, exporter = onnx_export.export(Constants(), (1, 3, 8, 8), tmp_path / "c.onnx")
    assert "(dynamo)" in exporter  # torch.export's instead
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert np.abs(OnnxRuntime(path, 1).predict(x) - _ages(Constants(), x)).max() < 1e-5
    with pytest.raises(RuntimeError, match="torchscript: RuntimeError: the tracer warned: Converting a tensor to a "
                                           "Python boolean"):
        onnx_export.export(Branching(), (1, 3, 8, 8), tmp_path / "b.onnx")  # torch.export refuses it too


def test_the_exporter_is_chosen_by_name():
    assert options.parse_exporters("auto") == ("torchscript", "dynamo")
    assert options.parse_exporters("Dynamo") == ("dynamo",)
    with pytest.raises(ValueError, match="--onnx-exporter: 'jit' is not one of auto, torchscript, dynamo"):
        options.parse_exporters("jit")
    with pytest.raises(ValueError, match="unknown ONNX exporter"):
        onnx_export.export(Pooled(), (1, 3, 8, 8), "x.onnx", exporters=("jit",))
