"""Does pruning pay? The same search run twice, with and without a pruner: same config, budget, data,
seeds and sampler seed, each in its own workspace (its own study), one after the other.

    python benchmarks/sweep_efficiency.py --data ../shared/data/utkface --work /tmp/sweep-efficiency \
        --trials 24 --epochs 8 --max-samples 4096 --transform norm_64 --pruner hyperband --plot docs/sweep_efficiency.png

Reports each arm's wall time (the sum of its trials' durations, start to finish, in the order they
ran), its best validation MAE with that trial's 95 % bootstrap interval over validation images, and
the time each arm needed to reach the no-pruning arm's best within that interval (the bar: at most
half the no-pruning time); plots best-so-far validation MAE against time for both.

One TPE sequence per arm says as much about where it happened to sample as about pruning, so run
each sampler seed (``--seed``) in its own ``--work`` folder and judge them together:
``--analyse-only --work W42 W43 W44`` prints every seed's rows, how often each pruning arm met the
bar, and its best validation MAE against the same seed's no-pruning best (mean ± std over seeds).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ab.nn import api
from ab.nn.report import plots
from ab.nn.stat.uncertainty import bootstrap_mae, mean_std
from ab.nn.util import system

CONFIG = "age-regression_utkface_mae_MobileAgeNet"


def arm_name(pruner: str, warmup: int) -> str:
    """The arm's name and workspace folder: the pruner, and its warm-up when not the default."""
    return pruner if pruner == "none" or warmup == 1 else f"{pruner}-warmup{warmup}"


def sweep(work: Path, args, pruner: str) -> None:
    name = arm_name(pruner, args.pruner_warmup)
    root = work / name
    root.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "ab.nn.train", "--root", str(root), "--data-dir", args.data, "-c", CONFIG,
               "-e", str(args.epochs), "-t", str(args.trials), "-f", args.transform, "--max-samples",
               str(args.max_samples), "-w", "0", "--quiet", "--export", "none", "--pretrained", "0",
               "--pruner", pruner, "--pruner-warmup", str(args.pruner_warmup), "--seed", str(args.seed)]
    subprocess.run(command, check=True)


def recorded(work: Path, name: str) -> pd.DataFrame:
    """An arm's trials in the order they ran, with their seconds and the arm's elapsed time after each."""
    trials = api.trials(config=CONFIG, db=work / name / "db" / "ab.nn.db").sort_values("id")
    seconds = (pd.to_datetime(trials.finished_at) - pd.to_datetime(trials.started_at)).dt.total_seconds()
    return trials.assign(seconds=seconds.to_numpy(), elapsed=seconds.cumsum().to_numpy(), arm=name)


def best_so_far(trials: pd.DataFrame) -> pd.Series:
    return plots.best_so_far(trials.eval_mae, trials.status)


def reached(trials: pd.DataFrame, target: float) -> float | None:
    """Seconds until a complete trial's validation MAE was within ``target``."""
    hit = trials[(trials.status == "complete") & (trials.eval_mae <= target)]
    return float(hit.elapsed.iloc[0]) if not hit.empty else None


def analyse(work: Path, args) -> tuple[dict[str, pd.DataFrame], tuple[float, float], list[dict]]:
    """One sampler seed's arms (the folders under ``work``), the no-pruning best's 95 % interval over
    validation images, and a row per arm: wall time, best validation MAE, time to reach that interval."""
    arms = {name: recorded(work, name) for name in ["none", arm_name(args.pruner, args.pruner_warmup), *args.also]}
    base = arms["none"]
    best = base[base.status == "complete"].sort_values("eval_mae").iloc[0]
    errors = api.predictions(trial_id=int(best.id), split="eval", db=work / "none" / "db" / "ab.nn.db")
    band = bootstrap_mae(np.abs(errors.predicted - errors.age))
    base_total = base.seconds.sum()
    rows = []
    for name, trials in arms.items():
        at = reached(trials, band[1])
        rows.append({"work": work.name, "arm": name, "band": band, "trials": len(trials),
                     "pruned": int((trials.status == "pruned").sum()), "minutes": trials.seconds.sum() / 60,
                     "time_ratio": trials.seconds.sum() / base_total, "best": float(best_so_far(trials).min()),
                     "reached_minutes": None if at is None else at / 60,
                     "met": name != "none" and at is not None and at <= base_total / 2})
    return arms, band, rows


def table(rows: list[dict]) -> str:
    lines = ["| sampler seed (workspace) | arm | trials | pruned | wall minutes | time vs no pruning | best val MAE | "
             "minutes to reach the no-pruning best (within its CI) | bar: at most half the no-pruning time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        low, high = r["band"]
        reached_text = "not reached" if r["reached_minutes"] is None else f"{r['reached_minutes']:.1f}"
        verdict = "-" if r["arm"] == "none" else "met" if r["met"] else "not met"
        best = f"{r['best']:.2f} [CI {low:.2f}, {high:.2f}]" if r["arm"] == "none" else f"{r['best']:.2f}"
        lines.append(f"| {r['work']} | {r['arm']} | {r['trials']} | {r['pruned']} | {r['minutes']:.1f} | "
                     f"{r['time_ratio']:.2f} | {best} | {reached_text} | {verdict} |")
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    """Per pruning arm over the sampler seeds: how often the bar was met, its time ratio, and its best
    validation MAE minus the same seed's no-pruning best (mean ± std, n seeds)."""
    frame = pd.DataFrame(rows)
    base = frame[frame.arm == "none"].set_index("work").best
    lines = []
    for name, group in frame[frame.arm != "none"].groupby("arm", sort=False):
        ratio, ratio_sd, n = mean_std(group.time_ratio)
        gap, gap_sd, _ = mean_std(group.best.to_numpy() - base.loc[group.work].to_numpy())
        lines.append(f"{name}: bar met in {int(group.met.sum())} of {n} sampler seeds; wall time {ratio:.2f} ± "
                     f"{ratio_sd:.2f} of no pruning's; best validation MAE {gap:+.2f} ± {gap_sd:.2f} years against "
                     f"the same seed's no-pruning best")
    return "\n".join(lines)


def plot(path: str, analysed: dict[str, tuple[dict, tuple[float, float]]], args) -> None:
    """Best-so-far validation MAE against wall time, one panel per sampler seed."""
    import matplotlib.pyplot as plt  # the Agg backend, set by ab.nn.report.plots

    fig, axes = plt.subplots(1, len(analysed), figsize=(5.2 * len(analysed), 4.2), squeeze=False, sharey=True)
    for ax, (work, (arms, (low, high))) in zip(axes.flat, analysed.items()):
        for name, trials in arms.items():
            ax.step(trials.elapsed / 60, best_so_far(trials), where="post", label=name)
        ax.axhspan(low, high, color="grey", alpha=0.2, label="no-pruning best, 95% CI")
        ax.set(xlabel="wall time (minutes, trials back to back)", title=work)
        ax.grid(alpha=0.3)
    axes.flat[0].set_ylabel("best validation MAE so far (years)")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"{args.trials} MobileAgeNet trials, {args.epochs} epochs, {args.transform}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--work", required=True, nargs="+",
                   help="the arms' workspaces live here; with --analyse-only several folders, one per sampler seed")
    p.add_argument("--trials", type=int, default=24)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--max-samples", type=int, default=4096)
    p.add_argument("--transform", default="norm_64")
    p.add_argument("--pruner", default="hyperband")
    p.add_argument("--pruner-warmup", type=int, default=1, help="the runner's --pruner-warmup for the pruning arm")
    p.add_argument("--seed", type=int, default=42, help="the runner's --seed: training seeds and the sampler's")
    p.add_argument("--plot", default=None, help="PNG of best-so-far MAE against time")
    p.add_argument("--analyse-only", action="store_true", help="read the workspaces, run nothing")
    p.add_argument("--also", nargs="*", default=[], metavar="ARM",
                   help="with --analyse-only: more arms recorded under --work (e.g. hyperband-warmup2) in the table "
                        "and the plot")
    p.add_argument("--arm", default=None, help="run only this arm (none or the pruner), e.g. both arms at once "
                                               "in two processes under the same load; then --analyse-only")
    args = p.parse_args(argv)
    works = [Path(w).resolve() for w in args.work]
    if len(works) > 1 and not args.analyse_only:
        p.error("several --work folders are for --analyse-only; run each sampler seed in its own folder")
    if len({w.name for w in works}) < len(works):
        p.error("each --work folder needs its own name (the tables and the plot name seeds by it)")
    if args.also and not args.analyse_only:
        p.error("--also is for --analyse-only")
    if args.arm is not None:
        if args.arm not in ("none", args.pruner):
            p.error(f"--arm must be none or {args.pruner}, got {args.arm!r}")
        sweep(works[0], args, args.arm)
        return 0
    if not args.analyse_only:
        for pruner in ("none", args.pruner):
            sweep(works[0], args, pruner)
    analysed, rows = {}, []
    for work in works:
        arms, band, arm_rows = analyse(work, args)
        analysed[work.name] = (arms, band)
        rows += arm_rows
    print(f"machine: {system.cpu_model()}, {system.cpu_count()} cores; {args.trials} trials of {CONFIG}, "
          f"{args.epochs} epochs, {args.transform}, --max-samples {args.max_samples}")
    print(table(rows))
    print(summary(rows))
    if args.plot:
        plot(args.plot, analysed, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
