"""MobileAgeNet ablations the reviewers asked for, each one sweep command recorded in the database:
single- vs two-stage fine-tuning, bounded vs unbounded output, pretrained vs from scratch, and
input size 128 vs 224.

    python experiments/ablations.py run --data-dir ../shared/data/utkface --epochs 6 --max-samples 4096
    python experiments/ablations.py table          # markdown from the database

``run`` prints and executes one ``python -m ab.nn.train`` command per ablation (``--dry-run``
only prints them); ``table`` pairs each with its reference from the trials recorded with the
same budget. Where no ImageNet weights are available the pretrained ablation is recorded as a
failed trial with the reason, which the table shows.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass

import pandas as pd

from ab.nn import api
from ab.nn.stat import uncertainty
from ab.nn.stat.states import COMPLETE
from ab.nn.util.markdown import table
from ab.nn import workspace

CONFIG = "age-regression_utkface_mae_MobileAgeNet"
BASE = {"lr": 0.001, "batch": 64, "dropout": 0.1, "momentum": 0.9, "pretrained": 0, "freeze": 0.0,
        "backbone_lr_mult": 1.0, "bounded": 1, "sgd": 0, "smooth_l1": 0, "onecycle": 1, "head": 0,
        "flip_average": 0}
"""The paper's recipe; ``head`` 0 is the regression head (LEMUR's number: the runner samples it otherwise)."""
ADDED_LATER = {"head": 0, "flip_average": 0}
"""Hyperparameters MobileAgeNet gained after trials had been recorded without them, with the value those
trials trained with: the regression head, no averaging over the mirror image."""


@dataclass(frozen=True)
class Variant:
    name: str
    changes: dict
    transform: str = "norm_128_aug"


VARIANTS = (
    Variant("reference: single stage, bounded, from scratch, 128", {}),
    Variant("two-stage (head first for 20 %, then backbone lr x0.1)", {"freeze": 0.2, "backbone_lr_mult": 0.1}),
    Variant("unbounded output", {"bounded": 0}),
    Variant("pretrained (ImageNet), two-stage", {"pretrained": 1, "freeze": 0.2, "backbone_lr_mult": 0.1}),
    Variant("input 224", {}, "norm_224_aug"),
)


def command(variant: Variant, epochs: int, max_samples: int | None, extra: list[str], seeds: int = 1) -> list[str]:
    """One sweep command: ``seeds`` replicas of the variant (training seeds 42, 43, ...) on the same split."""
    prm = json.dumps({**BASE, **variant.changes}, sort_keys=True)
    args = [sys.executable, "-m", "ab.nn.train", "-c", CONFIG, "-t", "-1", "-e", str(epochs), "-f", variant.transform,
            "-p", prm, "-w", "0", "--export", "none", "--quiet", "-a", str(seeds)]  # one try per seed
    if seeds > 1:
        args += ["--seeds", str(seeds)]
    if max_samples:
        args += ["--max-samples", str(max_samples)]
    return args + extra


def _matches(trial, variant: Variant, epochs: int, max_samples: int | None) -> bool:
    wanted = {**BASE, **variant.changes, "transform": variant.transform, "epoch_max": epochs}
    same_budget = (pd.isna(trial.max_samples) and max_samples is None) or trial.max_samples == max_samples
    return same_budget and all(trial.prm.get(k, ADDED_LATER.get(k)) == v for k, v in wanted.items())


def results(db, epochs: int, max_samples: int | None) -> pd.DataFrame:
    """One row per ablation: its replicas on the newest data key the reference was run on, mean +- std
    of val and test MAE across those that trained all their epochs (a replica stopped by LEMUR's gate
    is counted in ``status``, not averaged in), and the paired test-MAE difference from the
    reference (images and replicas resampled; a 95 % interval that contains 0 is a tie)."""
    trials = api.trials(config=CONFIG, db=db)
    matched = {v.name: trials[[_matches(t, v, epochs, max_samples) for t in trials.itertuples()]]
               if not trials.empty else trials for v in VARIANTS}
    reference = matched[VARIANTS[0].name]
    key = reference.sort_values("id").data_key.iloc[-1] if not reference.empty else None
    trained_reference = _trained(reference, key)
    rows = []
    for variant in VARIANTS:
        mine = matched[variant.name]
        mine = mine[mine.data_key == key] if key is not None and not mine.empty else mine
        if mine.empty:
            rows.append({"ablation": variant.name, "status": "not run"})
            continue
        done = _trained(mine, key)
        row = {"ablation": variant.name, "status": ", ".join(f"{n} {s}" for s, n in mine.status.value_counts().items()),
               "seeds": len(done)}
        if done.empty:
            row["note"] = str(mine.sort_values("id").error.iloc[-1]).splitlines()[0][:90]
            rows.append(row)
            continue
        for column, label in (("eval_mae", "val"), ("test_mae", "test")):
            row[f"{label} MAE"], row[f"{label} std"], _ = uncertainty.mean_std(done[column])
        row["minutes (mean)"] = done.duration.mean() / 6e10
        row["trials"] = ",".join(str(i) for i in sorted(done.id))
        if variant is not VARIANTS[0] and not trained_reference.empty:
            try:
                c = api.compare(list(done.id), list(trained_reference.id), split="test", db=db)
                row["test MAE vs reference"] = f"{c.difference:+.2f} [{c.low:+.2f}, {c.high:+.2f}]"
                row["p"] = f"{c.p_value:.2g}"
                row["significant?"] = "no (tie)" if c.verdict == "tie" else "yes"
            except (LookupError, ValueError) as error:
                row["significant?"] = f"not compared: {str(error)[:60]}"
        rows.append(row)
    return pd.DataFrame(rows)


def _trained(trials: pd.DataFrame, key) -> pd.DataFrame:
    """The replicas that trained every epoch of the budget."""
    if trials.empty:
        return trials
    return trials[(trials.status == COMPLETE) & (trials.data_key == key)]


def cli(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python experiments/ablations.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("run", "table"))
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--max-samples", type=int, default=None)
    p.add_argument("--seeds", type=int, default=3, help="training-seed replicas of every ablation")
    p.add_argument("--dry-run", action="store_true", help="run: print the commands only")
    workspace.add_arguments(p)
    args = p.parse_args(argv)
    extra = [f"--{k}={v}" for k, v in (("root", args.root), ("db", args.db), ("data-dir", args.data_dir)) if v]
    if args.command == "run":
        for variant in VARIANTS:
            cmd = command(variant, args.epochs, args.max_samples, extra, args.seeds)
            print("$", " ".join(shlex.quote(c) for c in cmd[1:]).replace("-m ab.nn", "python -m ab.nn", 1), flush=True)
            if not args.dry_run:
                subprocess.run(cmd, check=False)
    ws = workspace.from_arguments(args)
    if not args.dry_run:
        print(f"\nMobileAgeNet ablations, {args.epochs} epochs, "
              f"{args.max_samples or 'all'} images per part, split paper/42, training seeds 42..\n")
        print(table(results(ws.db_url, args.epochs, args.max_samples)))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
