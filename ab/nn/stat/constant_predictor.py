"""The constant-predictor baseline: predict the training part's mean age for every image.

Its MAE is what a model scores that learned nothing from the pixels; a trial is only a result where it
is better than that. ``beats`` judges a trial with its 95 % test interval where it has one: a trial
whose interval reaches the baseline's MAE is not better than the constant (``False``), never "better"
by a hundredth of a year.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np

COLUMNS = ("baseline_eval_mae", "baseline_test_mae", "beats_baseline")
"""What ``ab.nn.stat.frames.trials`` adds to every trial row."""


@dataclass(frozen=True)
class Baseline:
    data_key: str
    dataset: str
    train_mean: float
    n_train: int
    eval_mae: float | None
    n_eval: int
    test_mae: float | None
    n_test: int

    @classmethod
    def of_ages(cls, data_key: str, dataset: str, ages: Mapping[str, Sequence[float]]) -> "Baseline":
        """From the true ages of each part (``train``, ``eval``, ``test``; a missing or empty part has no MAE)."""
        train = np.asarray(ages.get("train", ()), dtype=np.float64)
        if train.size == 0:
            raise ValueError(f"data key {data_key}: no training labels, so no training mean")
        mean = float(train.mean())
        parts = {part: np.asarray(ages.get(part, ()), dtype=np.float64) for part in ("eval", "test")}
        mae = {part: float(errors(mean, values).mean()) if values.size else None for part, values in parts.items()}
        return cls(data_key, dataset, mean, int(train.size), mae["eval"], int(parts["eval"].size), mae["test"],
                   int(parts["test"].size))

    def to_row(self) -> dict:
        return asdict(self)


def errors(train_mean: float, ages) -> np.ndarray:
    """The constant predictor's absolute error on each of ``ages``."""
    return np.abs(np.asarray(ages, dtype=np.float64) - train_mean)


def describe(baseline: Mapping) -> str:
    """One line, as the sweep's summary and the report print it."""
    maes = ", ".join(f"{part} MAE {_number(value):.2f}" for part, value in
                     (("val", baseline["eval_mae"]), ("test", baseline["test_mae"])) if _number(value) is not None)
    return (f"constant predictor (the training mean, {float(baseline['train_mean']):.2f} years, for every image; "
            f"{int(baseline['n_train']):,} training images): {maes} years")


def _number(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def beats(trial: Mapping, baseline: Mapping | None) -> bool | None:
    """Whether a trial (a row with ``eval_mae``, ``test_mae``, ``test_mae_low``/``high``) is better than the
    constant predictor of its data key: its test interval lies below the baseline's test MAE; without
    an interval, its test MAE is below it; without a test part, its validation MAE. ``None`` where
    there is nothing to judge (no baseline, or the trial has no MAE)."""
    if baseline is None:
        return None
    test, high = _number(trial.get("test_mae")), _number(trial.get("test_mae_high"))
    baseline_test, baseline_eval = _number(baseline.get("test_mae")), _number(baseline.get("eval_mae"))
    if baseline_test is not None and high is not None:
        return high < baseline_test
    if baseline_test is not None and test is not None:
        return test < baseline_test
    value = _number(trial.get("eval_mae"))
    if baseline_eval is not None and value is not None:
        return value < baseline_eval
    return None


def verdict(trial: Mapping, baseline: Mapping | None) -> str | None:
    """A line saying that a trial is not better than the constant predictor, with both numbers; ``None``
    where it is better or nothing can be judged."""
    if beats(trial, baseline) is not False:
        return None
    test, low, high = (_number(trial.get(k)) for k in ("test_mae", "test_mae_low", "test_mae_high"))
    within = ""
    if test is not None and _number(baseline.get("test_mae")) is not None:
        interval = f" [95% CI {low:.2f}, {high:.2f}]" if low is not None and high is not None else ""
        within = " within its interval" if interval else ""
        mine, theirs = f"test MAE {test:.2f}{interval}", f"{float(baseline['test_mae']):.2f}"
    else:
        mine, theirs = f"val MAE {float(trial['eval_mae']):.2f}", f"{float(baseline['eval_mae']):.2f}"
    return (f"not better than the constant predictor{within}: {mine} years, against {theirs} for predicting the "
            f"training mean ({float(baseline['train_mean']):.1f} years) for every image")
