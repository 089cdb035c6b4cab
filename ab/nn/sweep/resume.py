"""The resume file of an unfinished trial: what its next epoch needs to go on exactly as if the trial had
never stopped.

After every epoch that training continues from, the trial writes ``resume.pt`` in its output folder
(whole or not at all, ``ab.nn.util.atomic``): the module's weights and buffers, ``model.optimizer``
and ``model.scheduler`` (a scheduler of ``torch.optim.lr_scheduler``), the model object's plain attributes
(its epoch counter, a flag saying its head was initialised), every random state (torch, numpy, Python's
``random``, CUDA's, and the ``torch.Generator`` of each data loader and sampler), the epochs done and the
training time so far. The runner continues an interrupted trial from it (``ab.nn.sweep.runner``); the
trial removes it when it ends.

The file lives in the workspace, so it is read as untrusted: ``torch.load(weights_only=True)`` (tensors
and plain containers only) and every field checked, a problem being one line of ``ResumeError``."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ab.nn.sweep.resume_file import path_of
from ab.nn.util import atomic

VERSION = 1
PLAIN = (bool, int, float, str, type(None))
_MODULE_ATTRIBUTES = frozenset(vars(nn.Module()))


class ResumeError(ValueError):
    """A resume file that cannot be used, in one line."""


# -- writing ------------------------------------------------------------------------------------------
def not_resumable(model) -> str | None:
    """Why this model's training cannot be saved in a resume file (a scheduler that is not one of
    ``torch.optim.lr_scheduler``'s, a state that is more than tensors and plain values); None when it can."""
    scheduler = getattr(model, "scheduler", None)
    if scheduler is not None and not _known_scheduler(type(scheduler)):
        return f"its scheduler {type(scheduler).__name__} is not one of torch.optim.lr_scheduler's"
    for what, value in (("optimizer", _optimizer_state(model)), ("scheduler", _scheduler_state(model))):
        if value is not None and not _plain(value):
            return f"its {what}'s state holds more than tensors and plain values"
    return None


def write(folder: Path, model, loaders, *, trial_id: int, epoch: int, epoch_max: int, seed: int,
          duration: int) -> Path:
    """Save the state after ``epoch`` (done) atomically; returns the file's path."""
    state = {"version": VERSION, "trial_id": trial_id, "epoch": epoch, "epoch_max": epoch_max, "seed": seed,
             "duration": duration, "model": model.state_dict(), "optimizer": _optimizer_state(model),
             "scheduler": _scheduler_state(model),
             "scheduler_class": type(model.scheduler).__name__ if getattr(model, "scheduler", None) else None,
             "attributes": {k: v for k, v in vars(model).items()
                            if k not in _MODULE_ATTRIBUTES and type(v) in PLAIN},
             "rng": _rng_states(loaders)}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return atomic.write(path_of(folder), lambda out: torch.save(state, out), durable=True)


def _optimizer_state(model) -> dict | None:
    optimizer = getattr(model, "optimizer", None)
    return optimizer.state_dict() if isinstance(optimizer, torch.optim.Optimizer) else None


def _scheduler_state(model) -> dict | None:
    scheduler = getattr(model, "scheduler", None)
    return scheduler.state_dict() if scheduler is not None and _known_scheduler(type(scheduler)) else None


def _known_scheduler(kind: type) -> bool:
    return getattr(torch.optim.lr_scheduler, kind.__name__, None) is kind and issubclass(
        kind, torch.optim.lr_scheduler.LRScheduler)


def _generators(loaders) -> list[torch.Generator | None]:
    """Each loader's generator and its sampler's (a weighted sampler has its own), in a fixed order."""
    found = []
    for loader in loaders:
        found.append(getattr(loader, "generator", None))
        found.append(getattr(getattr(loader, "sampler", None), "generator", None))
    return found


def _rng_states(loaders) -> dict:
    version, keys, gauss = random.getstate()
    kind, mt, position, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized()
            else [],
            "numpy": {"kind": str(kind), "keys": torch.from_numpy(mt.astype(np.int64)), "position": int(position),
                      "has_gauss": int(has_gauss), "cached": float(cached)},
            "python": {"version": int(version), "keys": list(keys), "gauss": gauss},
            "generators": [g.get_state() if isinstance(g, torch.Generator) else None for g in _generators(loaders)]}


def _plain(value) -> bool:
    if isinstance(value, torch.Tensor) or type(value) in PLAIN:
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(type(k) in (str, int) and _plain(v) for k, v in value.items())
    return False


# -- reading ------------------------------------------------------------------------------------------
def read(folder: Path, *, trial_id: int, epoch_max: int, seed: int) -> dict:
    """The saved state of trial ``trial_id``, checked against what the trial is (its epochs and seed); a
    ``ResumeError`` when the file is missing, unreadable or not this trial's."""
    path = path_of(folder)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ResumeError(f"no resume file {path}") from None
    except Exception as error:
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise ResumeError(f"resume file {path} is unreadable ({type(error).__name__}: {first})") from None
    _check(state, path, trial_id, epoch_max, seed)
    return state


def _check(state, path: Path, trial_id: int, epoch_max: int, seed: int) -> None:
    def bad(why: str):
        raise ResumeError(f"resume file {path}: {why}")

    if not isinstance(state, dict) or state.get("version") != VERSION:
        bad(f"not a version {VERSION} resume file")
    for name in ("trial_id", "epoch", "epoch_max", "seed", "duration"):
        if type(state.get(name)) is not int:
            bad(f"{name} is not a whole number")
    if state["trial_id"] != trial_id or state["epoch_max"] != epoch_max or state["seed"] != seed:
        bad(f"it is trial {state['trial_id']}'s (seed {state['seed']}, {state['epoch_max']} epochs), not trial "
            f"{trial_id}'s (seed {seed}, {epoch_max} epochs)")
    if not 1 <= state["epoch"] < epoch_max:
        bad(f"epoch {state['epoch']} is not one that training continues from (1 to {epoch_max - 1})")
    if not isinstance(state.get("model"), dict) or not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        bad("the model's state is not a mapping of tensors")
    for name in ("optimizer", "scheduler", "attributes"):
        if state.get(name) is not None and not isinstance(state[name], dict):
            bad(f"the {name}'s state is not a mapping")
    if state.get("scheduler") is not None and not (isinstance(state.get("scheduler_class"), str) and _known_scheduler(
            getattr(torch.optim.lr_scheduler, state["scheduler_class"], type(None)))):
        bad(f"scheduler {str(state.get('scheduler_class'))[:80]!r} is not one of torch.optim.lr_scheduler's")
    rng = state.get("rng")
    try:
        numpy_keys = rng["numpy"]["keys"]
        python_keys = rng["python"]["keys"]
        ok = (isinstance(rng["torch"], torch.Tensor) and rng["torch"].dtype == torch.uint8
              and isinstance(numpy_keys, torch.Tensor) and numpy_keys.shape == (624,)
              and isinstance(python_keys, list) and len(python_keys) == 625
              and all(type(k) is int for k in python_keys) and isinstance(rng["generators"], list)
              and all(g is None or (isinstance(g, torch.Tensor) and g.dtype == torch.uint8) for g in rng["generators"])
              and isinstance(rng["cuda"], list))
    except Exception:  # a field of another type than saved: what indexing it raises
        ok = False
    if not ok:
        bad("its random states are incomplete")


def restore(model, loaders, state: dict) -> None:
    """Put the saved state into a model built and set up (``train_setup``) as the trial builds it, and into
    the trial's loaders and the process's random generators. A state that does not fit the model is a
    ``ResumeError``."""
    try:
        model.load_state_dict(state["model"])
        if state["optimizer"] is not None:
            model.optimizer.load_state_dict(state["optimizer"])
        for name, value in (state["attributes"] or {}).items():
            if type(value) in PLAIN and type(getattr(model, name, None)) in PLAIN:
                setattr(model, name, value)
        if state["scheduler"] is not None:
            model.scheduler = _scheduler(model.optimizer, state["scheduler_class"], state["scheduler"])
        generators = _generators(loaders)
        saved = state["rng"]["generators"]
        if len(saved) != len(generators):
            raise ResumeError(f"{len(saved)} data generators saved, the trial has {len(generators)}")
        for generator, value in zip(generators, saved):
            if (generator is None) != (value is None):
                raise ResumeError("the data loaders' generators are not those saved")
            if generator is not None:
                generator.set_state(value)
        _restore_rng(state["rng"])
    except ResumeError:
        raise
    except Exception as error:
        first = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
        raise ResumeError(f"the resume file does not fit the model ({type(error).__name__}: {first})") from None


def _scheduler(optimizer, name: str, saved: dict):
    """A scheduler of class ``name`` on ``optimizer`` with the saved state (its ``__init__`` would take a
    step; ``load_state_dict`` sets every field it has)."""
    kind = getattr(torch.optim.lr_scheduler, name)
    scheduler = kind.__new__(kind)
    scheduler.optimizer = optimizer
    scheduler.load_state_dict(saved)
    return scheduler


def _restore_rng(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    saved = rng["numpy"]
    np.random.set_state((saved["kind"], saved["keys"].numpy().astype(np.uint32), saved["position"],
                         saved["has_gauss"], saved["cached"]))
    python = rng["python"]
    random.setstate((python["version"], tuple(python["keys"]), python["gauss"]))
