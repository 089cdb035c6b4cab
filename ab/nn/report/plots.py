"""Report plots (matplotlib, PNG): predicted vs true age, MAE per age group, MAE against latency
with the Pareto front, and Optuna's optimisation history."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import pandas as pd  # noqa: E402

from ab.nn.metric._age import AGE_GROUPS  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def best_so_far(mae: pd.Series, status: pd.Series) -> pd.Series:
    """Best validation MAE of the trials that trained every epoch, after each trial in order; carried
    over the trials that did not (stopped, pruned, failed), so the line has no gaps."""
    return mae.where(status == "complete").cummin().ffill()


def predicted_vs_true(predictions: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    """``predictions``: model -> (true ages, predicted ages) on the test split."""
    n = len(predictions)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.6 * rows), squeeze=False)
    for ax, (name, (true, predicted)) in zip(axes.flat, predictions.items()):
        ax.scatter(true, predicted, s=3, alpha=0.25)
        ax.plot([0, 116], [0, 116], color="black", lw=0.8)
        ax.set(xlabel="true age (years)", ylabel="predicted age (years)", xlim=(0, 116), ylim=(0, 116))
        ax.set_title(f"{name}\ntest MAE {np.abs(predicted - true).mean():.2f} years, n={len(true):,}", fontsize=10)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return _save(fig, path)


def mae_by_group(groups: pd.DataFrame, path: Path) -> Path:
    """``groups``: rows of (label, group, mae, n) — one line per model or mixture; the number of test
    images in each group is under its name (the oldest and youngest groups are small)."""
    order = [g[0] for g in AGE_GROUPS]
    sizes = groups.groupby("group").n.max().reindex(order)
    fig, ax = plt.subplots(figsize=(9.5, 4.8))
    for label, frame in groups.groupby("label", sort=False):
        frame = frame.set_index("group").reindex(order)
        ax.plot(range(len(order)), frame.mae, marker="o", lw=2.2 if label == "AgeMoE" else 1.2, label=label)
    ax.set_xticks(range(len(order)), [f"{g}\nn={int(n):,}" if n == n else g for g, n in zip(order, sizes)], fontsize=8)
    ax.set(xlabel="true age group (years) and its test images", ylabel="test MAE (years)",
           title="MAE per age group (test split)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return _save(fig, path)


def pareto_front(points: pd.DataFrame) -> pd.DataFrame:
    """Points not beaten on both latency and MAE by another point."""
    ordered = points.sort_values(["latency_ms", "mae"])
    front, best = [], float("inf")
    for row in ordered.itertuples():
        if row.mae < best:
            front.append(row.Index)
            best = row.mae
    return points.loc[front].sort_values("latency_ms")


def _plain(axis) -> None:
    """Plain numbers on a log axis (2, 5, 10 ms, never 6x10^-1)."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def _clip(values: pd.Series) -> float:
    """An upper limit that keeps a few failed trials (MAE 40+) from squashing the rest."""
    finite = values.dropna()
    return float(min(finite.max(), max(finite.quantile(0.9) * 1.6, finite.min() * 2.5))) * 1.05


def mae_vs_latency(points: pd.DataFrame, path: Path, runtime: str) -> Path:
    """``points``: rows of (model, mae, latency_ms) for every trial with a latency measurement; points above
    the MAE axis's limit are drawn at its edge as triangles, so that every trial is visible."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    top = _clip(points.mae)
    for model, frame in points.groupby("model"):
        inside, above = frame[frame.mae <= top], frame[frame.mae > top]
        dots = ax.scatter(inside.latency_ms, inside.mae, s=22, label=model, alpha=0.75, edgecolors="none")
        if not above.empty:
            ax.scatter(above.latency_ms, [top * 0.985] * len(above), marker="^", s=40, color=dots.get_facecolor()[0])
    front = pareto_front(points)
    ax.plot(front.latency_ms, front.mae.clip(upper=top), color="black", lw=1, ls="--", marker="x",
            label="Pareto front")
    clipped = int((points.mae > top).sum())
    ax.set(xscale="log", ylim=(0, top), xlabel=f"batch-1 latency, 1 thread, {runtime} (ms)",
           ylabel="validation MAE (years)",
           title="MAE against latency, every trial" + (f" ({clipped} above {top:.0f} years: ▲)" if clipped else ""))
    _plain(ax.xaxis)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, path)


def study_pareto(study_name: str, db_url: str, path: Path) -> Path | None:
    """A two-objective study's trials and its own Pareto front (``study.best_trials``), MAE in years."""
    try:
        study = optuna.load_study(study_name=study_name, storage=db_url)
    except KeyError:  # trials recorded without an Optuna study (imported, or from before studies were kept)
        return None
    if len(study.directions) < 2:
        return None
    done = [t for t in study.trials if t.values is not None]
    if not done:
        return None
    front = {t.number for t in study.best_trials}
    mae = lambda t: t.user_attrs.get("eval_mae", 20 * (1 - t.values[0]))  # noqa: E731
    name = (study.metric_names or ["", "second objective"])[1]
    runtimes = sorted({t.user_attrs["latency_runtime"] for t in done if "latency_runtime" in t.user_attrs})
    if runtimes:
        name = f"{name}, {', '.join(runtimes)}"
    fig, ax = plt.subplots(figsize=(7, 4.6))
    rest = [t for t in done if t.number not in front]
    ax.scatter([t.values[1] for t in rest], [mae(t) for t in rest], s=20, alpha=0.6, label="trial")
    best = sorted((t for t in done if t.number in front), key=lambda t: t.values[1])
    ax.plot([t.values[1] for t in best], [mae(t) for t in best], color="C3", marker="o", lw=1.2,
            label="Pareto front (Optuna's best_trials)")
    ax.set(xlabel=name, ylabel="validation MAE (years)", title=f"{study_name}: {len(done)} trials")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def optimisation_history(trials: pd.DataFrame, title: str, path: Path) -> Path | None:
    """Validation MAE of every trial of a study in the order they ran, best so far as a step line;
    trials stopped early or pruned are marked (their MAE is that of the epoch they reached)."""
    trials = trials.sort_values("id")
    trials = trials[trials.eval_mae.notna()]
    if trials.empty:
        return None
    top = _clip(trials.eval_mae)
    fig, ax = plt.subplots(figsize=(7, 4))
    order = range(1, len(trials) + 1)
    for status, marker in (("complete", "o"), ("stopped", "s"), ("pruned", "x"), ("diverged", "v")):
        mine = [(i, m) for i, m, s in zip(order, trials.eval_mae, trials.status) if s == status]
        if mine:
            ax.scatter([i for i, _ in mine], [min(m, top) for _, m in mine], s=18, marker=marker, label=status)
    best = best_so_far(trials.eval_mae, trials.status)
    ax.step(list(order), best.clip(upper=top), where="post", color="C1", label="best so far (complete)")
    ax.set(xlabel="trial (in order)", ylabel="validation MAE (years)", ylim=(0, top))
    ax.set_title(title, fontsize=9)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
