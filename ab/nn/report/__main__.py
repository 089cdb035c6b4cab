"""``python -m ab.nn.report``: write a report folder from the statistics database.

  report/README.md            the comparison table (best trial per config, chosen on validation),
                              the AgeMoE mixtures, who the models fail (by gender, race and age, minors'
                              false-adult rates), and links to the plots
  report/predicted_vs_true.png  density of test predictions per model, the 18-year lines marked
  report/mae_by_age_group.png   test MAE per CAF age group, per model and per mixture, with intervals
  report/bias_by_age.png        test bias (predicted - true) per age group
  report/mae_by_gender_race.png MAE and age-standardised MAE per gender and per race
  report/minors.png             minors predicted adult (and adults predicted minor) at 13, 18 and 21
  report/mae_vs_latency.png     every trial with a latency row; the Pareto front marked
  report/history_<config>.png   Optuna's optimisation history of each config
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from ab.nn.config import Config
from ab.nn.report import groups, plots, tables
from ab.nn.stat import constant_predictor, frames, ranking
from ab.nn.stat.ranking import PREFERRED_RUNTIMES
from ab.nn.stat.states import TRAINED_STATES
from ab.nn.stat.uncertainty import RESOLUTION
from ab.nn.util.markdown import table
from ab.nn import workspace
from ab.nn.workspace import Workspace
from ab.nn.util.arguments import Parser

MIXTURE = "AgeMoE"


def _latency_points(trials: pd.DataFrame, db) -> tuple[pd.DataFrame, str]:
    """Every trial's fp32 batch-1 latency at 1 thread in one runtime (the one most trials were timed in,
    so that the points compare), its latest measurement; and that runtime's name."""
    latency = frames.latency(threads=1, status="ok", db=db)
    if trials.empty or latency.empty:
        return pd.DataFrame(), ""
    latency = latency[(latency.precision == "fp32") & latency.trial_id.isin(trials.id)]
    if latency.empty:
        return pd.DataFrame(), ""
    counts = latency.groupby("runtime").trial_id.nunique()
    runtime = next(r for r in PREFERRED_RUNTIMES if r in counts and counts[r] == counts.max())
    latest = latency[latency.runtime == runtime].sort_values("id").groupby("trial_id").tail(1)
    points = trials.merge(latest[["trial_id", "median_ms"]], left_on="id", right_on="trial_id")
    return (pd.DataFrame({"model": points.nn, "mae": points.eval_mae, "latency_ms": points.median_ms}).dropna(),
            f"{runtime} fp32")


def describe_data(trials: pd.DataFrame) -> str:
    """What a data key stands for, from its trials: split, sample cap, part sizes."""
    trained = trials[trials.n_train.notna()]  # a mixture trains nothing: its row has no training part
    t = (trained if not trained.empty else trials).sort_values("id").iloc[-1]
    cap = "all images" if pd.isna(t.max_samples) else f"--max-samples {int(t.max_samples)}"
    sizes = "/".join("-" if pd.isna(t[f"n_{p}"]) else f"{int(t[f'n_{p}']):,}" for p in ("train", "eval", "test"))
    digests = "part digests recorded" if isinstance(t.train_digest, str) else "recorded before part digests"
    return f"split {t.split}, {cap}, {sizes} train/eval/test images, data key `{t.data_key}` ({digests})"


def _keys(trained: pd.DataFrame) -> list[str]:
    """Data keys with trained trials: the default ones first, then by number of trials."""
    defaults = set(ranking.default_data_keys(trained).values())
    counts = trained.data_key.value_counts()
    return sorted(counts.index, key=lambda k: (k not in defaults, -counts[k], k))


def write(ws: Workspace, out: Path) -> Path:
    db = ws.db_url
    out.mkdir(parents=True, exist_ok=True)
    trained = frames.trials(status=TRAINED_STATES, db=db)
    models = trained[~trained.config.str.endswith(f"_{MIXTURE}")] if not trained.empty else trained
    lines = ["# Report", "", f"Database: `{db}`. Results are compared only on the same data (one section per data "
             f"key). Best trial per config, chosen on validation MAE; its test MAE is shown with its 95 % bootstrap "
             f"interval over test images, never used for selection. *vs best*: the paired difference in test MAE "
             f"from the best config on the same test images (replicas pooled), 95 % interval and Wilcoxon p. "
             f"*vs constant*: the same against the constant predictor, which says the training part's mean age "
             f"for every image; a model that is not *better* than it learned nothing from the faces. A "
             f"difference whose interval contains 0, or lies within {RESOLUTION} years of it (it prints as "
             f"±0.00), is a tie, never better or worse.", ""]
    keys = _keys(models) if not models.empty else []
    if not keys:
        lines += ["No trained trials yet.", ""]
    figures = []
    for index, key in enumerate(tqdm(keys, desc="report", unit="data key", leave=False)):
        of_key = trained[trained.data_key == key]
        lines += [f"## {'Main data' if index == 0 else 'Other data'}: {describe_data(of_key)}", ""]
        baseline = tables.constant_baseline(db, key)
        lines += [f"Baseline: the {constant_predictor.describe(baseline)}." if baseline is not None else
                  "Baseline: no constant-predictor baseline is recorded for this data key (the runner records "
                  "it when it next runs on this data).", ""]
        comparison = tables.comparison(db, key)
        lines += [table(comparison), ""] if not comparison.empty else ["No trained model trials on this data.", ""]
        mixtures = of_key[of_key.config.str.endswith(f"_{MIXTURE}")]
        if not mixtures.empty:
            lines += ["AgeMoE mixtures on this data:", "", table(pd.DataFrame({
                "trial": mixtures.id, "experts": mixtures.prm.map(lambda p: p.get("experts")),
                "val MAE": mixtures.eval_mae, "test MAE": mixtures.test_mae,
                "95% CI": [tables._interval(lo, hi) for lo, hi in zip(mixtures.test_mae_low, mixtures.test_mae_high)]})),
                ""]
        if index == 0:
            collected = groups.collect(db, key, mixtures)
            lines += _who_fails(key, collected)
            figures = _figures(ws, out, key, of_key, collected)
    lines += ["## Plots (main data)", ""] + [f"![{f.stem}]({f.name})" for f in figures]
    (out / "README.md").write_text("\n".join(lines) + "\n")
    return out / "README.md"


def _who_fails(key: str, collected: groups.Collected) -> list[str]:
    """The report's tables of group numbers, each under a line naming its data key."""
    lines = ["### Who the models fail", "",
             "Best trial per model with its training-seed replicas (intervals over images and seeds), and the "
             "latest AgeMoE mixture. *Age-std.*: each group's MAE reweighted to the test part's age distribution, "
             "so that a gap is not just a difference in ages; a gap is the worst group minus the best "
             "(docs/guide/groups.md).", ""]
    lines += [f"- {note}" for note in collected.notes] + ([""] if collected.notes else [])
    if not collected.entries:
        return lines
    lines += [groups.caption(key, collected, "Summary."), "", table(groups.summary(collected)), ""]
    for by in ("race", "gender"):
        frame = groups.by_group(collected, by)
        if not frame.empty:
            lines += [groups.caption(key, collected, f"By {by}."), "", table(frame), ""]
    lines += [groups.caption(key, collected, "Minors and adults at three ages."), "", table(groups.minors(collected)),
              ""]
    return lines


def _figures(ws: Workspace, out: Path, key: str, trials: pd.DataFrame, collected: groups.Collected) -> list[Path]:
    db = ws.db_url
    best = tables.best_trials(db, data_key=key)
    best = best[~best.config.str.endswith(f"_{MIXTURE}")]
    figures = []
    entries = collected.entries
    if entries:
        figures.append(plots.predicted_vs_true(entries, out / "predicted_vs_true.png"))
        figures.append(plots.group_errors(entries, out / "mae_by_age_group.png",
                                          [("age_group", "mae", "", "test MAE (years)")],
                                          "MAE per age group (test split), 95 % intervals"))
        figures.append(plots.group_errors(entries, out / "bias_by_age.png",
                                          [("age_group", "bias", "", "bias: predicted - true (years)")],
                                          "Bias per age group (test split), 95 % intervals"))
        figures.append(plots.minors(entries, out / "minors.png"))
    if collected.labelled:
        figures.append(plots.group_errors(collected.labelled, out / "mae_by_gender_race.png", [
            ("gender", "mae", "MAE by gender", "test MAE (years)"),
            ("race", "mae", "MAE by race", "test MAE (years)"),
            ("gender", "std_mae", "age-standardised MAE by gender", "age-standardised MAE (years)"),
            ("race", "std_mae", "age-standardised MAE by race", "age-standardised MAE (years)")],
            "Who the models fail: gender and race (test split), 95 % intervals", columns=2))
    models = trials[~trials.config.str.endswith(f"_{MIXTURE}")]  # a mixture is fitted, not an Optuna study
    points, runtime = _latency_points(models, db)
    if not points.empty:
        figures.append(plots.mae_vs_latency(points, out / "mae_vs_latency.png", runtime))
    for study in sorted(models.study.dropna().unique()):
        made = plots.study_pareto(study, db, out / f"pareto_{study.split('@')[0]}_{study.split('/')[-1]}.png")
        if made:
            figures.append(made)
    for trial in best.itertuples():
        made = plots.optimisation_history(trials[trials.study == trial.study],
                                          f"{Config.parse(trial.config).nn}: Optuna study\n{trial.study}",
                                          out / f"history_{trial.config}.png")
        if made:
            figures.append(made)
    return figures


def cli(argv=None) -> int:
    p = Parser(prog="python -m ab.nn.report", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    workspace.add_arguments(p)
    p.add_argument("--out", default=None, help="report folder (default: <root>/report)")
    args = p.parse_args(argv)
    ws = workspace.from_arguments(args)
    try:
        frames.db_url(ws.db_url)
    except FileNotFoundError as error:
        p.exit(2, f"{p.prog}: error: {error}\n")
    with workspace.active.use(ws):  # the model table builds models of that workspace's nn/ folder too
        print(write(ws, Path(args.out) if args.out else ws.report_dir))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
