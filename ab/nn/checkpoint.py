"""Trained weights of a trial on disk: LEMUR's plain ``state_dict`` (``model.pth``) and
``meta.json`` with what it takes to rebuild the model (config, prm, shapes) and to feed it
(``preprocessing``: input size, layout, colour order, scaling, mean/std, age range, the face
alignment template and the data it was judged on), as torchvision's ``Weights.meta`` does."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ab.nn import registry
from ab.nn.config import Config

WEIGHTS = "model.pth"
META = "meta.json"


CROP_SIZE = 200  # UTKFace's aligned crops: what images are resized from


def preprocessing(model, data, in_shape, template_path: Path | None = None) -> dict:
    """How to feed the model and read it: every consumer (load_model, ONNX metadata, predict, the
    bundle) reads these same keys."""
    transform = getattr(data.eval, "transform", None)
    mean, std = getattr(transform, "mean", None), getattr(transform, "std", None)
    low, high = getattr(model, "age_low", None), getattr(model, "age_high", None)
    out = {"input_size": int(in_shape[-1]), "input_shape": list(in_shape), "layout": "NCHW", "color": "RGB",
           "scale": 255, "mean": list(mean) if mean is not None else None, "std": list(std) if std is not None else None,
           "resize": f"PIL bilinear from the {CROP_SIZE}x{CROP_SIZE} aligned crop", "crop_size": CROP_SIZE,
           "age_range": [low, high] if low is not None and getattr(model, "bounded", True) else None,
           "split": data.identity.settings.label, "data_key": data.identity.key, "align_template": None}
    if template_path is not None and Path(template_path).is_file():
        out["align_template"] = json.loads(Path(template_path).read_text())
    return out


def save(model: torch.nn.Module, folder: Path, *, config: Config, prm: dict, in_shape, out_shape,
         trial_id: int | None = None, preprocess: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"config": config.name, "prm": prm, "in_shape": list(in_shape), "out_shape": list(out_shape),
            "trial_id": trial_id, "preprocessing": preprocess}
    (folder / META).write_text(json.dumps(meta, indent=1, default=str))
    torch.save(model.state_dict(), folder / WEIGHTS)
    return folder / WEIGHTS


def without_pretrained(prm: dict) -> dict:
    """A trial's hyperparameters for building it again: its weights come from the trial, so nothing
    is downloaded."""
    return dict(prm, pretrained=0) if "pretrained" in prm else dict(prm)


def load(folder: Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild a trial's model from its folder: ``(model in eval mode, meta)``; the model carries
    ``model.preprocessing`` (``meta["preprocessing"]``; ``None`` for checkpoints older than it)."""
    meta = json.loads((Path(folder) / META).read_text())
    config = Config.parse(meta["config"])
    module = registry.load(registry.MODEL, config.nn)
    prm = without_pretrained(meta["prm"])
    model = module.Net(tuple(meta["in_shape"]), tuple(meta["out_shape"]), prm, torch.device(device))
    state = torch.load(Path(folder) / WEIGHTS, map_location=device, weights_only=True)
    model.load_state_dict(state, strict=True)
    model.preprocessing = meta.get("preprocessing")
    return model.to(device).eval(), meta


def folder_of(workspace, trial) -> Path:
    """The artifact folder of a recorded trial (a mapping with ``id`` and ``config``):
    ``out/<config>/<trial id>/``. Trials recorded before ids named folders used Optuna's number; such a
    folder is found by its ``meta.json``, which names the trial id."""
    folder = workspace.trial_dir(trial["config"], int(trial["id"]))
    if folder.exists() or not folder.parent.is_dir():
        return folder
    for legacy in sorted(folder.parent.iterdir()):
        try:
            if json.loads((legacy / META).read_text()).get("trial_id") == int(trial["id"]):
                return legacy
        except (OSError, ValueError, AttributeError):
            continue
    return folder
