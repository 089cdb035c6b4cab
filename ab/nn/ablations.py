"""MobileAgeNet ablations the reviewers asked for, each one sweep command recorded in the database:
single- vs two-stage fine-tuning, bounded vs unbounded output, pretrained vs from scratch, and
input size 128 vs 224.

    python -m ab.nn.ablations run --data-dir ../shared/data/utkface --epochs 6 --max-samples 4096
    python -m ab.nn.ablations table          # markdown from the database

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
from ab.nn.util.markdown import table
from ab.nn import workspace

CONFIG = "age-regression_utkface_mae_MobileAgeNet"
BASE = {"lr": 0.001, "batch": 64, "dropout": 0.1, "momentum": 0.9, "pretrained": 0, "freeze": 0.0,
        "backbone_lr_mult": 1.0, "bounded": 1, "sgd": 0, "smooth_l1": 0, "onecycle": 1, "head": 0}
"""The paper's recipe; ``head`` 0 is the regression head (LEMUR's number: the runner samples it otherwise)."""
BEFORE_HEADS = {"head": 0}
"""Trials recorded before MobileAgeNet had a ``head`` hyperparameter trained the regression head."""


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


def command(variant: Variant, epochs: int, max_samples: int | None, extra: list[str]) -> list[str]:
    prm = json.dumps({**BASE, **variant.changes}, sort_keys=True)
    args = [sys.executable, "-m", "ab.nn.train", "-c", CONFIG, "-t", "-1", "-e", str(epochs), "-f", variant.transform,
            "-p", prm, "-w", "0", "--export", "none", "--quiet", "-a", "1"]  # one try: a failure is the result
    if max_samples:
        args += ["--max-samples", str(max_samples)]
    return args + extra


def _matches(trial, variant: Variant, epochs: int, max_samples: int | None) -> bool:
    wanted = {**BASE, **variant.changes, "transform": variant.transform, "epoch_max": epochs}
    same_budget = (pd.isna(trial.max_samples) and max_samples is None) or trial.max_samples == max_samples
    return same_budget and all(trial.prm.get(k, BEFORE_HEADS.get(k)) == v for k, v in wanted.items())


def results(db, epochs: int, max_samples: int | None) -> pd.DataFrame:
    trials = api.trials(config=CONFIG, db=db)
    rows = []
    for variant in VARIANTS:
        mine = [t for t in trials.itertuples() if _matches(t, variant, epochs, max_samples)]
        if not mine:
            rows.append({"ablation": variant.name, "status": "not run"})
            continue
        t = mine[-1]
        rows.append({"ablation": variant.name, "status": t.status, "val MAE": t.eval_mae, "test MAE": t.test_mae,
                     "minutes": None if pd.isna(t.duration) else t.duration / 6e10, "trial": t.id,
                     "note": "" if t.status != "failed" else str(t.error).splitlines()[0][:90]})
    frame = pd.DataFrame(rows)
    reference = frame["test MAE"].iloc[0] if "test MAE" in frame and len(frame) else None
    if reference is not None and not pd.isna(reference):
        frame["test MAE vs reference"] = frame["test MAE"] - reference
    return frame


def cli(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ab.nn.ablations", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("run", "table"))
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--max-samples", type=int, default=None)
    p.add_argument("--dry-run", action="store_true", help="run: print the commands only")
    workspace.add_arguments(p)
    args = p.parse_args(argv)
    extra = [f"--{k}={v}" for k, v in (("root", args.root), ("db", args.db), ("data-dir", args.data_dir)) if v]
    if args.command == "run":
        for variant in VARIANTS:
            cmd = command(variant, args.epochs, args.max_samples, extra)
            print("$", " ".join(shlex.quote(c) for c in cmd[1:]).replace("-m ab.nn", "python -m ab.nn", 1), flush=True)
            if not args.dry_run:
                subprocess.run(cmd, check=False)
    ws = workspace.from_arguments(args)
    if not args.dry_run:
        print(f"\nMobileAgeNet ablations, {args.epochs} epochs, "
              f"{args.max_samples or 'all'} images per part, split paper/42\n")
        print(table(results(ws.db_url, args.epochs, args.max_samples)))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
