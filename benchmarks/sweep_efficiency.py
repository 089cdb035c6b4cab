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

The pruners replayed on the no-pruning arms' own learning curves (``ab.nn.sweep.replay``: the same
24 sampled points, so the pruner alone decides): ``--analyse-only --replay 1 2 3 --work W43 W44 ...``
prints, per sampler seed, each pruner with each warm-up, and how often it met the bar.

A search of fixed wall time instead of fixed count: ``--same-time --pruner P`` copies the pruning
arm's finished workspace to ``P-same-time`` and continues its study there until its trials have used
as much time as the no-pruning arm's; ``--also P-same-time`` judges it on the trials that finished
within that time only.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from ab.nn import api
from ab.nn.report import plots
from ab.nn.stat.uncertainty import bootstrap_mae, mean_std, t_interval
from ab.nn.util import system

CONFIG = "age-regression_utkface_mae_MobileAgeNet"


def arm_name(pruner: str, warmup: int, floor: float | None = None) -> str:
    """The arm's name and workspace folder: the pruner, its warm-up when not the default and its floor."""
    if pruner == "none":
        return pruner
    return pruner + (f"-warmup{warmup}" if warmup != 1 else "") + (f"-floor{floor:g}" if floor is not None else "")


SAME_TIME = "-same-time"


def sweep(work: Path, args, pruner: str, folder: str | None = None, trials: int | None = None) -> None:
    """One arm's search in ``work/folder`` (default: the arm's name): ``trials`` is the runner's ``-t``
    (default ``--trials``; ``-N`` continues that folder's study with N more)."""
    root = work / (folder or arm_name(pruner, args.pruner_warmup, args.pruner_floor))
    root.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "ab.nn.train", "--root", str(root), "--data-dir", args.data, "-c", CONFIG,
               "-e", str(args.epochs), "-t", str(args.trials if trials is None else trials), "-f", args.transform,
               "--max-samples", str(args.max_samples), "-w", "0", "--quiet", "--export", "none", "--pretrained", "0",
               "--pruner", pruner, "--pruner-warmup", str(args.pruner_warmup), "--seed", str(args.seed)]
    if pruner != "none" and args.pruner_floor is not None:
        command += ["--pruner-floor", str(args.pruner_floor)]
    if args.fixed:
        command += ["-p", args.fixed]
    subprocess.run(command, check=True)


def same_time(work: Path, args) -> None:
    """Continue the pruning arm's search, in a copy of its workspace, until its trials have used the
    no-pruning arm's wall time, a few more trials at a time: half of what the arm's mean trial so far
    says would fit, as the search prunes more the longer it runs."""
    name = arm_name(args.pruner, args.pruner_warmup, args.pruner_floor)
    if not arm_db(work, name).exists() or not arm_db(work).exists():
        raise SystemExit(f"--same-time continues finished arms: run --arm none and --arm {args.pruner} in {work} first")
    folder = name + SAME_TIME
    if not (work / folder).exists():
        shutil.copytree(work / name, work / folder)
    budget = recorded(work, "none").seconds.sum()
    while (spent := (trials := recorded(work, folder)).seconds.sum()) < budget:
        sweep(work, args, args.pruner, folder, trials=-max(1, int((budget - spent) / trials.seconds.mean() / 2)))


def arm_db(work: Path, name: str = "none") -> Path:
    """The statistics database (and Optuna storage) of one arm's workspace."""
    return work / name / "db" / "ab.nn.db"


def recorded(work: Path, name: str) -> pd.DataFrame:
    """An arm's trials in the order they ran, with their seconds and the arm's elapsed time after each."""
    trials = api.trials(config=CONFIG, db=arm_db(work, name)).sort_values("id")
    seconds = (pd.to_datetime(trials.finished_at) - pd.to_datetime(trials.started_at)).dt.total_seconds()
    return trials.assign(seconds=seconds.to_numpy(), elapsed=seconds.cumsum().to_numpy(), arm=name)


def fixed_recorded(work: Path) -> dict:
    """The hyperparameters the no-pruning arm's trials were fixed to (the runner's ``-p``, kept in each
    Optuna trial's ``fixed`` user attribute), but the transform, which the budget names anyway."""
    storage = f"sqlite:///{arm_db(work).resolve()}"
    fixed = {}
    for name in optuna.get_all_study_names(storage=storage):
        for trial in optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False):
            fixed.update(trial.user_attrs.get("fixed", {}))
    fixed.pop("transform", None)
    return fixed


def budget(analysed: dict, works: list[Path]) -> str:
    """The budget the no-pruning arms were recorded with (not this invocation's defaults, which
    ``--analyse-only`` does not use), e.g. ``24 trials, 6 epochs, norm_64, --max-samples 2048, fixed
    {"freeze": 0}``."""
    bases = [arms["none"] for arms, _ in analysed.values()]
    base = pd.concat(bases)

    def joined(values) -> str:  # one value, or each seed's values when the workspaces differ
        return "/".join(str(v) for v in sorted(set(values)))

    fixed = joined(json.dumps(fixed_recorded(work), sort_keys=True) for work in works)
    return (f"{joined(len(b) for b in bases)} trials, {joined(base.epoch_max.dropna())} epochs, "
            f"{joined(base['transform'].dropna())}, --max-samples {joined(base.max_samples.dropna())}"
            + ("" if fixed == "{}" else f", fixed {fixed}"))


def best_so_far(trials: pd.DataFrame) -> pd.Series:
    return plots.best_so_far(trials.eval_mae, trials.status)


def reached(trials: pd.DataFrame, target: float) -> float | None:
    """Seconds until a complete trial's validation MAE was within ``target``."""
    hit = trials[(trials.status == "complete") & (trials.eval_mae <= target)]
    return float(hit.elapsed.iloc[0]) if not hit.empty else None


def analyse(work: Path, args) -> tuple[dict[str, pd.DataFrame], tuple[float, float], list[dict]]:
    """One sampler seed's arms (the folders under ``work``), the no-pruning best's 95 % interval over
    validation images, and a row per arm: wall time, best validation MAE, time to reach that interval."""
    pruning = arm_name(args.pruner, args.pruner_warmup, args.pruner_floor)
    arms = {name: recorded(work, name) for name in ["none", pruning, *args.also]}
    base = arms["none"]
    base_total = base.seconds.sum()
    arms = {name: trials[trials.elapsed <= base_total] if name.endswith(SAME_TIME) else trials
            for name, trials in arms.items()}
    best = base[base.status == "complete"].sort_values("eval_mae").iloc[0]
    errors = api.predictions(trial_id=int(best.id), split="eval", db=arm_db(work))
    band = bootstrap_mae(np.abs(errors.predicted - errors.age))
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
    validation MAE minus the same seed's no-pruning best (mean ± std and Student's t interval, n seeds;
    a tie when the interval contains 0)."""
    frame = pd.DataFrame(rows)
    base = frame[frame.arm == "none"].set_index("work").best
    lines = []
    for name, group in frame[frame.arm != "none"].groupby("arm", sort=False):
        ratio, ratio_sd, n = mean_std(group.time_ratio)
        gaps = group.best.to_numpy() - base.loc[group.work].to_numpy()
        gap, gap_sd, _ = mean_std(gaps)
        low, high = t_interval(gaps)
        verdict = ("one seed, no interval" if n < 2 else f"[{low:+.2f}, {high:+.2f}], "
                   + ("pruning lower" if high < 0 else "pruning higher" if low > 0 else "tie"))
        lines.append(f"{name}: bar met in {int(group.met.sum())} of {n} sampler seeds; wall time {ratio:.2f} ± "
                     f"{ratio_sd:.2f} of no pruning's; best validation MAE {gap:+.2f} ± {gap_sd:.2f} years "
                     f"against the same seed's no-pruning best: {verdict}")
    return "\n".join(lines)


def replays(works: list[Path], warmups: list[int], floor: float | None = None) -> str:
    """Every pruner x warm-up (each with ``floor`` when given) replayed on each sampler seed's
    no-pruning arm; the bar as above."""
    frames = [api.replay_pruners(config=CONFIG, warmups=warmups, db=arm_db(work), floor=floor)
              .assign(work=work.name) for work in works]
    frame = pd.concat(frames, ignore_index=True)
    pruned = frame[(frame.pruner != "none") | frame.floor.notna()]
    floored = f" (each with --pruner-floor {floor:g})" if floor is not None else ""
    lines = [f"| pruner{floored} | warm-up | " + " | ".join(f"{w.name}: time, to target, bar" for w in works)
             + " | bar met |", "|---|---|" + "---|" * len(works) + "---|"]
    for (pruner, warmup), group in pruned.groupby(["pruner", pruned.warmup.fillna(0)], sort=False):
        cells = []
        for work in works:
            r = group[group.work == work.name].iloc[0]
            to_target = "not reached" if pd.isna(r.minutes_to_target) else f"{r.target_ratio:.2f}"
            cells.append(f"{r.time_ratio:.2f}, {to_target}, {'met' if r.half_time_met else 'not met'}")
        lines.append(f"| {pruner} | {int(warmup) or '-'} | " + " | ".join(cells)
                     + f" | {int(group.half_time_met.sum())} of {len(group)} |")
    best_lost = pruned[~pruned.best_kept.astype(bool)]
    lines.append(f"\nreplays that stopped the recorded best trial: {len(best_lost)} of {len(pruned)}; "
                 f"bar met in {int(pruned.half_time_met.sum())} of {len(pruned)}")
    return "\n".join(lines)


def plot(path: str, analysed: dict[str, tuple[dict, tuple[float, float]]], described: str) -> None:
    """Best-so-far validation MAE against wall time, one panel per sampler seed."""
    import matplotlib.pyplot as plt  # the Agg backend, set by ab.nn.report.plots

    fig, axes = plt.subplots(1, len(analysed), figsize=(5.2 * len(analysed), 4.2), squeeze=False, sharey=True)
    for ax, (work, (arms, (low, high))) in zip(axes.flat, analysed.items()):
        for name, trials in arms.items():
            if name + SAME_TIME in arms:
                continue  # its curve is the first part of its fixed-time continuation's
            ax.step(trials.elapsed / 60, best_so_far(trials), where="post", label=name)
        ax.axhspan(low, high, color="grey", alpha=0.2, label="no-pruning best, 95% CI")
        ax.set(xlabel="wall time (minutes, trials back to back)", title=work)
        ax.grid(alpha=0.3)
    axes.flat[0].set_ylabel("best validation MAE so far (years)")
    fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="lower center", ncol=6, fontsize=8)
    title = f"MobileAgeNet, {described}"
    if any(name.endswith(SAME_TIME) for arms, _ in analysed.values() for name in arms):
        title += "; -same-time: the pruned search continued until it had used the no-pruning time"
    fig.suptitle("\n".join(textwrap.wrap(title, width=int(14 * fig.get_figwidth()))), fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
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
    p.add_argument("--pruner-floor", type=float, default=None, metavar="ACCURACY",
                   help="the runner's --pruner-floor for the pruning arm (and for every --replay)")
    p.add_argument("--seed", type=int, default=42, help="the runner's --seed: training seeds and the sampler's")
    p.add_argument("--fixed", default=None, metavar="JSON",
                   help="hyperparameters fixed in both arms (the runner's -p), e.g. '{\"freeze\": 0}'")
    p.add_argument("--plot", default=None, help="PNG of best-so-far MAE against time")
    p.add_argument("--analyse-only", action="store_true", help="read the workspaces, run nothing")
    p.add_argument("--also", nargs="*", default=[], metavar="ARM",
                   help="with --analyse-only: more arms recorded under --work (e.g. hyperband-warmup2) in the table "
                        "and the plot")
    p.add_argument("--same-time", action="store_true",
                   help="after both arms: continue the pruning arm's study in a copy until it has used the "
                        "no-pruning arm's wall time (a search of fixed time, not count)")
    p.add_argument("--replay", nargs="+", type=int, default=None, metavar="WARMUP",
                   help="with --analyse-only: also replay every pruner, with these warm-ups, on each no-pruning "
                        "arm's learning curves")
    p.add_argument("--arm", default=None, help="run only this arm (none or the pruner), e.g. both arms at once "
                                               "in two processes under the same load; then --analyse-only")
    args = p.parse_args(argv)
    if args.pruner == "none":
        p.error("--pruner is the pruning arm's pruner (the other arm is always none)")
    works = [Path(w).resolve() for w in args.work]
    if len(works) > 1 and not args.analyse_only:
        p.error("several --work folders are for --analyse-only; run each sampler seed in its own folder")
    if len({w.name for w in works}) < len(works):
        p.error("each --work folder needs its own name (the tables and the plot name seeds by it)")
    if (args.also or args.replay) and not args.analyse_only:
        p.error("--also and --replay are for --analyse-only")
    if args.same_time:
        if args.analyse_only or args.arm is not None:
            p.error("--same-time runs on its own: it continues the pruning arm that --arm or a full run left")
        same_time(works[0], args)
        return 0
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
    described = budget(analysed, works)
    print(f"machine: {system.cpu_model()}, {system.cpu_count()} cores; {CONFIG}, {described}")
    print(table(rows))
    print(summary(rows))
    if args.replay:
        print(f"\nthe pruners replayed on each no-pruning arm's trials (time and time to the no-pruning best's "
              f"interval as fractions of its wall time):\n{replays(works, args.replay, args.pruner_floor)}")
    if args.plot:
        plot(args.plot, analysed, described)
    return 0


if __name__ == "__main__":
    sys.exit(main())
