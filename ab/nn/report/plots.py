"""Report plots (matplotlib, PNG): predicted vs true age, numbers per group (age group, gender, race)
with their intervals, minors' false-adult rates, MAE against latency with the Pareto front, and
Optuna's optimisation history."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import pandas as pd  # noqa: E402



def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def best_so_far(mae: pd.Series, status: pd.Series) -> pd.Series:
    """Best validation MAE of the trials that trained every epoch, after each trial in order; carried
    over the trials that did not (stopped, pruned, failed), so the line has no gaps."""
    return mae.where(status == "complete").cummin().ffill()


def _colours(labels) -> dict[str, tuple]:
    """One colour per model, the same in every figure; AgeMoE always black."""
    palette = plt.get_cmap("tab10").colors
    others = [label for label in labels if label != "AgeMoE"]
    return {**{label: palette[i % len(palette)] for i, label in enumerate(others)}, "AgeMoE": (0.0, 0.0, 0.0)}


def predicted_vs_true(entries, path: Path, threshold: float = 18) -> Path:
    return _save(predicted_vs_true_figure(entries, threshold), path)


def predicted_vs_true_figure(entries, threshold: float = 18):
    """``entries``: the report's models (``ab.nn.report.groups.Entry``). One panel per model: the density
    of (true, predicted) test ages (every seed's predictions pooled), the diagonal, and lines at
    ``threshold`` years on both axes; the upper-left quadrant (minors predicted adult) is shaded and its
    share of the minors given with its interval."""
    n = len(entries)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.3 * cols, 4.2 * rows), squeeze=False)
    top = max(100.0, max(float(np.nanmax(e.predicted)) for e in entries) + 2,
              max(float(e.true.max()) for e in entries) + 2)
    for ax, entry in zip(axes.flat, entries):
        cells = ax.hexbin(entry.true, entry.predicted, gridsize=40, extent=(0, top, 0, top), bins="log", mincnt=1,
                          cmap="viridis", linewidths=0.1)
        ax.plot([0, top], [0, top], color="black", lw=0.8)
        ax.axvline(threshold, color="C3", lw=1, ls="--")
        ax.axhline(threshold, color="C3", lw=1, ls="--")
        ax.fill_between([0, threshold], threshold, top, color="C3", alpha=0.07, lw=0)
        adult = entry.value("age_group", "all", f"false_adult@{threshold:g}")
        minor = entry.value("age_group", "all", f"false_minor@{threshold:g}")
        box = {"facecolor": "white", "alpha": 0.85, "linewidth": 0, "pad": 1.5}
        ax.text(1.5, top - 2, f"under {threshold:g}, predicted {threshold:g}+:\n{adult.value:.1%} "
                f"[{adult.low:.1%}, {adult.high:.1%}] of {int(adult.n):,} minors", fontsize=7.5, va="top",
                color="C3", bbox=box)
        ax.text(top - 2, 2, f"{threshold:g}+, predicted under {threshold:g}:\n{minor.value:.1%} "
                f"[{minor.low:.1%}, {minor.high:.1%}] of {int(minor.n):,} adults", fontsize=7.5, ha="right",
                color="C3", bbox=box)
        mae = entry.value("age_group", "all", "mae")
        ax.set(xlabel="true age (years)", ylabel="predicted age (years)", xlim=(0, top), ylim=(0, top))
        ax.set_title(f"{entry.label}\ntest MAE {mae.value:.2f} [{mae.low:.2f}, {mae.high:.2f}], "
                     f"{entry.frames['age_group'].attrs['images']:,} images", fontsize=9)
        fig.colorbar(cells, ax=ax, shrink=0.8, label="predictions per cell (log scale)")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig


AXIS_NAMES = {"age_group": "true age group (years)", "gender": "gender (UTKFace label)", "race": "race (UTKFace label)"}
NO_GROUPS = "no number here: too few images\n(a group needs 30, and 5 in each age bin)"


def _groups_shown(entries, by: str, metric: str) -> list[str]:
    """The groups of ``by`` that have ``metric`` for some model (an unknown race has no age-standardised
    MAE), in their order."""
    frame = entries[0].frames[by]
    groups = [g for g in frame.group.unique() if g not in ("all", "gap")]
    defined = set()
    for entry in entries:
        rows = entry.frames[by]
        defined |= set(rows[(rows.metric == metric) & rows.value.notna()].group)
    return [g for g in groups if g in defined]


def _dodged(ax, entries, by: str, metric: str, colours: dict, ylabel: str) -> None:
    """Each model's ``metric`` for every group of ``by``, side by side with its 95 % interval; the
    groups' image counts under their names."""
    groups = _groups_shown(entries, by, metric)
    ax.set_ylabel(ylabel)
    if not groups:
        ax.text(0.5, 0.5, NO_GROUPS, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="0.4")
        ax.set_xticks([])
        return
    width = 0.8 / len(entries)
    for i, entry in enumerate(entries):
        rows = entry.frames[by].set_index("group")
        rows = rows[rows.metric == metric].reindex(groups)
        x = np.arange(len(groups)) - 0.4 + width * (i + 0.5)
        low, high = (rows.value - rows.low).clip(lower=0), (rows.high - rows.value).clip(lower=0)
        ax.errorbar(x, rows.value, yerr=[low.fillna(0), high.fillna(0)], fmt="o", ms=4, capsize=2, lw=1,
                    color=colours[entry.label], label=entry.label)
    frame = entries[0].frames[by]
    counts = frame[frame.metric == metric].set_index("group").n.reindex(groups)
    ax.set_xticks(range(len(groups)), [f"{g}\nn={int(c):,}" for g, c in zip(groups, counts)], fontsize=8)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_xlabel(AXIS_NAMES[by] + ", and the number of test images", fontsize=8)
    ax.grid(alpha=0.3, axis="y")


def group_errors(entries, path: Path, panels, title: str, columns: int = 1) -> Path:
    return _write(group_errors_figure(entries, panels, title, columns), path)


def group_errors_figure(entries, panels, title: str, columns: int = 1):
    """One panel per ``(by, metric, panel title, y label)``, ``columns`` to a row: each model's number per
    group with its interval, dodged so that no model hides another. Panels of a column share their y
    axis (raw and age-standardised MAE of one grouping compare directly); MAE axes start at 0."""
    colours = _colours([e.label for e in entries])
    rows = (len(panels) + columns - 1) // columns
    widths = [max(2, len(_groups_shown(entries, by, metric))) for by, metric, *_ in panels[:columns]]
    inches = sum(widths) * (0.45 + 0.15 * len(entries)) + 1.5 * columns
    fig, axes = plt.subplots(rows, columns, figsize=(min(16.0, max(6.0, inches)), 3.6 * rows + 0.6),
                             squeeze=False, sharey="col", gridspec_kw={"width_ratios": widths})
    for ax, (by, metric, panel, ylabel) in zip(axes.flat, panels):
        _dodged(ax, entries, by, metric, colours, ylabel)
        attrs = entries[0].frames[by].attrs
        if metric == "std_mae" and attrs["standard_bins"]:
            panel += f"\n(age bins {attrs['standard_bins'][0]} to {attrs['standard_bins'][-1]}: " \
                     f"{attrs['coverage']:.0%} of the images)"
        ax.set_title(panel, fontsize=10)
        if metric == "bias":
            ax.axhline(0, color="black", lw=0.8)
        elif metric in ("mae", "std_mae"):
            ax.set_ylim(bottom=0)
            ax.yaxis.set_tick_params(labelleft=True)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    _legend_below(fig, axes.flat[0])
    return fig


def _legend_below(fig, ax) -> None:
    """One legend for all panels, under them."""
    handles, labels = ax.get_legend_handles_labels()
    rows = (len(labels) + 3) // 4
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.035 + 0.035 * rows, 1, 1))


def _write(fig, path: Path) -> Path:
    """Save a figure that is laid out already (its legend below the panels)."""
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def minors(entries, path: Path, thresholds=(13, 18, 21)) -> Path:
    return _write(minors_figure(entries, thresholds), path)


def minors_figure(entries, thresholds=(13, 18, 21)):
    """Two panels: at each age threshold T, the share of the test images under T predicted T or older
    (at 18: minors taken for adults) and the share of those T or older predicted under T, per model with
    its 95 % interval; under each threshold the number of images the share is of."""
    colours = _colours([e.label for e in entries])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    width = 0.8 / len(entries)
    for ax, (metric, title) in zip(axes, (("false_adult", "true age under T, predicted T or older\n"
                                                          "(at 18: minors taken for adults)"),
                                          ("false_minor", "true age T or older, predicted under T\n"
                                                          "(at 18: adults taken for minors)"))):
        highest = 0.0
        for i, entry in enumerate(entries):
            rows = [entry.value("age_group", "all", f"{metric}@{t:g}") for t in thresholds]
            x = np.arange(len(thresholds)) - 0.4 + width * (i + 0.5)
            values = np.array([r.value for r in rows]) * 100
            low = values - np.array([r.low for r in rows]) * 100
            high = np.array([r.high for r in rows]) * 100 - values
            ax.errorbar(x, values, yerr=[low.clip(0), high.clip(0)], fmt="o", ms=4, capsize=2, lw=1,
                        color=colours[entry.label], label=entry.label)
            highest = max(highest, float(np.nanmax(values + high.clip(0))))
        counts = [int(entries[0].value("age_group", "all", f"{metric}@{t:g}").n) for t in thresholds]
        ax.set_xticks(range(len(thresholds)), [f"T = {t:g} years\nn={c:,}" for t, c in zip(thresholds, counts)],
                      fontsize=8)
        ax.set_ylabel("share of those images (%)")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0, max(1.0, highest * 1.08))
        ax.set_xlim(-0.6, len(thresholds) - 0.4)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("Minors taken for adults and adults for minors (test split), 95 % intervals", fontsize=11)
    _legend_below(fig, axes[0])
    return fig


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
    """Validation MAE of every trial of a study against its trial id (ids grow in the order trials
    start), best so far as a step line; trials stopped early or pruned are marked (their MAE is that of
    the epoch they reached)."""
    trials = trials.sort_values("id")
    trials = trials[trials.eval_mae.notna()]
    if trials.empty:
        return None
    top = _clip(trials.eval_mae)
    fig, ax = plt.subplots(figsize=(7, 4))
    order = [int(i) for i in trials.id]
    for status, marker in (("complete", "o"), ("stopped", "s"), ("pruned", "x"), ("diverged", "v")):
        mine = [(i, m) for i, m, s in zip(order, trials.eval_mae, trials.status) if s == status]
        if mine:
            ax.scatter([i for i, _ in mine], [min(m, top) for _, m in mine], s=18, marker=marker, label=status)
    best = best_so_far(trials.eval_mae, trials.status)
    ax.step(order, best.clip(upper=top), where="post", color="C1", label="best so far (complete)")
    ax.set(xlabel="trial id", ylabel="validation MAE (years)", ylim=(0, top))
    ax.set_title(title, fontsize=9)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
