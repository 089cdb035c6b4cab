"""Age error by group and its spread (LEMUR metric contract).

``values()`` gives overall MAE, bias (mean signed error, predicted - true), error standard
deviation, CS@5 (share of predictions within 5 years), and per CAF age group (0-2, 3-6, 7-9,
10-14, 15-19, 20-29, 30-39, 40-49, 50-69, 70+) the MAE (``mae@<group>``), bias and count, plus
the fairness gap (worst group MAE - best). ``result()`` is CS@5, so higher is better as Optuna
needs. The runner evaluates it for every age-regression trial, on eval and on test.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ab.nn.metric._age import age_statistics

if TYPE_CHECKING:  # type hints only: reading this file needs no torch
    import torch


class AgeGroups:
    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._predicted: list[np.ndarray] = []
        self._true: list[np.ndarray] = []

    def __call__(self, outputs: torch.Tensor, labels: torch.Tensor) -> None:
        self._predicted.append(outputs.detach().reshape(-1).double().cpu().numpy())
        self._true.append(labels.detach().reshape(-1).double().cpu().numpy())

    def values(self) -> dict[str, float]:
        if not self._predicted:
            return {}
        stats = age_statistics(np.concatenate(self._predicted), np.concatenate(self._true))
        stats.pop("mae", None)  # the mae metric owns the overall MAE
        return stats

    def result(self) -> float:
        value = self.values().get("cs5", 0.0)
        return value if np.isfinite(value) else 0.0


def create_metric(out_shape=None):
    return AgeGroups()
