"""Evaluation of a model on a dataset with every metric of its config."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm


class OutputShapeError(ValueError):
    """The model's ``forward`` broke the output contract (e.g. not (B, 1) ages)."""


@dataclass
class Evaluation:
    accuracy: float                      # the primary metric's result() (LEMUR's "accuracy")
    values: dict[str, float] = field(default_factory=dict)
    finite: bool = True                  # False when any output was NaN or infinite
    seconds: float = 0.0
    samples: int = 0
    predicted: np.ndarray | None = None  # per-image outputs (flattened), in the loader's order
    labels: np.ndarray | None = None

    @property
    def mae(self) -> float | None:
        return self.values.get("mae")


def evaluate(model: torch.nn.Module, loader, metrics: dict, out_shape: tuple, device, desc: str | None = None,
             progress: bool = False) -> Evaluation:
    """``metrics`` maps names to metric objects; the first is primary. Deterministic and gradient-free;
    keeps every output, so the final evaluation can be stored image by image."""
    start = time.perf_counter()
    model.eval()
    for metric in metrics.values():
        metric.reset()
    finite, samples = True, 0
    expected = math.prod(out_shape)
    outputs_kept, labels_kept = [], []
    with torch.inference_mode():
        for inputs, labels in tqdm(loader, desc=desc or "evaluating", unit="batch", leave=False,
                                   disable=not progress, position=2):
            outputs = model(inputs.to(device))
            if not isinstance(outputs, torch.Tensor) or outputs.shape[0] != labels.shape[0] \
                    or outputs[0].numel() != expected:
                shape = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
                raise OutputShapeError(f"forward returned {shape} for a batch of {labels.shape[0]}; "
                                       f"the contract is (B, {', '.join(map(str, out_shape))})")
            finite = finite and bool(torch.isfinite(outputs).all())
            labels = labels.to(outputs.device)
            for metric in metrics.values():
                metric(outputs, labels)
            outputs_kept.append(outputs.detach().reshape(-1).float().cpu().numpy())
            labels_kept.append(labels.detach().reshape(-1).float().cpu().numpy())
            samples += labels.shape[0]
    values: dict[str, float] = {}
    for name, metric in metrics.items():
        values[f"metric_{name}"] = _clean(metric.result())
        if hasattr(metric, "values"):
            values.update(metric.values())
    primary = next(iter(metrics))
    return Evaluation(accuracy=values[f"metric_{primary}"], values=values, finite=finite,
                      seconds=time.perf_counter() - start, samples=samples,
                      predicted=np.concatenate(outputs_kept) if outputs_kept else np.zeros(0, np.float32),
                      labels=np.concatenate(labels_kept) if labels_kept else np.zeros(0, np.float32))


def _clean(value) -> float:
    value = float(value)
    return value if math.isfinite(value) else 0.0
