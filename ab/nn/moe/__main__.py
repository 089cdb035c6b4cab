"""``python -m ab.nn.moe``: fit and evaluate AgeMoE mixtures.

  fit       python -m ab.nn.moe fit --experts best:age-regression_utkface_mae_MobileAgeNet \\
                best:age-regression_utkface_mae_ResNet18 onnx:other.onnx [--calibrator mlp|bins] [--spread]
            fits on the validation split, prints validation and test numbers of every expert and of
            the mixture, records the mixture as a trial of age-regression_utkface_mae_AgeMoE and saves
            it as out/age-regression_utkface_mae_AgeMoE/<n>/agemoe.pt
  show      python -m ab.nn.moe show [--trial ID]: the table of a recorded mixture (default: the latest)
"""
from __future__ import annotations

import argparse
import json
import sys

import pandas as pd

from ab.nn.dataset.identity import DataMismatch
from ab.nn.dataset.settings import DEFAULT_SPLIT_SEED, PROTOCOLS, DataSettings
from ab.nn.moe import mixture
from ab.nn.moe.experts import ExpertError
from ab.nn.stat import engine as engines, frames, versions
from ab.nn.stat.comparison import compare
from ab.nn.stat.schema import Fusion
from ab.nn.util.markdown import table
from ab.nn import workspace
from ab.nn.workspace import Workspace
from ab.nn.util.arguments import Parser

COLUMNS = (("mae", "MAE"), ("worst_group_mae", "worst group MAE"), ("fairness_gap", "fairness gap"),
           ("error_std", "error std"), ("cs5", "CS@5"), ("bias", "bias"))


def summary(metrics: dict) -> pd.DataFrame:
    rows = []
    for name in metrics["eval"]:
        row = {"model": name, "val MAE": metrics["eval"][name]["mae"]}
        for key, label in COLUMNS:
            if "test" in metrics:
                row[f"test {label}"] = metrics["test"][name].get(key)
        rows.append(row)
    return pd.DataFrame(rows)


def _paired(mixture_id: int, expert: str, split: str, db) -> str:
    """The mixture against an expert on the same images: the difference, its interval, the verdict."""
    if "#" not in expert or not expert.rsplit("#", 1)[1].isdigit():
        return "no paired test (the expert is not a recorded trial)"
    try:
        c = compare(mixture_id, int(expert.rsplit("#", 1)[1]), split=split, db=db)
    except (LookupError, ValueError) as error:
        return f"no paired test ({error})"
    outcome = {"tie": "a tie", "A lower": "significantly lower", "B lower": "significantly higher"}[c.verdict]
    return (f"difference {c.difference:+.3f} years [95% CI {c.low:+.3f}, {c.high:+.3f}], Wilcoxon p={c.p_value:.2g}, "
            f"n={c.n_images} images: {outcome}")


def verdict(metrics: dict, mixture_id: int | None = None, db=None) -> str:
    split = "test" if "test" in metrics else "eval"
    members = metrics[split]
    experts = {k: v for k, v in members.items() if k != "AgeMoE"}
    best = min(experts, key=lambda k: experts[k]["mae"])
    best_worst = min(v["worst_group_mae"] for v in experts.values())
    mix = members["AgeMoE"]
    paired = f"\n  paired test against {best}: {_paired(mixture_id, best, split, db)}" if mixture_id is not None else ""
    return (f"{split}: mixture MAE {mix['mae']:.3f} vs best expert ({best}) {experts[best]['mae']:.3f} -> "
            f"{'lower' if mix['mae'] < experts[best]['mae'] else 'NOT lower'}; mixture worst-group MAE "
            f"{mix['worst_group_mae']:.3f} vs best expert worst-group MAE {best_worst:.3f} -> "
            f"{'lower' if mix['worst_group_mae'] < best_worst else 'NOT lower'}{paired}")


def _recorded(trial_id: int | None, ws: Workspace) -> tuple[int, dict]:
    trials = frames.trials(config=mixture.CONFIG.name, db=ws.db_url)
    if trials.empty:
        raise LookupError("no AgeMoE mixture recorded yet (python -m ab.nn.moe fit --experts ...)")
    trial_id = int(trials.id.max()) if trial_id is None else trial_id
    if trial_id not in set(trials.id):
        raise LookupError(f"trial {trial_id} is not an AgeMoE mixture; mixtures: {', '.join(map(str, trials.id))}")
    from sqlalchemy.orm import Session

    with Session(engines.engine(ws.db_url, writer=False)) as session:
        row = session.get(Fusion, trial_id)
        if row is None:
            raise LookupError(f"trial {trial_id} is not an AgeMoE mixture")
        experts_only = json.loads(row.settings)["expert_metrics"]
    own = frames.metrics(trial_id=trial_id, db=ws.db_url)
    for split, frame in own.groupby("split"):
        experts_only.setdefault(split, {})["AgeMoE"] = dict(zip(frame.name, frame.value))
    return trial_id, experts_only


def cli(argv=None) -> int:
    p = Parser(prog="python -m ab.nn.moe", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("fit", "show"))
    p.add_argument("--experts", nargs="+", default=[], help="trial:<id>, best:<config>, onnx:<file>[:<spec.json>]")
    p.add_argument("--calibrator", choices=("mlp", "bins"), default="mlp", help="per-expert bias correction")
    p.add_argument("--spread", action="store_true", help="the gate also sees the experts' spread")
    p.add_argument("--steps", type=int, default=800, help="optimisation steps per fitting phase")
    p.add_argument("--trial", type=int, default=None, help="show: the mixture's trial id")
    p.add_argument("--split", choices=PROTOCOLS, default="paper")
    p.add_argument("--split-seed", type=int, default=DEFAULT_SPLIT_SEED)
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--max-samples", type=int, default=None)
    p.add_argument("--align", action="store_true", help="in-the-wild photos aligned onto the face template, as "
                                                        "experts trained with train --align saw them")
    workspace.add_arguments(p)
    args = p.parse_args(argv)
    ws = workspace.from_arguments(args)
    try:
        if args.command == "fit":
            settings = DataSettings(split=args.split, split_seed=args.split_seed, fold=args.fold, folds=args.folds,
                                    max_samples=args.max_samples, align=args.align)
            versions.upgrade(ws.db_url)  # a writing command: it records the mixture as a trial
            with workspace.active.use(ws):  # experts whose model files are in that workspace's nn/
                result = mixture.fit(args.experts, ws, settings, args.calibrator, args.spread, args.steps)
            trial_id, metrics = result.trial_id, result.metrics
            print(f"recorded as trial {trial_id} of {mixture.CONFIG.name}; fusion saved to {result.path}\n")
        else:
            trial_id, metrics = _recorded(args.trial, ws)
    except (ExpertError, LookupError, FileNotFoundError, ValueError, DataMismatch, engines.DatabaseError) as error:
        p.exit(2, f"{p.prog}: error: {error}\n")
    print(table(summary(metrics)))
    print("\n" + verdict(metrics, trial_id, ws.db_url))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
