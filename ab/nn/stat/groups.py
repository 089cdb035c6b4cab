"""Who a model fails: its errors by age group, gender and race, each with a 95 % interval; the gap
between the best and the worst group; and how often minors are taken for adults (and adults for minors).

Numbers of a group (``by`` one of ``DIMENSIONS`` or a combination such as ``("race", "gender")``):

* ``mae``, ``bias`` (mean predicted - true), ``cs5`` (share of predictions within 5 years);
* ``std_mae``, the **age-standardised** MAE (by gender and race only): the group's MAE in each age bin
  of ``AGE_BINS``, weighted by the share of that bin among *all* images of the split, so that two
  groups are compared as if they had the same ages. Only bins where every compared group has at least
  ``MIN_CELL`` images are used (the same bins for all groups; ``coverage`` says what share of the
  split they hold);
* ``false_adult@T``: among the group's images with a true age below ``T``, the share predicted ``T`` or
  older; ``false_minor@T``: among those ``T`` or older, the share predicted below ``T`` (``T`` in
  ``THRESHOLDS``: 13, 18, 21).

Each number's ``gap`` is the largest group value minus the smallest, over the groups whose label is
known and which hold at least ``min_group`` images for that number (for a rate: that many minors or
adults); for MAE it is the worst group minus the best.

Intervals are percentile bootstraps (95 %, 2,000 resamples, seeded): images are drawn with
replacement within each cell of group x age bin, so every resample keeps the split's composition (the
split itself is stratified by age) and every age-standardised cell stays filled; every number of one
call, gaps included, comes from the same resamples. With training-seed replicas (several trials of one
recipe judged on the same images) the replicas are drawn with replacement too, each resample's
per-image values averaged over the replicas it drew, as ``ab.nn.stat.uncertainty`` does for MAE. A
paired comparison draws the same images for both sides. A gap is biased upwards (the largest of
several noisy means is above the largest true one) and a percentile interval would double that bias,
so a gap's interval comes from simultaneous intervals of the groups' pairwise differences
(``_range_interval``), and the difference of two gaps has the basic bootstrap interval (``_basic``).
"""
from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import select

from ab.nn.dataset.identity import DataMismatch
from ab.nn.dataset.utkface.attributes import GENDERS, RACES, UNKNOWN
from ab.nn.metric._age import AGE_GROUPS, group_of
from ab.nn.stat.schema import ImageAttribute, Prediction, Trial
from ab.nn.stat.uncertainty import LEVEL, RESAMPLES

if TYPE_CHECKING:
    import pandas as pd

AGE_BINS: tuple[tuple[str, float, float], ...] = (
    ("0-2", 0, 3), ("3-9", 3, 10), ("10-19", 10, 20), ("20-29", 20, 30), ("30-39", 30, 40), ("40-49", 40, 50),
    ("50-69", 50, 70), ("70+", 70, math.inf))
"""Age bins of the standardisation: the CAF age groups of ``age_group`` with 3-6/7-9 and 10-14/15-19
merged, so that the smaller races fill more of them."""
DIMENSIONS = ("age_group", "gender", "race")
THRESHOLDS = (13, 18, 21)
WITHIN = 5.0
MIN_GROUP = 30
MIN_CELL = 5
ALL = "all"
GAP = "gap"
_CHUNK = 50
_ORDER = {"age_group": [name for name, _, _ in AGE_GROUPS], "gender": list(GENDERS) + [UNKNOWN],
          "race": list(RACES) + [UNKNOWN]}


@dataclass
class Judged:
    """One trial, or training-seed replicas of one recipe, judged on the same images: true ages (n,),
    predictions (replicas, n), and the images' ``gender`` and ``race`` labels (n,) each."""

    ages: np.ndarray
    predicted: np.ndarray
    labels: dict[str, np.ndarray]
    trial_ids: list[int] = field(default_factory=list)
    unrecorded: int = 0  # images without an attribute row (their labels are unknown)

    def __post_init__(self):
        self.ages = np.asarray(self.ages, dtype=np.float64).reshape(-1)
        self.predicted = np.atleast_2d(np.asarray(self.predicted, dtype=np.float64))
        if self.predicted.shape[1] != self.ages.size:
            raise ValueError(f"{self.predicted.shape[1]} predictions for {self.ages.size} true ages")
        if not np.isfinite(self.predicted).all():
            raise ValueError(f"{int((~np.isfinite(self.predicted)).sum())} predictions are missing or not finite "
                             f"(trials {self.trial_ids or '?'}): a diverged model has no group numbers")
        self.labels = {k: np.asarray(v, dtype=object) for k, v in self.labels.items()}

    @property
    def images(self) -> int:
        return self.ages.size

    def same_images(self, other: "Judged") -> bool:
        """Judged on the same images as ``other``, in the same order (their true ages and labels agree):
        what a paired comparison needs."""
        return self.images == other.images and np.array_equal(self.ages, other.ages) and all(
            np.array_equal(self.labels.get(k, []), other.labels.get(k, [])) for k in set(self.labels) | set(other.labels))


def parse_by(by) -> tuple[str, ...]:
    """``"race"``, ``("race", "gender")`` or ``"race,gender"`` as a tuple of ``DIMENSIONS``."""
    names = tuple(p.strip() for p in by.split(",")) if isinstance(by, str) else tuple(by)
    if not names or any(n not in DIMENSIONS for n in names) or len(set(names)) != len(names):
        raise ValueError(f"by= takes one or more of {', '.join(DIMENSIONS)}, each once; got {by!r}")
    return names


def _values(judged: Judged, dimension: str) -> np.ndarray:
    if dimension == "age_group":
        return np.array([AGE_GROUPS[i][0] for i in group_of(judged.ages)], dtype=object)
    return judged.labels.get(dimension, np.full(judged.images, UNKNOWN, dtype=object))


def _keys(judged: Judged, by: tuple[str, ...]) -> tuple[list[tuple], np.ndarray]:
    """The groups present, in display order, and each image's group index."""
    columns = [_values(judged, d) for d in by]
    per_image = list(zip(*columns))
    present = set(per_image)
    orders = [_ORDER[d] + sorted(set(c) - set(_ORDER[d])) for d, c in zip(by, columns)]
    keys = [k for k in itertools.product(*orders) if k in present]
    index = {k: i for i, k in enumerate(keys)}
    return keys, np.array([index[k] for k in per_image], dtype=np.int64)


def _age_bin(ages: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.array([lo for _, lo, _ in AGE_BINS[1:]]), ages, side="right")


@dataclass
class _Design:
    """The cells (group x age bin) images are resampled within, and the matrices that turn cell sums into
    group numbers."""

    by: tuple[str, ...]
    keys: list[tuple]
    group: np.ndarray        # each image's group index
    order: np.ndarray        # images sorted by cell
    starts: np.ndarray       # where each (non-empty) cell begins in ``order``
    sizes: np.ndarray
    members: np.ndarray      # (cells, groups + 1): cell -> group, the last column all images
    eligible: np.ndarray     # (groups,): known label and at least min_group images
    standard: np.ndarray | None  # (cells, groups + 1): weights of cell sums in the age-standardised MAE
    common_bins: list[str]
    coverage: float

    @classmethod
    def of(cls, judged: Judged, by: tuple[str, ...], min_group: int, min_cell: int = MIN_CELL) -> "_Design":
        keys, group = _keys(judged, by)
        bins = _age_bin(judged.ages)
        cell = group * len(AGE_BINS) + bins
        order = np.argsort(cell, kind="stable")
        present, starts, sizes = np.unique(cell[order], return_index=True, return_counts=True)
        cell_group, cell_bin = present // len(AGE_BINS), present % len(AGE_BINS)
        members = np.zeros((present.size, len(keys) + 1))
        members[np.arange(present.size), cell_group] = 1.0
        members[:, -1] = 1.0
        eligible = np.array([UNKNOWN not in k for k in keys]) & (np.bincount(group, minlength=len(keys)) >= min_group)
        design = cls(by, keys, group, order, starts, sizes, members, eligible, None, [], float("nan"))
        if "age_group" not in by and eligible.any():
            design._standardise(cell_group, cell_bin, np.bincount(bins, minlength=len(AGE_BINS)), min_cell)
        return design

    def _standardise(self, cell_group: np.ndarray, cell_bin: np.ndarray, everyone: np.ndarray, min_cell: int) -> None:
        """Weights that make each group's MAE the mean of its bin MAEs weighted by all images' bin shares,
        over the bins in which every eligible group has ``min_cell`` images. A group (unknown, small) that
        lacks one of those bins gets NaN."""
        table = np.zeros((len(self.keys), len(AGE_BINS)), dtype=np.int64)
        np.add.at(table, (cell_group, cell_bin), self.sizes)
        common = (table[self.eligible] >= min_cell).all(axis=0)
        if not common.any():
            return
        weight = np.where(common, everyone, 0) / everyone[common].sum()
        used = common[cell_bin]
        standard = np.zeros_like(self.members)
        standard[used, cell_group[used]] = weight[cell_bin[used]] / self.sizes[used]
        standard[used, -1] = weight[cell_bin[used]] / everyone[cell_bin[used]]
        complete = (table[:, common] >= min_cell).all(axis=1)
        standard[:, :-1][:, ~complete] = np.nan
        self.standard = standard
        self.common_bins = [AGE_BINS[i][0] for i in np.flatnonzero(common)]
        self.coverage = float(everyone[common].sum() / everyone.sum())

    def draw(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """``count`` resamples (count, n) of image indices, each cell's images drawn with replacement
        within the cell, in cell order."""
        slot_start, slot_size = np.repeat(self.starts, self.sizes), np.repeat(self.sizes, self.sizes)
        u = rng.random((count, self.order.size))
        return self.order[slot_start + (u * slot_size).astype(np.int64)]


def _quantities(judged: Judged, thresholds) -> tuple[list[str], np.ndarray]:
    """Per-image values (kinds, replicas, n) whose cell sums give every number."""
    a, p = judged.ages[None, :], judged.predicted
    error = p - a
    names = ["abs", "signed", "within"]
    values = [np.abs(error), error, (np.abs(error) <= WITHIN).astype(np.float64)]
    for t in thresholds:
        minor = np.broadcast_to(a < t, p.shape)
        names += [f"fa@{t}", f"minor@{t}", f"fm@{t}", f"adult@{t}"]
        values += [(minor & (p >= t)).astype(np.float64), minor.astype(np.float64),
                   (~minor & (p < t)).astype(np.float64), (~minor).astype(np.float64)]
    return names, np.stack(values)


def metric_names(thresholds=THRESHOLDS) -> list[str]:
    return (["mae", "bias", "cs5", "std_mae"] + [f"false_adult@{t:g}" for t in thresholds]
            + [f"false_minor@{t:g}" for t in thresholds])


def _numbers(sums: np.ndarray, kinds: list[str], design: _Design, thresholds) -> dict[str, np.ndarray]:
    """Every number of every group (last column: all images) from cell sums (..., kinds, cells)."""
    k = {name: i for i, name in enumerate(kinds)}
    group = sums @ design.members
    count = design.sizes @ design.members
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {"mae": group[..., k["abs"], :] / count, "bias": group[..., k["signed"], :] / count,
               "cs5": group[..., k["within"], :] / count}
        out["std_mae"] = (sums[..., k["abs"], :] @ design.standard if design.standard is not None
                          else np.full(out["mae"].shape, np.nan))
        for t in thresholds:
            out[f"false_adult@{t:g}"] = group[..., k[f"fa@{t}"], :] / group[..., k[f"minor@{t}"], :]
            out[f"false_minor@{t:g}"] = group[..., k[f"fm@{t}"], :] / group[..., k[f"adult@{t}"], :]
    return out


def _denominators(judged: Judged, design: _Design, thresholds) -> dict[str, np.ndarray]:
    """Images each number rests on, per group (last column: all)."""
    group = design.group
    count = np.append(np.bincount(group, minlength=len(design.keys)), judged.images)
    out = {"mae": count, "bias": count, "cs5": count, "std_mae": count}
    for t in thresholds:
        minors = np.bincount(group, weights=(judged.ages < t).astype(float), minlength=len(design.keys))
        minors = np.append(minors, (judged.ages < t).sum()).astype(np.int64)
        out[f"false_adult@{t:g}"], out[f"false_minor@{t:g}"] = minors, count - minors
    return out


def _cell_sums(values: np.ndarray, design: _Design, images: np.ndarray) -> np.ndarray:
    """Sums over each cell of ``values`` (..., kinds, n) taken at ``images`` (..., n), in cell order."""
    if values.ndim == 2:
        taken = np.moveaxis(values[:, images], 0, -2)
    else:
        taken = np.take_along_axis(values, images[:, None, :], axis=2)
    return np.add.reduceat(taken, design.starts, axis=-1)


def _replica_weights(replicas: int, count: int, rng: np.random.Generator) -> np.ndarray | None:
    """Each resample's replicas drawn with replacement, as weights (count, replicas); None for one."""
    if replicas == 1:
        return None
    return rng.multinomial(replicas, np.full(replicas, 1.0 / replicas), size=count) / replicas


def _replica_means(values: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """(kinds, n) for one replica; else (count, kinds, n): the replicas averaged per image with each
    resample's ``weights``."""
    if weights is None:
        return values[:, 0, :]
    return np.einsum("br,krn->bkn", weights, values)


def _gaps(numbers: dict[str, np.ndarray], usable: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Largest minus smallest group value of each number, over its usable groups (NaN with fewer than 2;
    a resample in which a rate has no denominator in some group leaves that group out)."""
    out = {}
    for name, values in numbers.items():
        mask = usable[name]
        if mask.sum() < 2:
            out[name] = np.full(values.shape[:-1], np.nan)
            continue
        chosen = values[..., :-1][..., mask]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN resample gives NaN
            out[name] = np.nanmax(chosen, axis=-1) - np.nanmin(chosen, axis=-1)
    return out


def _usable(design: _Design, denominators: dict[str, np.ndarray], min_group: int,
            point: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: design.eligible & (denominators[name][:-1] >= min_group) & np.isfinite(point[name][:-1])
            for name in point}


@dataclass
class _Setup:
    judged: Judged
    design: _Design
    kinds: list[str]
    values: np.ndarray
    point: dict[str, np.ndarray]
    denominators: dict[str, np.ndarray]
    usable: dict[str, np.ndarray]
    gaps: dict[str, np.ndarray]


def _setup(judged: Judged, by, thresholds, min_group: int, design: _Design | None = None) -> _Setup:
    design = design or _Design.of(judged, parse_by(by), min_group)
    kinds, values = _quantities(judged, thresholds)
    point = _numbers(_cell_sums(values.mean(axis=1), design, design.order), kinds, design, thresholds)
    denominators = _denominators(judged, design, thresholds)
    usable = _usable(design, denominators, min_group, point)
    return _Setup(judged, design, kinds, values, point, denominators, usable, _gaps(point, usable))


def _resampled(setups: list[_Setup], thresholds, resamples: int, seed: int):
    """Numbers and gaps of each setup on the same image resamples, chunk by chunk. Setups of the same
    trials (the same models read two ways, e.g. calibrated and plain) draw the same replicas too."""
    rng = np.random.default_rng(seed)
    design = setups[0].design
    same_trials = len({tuple(s.judged.trial_ids) for s in setups}) == 1 and bool(setups[0].judged.trial_ids)
    for start in range(0, resamples, _CHUNK):
        count = min(_CHUNK, resamples - start)
        images = design.draw(count, rng)
        shared = _replica_weights(setups[0].values.shape[1], count, rng) if same_trials else None
        out = []
        for s in setups:
            weights = shared if same_trials else _replica_weights(s.values.shape[1], count, rng)
            sums = _cell_sums(_replica_means(s.values, weights), design, images)
            numbers = _numbers(sums, s.kinds, design, thresholds)
            out.append((numbers, _gaps(numbers, s.usable)))
        yield out


def _interval(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of each column, over the resamples where it is defined (NaN where none is)."""
    tail = (1 - level) / 2 * 100
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(samples, [tail, 100 - tail], axis=0)
    return low, high


def _label(key) -> str:
    return " / ".join(key)


def _by_columns(by: tuple[str, ...], key) -> dict:
    return dict(zip(by, key)) if key is not None else {d: None for d in by}


def _attrs(setup: _Setup, thresholds, level: float, resamples: int) -> dict:
    d, j = setup.design, setup.judged
    return {"by": d.by, "trial_ids": list(j.trial_ids), "replicas": j.predicted.shape[0], "images": j.images,
            "thresholds": tuple(thresholds), "standard_bins": d.common_bins, "coverage": d.coverage,
            "age_bins": [name for name, _, _ in AGE_BINS], "unrecorded": j.unrecorded, "level": level,
            "resamples": resamples}


def summarise(judged: Judged, by="age_group", thresholds=THRESHOLDS, min_group: int = MIN_GROUP, level: float = LEVEL,
              resamples: int = RESAMPLES, seed: int = 0) -> pd.DataFrame:
    """Every number of every group with its interval, long form: ``group`` (its label; ``all``: every
    image; ``gap``: largest minus smallest group), one column per dimension of ``by``, ``metric``,
    ``value``, ``low``, ``high``, ``n`` (images the number rests on; for a gap, the groups compared),
    ``highest``/``lowest`` (a gap's groups). ``frame.attrs``: trials, replicas, images, the bins used by
    the standardisation and the share of images they hold (``coverage``), images without labels."""
    setup = _setup(judged, by, thresholds, min_group)
    names = metric_names(thresholds)
    samples = {n: [] for n in names}
    for ((numbers, _),) in _resampled([setup], thresholds, resamples, seed):
        for n in names:
            samples[n].append(numbers[n])
    d = setup.design
    rows = []
    for n in names:
        resampled = np.concatenate(samples[n])
        low, high = _interval(resampled, level)
        for i, key in enumerate(d.keys + [None]):
            rows.append({"group": _label(key) if key else ALL, **_by_columns(d.by, key), "metric": n,
                         "value": float(setup.point[n][i]), "low": float(low[i]), "high": float(high[i]),
                         "n": int(setup.denominators[n][i]), "highest": None, "lowest": None})
        rows.append(_gap_row(setup, n, resampled, level))
    import pandas as pd

    frame = pd.DataFrame(rows)
    frame.attrs.update(_attrs(setup, thresholds, level, resamples))
    return frame


def _extremes(setup: _Setup, name: str) -> tuple[str | None, str | None]:
    mask = setup.usable[name]
    if mask.sum() < 2:
        return None, None
    values = np.where(mask, setup.point[name][:-1], np.nan)
    return _label(setup.design.keys[int(np.nanargmax(values))]), _label(setup.design.keys[int(np.nanargmin(values))])


def _basic(point: float, samples: np.ndarray, level: float) -> tuple[float, float]:
    """The basic (reverse percentile) bootstrap interval, ``2 x point - the resampled quantiles``: used for
    the paired difference of two gaps, whose upward biases largely cancel when both models have a gap
    (it held the truth in 86-96 % of ``benchmarks/group_intervals.py``'s simulated cases, the 86 % where
    one model had none)."""
    low, high = _interval(samples[:, None], level)
    return float(2 * point - high[0]), float(2 * point - low[0])


def _range_interval(point: np.ndarray, samples: np.ndarray, level: float) -> tuple[float, float]:
    """Interval of the largest minus the smallest of several group values, from simultaneous intervals
    of all their pairwise differences (Tukey's studentised range, calibrated on the resamples): the
    gap is the largest |difference|, so it lies between the largest lower end and the largest upper
    end. A percentile interval of a largest-minus-smallest misses a true gap of 0 nearly always (its
    resamples are biased upwards); this one held the truth in 89-97 % of ``benchmarks/group_intervals.py``'s
    simulated cases (92 % for a true gap of 0 with 2,000 resamples), at the price of width."""
    if point.size < 2:
        return float("nan"), float("nan")
    i, j = np.triu_indices(point.size, 1)
    difference, resampled = point[i] - point[j], samples[:, i] - samples[:, j]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        se = np.nanstd(resampled, axis=0, ddof=1)
        studentised = np.nanmax(np.abs(resampled - difference) / np.where(se > 0, se, np.nan), axis=1)
        c = float(np.nanpercentile(studentised, level * 100)) if np.isfinite(studentised).any() else 0.0
    return max(0.0, float(np.max(np.abs(difference) - c * se))), float(np.max(np.abs(difference) + c * se))


def _gap_row(setup: _Setup, name: str, samples: np.ndarray, level: float) -> dict:
    usable = setup.usable[name]
    low, high = _range_interval(setup.point[name][:-1][usable], samples[:, :-1][:, usable], level)
    highest, lowest = _extremes(setup, name)
    return {"group": GAP, **_by_columns(setup.design.by, None), "metric": name, "value": float(setup.gaps[name]),
            "low": low, "high": high, "n": int(usable.sum()), "highest": highest, "lowest": lowest}


def compare(a: Judged, b: Judged, by="age_group", thresholds=THRESHOLDS, min_group: int = MIN_GROUP,
            level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0) -> pd.DataFrame:
    """Paired comparison of ``a`` and ``b`` (trials or replica groups judged on the same images) on every
    number of every group and on every gap: ``a``, ``b``, ``difference`` (a - b) with its interval (the
    same images drawn for both, replicas drawn per side unless both sides are the same trials) and ``verdict`` (``tie`` when the interval holds
    0, else ``A lower`` or ``B lower``). The groups compared in a gap are those usable on both sides."""
    if not a.same_images(b):
        raise DataMismatch("a paired comparison needs the same images, in the same order, on both sides")
    design = _Design.of(a, parse_by(by), min_group)
    setups = [_setup(a, by, thresholds, min_group, design), _setup(b, by, thresholds, min_group, design)]
    both = {n: setups[0].usable[n] & setups[1].usable[n] for n in setups[0].usable}
    for s in setups:
        s.usable, s.gaps = both, _gaps(s.point, both)
    names = metric_names(thresholds)
    diffs = {n: [] for n in names}
    gap_diffs = {n: [] for n in names}
    for (numbers_a, gaps_a), (numbers_b, gaps_b) in _resampled(setups, thresholds, resamples, seed):
        for n in names:
            diffs[n].append(numbers_a[n] - numbers_b[n])
            gap_diffs[n].append(gaps_a[n] - gaps_b[n])
    rows = []
    for n in names:
        low, high = _interval(np.concatenate(diffs[n]), level)
        for i, key in enumerate(design.keys + [None]):
            rows.append(_compared(_label(key) if key else ALL, _by_columns(design.by, key), n, setups[0].point[n][i],
                                  setups[1].point[n][i], low[i], high[i], setups[0].denominators[n][i]))
        difference = float(setups[0].gaps[n] - setups[1].gaps[n])
        g_low, g_high = _basic(difference, np.concatenate(gap_diffs[n]), level)
        rows.append(_compared(GAP, _by_columns(design.by, None), n, setups[0].gaps[n], setups[1].gaps[n], g_low,
                              g_high, both[n].sum()))
    import pandas as pd

    frame = pd.DataFrame(rows)
    frame.attrs.update(_attrs(setups[0], thresholds, level, resamples), trial_ids_b=list(b.trial_ids),
                       replicas_b=b.predicted.shape[0])
    return frame


def _compared(group, by_columns, name, a, b, low, high, n) -> dict:
    difference = float(a - b)
    if not np.isfinite(low):
        verdict = ""
    else:
        verdict = "tie" if low <= 0 <= high else ("A lower" if difference < 0 else "B lower")
    return {"group": group, **by_columns, "metric": name, "a": float(a), "b": float(b), "difference": difference,
            "low": float(low), "high": float(high), "verdict": verdict, "n": int(n)}


def gap(judged: Judged, by="race", min_group: int = MIN_GROUP) -> float | None:
    """The point estimate of the gap a sweep constrains (``--max-group-gap``): of the age-standardised MAE
    for gender and race (and their combination), of the MAE for age groups; ``None`` where fewer than
    two groups are usable."""
    by = parse_by(by)
    setup = _setup(judged, by, (), min_group)
    value = setup.gaps["mae" if "age_group" in by else "std_mae"]
    return float(value) if np.isfinite(value) else None


# -- reading them from the statistics database --------------------------------------------------
def load(connection, trial_ids, split: str) -> Judged:
    """Trials (replicas of one recipe, or one trial) as judged on ``split``, with their images' labels,
    read through ``connection`` (a SQLAlchemy Connection or Session). Images without an attribute row
    are ``unknown`` (``Judged.unrecorded`` counts them)."""
    ids = [int(t) for t in trial_ids]
    predicted, images, ages, dataset = [], None, None, None
    for trial_id in ids:
        rows = connection.execute(select(Prediction.image_id, Prediction.age, Prediction.predicted).where(
            Prediction.trial_id == trial_id, Prediction.split == split).order_by(Prediction.position)).all()
        if not rows:
            raise LookupError(f"trial {trial_id} has no stored {split} predictions (recorded before per-image "
                              f"predictions, or without a {split} part)")
        mine = [r.image_id for r in rows]
        if images is None:
            images, ages = mine, [r.age for r in rows]
            dataset = connection.execute(select(Trial.dataset).where(Trial.id == trial_id)).scalar()
        elif mine != images:
            raise DataMismatch(f"trial {trial_id} was judged on other {split} images than trial {ids[0]}: replicas "
                               f"must share their images")
        predicted.append([np.nan if r.predicted is None else r.predicted for r in rows])
    found = attribute_rows(connection, dataset, [i for i in images if i is not None])
    labels = {k: [found.get(i, {}).get(k, UNKNOWN) for i in images] for k in ("gender", "race")}
    return Judged(np.asarray(ages), np.asarray(predicted), labels, ids, sum(i not in found for i in images))


def attribute_rows(connection, dataset: str, image_ids: list[str], chunk: int = 500) -> dict[str, dict]:
    """Stored labels of ``image_ids`` of ``dataset``: image id -> gender, race and where each was read."""
    columns = (ImageAttribute.gender, ImageAttribute.race, ImageAttribute.gender_from, ImageAttribute.race_from)
    found = {}
    for start in range(0, len(image_ids), chunk):
        for row in connection.execute(select(ImageAttribute.image_id, *columns).where(
                ImageAttribute.dataset == dataset, ImageAttribute.image_id.in_(image_ids[start:start + chunk]))):
            found[row.image_id] = {c.key: getattr(row, c.key) for c in columns}
    return found


def validation_gaps(connection, trial_ids, by="race", min_group: int = MIN_GROUP) -> dict[int, float | None]:
    """Each trial's ``gap`` on its **validation** part (``prediction.split = 'eval'``; never the test
    part): what ``--max-group-gap`` compares with its limit. ``None``: no stored predictions, or fewer
    than two usable groups (a trial whose gap is unknown does not meet the constraint)."""
    out = {}
    for trial_id in trial_ids:
        try:
            out[int(trial_id)] = gap(load(connection, [trial_id], "eval"), by, min_group)
        except (LookupError, ValueError):
            out[int(trial_id)] = None
    return out
