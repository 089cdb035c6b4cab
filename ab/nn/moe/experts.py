"""Experts of a mixture: trained trials from the database (rebuilt from their checkpoints) and
external age models given as an ONNX file plus a small JSON spec.

Expert references on the command line:
  ``trial:<id>``        a trial of the database (its ``out/<config>/<trial id>/model.pth``)
  ``best:<config>``     the best trial of a config that has a checkpoint
  ``onnx:<model.onnx>`` an external model; its spec is ``<model>.json`` beside it, or
                        ``onnx:<model.onnx>:<spec.json>``

An ONNX spec says how to feed the model and read its answer::

  {"name": "my-age-net", "input_size": 224, "layout": "NCHW", "color": "RGB", "scale": 255,
   "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "output": "scalar"}

``scale`` divides the 0-255 pixels first; ``output`` is ``scalar`` (the age) or ``distribution``
(scores over ``ages``, a list of bin ages; ``softmax: true`` if they are logits): the age is then
the expectation.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ab.nn import checkpoint
from ab.nn.config import Config
from ab.nn.dataset import trial_data, utkface
from ab.nn.dataset.identity import DataIdentity
from ab.nn.face.aligner import TemplateAlignment
from ab.nn.stat import frames, ranking
from ab.nn.transform._pipeline import ImagePipeline
from ab.nn.workspace import Workspace

SPLITS = ("eval", "test")


class ExpertError(ValueError):
    """An expert that cannot be used; the message says which and why."""


@dataclass
class Predictions:
    """Ages of one expert per split, with the content ids of the images they belong to (alignment)."""

    images: dict[str, list[str]] = field(default_factory=dict)
    ages: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class OnnxSpec:
    name: str
    input_size: int
    layout: str = "NCHW"
    color: str = "RGB"
    scale: float = 255.0
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    output: str = "scalar"
    ages: tuple[float, ...] = ()
    softmax: bool = False

    @classmethod
    def from_file(cls, path: Path, default_name: str) -> "OnnxSpec":
        try:
            values = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise ExpertError(f"cannot read the ONNX expert spec {path}: {error}") from None
        values.setdefault("name", default_name)
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ExpertError(f"{path}: unknown spec keys {sorted(unknown)}")
        spec = cls(**values)
        if spec.layout not in ("NCHW", "NHWC") or spec.color not in ("RGB", "BGR"):
            raise ExpertError(f"{path}: layout must be NCHW or NHWC and color RGB or BGR")
        if spec.output not in ("scalar", "distribution") or (spec.output == "distribution" and not spec.ages):
            raise ExpertError(f"{path}: output must be 'scalar', or 'distribution' with its bin 'ages'")
        return spec

    def preprocess(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) RGB -> the model's float32 input."""
        x = pixels.astype(np.float32) / float(self.scale)
        if self.color == "BGR":
            x = x[..., ::-1]
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if self.layout == "NCHW" else x)

    def to_age(self, output: np.ndarray) -> np.ndarray:
        if self.output == "scalar":
            return output.reshape(output.shape[0], -1)[:, 0].astype(np.float32)
        scores = output.reshape(output.shape[0], -1).astype(np.float64)
        if self.softmax:
            scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores = scores / scores.sum(axis=1, keepdims=True)
        return (scores @ np.asarray(self.ages, np.float64)).astype(np.float32)


class Expert:
    name: str

    def describe(self) -> dict:
        raise NotImplementedError

    def check(self, identity: DataIdentity) -> None:
        """Refuse (``DataMismatch``) when the expert was judged on other data than ``identity``."""

    def predict(self, workspace: Workspace, identity: DataIdentity) -> Predictions:
        """Ages on the eval and test parts of the data ``identity`` names."""
        raise NotImplementedError


class TrialExpert(Expert):
    """A trained trial: its stored per-image predictions when it has them (exact, no model run),
    else its checkpoint run again on the rebuilt, digest-checked data."""

    def __init__(self, trial: dict, workspace: Workspace):
        self.trial = trial
        self.folder = checkpoint.folder_of(workspace, trial)
        self.name = f"{Config.parse(trial['config']).nn}#{int(trial['id'])}"
        self.stored = frames.predictions(trial_id=int(trial["id"]), db=workspace.db_url)
        if self.stored.empty and not (self.folder / checkpoint.WEIGHTS).exists():
            raise ExpertError(f"trial {int(trial['id'])} ({trial['config']}) has neither stored predictions nor a "
                              f"checkpoint in {self.folder}; train with --save-pth-weights")

    def describe(self) -> dict:
        return {"kind": "trial", "trial_id": int(self.trial["id"]), "config": self.trial["config"],
                "name": self.name}

    def check(self, identity: DataIdentity) -> None:
        identity.require_same(trial_data.recorded_identity(self.trial), f"expert {self.name}")

    def predict(self, workspace: Workspace, identity: DataIdentity) -> Predictions:
        self.check(identity)
        wanted = [split for split in SPLITS if split == "eval" or (identity.counts or {}).get(split, 1)]
        splits = set(self.stored.split) if not self.stored.empty else set()
        if set(wanted) <= splits and self.stored.image_id.notna().all():
            return self._stored(wanted)
        return self._rerun(workspace, identity)

    def _stored(self, splits) -> Predictions:
        out = Predictions()
        for split in splits:
            rows = self.stored[self.stored.split == split].sort_values("position")
            out.images[split] = list(rows.image_id)
            out.ages[split] = rows.predicted.to_numpy(np.float32)
            out.labels[split] = rows.age.to_numpy(np.float32)
        return out

    def _rerun(self, workspace: Workspace, identity: DataIdentity) -> Predictions:
        model, meta = checkpoint.load(self.folder)
        data = trial_data.load_judged(self.trial, workspace, meta["prm"]["transform"], identity.settings)
        out = Predictions()
        for split in SPLITS:
            dataset = data.eval if split == "eval" else data.test
            if dataset is None:
                continue
            ages, labels = [], []
            with torch.inference_mode():
                for x, y in DataLoader(dataset, batch_size=128):
                    ages.append(model(x).reshape(-1).float().numpy())
                    labels.append(y.reshape(-1).numpy())
            out.images[split] = list(getattr(dataset, "image_ids", None) or range(len(dataset)))
            out.ages[split], out.labels[split] = np.concatenate(ages), np.concatenate(labels)
        return out


class OnnxExpert(Expert):
    def __init__(self, path: Path, spec: OnnxSpec):
        if not path.is_file():
            raise ExpertError(f"no ONNX file at {path}")
        self.path, self.spec, self.name = path, spec, spec.name

    def describe(self) -> dict:
        return {"kind": "onnx", "path": str(self.path), "spec": self.spec.__dict__ | {"ages": list(self.spec.ages)},
                "name": self.name}

    def predict(self, workspace: Workspace, identity: DataIdentity) -> Predictions:
        from ab.nn.deploy.runtimes import OnnxRuntime

        pipeline = ImagePipeline(utkface.IMAGENET_NORM, self.spec.input_size)
        parts = utkface.load(workspace.dataset_dir(utkface.NAME), workspace.cache_dir(utkface.NAME), pipeline,
                             pipeline, identity.settings, alignment=TemplateAlignment(workspace.face_template_path))
        if dict(parts.digests) != dict(identity.digests or parts.digests):
            raise ExpertError(f"expert {self.name}: the images changed while the mixture was being fitted")
        session = OnnxRuntime(self.path, threads=torch.get_num_threads()).session
        out = Predictions()
        for split, dataset in (("eval", parts.eval), ("test", parts.test)):
            if len(dataset) == 0:
                continue
            pixels = dataset.pixels()
            ages = [self.spec.to_age(session.run(None, {session.get_inputs()[0].name:
                                                        self.spec.preprocess(pixels[i:i + 128])})[0])
                    for i in range(0, len(pixels), 128)]
            out.images[split], out.ages[split] = list(dataset.image_ids), np.concatenate(ages)
            out.labels[split] = np.asarray(dataset.ages, np.float32)
        return out


def resolve(reference: str, workspace: Workspace, data_key: str) -> Expert:
    """An expert from its reference; ``best:`` picks among trials judged on ``data_key``."""
    kind, _, rest = reference.partition(":")
    if kind == "trial" and rest.isdigit():
        try:
            return TrialExpert(frames.trial(int(rest), db=workspace.db_url), workspace)
        except LookupError as error:
            raise ExpertError(str(error)) from None
    if kind == "best" and rest:
        for row in ranking.ranked_trials(config=rest, data_key=data_key, db=workspace.db_url).to_dict("records"):
            try:
                return TrialExpert(row, workspace)
            except ExpertError:
                continue
        raise ExpertError(f"no trained trial of {rest} on data key {data_key} with stored predictions or a "
                          f"checkpoint (see python -m ab.nn.stat keys)")
    if kind == "onnx" and rest:
        model, _, spec = rest.partition(":")
        model_path = Path(model).expanduser()
        spec_path = Path(spec).expanduser() if spec else model_path.with_suffix(".json")
        return OnnxExpert(model_path, OnnxSpec.from_file(spec_path, model_path.stem))
    raise ExpertError(f"expert {reference!r}: use trial:<id>, best:<config> or onnx:<model.onnx>[:<spec.json>]")
