"""Trials compared on the same images, from their stored per-image predictions: a paired comparison
of two trials (or two groups of replicas), and training-seed replicas grouped with the interval of
their test MAE (the arithmetic is ``ab.nn.stat.uncertainty``'s)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from ab.nn.dataset.identity import DataMismatch
from ab.nn.stat import constant_predictor, uncertainty, vocabulary
from ab.nn.stat.frames import db_url, predictions, trials
from ab.nn.stat.uncertainty import Comparison


def paired_errors(trial_ids: Sequence[int], split: str, db) -> tuple[np.ndarray, list]:
    """Per-image absolute errors, (len(trial_ids), images), aligned by image; all must share images."""
    frame = predictions(trial_id=list(trial_ids), split=split, db=db)
    rows, images = [], None
    for trial_id in trial_ids:
        mine = frame[frame.trial_id == trial_id].sort_values("position")
        if mine.empty:
            raise LookupError(f"trial {trial_id} has no stored {split} predictions (trials recorded before "
                              f"per-image predictions, or without a {split} part)")
        if images is None:
            images = list(mine.image_id)
        elif list(mine.image_id) != images:
            raise DataMismatch(f"trial {trial_id} was judged on other {split} images than trial {trial_ids[0]}: "
                               f"a paired comparison needs the same images")
        rows.append(np.abs(mine.predicted.to_numpy(np.float64) - mine.age.to_numpy(np.float64)))
    return np.stack(rows), images


def _compare_mae(a, b, split: str = "test", db=None) -> Comparison:
    """Paired comparison of trial(s) ``a`` against ``b`` on the same images: MAE difference (a - b)
    with its 95 % paired-bootstrap interval and the Wilcoxon p-value; ``.verdict`` says ``tie`` when
    the interval contains 0. ``a`` and ``b`` are trial ids or lists of replica trial ids, or either of
    them ``calibrated(...)``."""
    if isinstance(a, Calibrated) or isinstance(b, Calibrated):
        judged_a, judged_b = judged(a, split, db), judged(b, split, db)
        if not judged_a.same_images(judged_b):
            raise DataMismatch(f"trials {judged_a.trial_ids} and {judged_b.trial_ids} were judged on different "
                               f"{split} images; compare trials of the same data key")
        return uncertainty.compare(np.abs(judged_a.predicted - judged_a.ages),
                                   np.abs(judged_b.predicted - judged_b.ages),
                                   paired_replicas=judged_a.trial_ids == judged_b.trial_ids)
    ids_a, ids_b = _trial_list(a), _trial_list(b)
    errors_a, images = paired_errors(ids_a, split, db)
    errors_b, other = paired_errors(ids_b, split, db)
    if images != other:
        raise DataMismatch(f"trials {ids_a} and {ids_b} were judged on different {split} images; compare trials "
                           f"of the same data key")
    return uncertainty.compare(errors_a, errors_b)


def versus_constant(a, train_mean: float, split: str = "test", db=None) -> Comparison:
    """Paired comparison of trial(s) ``a`` (an id, or replica ids) with the constant predictor, which says
    ``train_mean`` (the training part's mean age: ``frames.baselines()``) for every image, on the same images:
    a negative difference whose interval is below 0 means the trial is better than it."""
    ids = [int(a)] if np.isscalar(a) else [int(t) for t in a]
    errors, _ = paired_errors(ids, split, db)
    ages = predictions(trial_id=ids[0], split=split, db=db).sort_values("position").age
    return uncertainty.compare(errors, constant_predictor.errors(train_mean, ages))


def replicas(config=None, data_key=None, db=None) -> pd.DataFrame:
    """Training-seed replicas grouped: one row per (config, data key, epochs, hyperparameter set) of the
    trials that trained every epoch (``complete``; one stopped early is another budget), with ``n``,
    the seeds, mean ± std of the eval and test MAE across replicas, and the 95 % interval of the group's
    test MAE with images and replicas resampled (``test_mae_low``/``high``; from the stored per-image
    predictions, NaN where a trial has none)."""
    rows = trials(config=config, status="complete", data_key=data_key, db=db)
    columns = ["config", "data_key", "epoch_max", "prm_id", "n", "seeds", "trial_ids", "eval_mae_mean",
               "eval_mae_std", "test_mae_mean", "test_mae_std", "test_mae_low", "test_mae_high"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    out = []
    for (cfg, key, epochs, prm_id), group in rows.groupby(["config", "data_key", "epoch_max", "prm_id"], dropna=False):
        eval_mean, eval_std, n = uncertainty.mean_std(group.eval_mae)
        test_mean, test_std, _ = uncertainty.mean_std(group.test_mae)
        try:
            low, high = uncertainty.bootstrap_replicas(paired_errors(sorted(group.id), "test", db)[0])
        except (LookupError, DataMismatch):
            low = high = float("nan")
        out.append({"config": cfg, "data_key": key, "epoch_max": epochs, "prm_id": prm_id, "n": n,
                    "seeds": sorted(int(s) for s in group.seed.dropna()), "trial_ids": sorted(group.id),
                    "eval_mae_mean": eval_mean, "eval_mae_std": eval_std, "test_mae_mean": test_mean,
                    "test_mae_std": test_std, "test_mae_low": low, "test_mae_high": high})
    return pd.DataFrame(out, columns=columns).sort_values(["config", "eval_mae_mean"]).reset_index(drop=True)

# -- who the models fail: errors by age group, gender and race (ab.nn.stat.groups) ----------------
@dataclass(frozen=True)
class Calibrated:
    """Trials read through a per-age calibration (``ab.nn.stat.calibration``): each trial's test
    predictions mapped by a map of ``method`` fitted on its own validation predictions. Made by
    ``calibrated()``; ``groups()`` and ``compare()`` take it wherever they take trial ids."""

    trials: tuple[int, ...]
    method: str = "inverse"

    def __repr__(self) -> str:
        return f"calibrated({list(self.trials)}, method={self.method!r})"


def calibrated(trials, method: str = "inverse") -> Calibrated:
    """``trials`` (an id, or replica ids) judged after per-age calibration fitted on their validation
    part (``method``: ``inverse``, unbiased per true age, or ``forward``, the mean age per prediction):
    ``api.compare(api.calibrated([4, 5, 6]), [4, 5, 6], by="age_group")`` judges it against the same
    models read plain, paired over images and seeds."""
    from ab.nn.stat.calibration import METHODS

    if method not in METHODS:
        raise ValueError(f"method is one of {', '.join(METHODS)}, got {method!r}")
    return Calibrated(tuple(_trial_list(trials)), method)


def _trial_list(trials) -> list[int]:
    if isinstance(trials, Calibrated):
        return list(trials.trials)
    return [int(trials)] if np.isscalar(trials) else [int(t) for t in trials]


def judged(trials, split: str, db):
    """Trials (an id, replica ids, or ``calibrated(...)``) as ``ab.nn.stat.groups.Judged`` on ``split``:
    true ages, each replica's predictions and the images' labels, for numbers of one's own."""
    from ab.nn.stat import calibration, engine as engines, groups as group_stats

    vocabulary.check("split", split, vocabulary.SPLITS)
    if isinstance(trials, Calibrated) and split == "eval":
        raise ValueError("a calibration is fitted on the eval part: judge it on the test part (split='test')")
    with engines.engine(db_url(db), writer=False).connect() as connection:
        found = group_stats.load(connection, _trial_list(trials), split)
        if isinstance(trials, Calibrated):
            found = calibration.apply(found, group_stats.load(connection, _trial_list(trials), "eval"), trials.method)
        return found


def attributes(trial_id=None, split=None, db=None) -> pd.DataFrame:
    """Per-image predictions (as ``predictions()``) with the images' gender and race labels and where
    each was read: ``unknown`` where the label is missing or malformed, ``not recorded`` in ``*_from``
    where the image has no attribute row (trials recorded before labels were stored: ``python -m
    ab.nn.stat attributes`` fills them in)."""
    from ab.nn.stat import engine as engines, groups as group_stats

    frame = predictions(trial_id=trial_id, split=split, db=db)
    columns = ["gender", "race", "gender_from", "race_from"]
    if frame.empty:
        return frame.reindex(columns=list(frame.columns) + columns)
    datasets = trials(trial_id=[int(t) for t in frame.trial_id.unique()], db=db).set_index("id").dataset
    stored = []
    with engines.engine(db_url(db), writer=False).connect() as connection:
        for dataset in datasets.unique():
            ids = [i for i in frame[frame.trial_id.map(datasets) == dataset].image_id.unique() if i is not None]
            stored += [{"dataset": dataset, "image_id": i, **row}
                       for i, row in group_stats.attribute_rows(connection, dataset, ids).items()]
    stored = pd.DataFrame(stored, columns=["dataset", "image_id", *columns])
    frame = frame.assign(dataset=frame.trial_id.map(datasets)).merge(stored, on=["dataset", "image_id"], how="left")
    frame[["gender", "race"]] = frame[["gender", "race"]].fillna("unknown")
    frame[["gender_from", "race_from"]] = frame[["gender_from", "race_from"]].fillna("not recorded")
    return frame.drop(columns="dataset")


def groups(trials, by="age_group", split: str = "test", thresholds=(13, 18, 21), min_group: int = 30,
           db=None) -> pd.DataFrame:
    """Who a trial fails: for each group of ``by`` (``age_group``, ``gender``, ``race`` or a combination
    such as ``("race", "gender")``), ``n``, ``mae``, ``bias`` (mean predicted - true), ``cs5``, the
    age-standardised ``std_mae`` (gender and race), ``false_adult@T`` (true age < T, predicted >= T) and
    ``false_minor@T`` for each threshold, each with its 95 % bootstrap interval (``low``, ``high``); a
    row ``all`` (every image) and a row ``gap`` per number (largest group minus smallest, with the groups
    it is between in ``highest``/``lowest``). ``trials``: a trial id, or the ids of training-seed replicas
    judged on the same images (the interval then holds the seed-to-seed spread too), or
    ``calibrated(...)`` of either. Long form: one row
    per (group, metric); ``frame.attrs`` holds the age bins of the standardisation and the share of
    images they cover. See ``ab.nn.stat.groups`` and docs/guide/groups.md."""
    from ab.nn.stat import groups as group_stats

    return group_stats.summarise(judged(trials, split, db), by=by, thresholds=tuple(thresholds),
                                 min_group=min_group)


def compare(a, b, split: str = "test", db=None, *, by=None, thresholds=(13, 18, 21), min_group: int = 30):
    """Paired comparison of trial(s) ``a`` against ``b`` on the same images. Without ``by``: the MAE
    difference (a - b) as a ``Comparison`` (95 % paired-bootstrap interval, Wilcoxon p, ``.verdict``).
    With ``by`` (as ``groups()``): a DataFrame with every number of ``groups()`` for each group and each
    gap, ``a``, ``b``, ``difference`` with its interval and ``verdict`` (``tie`` when the interval holds
    0). ``a`` and ``b`` are trial ids or lists of replica trial ids, or ``calibrated(...)`` of either; when
    both name the same trials (a calibration judged against the models read plain) the seeds are paired
    too."""
    if by is None:
        return _compare_mae(a, b, split, db)
    from ab.nn.stat import groups as group_stats

    return group_stats.compare(judged(a, split, db), judged(b, split, db), by=by, thresholds=tuple(thresholds),
                               min_group=min_group)
