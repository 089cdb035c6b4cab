"""Does pruning pay? The same search run twice, with and without a pruner: same config, budget, data,
seeds and sampler seed, each in its own workspace (its own study), one after the other.

    python benchmarks/sweep_efficiency.py --data ../shared/data/utkface --work /tmp/sweep-efficiency \
        --trials 24 --epochs 8 --max-samples 4096 --transform norm_64 --pruner hyperband --plot docs/sweep_efficiency.png

Reports each arm's wall time (the sum of its trials' durations, start to finish, in the order they
ran), its best validation MAE with that trial's 95 % bootstrap interval over validation images, and
the time each arm needed to reach the no-pruning arm's best within that interval (the bar: at most
half the no-pruning time); plots best-so-far validation MAE against time for both.
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
from ab.nn.stat.uncertainty import bootstrap_mae
from ab.nn.util import system

CONFIG = "age-regression_utkface_mae_MobileAgeNet"


def arm_name(pruner: str, warmup: int) -> str:
    """The arm's name and workspace folder: the pruner, and its warm-up when not the default."""
    return pruner if pruner == "none" or warmup == 1 else f"{pruner}-warmup{warmup}"


def sweep(work: Path, args, pruner: str) -> pd.DataFrame:
    name = arm_name(pruner, args.pruner_warmup)
    root = work / name
    root.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "ab.nn.train", "--root", str(root), "--data-dir", args.data, "-c", CONFIG,
               "-e", str(args.epochs), "-t", str(args.trials), "-f", args.transform, "--max-samples",
               str(args.max_samples), "-w", "0", "--quiet", "--export", "none", "--pretrained", "0",
               "--pruner", pruner, "--pruner-warmup", str(args.pruner_warmup), "--seed", str(args.seed)]
    subprocess.run(command, check=True)
    return recorded(work, name)


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--trials", type=int, default=24)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--max-samples", type=int, default=4096)
    p.add_argument("--transform", default="norm_64")
    p.add_argument("--pruner", default="hyperband")
    p.add_argument("--pruner-warmup", type=int, default=1, help="the runner's --pruner-warmup for the pruning arm")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--plot", default=None, help="PNG of best-so-far MAE against time")
    p.add_argument("--analyse-only", action="store_true", help="read the two workspaces, run nothing")
    p.add_argument("--also", nargs="*", default=[], metavar="ARM",
                   help="with --analyse-only: more arms recorded under --work (e.g. hyperband-warmup2) in the table "
                        "and the plot")
    p.add_argument("--arm", default=None, help="run only this arm (none or the pruner), e.g. both arms at once "
                                               "in two processes under the same load; then --analyse-only")
    args = p.parse_args(argv)
    work = Path(args.work).resolve()
    if args.arm is not None:
        if args.arm not in ("none", args.pruner):
            p.error(f"--arm must be none or {args.pruner}, got {args.arm!r}")
        sweep(work, args, args.arm)
        return 0
    arms = {}
    for pruner in ("none", args.pruner):
        name = arm_name(pruner, args.pruner_warmup)
        arms[name] = recorded(work, name) if args.analyse_only else sweep(work, args, pruner)
    for name in args.also if args.analyse_only else ():
        arms[name] = recorded(work, name)
    base = arms["none"]
    best = base[base.status == "complete"].sort_values("eval_mae").iloc[0]
    errors = api.predictions(trial_id=int(best.id), split="eval", db=work / "none" / "db" / "ab.nn.db")
    low, high = bootstrap_mae(np.abs(errors.predicted - errors.age))
    base_total = base.seconds.sum()
    print(f"machine: {system.cpu_model()}, {system.cpu_count()} cores; {args.trials} trials of {CONFIG}, "
          f"{args.epochs} epochs, {args.transform}, --max-samples {args.max_samples}, seed {args.seed}")
    print(f"no-pruning best: trial {int(best.id)}, validation MAE {best.eval_mae:.3f} [95% CI {low:.3f}, {high:.3f}]")
    print("| arm | trials | pruned | wall minutes | best val MAE | minutes to reach the no-pruning best (within its CI) "
          f"| bar: at most half of {base_total / 60:.1f} minutes |")
    print("|---|---|---|---|---|---|---|")
    for name, trials in arms.items():
        at = reached(trials, high)
        verdict = "-" if name == "none" else "met" if at is not None and at <= base_total / 2 else "not met"
        print(f"| {name} | {len(trials)} | {int((trials.status == 'pruned').sum())} | "
              f"{trials.seconds.sum() / 60:.1f} | {best_so_far(trials).min():.3f} | "
              f"{'not reached' if at is None else f'{at / 60:.1f}'} | {verdict} |")
    if args.plot:
        import matplotlib.pyplot as plt  # the Agg backend, set by ab.nn.report.plots

        fig, ax = plt.subplots(figsize=(7, 4.2))
        for name, trials in arms.items():
            ax.step(trials.elapsed / 60, best_so_far(trials), where="post", label=name)
        ax.axhspan(low, high, color="grey", alpha=0.2, label="no-pruning best, 95% CI")
        ax.set(xlabel="wall time (minutes, trials back to back)", ylabel="best validation MAE so far (years)",
               title=f"{args.trials} MobileAgeNet trials, {args.epochs} epochs, {args.transform}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
