"""What a pruner would have done to a finished study: its trials' recorded learning curves replayed,
one trial after another in the order they started, through the pruner the runner builds for
``--pruner``, ``--pruner-warmup`` and ``--pruner-floor`` (``Search.make_pruner``), deciding after
each epoch as the runner does.

This answers "would pruning have paid on this search?" with the sampled points held fixed. A real
pruned search samples other points once it has stopped its first trial, so the two differ by where
the sampler went as well as by the pruner; the replay isolates the pruner.

Time: a trial the replay stops is charged its recorded time less the epochs it would not have
trained (from each epoch's recorded elapsed time). The test evaluation it would have skipped is still
charged: a few seconds per stopped trial, counted against pruning. A trial that a pruner stopped in
the recording cannot be trained on in a replay: where the replayed pruner would have let it go on,
it ends as recorded and is marked ``beyond_record``.

``replay_pruner`` and ``replay_pruners`` read the study from the statistics database (``ab.nn.api``
publishes them; ``python -m ab.nn.stat replay-pruners`` prints them).
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
import optuna
import pandas as pd

from ab.nn.stat import comparison, frames, query, uncertainty
from ab.nn.stat.studies import quiet
from ab.nn.sweep.search import MAE_SCALE, PRUNERS, Search, SearchError

TRIAL_COLUMNS = ("id", "study", "replica_of", "status", "epoch_max", "epochs_done", "eval_mae", "eval_accuracy",
                 "started_at", "finished_at")
EPOCH_COLUMNS = ("trial_id", "epoch", "accuracy", "mae", "duration_s")
REPLAYED_COLUMNS = ("id", "recorded_status", "status", "epochs_recorded", "epochs", "judged",
                    "beyond_record", "seconds_recorded", "seconds", "elapsed", "eval_mae_recorded")
SUMMARY_COLUMNS = ("pruner", "warmup", "floor", "trials", "stopped", "minutes", "minutes_recorded", "time_ratio",
                   "best_eval_mae", "best_kept", "target_eval_mae", "minutes_to_target", "target_ratio",
                   "half_time_met", "beyond_record")
FINISHED = ("complete", "stopped", "pruned", "failed", "diverged", "interrupted")
"""Statuses of trials that ended; running and reserved ones are not replayed."""

_STATE = {"stopped": optuna.trial.TrialState.PRUNED, "pruned": optuna.trial.TrialState.PRUNED,
          "failed": optuna.trial.TrialState.FAIL, "diverged": optuna.trial.TrialState.FAIL,
          "interrupted": optuna.trial.TrialState.FAIL}


def replay(trials: pd.DataFrame, epochs: pd.DataFrame, search: Search) -> pd.DataFrame:
    """One row per finished trial of one study (``trials``: ``TRIAL_COLUMNS``; ``epochs``: one row per
    recorded epoch, ``EPOCH_COLUMNS``, ``duration_s`` the elapsed seconds at the epoch's end) as the
    pruner of ``search`` would have ended it: ``status`` and ``epochs`` replayed, ``seconds`` charged,
    ``elapsed`` the study's time after it, and ``eval_mae_recorded``. Replicas (trials of a ``--seeds``
    group after its first) are never judged, as in the runner."""
    studies = trials.study.dropna().unique()
    if len(studies) != 1:
        raise ValueError(f"a replay is of one study; these trials belong to {len(studies)}: "
                         f"{', '.join(map(str, studies)) or 'none'}")
    if search.multi:
        raise SearchError("Optuna's pruners do not work with several objectives: nothing to replay")
    finished = trials[trials.status.isin(FINISHED)].sort_values("id")
    with quiet():
        return _replay(finished, epochs, search, str(studies[0]))


def _replay(finished: pd.DataFrame, epochs: pd.DataFrame, search: Search, name: str) -> pd.DataFrame:
    epoch_max = int(finished.epoch_max.max()) if len(finished) else 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(study_name=name, direction="minimize",
                                    storage=optuna.storages.InMemoryStorage(),
                                    pruner=search.make_pruner(epoch_max))
    curves = {trial_id: group.sort_values("epoch") for trial_id, group in epochs.groupby("trial_id")}
    no_epochs = pd.DataFrame(columns=EPOCH_COLUMNS)
    rows, elapsed = [], 0.0
    for row in finished.itertuples(index=False):
        curve = curves.get(row.id, no_epochs)
        maes, ends = _maes(curve), curve.duration_s.to_numpy(np.float64)
        judged = search.prunes and not _replica(row)
        trial = study.ask()
        stop, wants = None, False
        for epoch, mae in enumerate(maes, start=1):
            trial.report(float(mae), epoch)
            wants = judged and trial.should_prune()
            # the runner's order after an epoch: diverged, then LEMUR's gate, then the pruner, never at the
            # last epoch; a trial that failed later would have been stopped before it failed
            ended_here = epoch == len(maes) and row.status not in ("failed", "interrupted")
            if wants and epoch < row.epoch_max and not ended_here:
                stop = epoch
                break
        recorded = _seconds(row)
        status, done = ("pruned", stop) if stop is not None else (row.status, len(maes))
        beyond = stop is None and row.status == "pruned" and not wants
        seconds = recorded - (ends[-1] - ends[done - 1]) if stop is not None else recorded
        if status == "complete":
            value = row.eval_mae if not pd.isna(row.eval_mae) else maes[-1] if len(maes) else MAE_SCALE
            study.tell(trial, float(value))
        else:
            study.tell(trial, state=_STATE[status])
        elapsed += seconds
        rows.append({"id": int(row.id), "recorded_status": row.status, "status": status,
                     "epochs_recorded": len(maes), "epochs": done, "judged": judged, "beyond_record": beyond,
                     "seconds_recorded": recorded, "seconds": seconds, "elapsed": elapsed,
                     "eval_mae_recorded": row.eval_mae})
    return pd.DataFrame(rows, columns=REPLAYED_COLUMNS)


def _replica(row) -> bool:
    """A trial that repeats its group's first trial with another seed: the runner never asks Optuna
    for it, so no pruner judges it."""
    return not pd.isna(row.replica_of) and int(row.replica_of) != int(row.id)


def _maes(curve: pd.DataFrame) -> np.ndarray:
    """Each epoch's validation MAE, as the runner reports it to Optuna; from the accuracy (``1 - MAE/20``)
    where a row has none."""
    accuracy = curve.accuracy.to_numpy(np.float64)
    mae = curve["mae"].to_numpy(np.float64) if "mae" in curve else np.full(len(curve), np.nan)
    return np.where(np.isnan(mae), (1.0 - accuracy) * MAE_SCALE, mae)


def summarise(replayed: pd.DataFrame, search: Search, target: float) -> dict:
    """A replay in one row: trials stopped, minutes against the recording's, the best validation MAE
    the replay still trains to the end, whether the recording's best trial is among those, and the
    minutes until a complete trial was within ``target`` (e.g. the high end of the recorded best's 95 %
    interval); ``half_time_met``: within half the recorded time, the bar of issue "Search"."""
    minutes, recorded = replayed.seconds.sum() / 60, replayed.seconds_recorded.sum() / 60
    kept = replayed[replayed.status == "complete"]
    hit = kept[kept.eval_mae_recorded <= target]
    reached = float(hit.elapsed.iloc[0]) / 60 if len(hit) else math.nan
    complete = replayed[replayed.recorded_status == "complete"]
    best_id = complete.id.loc[complete.eval_mae_recorded.idxmin()] if len(complete) else None
    return {"pruner": search.pruner, "warmup": search.warmup if search.pruner != "none" else math.nan,
            "floor": search.floor if search.floor is not None else math.nan,
            "trials": len(replayed), "stopped": int((replayed.status != replayed.recorded_status).sum()),
            "minutes": minutes, "minutes_recorded": recorded,
            "time_ratio": minutes / recorded if recorded else math.nan,
            "best_eval_mae": float(kept.eval_mae_recorded.min()) if len(kept) else math.nan,
            "best_kept": best_id is not None and best_id in set(kept.id),
            "target_eval_mae": target, "minutes_to_target": reached,
            "target_ratio": reached / recorded if recorded and not math.isnan(reached) else math.nan,
            "half_time_met": (bool(not math.isnan(reached) and reached <= recorded / 2)
                              if search.prunes else None),
            "beyond_record": int(replayed.beyond_record.sum())}


def grid(trials: pd.DataFrame, epochs: pd.DataFrame, pruners, warmups, target: float,
         floor: float | None = None) -> pd.DataFrame:
    """``summarise`` for the recording itself (pruner ``none``) and every pruner x warm-up, each with
    ``floor`` (``--pruner-floor``) when given, after the floor alone; warm-ups that leave no epoch to
    prune at, and hyperband with a floor, are skipped, as the runner refuses them."""
    epoch_max = int(trials.epoch_max.max())
    candidates = [("none", 1)] + [(p, w) for p in pruners if p != "none" for w in warmups]
    searches = [Search("none")] + [s for s in (_allowed(p, w, floor, epoch_max) for p, w in candidates) if s]
    return pd.DataFrame([summarise(replay(trials, epochs, s), s, target) for s in searches],
                        columns=SUMMARY_COLUMNS)


def _allowed(pruner: str, warmup: int, floor: float | None, epochs: int) -> Search | None:
    """The search the runner would accept for these settings, or None where it refuses them."""
    if pruner == "none" and floor is None:
        return None  # the recording itself, already the first row
    try:
        search = Search(pruner, warmup=warmup, floor=floor)
        search.check(exporting=False, epochs=epochs)
    except SearchError:
        return None
    return search


def _seconds(row) -> float:
    if pd.isna(row.started_at) or pd.isna(row.finished_at):
        return 0.0
    return (pd.Timestamp(row.finished_at) - pd.Timestamp(row.started_at)).total_seconds()


def recorded_study(config, study, db) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One study's trials and their epoch rows (accuracy, MAE, elapsed seconds), for a pruner replay."""
    rows = frames.trials(config=config, study=study, db=db)
    rows = rows[rows.status.isin(FINISHED)]
    studies = sorted(rows.study.dropna().unique())
    if not studies:
        raise LookupError(f"no finished trials{f' of {config}' if config else ''}"
                          f"{f' in study {study!r}' if study else ''} in {frames.db_url(db)}")
    if len(studies) > 1:
        raise ValueError(f"{len(studies)} studies have finished trials here; name one (study=..., or --study): "
                         f"{', '.join(studies)}")
    epochs = query.stat_rows(frames.db_url(db), trial_id=[int(i) for i in rows.id], with_code=False)
    frame = pd.DataFrame([{"trial_id": r["trial_id"], "epoch": r["epoch"], "accuracy": r["accuracy"], "mae": r["mae"],
                           "duration_s": frames.seconds(r["duration"])} for r in epochs], columns=EPOCH_COLUMNS)
    return rows, frame


def replay_pruner(config=None, pruner: str = "median", warmup: int = 1, study=None, db=None,
                  floor: float | None = None) -> pd.DataFrame:
    """What ``--pruner`` with ``--pruner-warmup`` (and ``--pruner-floor``) would have done to a finished
    study (``study``: its Optuna name, needed when the trials of ``config`` belong to several): one row
    per trial with its recorded and replayed status and epochs, the seconds charged and the study's
    elapsed time. The sampled points are held fixed (see ``ab.nn.sweep.replay``)."""
    rows, epochs = recorded_study(config, study, db)
    return replay(rows, epochs, Search.parse(pruner, warmup=warmup, floor=floor))


def replay_pruners(config=None, pruners: Sequence[str] = PRUNERS[1:], warmups: Sequence[int] = (1, 2),
                   study=None, db=None, floor: float | None = None) -> pd.DataFrame:
    """Each pruner x warm-up replayed on a finished study (``replay_pruner``), one row each after the
    recording's own row (pruner ``none``), each with ``--pruner-floor floor`` when given (after a row
    for the floor alone; hyperband, which takes no floor, left out): trials stopped, minutes against
    the recording's, the best validation MAE still trained to the end, and the minutes until a complete
    trial was within the recorded best's 95 % interval over validation images (its high end; the best's
    own MAE where its predictions are not stored), with ``half_time_met``: within half the recorded time."""
    rows, epochs = recorded_study(config, study, db)
    complete = rows[rows.status == "complete"]
    if complete.empty:
        raise LookupError("the study has no complete trial: no recorded best to reach")
    best = complete.loc[complete.eval_mae.idxmin()]
    try:
        target = uncertainty.bootstrap_mae(comparison.paired_errors([int(best.id)], "eval", db)[0][0])[1]
    except LookupError:
        target = float(best.eval_mae)
    return grid(rows, epochs, pruners, warmups, target, floor)
