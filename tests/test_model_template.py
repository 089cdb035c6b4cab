"""The torchvision comparison models are what their template writes (ab/nn/nn_template.py), byte for byte;
each table row describes its model truly; a new row is a working, self-contained model file."""
import ast

import pytest
import torch
import torchvision
from torch import nn

from ab.nn import nn_template, registry
from ab.nn.workspace import Workspace, active
from tests.test_model_contract import check_contract

SELF_CONTAINED = {"math", "numbers", "os", "pathlib", "torch", "torch.nn.functional", "torchvision.models"}
"""Everything a generated file may import: LEMUR copies model files one by one."""


def test_the_generated_model_files_are_what_their_template_writes():
    differ = [path.name for path in nn_template.stale()]
    assert not differ, (f"ab/nn/nn/{', '.join(differ)} differ from their template: edit ab/nn/nn_template.py, "
                        f"not the generated file, then run {nn_template.COMMAND}")


def test_a_changed_or_missing_file_is_found_and_written_again(tmp_path):
    assert len(nn_template.write(tmp_path)) == len(nn_template.BACKBONES) and nn_template.stale(tmp_path) == []
    edited, deleted = tmp_path / "ResNet18.py", tmp_path / "ShuffleNetV2.py"
    edited.write_text(edited.read_text().replace("nn.Linear(512, outputs)", "nn.Linear(512, outputs, bias=False)"))
    deleted.unlink()
    assert sorted(nn_template.stale(tmp_path)) == sorted([edited, deleted])
    assert sorted(nn_template.write(tmp_path)) == sorted([edited, deleted]) and nn_template.stale(tmp_path) == []
    for path, text in nn_template.generated(tmp_path).items():
        assert path.read_text() == text
        imported = {node.module if isinstance(node, ast.ImportFrom) else alias.name
                    for node in ast.walk(ast.parse(text)) if isinstance(node, (ast.Import, ast.ImportFrom))
                    for alias in node.names}
        assert imported <= SELF_CONTAINED, path.name


@pytest.mark.parametrize("backbone", nn_template.BACKBONES, ids=lambda b: b.name)
def test_each_row_describes_its_model(backbone):
    """The row's weights enum, feature width and parameter count are the built model's."""
    assert torchvision.models.get_model_weights(backbone.constructor).__name__ == backbone.weights
    torch.manual_seed(0)
    net = registry.load(registry.MODEL, backbone.name).Net((1, 3, 64, 64), (1,), {"pretrained": 0, "head": "regression"},
                                                           torch.device("cpu")).eval()
    assert net.head[-1].in_features == backbone.features
    assert isinstance(getattr(net.backbone, backbone.classifier), nn.Identity)
    assert not [m for m in net.backbone.modules() if isinstance(m, nn.Linear) and m.out_features == 1000], \
        "torchvision's ImageNet classifier must be gone"
    millions = sum(p.numel() for p in net.parameters()) / 1e6
    assert f"{millions:.2f}" == f"{backbone.parameters:.2f}", f"{backbone.name}: parameters={millions:.2f}"
    with torch.no_grad():
        assert net(torch.randn(2, 3, 64, 64)).shape == (2, 1)


def test_one_row_adds_a_working_model(tmp_path):
    """A sixth backbone from one row, in a workspace's nn/ folder: it meets the model contract alone."""
    row = nn_template.Backbone("MobileNetV3S", "MobileNetV3-Small", 'Howard et al., "Searching for MobileNetV3", '
                               "ICCV 2019.", "mobilenet_v3_small", "MobileNet_V3_Small_Weights", "classifier", 576,
                               0.93)
    ws = Workspace.resolve(tmp_path / "ws")
    (ws.root / "nn").mkdir(parents=True)
    (ws.root / "nn" / f"{row.name}.py").write_text(nn_template.render(row))
    with active.use(ws):
        test_each_row_describes_its_model(row)
        check_contract(row.name, tmp_path)
