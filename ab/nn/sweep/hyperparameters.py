"""Hyperparameters: LEMUR's search space, Optuna sampling, and checks of values fixed with ``-p``.

Sampling follows LEMUR: ``lr`` log-uniform, ``momentum`` and ``dropout`` uniform in their CLI
ranges, ``pretrained`` from ``--pretrained`` or {0, 1}, any other name uniform in [0, 1],
``batch`` from powers of two, ``transform`` from the available transforms (those of the input sizes
the model declares, ``ab.nn.sweep.input_sizes``). Unlike LEMUR, a value fixed with ``-p`` is used as
given, 0 included.

A model file may declare how its hyperparameters are best sampled (an ab.nn extension LEMUR
ignores): ``search_space()`` returns ``{name: {"choices": [...]}}`` for switches and named options
(sampled as categoricals, so plots and the dashboard show them as such) or ``{name: {"low": x,
"high": y, "log": bool}}`` for ranges, ``batch`` included. A declared range is used unless the user
sets that range on the command line. ``pretrained_available()`` says whether ImageNet weights can be
had here; when they cannot, ``pretrained`` is fixed to 0 (with one notice) instead of sampled.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Iterable, Mapping

FRAMEWORK = ("batch", "transform", "epoch_max", "balance")
"""Names a trial's ``prm`` carries besides the model's own hyperparameters (``balance`` only where
``--balance`` fixed it: how the training images were drawn, ``ab.nn.dataset.balance``)."""


class HyperparameterError(ValueError):
    """A bad ``-p`` value or search range; the message is one line."""


@dataclass(frozen=True)
class SearchSpace:
    min_lr: float = 1e-5
    max_lr: float = 1.0
    min_momentum: float = 0.0
    max_momentum: float = 1.0
    min_dropout: float = 0.0
    max_dropout: float = 0.5
    min_batch_power: int = 0
    max_batch_power: int = 12
    pretrained: int | None = None
    transforms: tuple[str, ...] = ()
    explicit: frozenset[str] = frozenset()  # ranges the user set on the command line: they beat a model's own

    def __post_init__(self):
        pairs = (("learning rate", self.min_lr, self.max_lr), ("momentum", self.min_momentum, self.max_momentum),
                 ("dropout", self.min_dropout, self.max_dropout),
                 ("batch binary power", self.min_batch_power, self.max_batch_power))
        for label, low, high in pairs:
            if low > high:  # checked for 0 too (LEMUR skipped falsy bounds)
                raise HyperparameterError(f"minimum {label} {low} is greater than its maximum {high}")
        if self.min_lr <= 0:
            raise HyperparameterError(f"minimum learning rate must be positive, got {self.min_lr}")
        if self.min_batch_power < 0:
            raise HyperparameterError(f"batch binary power must be >= 0, got {self.min_batch_power}")
        for label, low, high in pairs[1:3]:
            if low < 0 or high > 1:
                raise HyperparameterError(f"{label} range must lie in [0, 1], got [{low}, {high}]")
        if self.pretrained not in (None, 0, 1):
            raise HyperparameterError(f"--pretrained must be 0 or 1, got {self.pretrained}")

    @property
    def batches(self) -> list[int]:
        return [2 ** p for p in range(self.min_batch_power, self.max_batch_power + 1)]


def parse_fixed(text: str | Mapping | None) -> dict:
    """The ``-p`` argument: a JSON object of hyperparameter values."""
    if text is None or text == "":
        return {}
    if isinstance(text, Mapping):
        return dict(text)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise HyperparameterError(f"-p is not valid JSON ({error.msg} at column {error.colno}): {text}") from None
    if not isinstance(value, dict):
        raise HyperparameterError(f"-p must be a JSON object like '{{\"lr\": 0.01}}', got {type(value).__name__}")
    return value


def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise HyperparameterError(f"-p {name} must be a finite number, got {value!r}")
    return value


def check_fixed(fixed: Mapping, supported: Iterable[str], transforms: Iterable[str],
                choices: Mapping[str, Iterable] | None = None) -> None:
    """Reject unknown names, wrong types and values outside the ranges the contract allows. A name with
    declared ``choices`` takes one of them, or (LEMUR's way) a number in [0, 1]."""
    supported = set(supported)
    choices = {name: list(values) for name, values in (choices or {}).items()}
    for name, value in fixed.items():
        if name not in supported and name not in FRAMEWORK:
            known = ", ".join(sorted(supported | set(FRAMEWORK)))
            raise HyperparameterError(f"-p {name}: unknown hyperparameter for the selected models (known: {known})")
        if name in choices and name != "batch" and value in choices[name] and not isinstance(value, bool):
            continue
        if name in choices and isinstance(value, str):
            raise HyperparameterError(f"-p {name} must be one of {', '.join(map(str, choices[name]))} "
                                      f"(or a number in [0, 1]), got {value!r}")
        if name == "epoch_max":
            raise HyperparameterError("-p epoch_max: set the number of epochs with -e")
        if name == "transform":
            if value not in set(transforms):
                raise HyperparameterError(f"-p transform: unknown transform {value!r}")
        elif name == "balance":
            from ab.nn.dataset import balance

            try:
                if balance.parse(value) != value:
                    raise ValueError(f"balance is spelled {balance.parse(value)!r}, got {value!r}")
            except ValueError as error:
                raise HyperparameterError(f"--balance: {error}") from None
        elif name == "batch":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise HyperparameterError(f"-p {name} must be a positive integer, got {value!r}")
        elif name == "lr":
            if _number(name, value) <= 0:
                raise HyperparameterError(f"-p lr must be positive, got {value!r}")
        elif name == "pretrained":
            if value not in (0, 1) or isinstance(value, float) and not value.is_integer():
                raise HyperparameterError(f"-p pretrained must be 0 or 1, got {value!r}")
        elif not 0.0 <= _number(name, value) <= 1.0:
            raise HyperparameterError(f"-p {name} must lie in [0, 1] (LEMUR's convention), got {value!r}")


def _declared(trial, name: str, rule: dict):
    if "choices" in rule:
        return trial.suggest_categorical(name, list(rule["choices"]))
    return trial.suggest_float(name, float(rule["low"]), float(rule["high"]), log=bool(rule.get("log", False)))


def sample(trial, supported: Iterable[str], space: SearchSpace, fixed: Mapping, epoch_max: int,
           own: Mapping[str, dict] | None = None) -> dict:
    """The trial's ``prm``: every supported hyperparameter plus ``batch``, ``transform``, ``epoch_max``.
    ``own`` is the model's declared search space (``ab.nn.sweep.models.ModelInfo.own``)."""
    own = {k: v for k, v in (own or {}).items() if k not in space.explicit}
    prm: dict = {}
    for name in sorted(set(supported)):
        if name in fixed:
            prm[name] = fixed[name]
        elif name == "pretrained" and space.pretrained is not None:
            prm[name] = space.pretrained
        elif name in own:
            prm[name] = _declared(trial, name, own[name])
        elif name == "lr":
            prm[name] = trial.suggest_float("lr", space.min_lr, space.max_lr, log=True)
        elif name == "momentum":
            prm[name] = trial.suggest_float("momentum", space.min_momentum, space.max_momentum)
        elif name == "dropout":
            prm[name] = trial.suggest_float("dropout", space.min_dropout, space.max_dropout)
        elif name == "pretrained":
            prm[name] = trial.suggest_categorical("pretrained", [0, 1])
        else:
            prm[name] = trial.suggest_float(name, 0.0, 1.0)
    if "batch" in fixed:
        prm["batch"] = fixed["batch"]
    elif "batch" in own:
        prm["batch"] = _declared(trial, "batch", own["batch"])
    else:
        prm["batch"] = trial.suggest_categorical("batch", space.batches)
    prm["transform"] = fixed["transform"] if "transform" in fixed else \
        trial.suggest_categorical("transform", list(space.transforms))
    prm["epoch_max"] = epoch_max
    if "balance" in fixed:
        prm["balance"] = fixed["balance"]
    return prm
