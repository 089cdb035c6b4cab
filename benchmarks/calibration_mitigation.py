"""Which mitigation keeps minors minors (issue 42, item 5)? Training-seed replicas of a recipe read plain
(the unmitigated model) against: the same trials after per-age calibration fitted on their validation
part (``inverse`` and ``forward``, ``ab.nn.stat.calibration``; paired over images and seeds), and other
trained arms (e.g. ``--balance age,race``; paired over images, seeds drawn per side), read plain and
calibrated. One table of the issue's targets per candidate, a table per age group, and figures.

    python benchmarks/calibration_mitigation.py --root WORKSPACE --plain 1,2,3 \\
        [--trained balanced=4,5,6] [--figures DIR]

Targets (each judged with its 95 % interval): the minors' false-adult rate at most half of the dlib
baseline's 19.2 % (the issue's measurement on the same test images; its upper end at most 9.6 %) and
below the plain models' (the difference's interval below 0); the age-standardised worst-race gap
smaller than the plain models' (interval below 0); the 70+ bias at most half of the plain models' in
magnitude (its interval inside +-half); the overall MAE not worse (the difference's interval holds 0
or lies below it).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from ab.nn import api
from ab.nn.report import plots
from ab.nn.report.groups import BY, Entry
from ab.nn.stat import comparison
from ab.nn.util.markdown import table

DLIB_FALSE_ADULT = 0.192


def _row(frame, group, metric):
    return frame[(frame.group == group) & (frame.metric == metric)].iloc[0]


def _interval(low, high, scale=1.0, sign=True, digits=3) -> str:
    form = f"{'+' if sign else ''}.{digits}f"
    return f"[{low * scale:{form}}, {high * scale:{form}}]"


def _ids(text: str) -> list[int]:
    return [int(t) for t in text.split(",")]


def candidates(plain: list[int], trained: dict[str, list[int]]) -> dict[str, object]:
    """Every reading judged against the plain models: name -> trial ids or ``calibrated(...)``."""
    out = {"plain, inverse calibration": api.calibrated(plain, "inverse"),
           "plain, forward calibration": api.calibrated(plain, "forward")}
    for name, ids in trained.items():
        out[name] = ids
        out[f"{name}, inverse calibration"] = api.calibrated(ids, "inverse")
    return out


def targets(name: str, candidate, plain: list[int], db: str) -> dict:
    """The issue's four targets for ``candidate`` against ``plain``: value [interval], difference [interval],
    and whether each is met."""
    by_age = api.compare(candidate, plain, by="age_group", db=db)
    by_race = api.compare(candidate, plain, by="race", db=db)
    overall = api.compare(candidate, plain, db=db)
    own = api.groups(candidate, by="age_group", db=db)

    adult, adult_own = _row(by_age, "all", "false_adult@18"), _row(own, "all", "false_adult@18")
    gap = _row(by_race, "gap", "std_mae")
    old, old_own = _row(by_age, "70+", "bias"), _row(own, "70+", "bias")
    half = abs(old.b) / 2
    met = {"minors": adult_own.high <= DLIB_FALSE_ADULT / 2 and adult.high < 0, "race gap": gap.high < 0,
           "70+ bias": -half <= old_own.low and old_own.high <= half, "MAE": overall.low <= 0}
    return {
        "reading": name,
        "minors predicted 18+ (%)": f"{adult.a:.1%} {_interval(adult_own.low, adult_own.high, 100, False, 1)}; "
                                    f"{adult.difference * 100:+.1f} pp {_interval(adult.low, adult.high, 100, True, 1)}",
        "race gap, age-standardised (years)": f"{gap.a:.2f}; {gap.difference:+.2f} {_interval(gap.low, gap.high, digits=2)}",
        "70+ bias (years)": f"{old.a:+.2f} {_interval(old_own.low, old_own.high, digits=2)}",
        "test MAE (years)": f"{overall.mae_a:.3f}; {overall.difference:+.3f} "
                            f"{_interval(overall.low, overall.high)}",
        "targets met": ", ".join(k for k, v in met.items() if v) or "none",
    }


def plain_row(plain: list[int], db: str) -> dict:
    own = api.groups(plain, by="age_group", db=db)
    race = api.groups(plain, by="race", db=db)
    adult, old = _row(own, "all", "false_adult@18"), _row(own, "70+", "bias")
    gap, mae = _row(race, "gap", "std_mae"), _row(own, "all", "mae")
    return {"reading": "plain (unmitigated)",
            "minors predicted 18+ (%)": f"{adult.value:.1%} {_interval(adult.low, adult.high, 100, False, 1)}",
            "race gap, age-standardised (years)": f"{gap.value:.2f} {_interval(gap.low, gap.high, sign=False, digits=2)}",
            "70+ bias (years)": f"{old.value:+.2f} {_interval(old.low, old.high, digits=2)}",
            "test MAE (years)": f"{mae.value:.3f} {_interval(mae.low, mae.high, sign=False)}",
            "targets met": f"(n = {int(adult.n)} minors, {int(old.n)} aged 70+)"}


def by_age_group(candidate, plain: list[int], db: str) -> list[dict]:
    frame = api.compare(candidate, plain, by="age_group", db=db)
    rows = []
    for group in frame[frame.metric == "mae"].group:
        if group == "gap":
            continue
        mae, bias = _row(frame, group, "mae"), _row(frame, group, "bias")
        rows.append({"age group": group, "n": int(mae.n), "MAE plain": f"{mae.b:.2f}", "MAE mitigated": f"{mae.a:.2f}",
                     "MAE difference": f"{mae.difference:+.2f} {_interval(mae.low, mae.high, digits=2)}",
                     "bias plain": f"{bias.b:+.2f}", "bias mitigated": f"{bias.a:+.2f}",
                     "bias difference": f"{bias.difference:+.2f} {_interval(bias.low, bias.high, digits=2)}"})
    return rows


def _entry(label: str, trials, db: str) -> Entry:
    frames = {by: api.groups(trials, by=by, db=db) for by in BY}
    found = comparison.judged(trials, "test", db)
    return Entry(label, list(found.trial_ids), frames, np.tile(found.ages, found.predicted.shape[0]),
                 found.predicted.reshape(-1))


def figures(readings: dict[str, object], db: str, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    entries = [_entry(label, trials, db) for label, trials in readings.items()]
    title = "Mitigations judged on the test part (95 % intervals over images and seeds)"
    return [
        plots.group_errors(entries, folder / "mitigation_bias_by_age.png",
                           [("age_group", "bias", "Bias (predicted - true) per age group", "years")], title),
        plots.group_errors(entries, folder / "mitigation_mae_by_age.png",
                           [("age_group", "mae", "MAE per age group", "years")], title),
        plots.minors(entries, folder / "mitigation_minors.png"),
        plots.group_errors(entries, folder / "mitigation_race.png",
                           [("race", "mae", "MAE per race", "years"),
                            ("race", "std_mae", "age-standardised MAE per race", "years")], title, columns=2),
        plots.predicted_vs_true(entries, folder / "mitigation_predicted_vs_true.png"),
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="the workspace that holds the trials")
    parser.add_argument("--plain", required=True, type=_ids, help="the unmitigated replicas, comma-separated ids")
    parser.add_argument("--trained", action="append", default=[], metavar="NAME=IDS",
                        help="a trained mitigation's replicas (repeatable), e.g. balanced=4,5,6")
    parser.add_argument("--figures", type=Path, default=None, help="write the figures (PNG) into this folder")
    parser.add_argument("--by-age", default=None, metavar="NAME",
                        help="also print the per-age-group table of this reading (a name of the first table)")
    args = parser.parse_args(argv)
    trained = {}
    for item in args.trained:
        name, sep, ids = item.partition("=")
        if not sep or not name:
            parser.error(f"--trained takes NAME=IDS, got {item!r}")
        trained[name] = _ids(ids)
    db = api.db_url(root=args.root)
    every = [*args.plain, *(i for ids in trained.values() for i in ids)]
    chosen = api.trials(trial_id=every, db=db).set_index("id")
    for name, ids in {"plain": args.plain, **trained}.items():
        rows = chosen.loc[ids]
        print(f"{name}: trials {ids}, {', '.join(sorted(set(rows.config)))}, data key(s) "
              f"{', '.join(sorted(set(rows.data_key)))}, seeds {sorted(rows.seed.dropna().astype(int))}, "
              f"epochs {sorted(set(rows.epochs_done.dropna().astype(int)))}, "
              f"balance {sorted({str(p.get('balance')) for p in rows.prm})}")
    readings = candidates(args.plain, trained)
    print()
    print(table(pd.DataFrame([plain_row(args.plain, db)] +
                             [targets(name, trials, args.plain, db) for name, trials in readings.items()])))
    if args.by_age:
        print(f"\n{args.by_age} against plain, per age group:\n")
        print(table(pd.DataFrame(by_age_group(readings[args.by_age], args.plain, db))))
    if args.figures:
        shown = {"plain": args.plain, **{k: v for k, v in readings.items() if "forward" not in k}}
        for path in figures(shown, db, args.figures):
            print(f"figure: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
