"""One trial: load data, build the model, train ``epoch_max`` epochs, evaluate and record each one,
then evaluate the held-out test set once. A failure inside is recorded on the trial and returned,
never raised, so the sweep goes on.

The trial writes through a store and asks about pruning through a reporter: in the runner's process
(``--in-process``) the real ``StatStore`` and ``EpochReporter``; in a trial child
(``ab.nn.sweep.trial_child``) stand-ins that send each write and question to the runner, which applies
them. ``phase`` tells whoever watches the trial's time what it is doing (``setup``, ``learn``,
``evaluate``, ``test``, ``export``), and when an epoch's resume file is ``saved``.

The database layer (SQLAlchemy, pandas, Optuna) is imported only where the runner's own process needs it,
so that a trial child, which writes through its runner, starts without loading it; the other way round, the
spec and outcome a runner hands out and gets back live in ``ab.nn.sweep.trial_spec``, so that a runner
whose trials run in children never imports this module, nor torch."""
from __future__ import annotations

import copy
import logging
import math
import os
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ab.nn import checkpoint, registry
from ab.nn.dataset import trial_data
from ab.nn.deploy.options import FAILED as EXPORT_FAILED
from ab.nn.deploy.options import OK, PIPELINE, SKIPPED
from ab.nn.deploy.pipeline import Deployment, NetSource, metadata_for
from ab.nn.stat import constant_predictor
from ab.nn.stat.states import COMPLETE, DIVERGED, FAILED, INTERRUPTED, PRUNED, STOPPED, LeaseLost
from ab.nn.stat.uncertainty import bootstrap_mae
from ab.nn.sweep import resume, resume_file
from ab.nn.sweep.data_roll import DataRoll
from ab.nn.sweep.evaluate import evaluate
from ab.nn.sweep.trial_spec import SETUP_ERRORS, TrialOutcome, TrialSpec, describe_error, validation_gap
from ab.nn.util import faults, malloc, system
from ab.nn.util.macs import count_macs
from ab.nn.util.seeding import generator, seed_everything, worker_init

if TYPE_CHECKING:
    from ab.nn.stat.store import StatStore
    from ab.nn.sweep.search import EpochReporter

log = logging.getLogger(__name__)

EXTRA_METRICS = {"age-regression": ("mae", "age-groups")}
"""Metrics evaluated for a task whatever its config names: the raw MAE and the per-age-group
numbers are always stored, on the eval set every epoch and on the test set at the end."""


def good(accuracy: float, minimum_accuracy: float) -> bool:
    """LEMUR's gate: a trial continues while accuracy > 1.2 x the dataset's MINIMUM_ACCURACY."""
    return accuracy > 1.2 * minimum_accuracy


def _no_phase(name: str, epoch: int = 0) -> None:
    return None


def run_trial(spec: TrialSpec, on_trained: Callable[[TrialOutcome], None] | None = None, *,
              store: StatStore | None = None, reporter: EpochReporter | None = None,
              phase: Callable[[str, int], None] = _no_phase) -> TrialOutcome:
    """Train, record the outcome, call ``on_trained``, then export. ``store`` and ``reporter`` default to
    the real ones of ``spec`` (a trial child passes its stand-ins). A trial another runner reclaimed
    meanwhile (this runner's lease had lapsed) stops at its next write, recorded as that runner left it."""
    if store is None:
        from ab.nn.stat.store import StatStore
        store = StatStore(spec.db_url)
    if reporter is None:
        from ab.nn.sweep.search import EpochReporter
        reporter = EpochReporter(spec.link)
    try:
        outcome, trained = _train(spec, store, reporter, phase)
    except LeaseLost as lost:
        return TrialOutcome(lost.status or INTERRUPTED, error=str(lost))
    except Exception as error:
        from ab.nn.stat.engine import is_storage_error

        message = describe_error(error)
        if is_storage_error(error) and not isinstance(error, SETUP_ERRORS):  # nothing more can be recorded
            try:
                store.finish_trial(spec.trial_id, FAILED, error=message, fence=spec.lease_id)
            except Exception:
                pass
            raise
        store.finish_trial(spec.trial_id, FAILED, error=message, fence=spec.lease_id)
        return TrialOutcome(FAILED, error=message, fatal=isinstance(error, SETUP_ERRORS))
    if on_trained is not None:
        on_trained(outcome)
    if spec.export.enabled and outcome.status in spec.export.states:
        phase("export", outcome.epochs)
        try:
            _deploy(spec, store, outcome, *trained)
        except LeaseLost:
            pass  # another runner reclaimed the trial meanwhile: its artifacts are not recorded
    return outcome


def _loader(dataset, batch: int, shuffle: bool, spec: TrialSpec, device: torch.device,
            balance: str | None = None) -> DataLoader:
    """``balance`` (training only): draw the images with ``ab.nn.dataset.balance``'s weights, with
    replacement, as many per epoch as the part holds; else shuffled (training) or in order."""
    workers = getattr(dataset, "num_workers", spec.workers)
    sampler = None
    if balance:
        from torch.utils.data import WeightedRandomSampler

        from ab.nn.dataset import balance as balancing

        sampler = WeightedRandomSampler(torch.as_tensor(balancing.of_dataset(balance, dataset), dtype=torch.double),
                                        num_samples=len(dataset), replacement=True, generator=generator(spec.seed))
        shuffle = False
    return DataLoader(dataset, batch_size=batch, shuffle=shuffle, sampler=sampler, num_workers=workers,
                      collate_fn=getattr(dataset, "collate_fn", None), generator=generator(spec.seed),
                      worker_init_fn=partial(worker_init, parent=os.getpid()), persistent_workers=workers > 0,
                      pin_memory=device.type == "cuda")


def _loss_of(returned) -> float | None:
    """``learn`` may return nothing, a loss, or LEMUR's ``(train_accuracy, train_loss)``."""
    if isinstance(returned, (tuple, list)) and len(returned) == 2:
        returned = returned[1]
    if isinstance(returned, torch.Tensor) and returned.numel() == 1:
        returned = returned.item()
    return float(returned) if isinstance(returned, (int, float)) and not isinstance(returned, bool) else None


def _current_lr(model) -> float | None:
    optimizer = getattr(model, "optimizer", None)
    try:
        return float(optimizer.param_groups[0]["lr"])
    except (AttributeError, IndexError, KeyError, TypeError):
        return None


def _train(spec: TrialSpec, store: StatStore, reporter: EpochReporter,
           phase: Callable[[str, int], None]) -> tuple[TrialOutcome, tuple]:
    malloc.tune_for_tensors()
    torch.set_num_threads(spec.threads or system.training_threads(spec.workers))
    seed_everything(spec.seed)
    config, prm = spec.config, spec.prm
    device = torch.device(spec.device)
    data = trial_data.load(spec.data_spec)
    if spec.identity is not None:
        data.identity.require_same(spec.identity, f"trial {spec.trial_id} (reserved by the runner)")
    train_set, eval_set, test_set, out_shape = data.train, data.eval, data.test, data.out_shape
    batch = int(prm["batch"])
    train_loader = _loader(train_set, batch, True, spec, device, balance=prm.get("balance"))
    eval_loader = _loader(eval_set, batch, False, spec, device)
    test_loader = _loader(test_set, batch, False, spec, device) if test_set is not None else None

    in_shape = (1, *tuple(train_set[0][0].shape))
    model_module = registry.load(registry.MODEL, config.nn)
    model = model_module.Net(in_shape, out_shape, copy.deepcopy(prm), device).to(device)
    names = list(config.metrics) + [m for m in EXTRA_METRICS.get(config.task, ()) if m not in config.metrics]
    metrics = {name: registry.load(registry.METRIC, name).create_metric(out_shape) for name in names}
    store.update_trial(spec.trial_id, fence=spec.lease_id, n_train=len(train_set), n_eval=len(eval_set),
                       n_test=len(test_set) if test_loader else 0, in_shape=str(list(in_shape)), device=str(device),
                       **_size(model, in_shape))

    model.train_setup(copy.deepcopy(prm))
    folder = spec.workspace.trial_dir(config.name, spec.trial_id)
    loaders = (train_loader, eval_loader, test_loader)
    status, epoch, stat_id, evaluation = COMPLETE, 0, None, None
    system_stat = {"cpu_count": system.cpu_count(), "cpu_type": system.cpu_model(),
                   "total_ram_kb": system.total_ram_kb(), "gpu_type": system.gpu_name(device)}
    epoch_max = int(prm["epoch_max"])
    first, start = 1, time.time_ns()
    if spec.resume:
        saved = resume.read(folder, trial_id=spec.trial_id, epoch_max=epoch_max, seed=spec.seed)
        resume.restore(model, loaders, saved)
        first, start = saved["epoch"] + 1, time.time_ns() - saved["duration"]
    with tqdm(total=epoch_max, initial=first - 1, desc=f"trial {spec.trial_id} epochs", unit="epoch", leave=False,
              disable=not spec.progress, position=1) as bar:
        for epoch in range(first, epoch_max + 1):
            phase("learn", epoch)
            began = time.perf_counter()
            roll = DataRoll(train_loader, spec.epoch_limit_minutes, f"epoch {epoch}", spec.progress)
            model.train()
            train_loss = _loss_of(model.learn(roll))
            train_seconds = time.perf_counter() - began
            phase("evaluate", epoch)
            evaluation = evaluate(model, eval_loader, metrics, out_shape, device, f"evaluating epoch {epoch}",
                                  spec.progress)
            diverged = not evaluation.finite or (train_loss is not None and not math.isfinite(train_loss))
            stat_id = store.record_epoch(
                spec.trial_id, epoch, accuracy=evaluation.accuracy, duration=time.time_ns() - start,
                metrics=evaluation.values,
                train_stat=dict(system_stat, train_loss=train_loss if train_loss is None or math.isfinite(train_loss)
                                else None, samples_per_second=roll.samples / max(train_seconds, 1e-9),
                                epoch_max=epoch_max, occupied_ram_kb=system.process_ram_kb(),
                                gpu_memory_kb=(torch.cuda.max_memory_allocated(device) // 1024
                                               if device.type == "cuda" else None),
                                lr=_current_lr(model), train_seconds=train_seconds,
                                eval_seconds=evaluation.seconds, truncated=roll.truncated), fence=spec.lease_id)
            bar.set_postfix(acc=f"{evaluation.accuracy:.4f}", **({"mae": f"{evaluation.mae:.2f}"}
                                                                  if evaluation.mae is not None else {}))
            bar.update(1)
            faults.point("train")
            prune = reporter.report(epoch, evaluation.mae)  # every epoch: the study's learning curves
            if diverged:
                status = DIVERGED
                break
            if not good(evaluation.accuracy, data.minimum_accuracy):
                status = STOPPED
                break
            if prune and epoch < epoch_max:
                status = PRUNED
                break
            if epoch < epoch_max:
                _save_resume(spec, folder, model, loaders, epoch, epoch_max, time.time_ns() - start, phase)

    outcome = TrialOutcome(status, accuracy=evaluation.accuracy, eval_mae=evaluation.mae, epochs=epoch)
    store.record_predictions(spec.trial_id, "eval", evaluation.labels, evaluation.predicted, _image_ids(eval_set),
                             fence=spec.lease_id)
    store.record_attributes(config.dataset, _image_attributes(eval_set) + _image_attributes(test_set))
    if test_loader is not None and status not in (DIVERGED, PRUNED):
        phase("test", epoch)
        faults.point("test")
        tested = evaluate(model, test_loader, metrics, out_shape, device, "test set", spec.progress)
        interval = bootstrap_mae(np.abs(tested.predicted - tested.labels)) if tested.samples else None
        store.record_test(spec.trial_id, stat_id, tested.accuracy, tested.values, interval, fence=spec.lease_id)
        store.record_predictions(spec.trial_id, "test", tested.labels, tested.predicted, _image_ids(test_set),
                                 fence=spec.lease_id)
        outcome.test_mae, outcome.test_interval = tested.mae, interval
    if spec.save_pth:
        checkpoint.save(model, folder, config=config, prm=prm, in_shape=in_shape, out_shape=out_shape,
                        trial_id=spec.trial_id, preprocess=checkpoint.preprocessing(
                            model, data, in_shape, spec.workspace.face_template_path))
    reason = reporter.reason(epoch) if status == PRUNED else None
    gap = {"eval_group_gap": validation_gap(spec)} if spec.group_gap_by else {}
    if not store.finish_trial(spec.trial_id, status, error=reason, bookkeeping_seconds=store.seconds,
                              fence=spec.lease_id, **gap):
        recorded = store.trial_status(spec.trial_id)
        outcome = TrialOutcome(recorded or FAILED, error=f"the trial was recorded {recorded} by another process "
                                                          f"while it ran; its result here is not recorded")
    return outcome, (model, data, in_shape)


def _save_resume(spec: TrialSpec, folder: Path, model, loaders, epoch: int, epoch_max: int, duration: int,
                 phase: Callable[[str, int], None]) -> None:
    """The state the next epoch goes on from (``ab.nn.sweep.resume``). A model whose state the file cannot hold,
    or a file that cannot be written, leaves the trial as it is, only not continuable."""
    reason = resume.not_resumable(model)
    if reason is None:
        try:
            resume.write(folder, model, loaders, trial_id=spec.trial_id, epoch=epoch, epoch_max=epoch_max,
                         seed=spec.seed, duration=duration)
        except OSError as error:
            reason = f"its resume file cannot be written ({error})"
    if reason is not None:
        resume_file.remove(folder)  # an older epoch's would continue from the wrong place
        if epoch == 1:
            log.warning("trial %d cannot be continued if interrupted: %s", spec.trial_id, reason)
    else:
        phase("saved", epoch)
    faults.point("resume")  # a fault test kills the runner here, with the epoch's resume file written


def _size(model, in_shape) -> dict:
    """Parameters and multiply-adds of the model (the cheap speed proxy of ``--objectives accuracy,macs``)."""
    try:
        return {"params": sum(p.numel() for p in model.parameters()), "macs": count_macs(model, in_shape)}
    except Exception:  # a model the hooks cannot walk: its size stays unknown, its trial goes on
        return {}


def _image_ids(dataset) -> list[str] | None:
    ids = getattr(dataset, "image_ids", None)
    return list(ids) if ids is not None and len(ids) == len(dataset) else None


def _image_attributes(dataset) -> list[tuple[str, object]]:
    """(content id, gender and race labels) of each image of a part whose loader states them."""
    ids, found = _image_ids(dataset) if dataset is not None else None, getattr(dataset, "attributes", None)
    return list(zip(ids, found)) if ids is not None and found is not None and len(found) == len(ids) else []


def unlearned(spec: TrialSpec, outcome: TrialOutcome) -> str | None:
    """Why the trial is not exported: it is no better than the constant predictor (a model that learned
    nothing has nothing to deploy), unless ``--export-unlearned``; ``None`` where it is exported."""
    if spec.export.export_unlearned:
        return None
    verdict = constant_predictor.verdict(outcome.row(), spec.baseline)
    return f"not exported: {verdict} (--export-unlearned exports it)" if verdict else None


def _deploy(spec: TrialSpec, store: StatStore, outcome: TrialOutcome, model, data, in_shape) -> None:
    """Export after the trial's result is recorded: whatever fails here is recorded on the
    artifacts' rows and leaves the trial as it is. The trial's ``pipeline`` row holds the export's
    seconds, or why it failed or was skipped."""
    skipped = unlearned(spec, outcome)
    if skipped:
        store.add_export(spec.trial_id, fence=spec.lease_id, format=PIPELINE, precision="-", status=SKIPPED,
                         error=skipped[:4000])
        return
    folder = spec.workspace.trial_dir(spec.config.name, spec.trial_id)
    start = time.perf_counter()
    faults.point("export")
    try:
        metadata = metadata_for(spec.config, spec.trial_id, in_shape, data, model, spec.workspace.face_template_path)
        Deployment(store, spec.trial_id, spec.config, folder, spec.export, in_shape,
                   NetSource.of(spec.config, spec.prm, data.out_shape), fence=spec.lease_id).run(
            model, data, metadata, spec.progress)
    except Exception as error:
        store.add_export(spec.trial_id, fence=spec.lease_id, format=PIPELINE, precision="-", status=EXPORT_FAILED,
                         error=describe_error(error)[:4000], seconds=time.perf_counter() - start)
        return
    store.add_export(spec.trial_id, fence=spec.lease_id, format=PIPELINE, precision="-", status=OK,
                     seconds=time.perf_counter() - start)
