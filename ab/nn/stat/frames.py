"""The statistics as pandas DataFrames, one kind of record each: trials, per-image predictions,
metrics and per-age-group errors, exported artifacts, latency. Every call opens the database by its
URL (``db_url``) and returns a fresh frame, with its columns even when no row matches.

``ab.nn.api`` publishes these to researchers; the library (report, deploy, AgeMoE, predict) reads
them here, below the public API."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd
from sqlalchemy.engine import make_url

from ab.nn import workspace
from ab.nn.metric._age import AGE_GROUPS
from ab.nn.stat import constant_predictor, query, versions, vocabulary


def db_url(db: str | Path | None = None) -> str:
    """The SQLAlchemy URL of ``db`` (a URL, a SQLite file, or None: the active workspace's database); a
    SQLite file that does not exist is a one-line ``FileNotFoundError``."""
    if db is None:
        url = workspace.active.current().db_url
    elif isinstance(db, Path) or "://" not in str(db):
        url = f"sqlite:///{Path(db).expanduser().resolve()}"
    else:
        url = str(db)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:") \
            and not Path(parsed.database).exists():
        raise FileNotFoundError(f"no statistics database at {parsed.database}; run `python -m ab.nn.train` "
                                f"first, or pass db=... (or set LEMUR_ROOT / LEMUR_DB)")
    versions.require_current(url)
    return url


def as_frame(rows: list[dict], columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows as a frame with ``columns`` (else the query's own), so that no result is a 0x0 frame."""
    columns = list(columns) if columns is not None else list(getattr(rows, "columns", ()) or ())
    frame = pd.DataFrame(list(rows))
    if columns:
        frame = frame.reindex(columns=columns + [c for c in frame.columns if c not in columns])
    return frame


def seconds(value):
    """Nanoseconds as seconds; None (or NaN) as None."""
    return None if value is None or value != value else value / 1e9


OPTUNA_COLUMNS = ("number", "optuna_trial_id")
"""Optuna's numbering of a trial, kept in the ``trial`` table for the link to Optuna's copy
(``ab.nn.stat.studies``) and never shown: the trial id is the one number people see."""


def trials(config=None, task=None, dataset=None, metric=None, nn=None, status=None, study=None, trial_id=None,
           data_key=None, db=None) -> pd.DataFrame:
    """One row per trial, failed ones included: status, error, training seed, split, data key and part
    digests, final numbers with the test MAE's 95 % bootstrap interval (``test_mae_low/high``);
    ``mae`` repeats ``eval_mae`` (``data()``'s name), ``duration_s`` is ``duration`` (ns) in seconds;
    ``baseline_eval_mae``/``baseline_test_mae``: the constant predictor's MAE on the trial's data key
    (``baselines()``), and ``beats_baseline`` whether the trial is better than it (its test interval below
    the baseline's test MAE; ``<NA>`` where no baseline is recorded or the trial has no MAE).
    ``id`` is the trial id; Optuna's numbering (``OPTUNA_COLUMNS``) is not a column."""
    vocabulary.check("status", status, vocabulary.TRIAL_STATUS)
    rows = query.trial_rows(db_url(db), config=config, task=task, dataset=dataset, metric=metric, nn=nn,
                            status=status, study=study, trial_id=trial_id, data_key=data_key)
    known = {row["data_key"]: row for row in query.baseline_rows(db_url(db), data_key=sorted(
        {row["data_key"] for row in rows if row["data_key"] is not None}))} if rows else {}
    for row in rows:
        row["mae"] = row["eval_mae"]
        row["duration_s"] = seconds(row["duration"])
        baseline = known.get(row["data_key"])
        row["baseline_eval_mae"], row["baseline_test_mae"] = (baseline["eval_mae"], baseline["test_mae"]) \
            if baseline else (None, None)
        row["beats_baseline"] = constant_predictor.beats(row, baseline)
        for column in OPTUNA_COLUMNS:
            del row[column]
    frame = as_frame(rows, [c for c in rows.columns if c not in OPTUNA_COLUMNS] + ["mae", "duration_s",
                                                                                   *constant_predictor.COLUMNS])
    frame["beats_baseline"] = frame["beats_baseline"].astype("boolean")
    for column in ("baseline_eval_mae", "baseline_test_mae"):  # floats, also where no row has a baseline
        frame[column] = frame[column].astype(float)
    return frame


def baselines(data_key=None, db=None) -> pd.DataFrame:
    """The constant-predictor baseline of each data key (``ab.nn.stat.constant_predictor``): the training
    part's mean age (``train_mean``, years) and the MAE of predicting it for every image on the eval and
    test parts, with the part sizes."""
    return as_frame(query.baseline_rows(db_url(db), data_key=data_key))


def trial(trial_id: int, db=None) -> dict:
    """One trial's row (as ``trials()`` gives it) by its id, the one id people see and type everywhere
    (folders, progress bars, summaries, ``trial:<id>``); a missing id is a one-line ``LookupError``."""
    rows = trials(trial_id=int(trial_id), db=db)
    if rows.empty:
        known = query.trial_id_range(db_url(db))
        where = f"ids {known[0]}..{known[1]}" if known else "no trials yet"
        raise LookupError(f"no trial {trial_id} in {db_url(db)} ({where}; ab.nn.api.trials() or "
                          f"`python -m ab.nn.stat trials` lists them)")
    return rows.iloc[0].to_dict()


def predictions(trial_id=None, split=None, db=None) -> pd.DataFrame:
    """Per-image predictions of the final evaluation of trials: ``split`` (``eval``: the last epoch;
    ``test``), ``position``, ``image_id`` (content id), ``age`` (true) and ``predicted``."""
    vocabulary.check("split", split, vocabulary.SPLITS)
    return as_frame(query.prediction_rows(db_url(db), trial_id=trial_id, split=split),
                  ("trial_id", "split", "position", "image_id", "age", "predicted"))


def metrics(config=None, nn=None, split=None, name=None, trial_id=None, db=None) -> pd.DataFrame:
    """Every recorded metric value in long form (``split`` is ``eval`` or ``test``)."""
    vocabulary.check("split", split, vocabulary.SPLITS)
    return as_frame(query.metric_rows(db_url(db), config=config, nn=nn, split=split, name=name, trial_id=trial_id),
                  ("trial_id", "config", "nn", "epoch", "split", "name", "value", "stat_id"))


def age_groups(config=None, nn=None, split: str = "test", trial_id=None, db=None) -> pd.DataFrame:
    """Per-age-group MAE, bias and count of each trial's final epoch on ``split`` (``test`` or
    ``eval``): one row per (trial, group), groups in age order."""
    vocabulary.check("split", split, vocabulary.SPLITS)
    frame = metrics(config=config, nn=nn, split=split, trial_id=trial_id, db=db)
    columns = ["trial_id", "config", "nn", "epoch", "group", "mae", "bias", "n"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    last = frame.groupby("trial_id")["epoch"].transform("max")
    frame = frame[(frame.epoch == last) & frame.name.str.contains("@")].copy()
    frame[["stat", "group"]] = frame.name.str.split("@", n=1, expand=True)
    table = frame.pivot_table(index=["trial_id", "config", "nn", "epoch", "group"], columns="stat",
                              values="value", aggfunc="first").reset_index()
    order = {name: i for i, (name, _, _) in enumerate(AGE_GROUPS)}
    table = table.sort_values(["trial_id", "group"], key=lambda c: c.map(order) if c.name == "group" else c)
    return table.reindex(columns=columns).reset_index(drop=True)


def exports(trial_id=None, config=None, nn=None, format=None, precision=None, status=None,
            db=None) -> pd.DataFrame:
    """One row per artifact of a trial (``pytorch``, ``onnx``, ``tflite`` at each precision and
    ``converter``, with its version): file, sha256, size, layout, MAE on eval/test and the largest
    difference from PyTorch's ages, in years; failed conversions carry their error; one ``pipeline`` row
    per trial holds its whole export's ``seconds``, or why it failed or was ``skipped``. Join with
    ``trials()`` on ``trial_id``."""
    vocabulary.check("format", format, vocabulary.FORMATS)
    vocabulary.check("precision", precision, vocabulary.PRECISIONS)
    vocabulary.check("status", status, vocabulary.EXPORT_STATUS)
    return as_frame(query.export_rows(db_url(db), trial_id=trial_id, config=config, nn=nn, format=format,
                                      precision=precision, status=status))


def latency(trial_id=None, config=None, nn=None, runtime=None, threads=None, status=None, db=None) -> pd.DataFrame:
    """One row per (artifact, runtime, thread count): batch, input shape, warm-up and timed runs,
    median/p90/min/mean in ms, CPU model, library versions. Join with ``exports()`` on
    ``export_id``, with ``trials()`` on ``trial_id``."""
    vocabulary.check("runtime", runtime, vocabulary.RUNTIMES)
    vocabulary.check("status", status, vocabulary.LATENCY_STATUS)
    return as_frame(query.latency_rows(db_url(db), trial_id=trial_id, config=config, nn=nn, runtime=runtime,
                                     threads=threads, status=status))
