"""Report plots (matplotlib, PNG): predicted vs true age, MAE per age group, MAE against latency
with the Pareto front, and Optuna's optimisation history."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402

from ab.nn import api  # noqa: E402
from ab.nn.metric._age import AGE_GROUPS  # noqa: E402


def predicted_vs_true(predictions: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    """``predictions``: model -> (true ages, predicted ages) on the test split."""
    n = len(predictions)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.6 * rows), squeeze=False)
    for ax, (name, (true, predicted)) in zip(axes.flat, predictions.items()):
        ax.scatter(true, predicted, s=3, alpha=0.25)
        ax.plot([0, 116], [0, 116], color="black", lw=0.8)
        ax.set(title=f"{name} (MAE {np.abs(predicted - true).mean():.2f})", xlabel="true age", ylabel="predicted",
               xlim=(0, 116), ylim=(0, 116))
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def mae_by_group(groups: pd.DataFrame, path: Path) -> Path:
    """``groups``: rows of (label, group, mae) — one line per model or mixture."""
    order = [g[0] for g in AGE_GROUPS]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for label, frame in groups.groupby("label", sort=False):
        frame = frame.set_index("group").reindex(order)
        ax.plot(order, frame.mae, marker="o", lw=2.2 if label == "AgeMoE" else 1.2, label=label)
    ax.set(xlabel="true age group", ylabel="test MAE (years)", title="MAE per age group (test split)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pareto_front(points: pd.DataFrame) -> pd.DataFrame:
    """Points not beaten on both latency and MAE by another point."""
    ordered = points.sort_values(["latency_ms", "mae"])
    front, best = [], float("inf")
    for row in ordered.itertuples():
        if row.mae < best:
            front.append(row.Index)
            best = row.mae
    return points.loc[front].sort_values("latency_ms")


def mae_vs_latency(points: pd.DataFrame, path: Path) -> Path:
    """``points``: rows of (model, mae, latency_ms) for every trial with a latency measurement."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model, frame in points.groupby("model"):
        ax.scatter(frame.latency_ms, frame.mae, s=18, label=model, alpha=0.8)
    front = pareto_front(points)
    ax.plot(front.latency_ms, front.mae, color="black", lw=1, ls="--", marker="x", label="Pareto front")
    ax.set(xscale="log", xlabel="batch-1 latency, 1 thread (ms, log)", ylabel="validation MAE (years)",
           title="MAE against latency, all trials")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def optimisation_history(study_name: str, db_url: str, path: Path) -> Path | None:
    study = optuna.load_study(study_name=study_name, storage=db_url)
    values = [(t.number, t.value) for t in study.trials if t.value is not None]
    if not values:
        return None
    numbers, accuracy = zip(*values)
    best = np.maximum.accumulate(accuracy)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.scatter(numbers, accuracy, s=14, label="trial")
    ax.step(numbers, best, where="post", color="C1", label="best so far")
    ax.set(xlabel="trial", ylabel="accuracy = 1 - MAE/20", title=f"Optuna history: {study_name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
