"""Shared by the photo-to-age tests: a small convolutional age model saved and exported exactly as a
trial's files are (``model.pth`` + ``meta.json``, ONNX with the export's metadata, TFLite fp32
converted by onnx2tf in the deployment worker), scenes made of real UTKFace faces pasted on a
generated background (``ab.nn.face.scenes``), and the alignment template measured on a few real
training crops."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

from ab.nn.face.scenes import background, paste  # noqa: F401 (used by the tests through this module)
from ab.nn.workspace import Workspace, active
from tests import helpers

MODEL_NAME = "PhotoAge"
CONFIG = f"age-regression_utkface_mae_{MODEL_NAME}"
SIZE = 64
TRIAL_ID = 7

PHOTO_AGE = '''"""A small CNN age regressor for the photo-to-age tests: convolutions, so that a wrong layout,
crop or normalisation changes its answer."""
import torch
from torch import nn


def supported_hyperparameters():
    return {"lr", "momentum"}


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        self.age_low, self.age_high = 0.0, 116.0
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(16 * (in_shape[2] // 8) ** 2, out_shape[0])

    def forward(self, x):
        z = self.head(self.features(x).flatten(1))
        return self.age_high * torch.sigmoid(z)

    def train_setup(self, prm):
        self.optimizer = torch.optim.SGD(self.parameters(), lr=prm["lr"], momentum=prm["momentum"])

    def learn(self, train_data):
        for x, y in train_data:
            self.optimizer.zero_grad()
            (self(x) - y).abs().mean().backward()
            self.optimizer.step()
'''


@contextmanager
def installed(root: Path):
    """The test model in the workspace ``root`` (its nn/ folder), and that workspace active while the
    tests of a module run (``ab.nn.workspace.active``): the registry finds the model a trial folder names."""
    helpers.write_model(root, MODEL_NAME, PHOTO_AGE)
    with active.use(Workspace.resolve(root)):
        yield root


def make_trial_folder(folder: Path, tflite: bool = True) -> Path:
    """A trial folder like ``--save_pth_weights --export onnx,tflite-fp32`` leaves (inside ``installed``)."""
    import torch

    from ab.nn import registry
    from ab.nn.config import Config
    from ab.nn.dataset import utkface
    from ab.nn.dataset.identity import DataIdentity
    from ab.nn.dataset.settings import DataSettings
    from ab.nn.deploy import worker
    from ab.nn.deploy.onnx_export import export_onnx
    from ab.nn.deploy.pipeline import metadata_for
    from ab.nn.transform._pipeline import ImagePipeline
    from ab.nn import checkpoint

    torch.manual_seed(0)
    in_shape = (1, 3, SIZE, SIZE)
    module = registry.load(registry.MODEL, MODEL_NAME)
    net = module.Net(in_shape, (1,), {"lr": 0.01, "momentum": 0.9}, torch.device("cpu")).eval()
    config = Config.parse(CONFIG)
    prm = {"lr": 0.01, "momentum": 0.9, "batch": 16, "transform": f"norm_{SIZE}"}
    data = SimpleNamespace(eval=SimpleNamespace(transform=ImagePipeline(utkface.IMAGENET_NORM, SIZE)),
                           identity=DataIdentity("utkface", DataSettings()))
    checkpoint.save(net, folder, config=config, prm=prm, in_shape=in_shape, out_shape=(1,), trial_id=TRIAL_ID,
                    preprocess=checkpoint.preprocessing(net, data, in_shape))
    metadata = metadata_for(config, TRIAL_ID, in_shape, data, net)
    export_onnx(net, in_shape, folder / "model.onnx", metadata=metadata)
    if tflite:
        result = worker.run({"kind": "convert", "onnx": str(folder / "model.onnx"), "out_dir": str(folder),
                             "precisions": ["fp32"], "calibration": None, "mean": list(utkface.IMAGENET_NORM[0]),
                             "std": list(utkface.IMAGENET_NORM[1])}, timeout=600)
        assert "path" in result["results"]["fp32"], result
    return folder


def real_crops(folder: Path, count: int, seed: int = 0) -> list[Path]:
    files = sorted((Path(folder) / "UTKFace").glob("*.jpg")) or sorted(Path(folder).glob("*.jpg"))
    chosen = np.random.default_rng(seed).choice(len(files), count, replace=False)
    return [files[i] for i in sorted(chosen)]


def real_data_or_skip() -> Path:
    """The real images, for module-scoped fixtures (same rule as the ``real_utkface`` fixture)."""
    import os

    import pytest

    from tests.conftest import REAL_DATA

    folder = Path(REAL_DATA).expanduser() if REAL_DATA else None
    if folder is None or not folder.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must provide the real UTKFace images: {helpers.REAL_DATA_MISSING}")
        pytest.skip(helpers.REAL_DATA_MISSING)
    return folder


def generated_template():
    """A template of made-up numbers, for tests in which no face is ever aligned."""
    from ab.nn.face.template import summarise

    points = np.array([[57, 58], [137, 58], [97, 104], [97, 145], [18, 77], [179, 76]], float)
    return summarise(points[None] + np.zeros((3, 6, 2)), "blazeface-back", {"source": "generated for a test"})


def scenes(folder: Path, real: Path) -> dict[str, list[tuple[float, float, float, float]]]:
    """``one.jpg`` (one real face) and ``two.jpg`` (two) in ``folder``; the pasted crops' extents."""
    folder.mkdir(parents=True, exist_ok=True)
    crops = [Image.open(p).convert("RGB") for p in real_crops(real, 3, seed=21)]
    layout = {"one.jpg": [(crops[0], 230, 200, 120, 10.0)],
              "two.jpg": [(crops[1], 200, 40, 60, -12.0), (crops[2], 160, 400, 230, 16.0)]}
    extents = {}
    for name, faces in layout.items():
        scene = background(seed=len(faces))
        extents[name] = []
        for crop, side, left, top, angle in faces:
            matrix = paste(scene, crop, side, left, top, angle)
            corners = np.array([[0, 0], [200, 0], [200, 200], [0, 200]], float) @ matrix[:, :2].T + matrix[:, 2]
            extents[name].append((*corners.min(axis=0), *corners.max(axis=0)))
        scene.save(folder / name, quality=95)
    return extents


def iou(a, b) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
