"""How often the intervals of ``ab.nn.stat.groups`` hold the truth: simulated data sets with a known
race gap (5 races of ``--per-group`` images; absolute errors exponential with mean 5 years, one race's
mean larger by the true gap), each summarised as ``api.groups`` does, counting how often the interval
holds the true value: the gap's interval (simultaneous pairwise intervals), a percentile interval of
the resampled gaps for contrast, and the paired difference of two models' gaps (basic bootstrap).

    python benchmarks/group_intervals.py                  # 100 data sets per case, 400 resamples each
    python benchmarks/group_intervals.py --runs 30        # quicker
"""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from ab.nn.dataset.utkface.attributes import RACES
from ab.nn.stat import groups
from ab.nn.util.markdown import table

BY = ("race",)


def _one(rng, n: int, gap: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    race = np.array(RACES, dtype=object)[np.arange(n) % len(RACES)]
    ages = rng.uniform(20, 60, n)
    error = rng.exponential(np.where(race == "Black", 5.0 + gap, 5.0)) * rng.choice([-1.0, 1.0], n)
    return ages, error, race


def single(gap: float, runs: int, per_group: int, resamples: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    held = {"gap interval": 0, "percentile": 0}
    widths = []
    for run in range(runs):
        ages, error, race = _one(rng, per_group * len(RACES), gap)
        frame = groups.summarise(groups.Judged(ages, ages + error, {"race": race}), by=BY, thresholds=(),
                                 resamples=resamples, seed=run)
        row = frame[(frame.group == groups.GAP) & (frame.metric == "mae")].iloc[0]
        held["gap interval"] += row.low <= gap <= row.high
        widths.append(row.high - row.low)
        setup = groups._setup(groups.Judged(ages, ages + error, {"race": race}), BY, (), groups.MIN_GROUP)
        resampled = np.concatenate([g["mae"] for ((_, g),) in groups._resampled([setup], (), resamples, run)])
        low, high = groups._interval(resampled[:, None], 0.95)
        held["percentile"] += low[0] <= gap <= high[0]
    return {"true gap": gap, "gap interval holds it": held["gap interval"] / runs,
            "mean width": float(np.mean(widths)), "percentile interval holds it": held["percentile"] / runs}


def paired(gap: float, narrowed: float, runs: int, per_group: int, resamples: int, seed: int) -> dict:
    """Model B narrows model A's gap by ``narrowed``; both share each image's difficulty (paired)."""
    rng = np.random.default_rng(seed)
    held = 0
    for run in range(runs):
        n = per_group * len(RACES)
        race = np.array(RACES, dtype=object)[np.arange(n) % len(RACES)]
        ages, difficulty = rng.uniform(20, 60, n), rng.exponential(5.0, n)
        black = race == "Black"
        a = ages + 0.8 * difficulty + rng.exponential(1.0, n) + np.where(black, gap, 0.0)
        b = ages + 0.8 * difficulty + rng.exponential(1.0, n) + np.where(black, gap - narrowed, 0.0)
        frame = groups.compare(groups.Judged(ages, a, {"race": race}), groups.Judged(ages, b, {"race": race}), by=BY,
                               thresholds=(), resamples=resamples, seed=run)
        row = frame[(frame.group == groups.GAP) & (frame.metric == "mae")].iloc[0]
        truth = gap - abs(gap - narrowed)
        held += row.low <= truth <= row.high
    return {"gap of A": gap, "B narrows it by": narrowed, "difference interval holds it": held / runs}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=100, help="simulated data sets per case")
    p.add_argument("--per-group", type=int, default=300, help="images per race")
    p.add_argument("--resamples", type=int, default=400, help="bootstrap resamples per data set")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    print(table(pd.DataFrame([single(g, args.runs, args.per_group, args.resamples, args.seed)
                              for g in (0.0, 0.3, 0.7, 1.5)]), digits=2))
    print()
    print(table(pd.DataFrame([paired(g, d, args.runs, args.per_group, args.resamples, args.seed)
                              for g, d in ((0.0, 0.0), (1.0, 0.5), (1.0, 1.0), (2.0, 0.5))]), digits=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
