"""Mean absolute error of predicted ages, in years.

``result()`` is LEMUR's normalised accuracy ``max(0, 1 - MAE/20)`` (higher is better, as Optuna
maximises it; it saturates at 20 years); ``values()`` gives the raw MAE, which is always stored
beside it.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the runner reads max_mae from this file without torch
    import torch

MAX_MAE = 20.0


class MAE:
    def __init__(self, max_mae: float = MAX_MAE):
        self.max_mae = max_mae
        self.reset()

    def reset(self) -> None:
        self.abs_sum = 0.0
        self.count = 0

    def __call__(self, outputs: torch.Tensor, labels: torch.Tensor) -> None:
        predicted = outputs.detach().reshape(-1).double().cpu()
        true = labels.detach().reshape(-1).double().cpu()
        if predicted.shape != true.shape:
            raise ValueError(f"mae: {predicted.numel()} predictions for {true.numel()} labels")
        self.abs_sum += (predicted - true).abs().sum().item()
        self.count += true.numel()

    def mae(self) -> float:
        return self.abs_sum / self.count if self.count else math.inf

    get_mae = mae  # LEMUR's name

    def result(self) -> float:
        mae = self.mae()
        return max(0.0, 1.0 - mae / self.max_mae) if math.isfinite(mae) else 0.0

    def values(self) -> dict[str, float]:
        return {"mae": self.mae()}


def create_metric(out_shape=None):
    return MAE()
