"""Fit an AgeMoE mixture of named experts on the validation split, evaluate it on validation and
test next to every expert, record it as a trial of ``<task>_<dataset>_mae_AgeMoE`` and save the
fitted fusion as a small reusable file."""
from __future__ import annotations

import inspect
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ab.nn import registry
from ab.nn.config import MIXTURE_NN, Config
from ab.nn.dataset import trial_data
from ab.nn.dataset.settings import DataSettings
from ab.nn.moe import fusion as fusion_module
from ab.nn.moe.experts import SPLITS, Expert, ExpertError, Predictions, resolve
from ab.nn.moe.fusion import AgeMoE
from ab.nn.dataset.identity import PARTS
from ab.nn.stat import mirror
from ab.nn.stat.schema import Fusion
from ab.nn.stat.states import COMPLETE, FAILED
from ab.nn.stat.store import StatStore
from ab.nn.stat.uncertainty import bootstrap_mae
from ab.nn.sweep.trial_spec import describe_error
from ab.nn.util import system
from ab.nn.util.digest import sha256_of
from ab.nn.workspace import Workspace

log = logging.getLogger(__name__)

CONFIG = Config("age-regression", "utkface", "mae", MIXTURE_NN)
FILE = "agemoe.pt"


@dataclass
class MixtureResult:
    trial_id: int
    path: Path
    names: list[str]
    metrics: dict[str, dict[str, dict[str, float]]]  # split -> member name (experts, "AgeMoE") -> values


def evaluate(predicted: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Every stored metric of the config, through the metric modules themselves."""
    values: dict[str, float] = {}
    out, true = torch.as_tensor(predicted).reshape(-1, 1), torch.as_tensor(labels).reshape(-1, 1)
    for name in ("mae", "age-groups"):
        metric = registry.load(registry.METRIC, name).create_metric((1,))
        metric(out, true)
        values[f"metric_{name}"] = metric.result()
        values.update(metric.values())
    return values


def _aligned(predictions: list[Predictions], names: list[str]) -> None:
    first = predictions[0]
    for expert, other in zip(names[1:], predictions[1:]):
        for split in SPLITS:
            if split in first.images and other.images.get(split) != first.images[split]:
                raise ExpertError(f"expert {expert} saw other {split} images than {names[0]}: both must use the "
                                  f"same dataset, split and --max-samples")


def fit(references: list[str], workspace: Workspace, settings: DataSettings, calibrator: str = "mlp",
        spread: bool = False, steps: int = 800, seed: int = 0, progress: bool = True) -> MixtureResult:
    """Fit on the validation part of the data ``settings`` select (every expert must have been judged
    on exactly that data), record the mixture as a trial (failed, with the reason, if fitting fails)."""
    if len(references) < 2:
        raise ExpertError(f"a mixture needs at least two experts, got {len(references)}")
    identity = trial_data.identify(CONFIG, workspace, settings)
    experts: list[Expert] = [resolve(r, workspace, identity.key) for r in references]
    names = [e.name for e in experts]
    if len(set(names)) != len(names):
        raise ExpertError(f"each expert must be named once, got {names}")
    for expert in experts:
        expert.check(identity)
    store = StatStore(workspace.db_url)
    trial_id = _reserve(store, identity, seed)
    try:
        result = _fit(store, trial_id, experts, workspace, identity, calibrator, spread, steps, seed, progress)
    except BaseException as error:
        store.finish_trial(trial_id, FAILED, error=describe_error(error))
        raise
    finally:
        try:
            mirror.flush(workspace.db_url, workspace.stat_train_dir)  # a failing entry stays queued, logged
        except Exception as error:  # the mirror never decides the mixture's outcome
            log.warning("JSON mirror not written (`python -m ab.nn.stat check --repair` writes it): %s", error)
    return result


def _reserve(store: StatStore, identity, seed: int) -> int:
    store.save_code(registry.MODEL, CONFIG.nn, inspect.getsource(fusion_module))
    store.save_code(registry.METRIC, CONFIG.metric)
    digests = {f"{part}_digest": (identity.digests or {}).get(part) for part in PARTS}
    return store.reserve_trial(CONFIG, 1, None, data_key=identity.key, split=identity.settings.label,
                               split_seed=identity.settings.split_seed, max_samples=identity.settings.max_samples,
                               seed=seed, host=system.host(), pid=os.getpid(), **digests)


def _fit(store: StatStore, trial_id: int, experts: list[Expert], workspace: Workspace, identity, calibrator: str,
         spread: bool, steps: int, seed: int, progress: bool) -> MixtureResult:
    started = time.time_ns()
    names = [e.name for e in experts]
    predictions = [e.predict(workspace, identity) for e in tqdm(experts, desc="expert predictions", unit="expert",
                                                                 disable=not progress, leave=False)]
    _aligned(predictions, names)
    stack = {s: np.stack([p.ages[s] for p in predictions], axis=1) for s in SPLITS if s in predictions[0].ages}
    labels = {s: predictions[0].labels[s] for s in stack}
    if "eval" not in stack:
        raise ExpertError("the split has no validation part to fit the mixture on")
    model = AgeMoE(len(experts), calibrator=calibrator, spread=spread)
    model.fit(stack["eval"], labels["eval"], steps=steps, seed=seed, progress=progress)
    metrics = {s: {name: evaluate(stack[s][:, i], labels[s]) for i, name in enumerate(names)} for s in stack}
    fused = {split: model.predict(stack[split]) for split in stack}
    for split in stack:
        metrics[split]["AgeMoE"] = evaluate(fused[split], labels[split])
    prm = {"experts": ",".join(names), "calibrator": calibrator, "spread": int(spread), "steps": steps}
    store.assign_trial(trial_id, number=None, optuna_trial_id=None, prm=prm,
                       **{f"n_{split}": len(values) for split, values in labels.items()})
    evaluation = metrics["eval"]["AgeMoE"]
    stat_id = store.record_epoch(trial_id, 1, accuracy=evaluation["metric_mae"], duration=time.time_ns() - started,
                                 metrics=evaluation, train_stat={"epoch_max": 1})
    for split in stack:
        store.record_predictions(trial_id, split, labels[split], fused[split], predictions[0].images[split])
    if "test" in metrics:
        store.record_test(trial_id, stat_id, metrics["test"]["AgeMoE"]["metric_mae"], metrics["test"]["AgeMoE"],
                          bootstrap_mae(np.abs(fused["test"] - labels["test"])))
    path = model.save(workspace.trial_dir(CONFIG.name, trial_id) / FILE, [e.describe() for e in experts])
    parameters = {k: v.tolist() for k, v in model.state_dict().items()}
    with store.transaction() as session:
        session.add(Fusion(trial_id=trial_id, experts=json.dumps([e.describe() for e in experts]),
                           settings=json.dumps(model.settings | {"steps": steps, "seed": seed,
                                                                 "expert_metrics": _experts_only(metrics)}),
                           parameters=json.dumps(parameters), path=str(path), sha256=sha256_of(path)))
    store.finish_trial(trial_id, COMPLETE, bookkeeping_seconds=store.seconds)
    return MixtureResult(trial_id, path, names, metrics)


def _experts_only(metrics) -> dict:
    return {split: {name: values for name, values in members.items() if name != "AgeMoE"}
            for split, members in metrics.items()}
