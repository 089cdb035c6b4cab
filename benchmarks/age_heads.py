"""MobileAgeNet's age heads compared on the README's 96 px CPU recipe: each head trained with several
training seeds on the same split (``--seeds``), then a table from the database: validation and test
MAE mean +- std per head, minutes, and each head's paired comparison with regression on the same test
images (``ab.nn.api.compare``: images and replicas resampled; an interval containing 0 is a tie).

    python benchmarks/age_heads.py --data-dir ../shared/data/utkface --epochs 26 --seeds 3
    python benchmarks/age_heads.py --epochs 26 --table-only      # the table again, from the database
    python benchmarks/age_heads.py --epochs 26 --dry-run         # the commands only

Each head is one ``python -m ab.nn.train -t -1 --seeds N -p '{<recipe>, "head": "<name>"}'``: N more
trials with every hyperparameter fixed, training seeds ``--seed`` ... ``--seed``+N-1 (N >= 2), so every
head sees the same seeds. With ``--seeds 1`` the runner's single-trial rule applies instead: the seed is
``--seed`` plus the trial's Optuna number, so heads run into one study get different seeds; the table's
"training seeds" column shows which ran. Trials of the recipe recorded before heads existed count as
regression.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys

import pandas as pd

from ab.nn import api, registry, workspace
from ab.nn.stat import uncertainty
from ab.nn.stat.states import COMPLETE
from ab.nn.util.markdown import table

CONFIG = "age-regression_utkface_mae_MobileAgeNet"
HEADS = ("regression", "dex", "dldl", "mean-variance")
RECIPE = {"lr": 0.001, "batch": 64, "dropout": 0.1, "momentum": 0.9, "pretrained": 0, "freeze": 0,
          "backbone_lr_mult": 1, "bounded": 1, "sgd": 0, "smooth_l1": 0, "onecycle": 1, "flip_average": 0}
"""The README's 96 px MobileAgeNet recipe (from scratch)."""
ADDED_LATER = {"flip_average": 0}
"""Recipe hyperparameters MobileAgeNet gained after trials of the recipe had been recorded without them, with
the value those trials trained with (no averaging over the mirror image)."""


def command(head: str, args: argparse.Namespace) -> list[str]:
    prm = json.dumps({**RECIPE, "head": head}, sort_keys=True)
    cmd = [sys.executable, "-m", "ab.nn.train", "-c", CONFIG, "-e", str(args.epochs), "-t", "-1", "--seeds",
           str(args.seeds), "-f", args.transform, "-p", prm, "-w", "0", "--pretrained", "0", "--export", args.export,
           "--split", "paper", "--split-seed", "42", "--seed", str(args.seed), "--quiet", "-a", str(args.seeds)]
    if args.max_samples:
        cmd += ["--max-samples", str(args.max_samples)]
    return cmd + [f"--{k}={v}" for k, v in (("root", args.root), ("db", args.db), ("data-dir", args.data_dir)) if v]


def spread(values) -> str:
    """Mean +- std over seeds; a single seed has no spread to print, none has no value."""
    mean, std, n = uncertainty.mean_std(values)
    if n == 0:
        return "-"
    return f"{mean:.3f}" if n == 1 else f"{mean:.3f} +- {std:.3f}"


def results(db, epochs: int, transform: str, max_samples: int | None) -> pd.DataFrame:
    """One row per head from the complete trials that ran the recipe at this budget on the newest data key
    of its regression trials (a head given by name or by LEMUR's number counts alike)."""
    choice = registry.load(registry.MODEL, "MobileAgeNet").head_choice
    trials = api.trials(config=CONFIG, db=db)
    rows = []
    for t in trials.itertuples():
        prm = t.prm
        same_budget = (pd.isna(t.max_samples) and max_samples is None) or t.max_samples == max_samples
        if same_budget and prm.get("transform") == transform and prm.get("epoch_max") == epochs and \
                all(prm.get(k, ADDED_LATER.get(k)) == v for k, v in RECIPE.items()):
            rows.append({"id": t.id, "head": choice(prm.get("head", "regression")), "status": t.status,
                         "data_key": t.data_key, "seed": t.seed, "eval_mae": t.eval_mae, "test_mae": t.test_mae,
                         "minutes": t.duration / 6e10 if not pd.isna(t.duration) else None})
    found = pd.DataFrame(rows, columns=["id", "head", "status", "data_key", "seed", "eval_mae", "test_mae", "minutes"])
    reference = found[(found["head"] == "regression") & (found.status == COMPLETE)].sort_values("id")
    key = reference.data_key.iloc[-1] if not reference.empty else None
    done = found[(found.status == COMPLETE) & (found.data_key == key)]
    frame = []
    for head in HEADS:
        mine = done[done["head"] == head]
        row = {"head": head, "seeds": len(mine),
               "training seeds": ", ".join(str(int(s)) for s in sorted(mine.seed.dropna())) or "-",
               "not complete": int(((found["head"] == head) & (found.status != COMPLETE)).sum())}
        for column, label in (("eval_mae", "val MAE"), ("test_mae", "test MAE")):
            row[label] = spread(mine[column])
        row["minutes"] = mine.minutes.mean() if len(mine) else None
        row["test MAE - regression [95% CI], p"] = "-"
        if head != "regression" and len(mine) and len(reference):
            c = api.compare(list(mine.id), list(done[done["head"] == "regression"].id), db=db)
            row["test MAE - regression [95% CI], p"] = (f"{c.difference:+.3f} [{c.low:+.3f}, {c.high:+.3f}], "
                                                      f"p={c.p_value:.2g} ({c.verdict.replace('A', head).replace('B', 'regression')})")
        frame.append(row)
    return pd.DataFrame(frame)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/age_heads.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=26)
    p.add_argument("--seeds", type=int, default=3, help="training seeds per head")
    p.add_argument("--transform", default="norm_96_aug")
    p.add_argument("--seed", type=int, default=42, help="the first training seed")
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
    print(f"\nMobileAgeNet heads, {args.epochs} epochs, {args.transform}, split paper/42, "
          f"{args.max_samples or 'all'} images per part (test MAE: mean +- std over seeds)\n")
    print(table(results(workspace.from_arguments(args).db_url, args.epochs, args.transform, args.max_samples)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
