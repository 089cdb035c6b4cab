"""Age-error statistics shared by the age metrics: groups, bias, CS@k, spread, fairness gap."""
from __future__ import annotations

import math

import numpy as np

AGE_GROUPS: tuple[tuple[str, float, float], ...] = (
    ("0-2", 0, 3), ("3-6", 3, 7), ("7-9", 7, 10), ("10-14", 10, 15), ("15-19", 15, 20), ("20-29", 20, 30),
    ("30-39", 30, 40), ("40-49", 40, 50), ("50-69", 50, 70), ("70+", 70, math.inf))
"""The ten age groups of the CAF dataset (FFHQ-Aging's), used by AgeMoE's per-group evaluation;
a group holds true ages ``lo <= age < hi``."""


def group_of(ages: np.ndarray) -> np.ndarray:
    """Index into ``AGE_GROUPS`` of every true age."""
    edges = np.array([lo for _, lo, _ in AGE_GROUPS[1:]], dtype=np.float64)
    return np.searchsorted(edges, np.asarray(ages, dtype=np.float64), side="right")


def age_statistics(predicted: np.ndarray, true: np.ndarray, within: float = 5.0) -> dict[str, float]:
    """Overall and per-group numbers; a group without samples is left out."""
    predicted = np.asarray(predicted, dtype=np.float64).reshape(-1)
    true = np.asarray(true, dtype=np.float64).reshape(-1)
    if predicted.size == 0:
        return {}
    error = predicted - true
    absolute = np.abs(error)
    out = {"mae": float(absolute.mean()), "bias": float(error.mean()), "error_std": float(error.std()),
           "abs_error_std": float(absolute.std()), f"cs{within:g}": float((absolute <= within).mean())}
    groups = group_of(true)
    maes = []
    for index, (name, _, _) in enumerate(AGE_GROUPS):
        member = groups == index
        if member.any():
            maes.append(float(absolute[member].mean()))
            out[f"mae@{name}"] = maes[-1]
            out[f"bias@{name}"] = float(error[member].mean())
            out[f"n@{name}"] = float(member.sum())
    out["worst_group_mae"], out["best_group_mae"] = max(maes), min(maes)
    out["fairness_gap"] = max(maes) - min(maes)
    return out
