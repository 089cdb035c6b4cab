"""MobileAgeNet's age heads compared on the README's 96 px CPU recipe: each head trained with
several seeds as trials of the MobileAgeNet config's study, then a table from the database
(validation and test MAE mean +- std per head, minutes, and each head's test MAE minus
regression's with a 95 % Welch interval).

    python benchmarks/age_heads.py --data-dir ../shared/data/utkface --epochs 26 --seeds 3
    python benchmarks/age_heads.py --epochs 26 --table-only      # the table again, from the database
    python benchmarks/age_heads.py --epochs 26 --dry-run         # the commands only

Each head is one ``python -m ab.nn.train -t -SEEDS -p '{<recipe>, "head": "<name>"}'``: SEEDS more
trials with every hyperparameter fixed, on the same split (``--split paper``, ``--seed``), which
differ only in their training seed (the runner's ``--seed`` plus the trial number). The heads'
trials therefore have different seeds, and the comparison with regression is unpaired (Welch's
t interval on the seeds' test MAEs). At the README's budget
(26 epochs, ~38 minutes a trial on 2 cores) 4 heads x 3 seeds take about 7.5 hours.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import subprocess
import sys

import pandas as pd

from ab.nn import api, registry, workspace
from ab.nn.stat.schema import TRAINED_STATES
from ab.nn.util.markdown import table

CONFIG = "age-regression_utkface_mae_MobileAgeNet"
HEADS = ("regression", "dex", "dldl", "mean-variance")
RECIPE = {"lr": 0.001, "batch": 64, "dropout": 0.1, "momentum": 0.9, "pretrained": 0, "freeze": 0,
          "backbone_lr_mult": 1, "bounded": 1, "sgd": 0, "smooth_l1": 0, "onecycle": 1}
"""The README's 96 px MobileAgeNet recipe (from scratch: test MAE 5.62 after 26 epochs)."""


def command(head: str, args: argparse.Namespace) -> list[str]:
    prm = json.dumps({**RECIPE, "head": head}, sort_keys=True)
    cmd = [sys.executable, "-m", "ab.nn.train", "-c", CONFIG, "-e", str(args.epochs), "-t", str(-args.seeds),
           "-f", args.transform, "-p", prm, "-w", "0", "--pretrained", "0", "--export", args.export,
           "--split", "paper", "--seed", str(args.seed), "--quiet"]
    if args.max_samples:
        cmd += ["--max-samples", str(args.max_samples)]
    return cmd + [f"--{k}={v}" for k, v in (("root", args.root), ("db", args.db), ("data-dir", args.data_dir)) if v]


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (Lentz's method, Numerical Recipes 6.4)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a - 1 + 2 * m) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 1 + 2 * m))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def t_quantile_95(df: float) -> float:
    """Two-sided 95 % quantile of Student's t with (fractional) ``df``: P(|T| <= t) = 1 - I_{df/(df+t^2)}(df/2, 1/2)."""
    low, high = 0.0, 1e4
    for _ in range(200):
        middle = (low + high) / 2
        if 1.0 - incomplete_beta(df / 2, 0.5, df / (df + middle * middle)) < 0.95:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def welch_interval(a: list[float], b: list[float]) -> tuple[float, float, float] | None:
    """mean(a) - mean(b) and its 95 % Welch interval; None with fewer than 2 values on a side."""
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    difference = statistics.fmean(a) - statistics.fmean(b)
    if va + vb == 0:
        return difference, difference, difference
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = t_quantile_95(df) * math.sqrt(va + vb)
    return difference, difference - half, difference + half


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} +- {statistics.stdev(values):.3f}"


def results(db, epochs: int, transform: str, max_samples: int | None) -> pd.DataFrame:
    """One row per head from the trials that ran the recipe at this budget (a head given by name
    or by LEMUR's number counts alike)."""
    choice = registry.load(registry.MODEL, "MobileAgeNet").head_choice
    trials = api.trials(config=CONFIG, db=db)
    by_head: dict[str, list] = {head: [] for head in HEADS}
    for t in trials.itertuples():
        prm = t.prm
        same_budget = (pd.isna(t.max_samples) and max_samples is None) or t.max_samples == max_samples
        if same_budget and prm.get("transform") == transform and prm.get("epoch_max") == epochs and \
                all(prm.get(k) == v for k, v in RECIPE.items()) and "head" in prm:
            by_head[choice(prm["head"])].append(t)
    test = {head: [t.test_mae for t in rows if t.status in TRAINED_STATES and not pd.isna(t.test_mae)]
            for head, rows in by_head.items()}
    frame = []
    for head, rows in by_head.items():
        trained = [t for t in rows if t.status in TRAINED_STATES]
        compared = welch_interval(test[head], test["regression"]) if head != "regression" else None
        frame.append({
            "head": head, "trials": len(trained), "not trained": len(rows) - len(trained),
            "val MAE": _spread([t.eval_mae for t in trained if not pd.isna(t.eval_mae)]),
            "test MAE": _spread(test[head]),
            "minutes": statistics.fmean([t.duration / 6e10 for t in trained]) if trained else None,
            "test MAE - regression [95 % CI]": "-" if compared is None else
            f"{compared[0]:+.3f} [{compared[1]:+.3f}, {compared[2]:+.3f}]"})
    return pd.DataFrame(frame)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/age_heads.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=26)
    p.add_argument("--seeds", type=int, default=3, help="trials (training seeds) per head")
    p.add_argument("--transform", default="norm_96_aug")
    p.add_argument("--seed", type=int, default=42, help="the split's seed and the first trial's")
    p.add_argument("--heads", nargs="+", choices=HEADS, default=list(HEADS))
    p.add_argument("--export", default="none", help="the runner's --export (default: none)")
    p.add_argument("--max-samples", type=int, default=None, help="smoke runs only")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    p.add_argument("--table-only", action="store_true", help="print the table from the database only")
    workspace.add_arguments(p)
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error(f"--seeds must be at least 1, got {args.seeds}")
    if not args.table_only:
        for number, head in enumerate(args.heads, 1):
            cmd = command(head, args)
            print(f"[{number}/{len(args.heads)}] $", " ".join(shlex.quote(c) for c in cmd[1:])
                  .replace("-m ab.nn", "python -m ab.nn", 1), flush=True)
            if not args.dry_run:
                subprocess.run(cmd, check=False)  # a failed head is a row of the table, not the end
    if args.dry_run:
        return 0
    print(f"\nMobileAgeNet heads, {args.epochs} epochs, {args.transform}, split paper/{args.seed}, "
          f"{args.max_samples or 'all'} images per part\n")
    print(table(results(workspace.from_arguments(args).db_url, args.epochs, args.transform, args.max_samples)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
