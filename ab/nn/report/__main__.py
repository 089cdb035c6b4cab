"""``python -m ab.nn.report``: write a report folder from the statistics database.

  report/README.md            the comparison table (best trial per config, chosen on validation),
                              the AgeMoE mixtures, and links to the plots
  report/predicted_vs_true.png  best trial per model (needs its checkpoint: --save_pth_weights)
  report/mae_by_age_group.png   test MAE per CAF age group, per model and per mixture
  report/mae_vs_latency.png     every trial with a latency row; the Pareto front marked
  report/history_<config>.png   Optuna's optimisation history of each config
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ab.nn import api
from ab.nn.config import Config
from ab.nn.dataset.settings import DataSettings
from ab.nn.moe.experts import ExpertError, TrialExpert
from ab.nn.report import plots, tables
from ab.nn.util.markdown import table
from ab.nn import workspace
from ab.nn.workspace import Workspace

MIXTURE = "AgeMoE"


def _predictions(best: pd.DataFrame, ws: Workspace) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for trial in best.to_dict("records"):
        try:
            expert = TrialExpert(trial, ws)
            predicted = expert.predict(ws, DataSettings.from_label(trial["split"], trial["max_samples"]))
        except (ExpertError, FileNotFoundError):
            continue
        if "test" in predicted.ages:
            out[Config.parse(trial["config"]).nn] = (predicted.labels["test"], predicted.ages["test"])
    return out


def _group_rows(best: pd.DataFrame, db) -> pd.DataFrame:
    frames = []
    mixtures = api.trials(config=f"age-regression_utkface_mae_{MIXTURE}", db=db)
    ids = list(best.id) + ([int(mixtures.id.max())] if not mixtures.empty else [])
    for trial_id in ids:
        groups = api.age_groups(trial_id=trial_id, split="test", db=db)
        if not groups.empty:
            groups["label"] = Config.parse(groups.config.iloc[0]).nn
            frames.append(groups)
    return pd.concat(frames) if frames else pd.DataFrame()


def _latency_points(db) -> pd.DataFrame:
    trials = api.trials(status=api.TRAINED, db=db)
    latency = api.latency(threads=1, status="ok", db=db)
    if trials.empty or latency.empty:
        return pd.DataFrame()
    preferred = latency.assign(rank=latency.format.map({"tflite": 0, "onnx": 1, "pytorch": 2}))
    preferred = preferred[(preferred.precision == "fp32")].sort_values("rank").groupby("trial_id").head(1)
    points = trials.merge(preferred[["trial_id", "median_ms"]], left_on="id", right_on="trial_id")
    return pd.DataFrame({"model": points.nn, "mae": points.eval_mae, "latency_ms": points.median_ms}).dropna()


def write(ws: Workspace, out: Path) -> Path:
    db = ws.db_url
    out.mkdir(parents=True, exist_ok=True)
    best = tables.best_trials(db)
    best = best[~best.config.str.endswith(f"_{MIXTURE}")] if not best.empty else best
    lines = ["# Report", "", f"Database: `{db}`. Best trial per config, chosen on validation MAE; its test MAE "
             f"is shown beside it, never used for selection.", ""]
    comparison = tables.comparison(db, list(best.config)) if not best.empty else pd.DataFrame()
    lines += [table(comparison), ""] if not comparison.empty else ["No trained trials yet.", ""]
    mixtures = api.trials(config=f"age-regression_utkface_mae_{MIXTURE}", db=db)
    if not mixtures.empty:
        lines += ["## AgeMoE mixtures", "", table(mixtures[["id", "prm", "eval_mae", "test_mae"]].assign(
            prm=mixtures.prm.map(lambda p: p.get("experts")))), ""]
    figures = []
    predictions = _predictions(best, ws) if not best.empty else {}
    if predictions:
        figures.append(plots.predicted_vs_true(predictions, out / "predicted_vs_true.png"))
    groups = _group_rows(best, db) if not best.empty else pd.DataFrame()
    if not groups.empty:
        figures.append(plots.mae_by_group(groups, out / "mae_by_age_group.png"))
    points = _latency_points(db)
    if not points.empty:
        figures.append(plots.mae_vs_latency(points, out / "mae_vs_latency.png"))
    for config in best.config if not best.empty else []:
        made = plots.optimisation_history(config, db, out / f"history_{config}.png")
        if made:
            figures.append(made)
    lines += ["## Plots", ""] + [f"![{f.stem}]({f.name})" for f in figures]
    (out / "README.md").write_text("\n".join(lines) + "\n")
    return out / "README.md"


def cli(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ab.nn.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    workspace.add_arguments(p)
    p.add_argument("--out", default=None, help="report folder (default: <root>/report)")
    args = p.parse_args(argv)
    ws = workspace.from_arguments(args)
    try:
        api.db_url(ws.db_url)
    except FileNotFoundError as error:
        p.exit(2, f"{p.prog}: error: {error}\n")
    print(write(ws, Path(args.out) if args.out else ws.report_dir))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
