"""Query API for researchers: every function returns a fresh pandas DataFrame.

``db`` is a SQLAlchemy URL or a path to a SQLite file; by default the workspace's database
(``$LEMUR_DB``, else ``<root>/db/ab.nn.db`` with the root from ``$LEMUR_ROOT`` or the current
directory). All filters are bound parameters; a scalar means equality, a list or tuple ``IN``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd
from sqlalchemy.engine import make_url

from ab.nn import workspace
from ab.nn.stat import query
from ab.nn.stat.schema import TRAINED_STATES as TRAINED

DATA_COLUMNS = ("id", "task", "dataset", "metric", "metric_code", "metric_id", "nn", "nn_code", "nn_id", "epoch",
                "accuracy", "duration", "prm_id", "transform_code", "transform_id", "prm",
                "transform", "mae", "test_mae", "trial_id", "status", "error", "epoch_max", "seed", "split",
                "study", "number")


def db_url(db: str | Path | None = None) -> str:
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
    return url


def _frame(rows: list[dict], columns: Sequence[str] | None = None) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    if columns is not None:
        frame = frame.reindex(columns=list(columns))
    return frame


def data(only_best_accuracy: bool = False, task=None, dataset=None, metric=None, nn=None, epoch=None,
         max_rows: int | None = None, nn_prefixes: Sequence[str] | None = None, unique_nn: bool = False,
         status=None, db=None) -> pd.DataFrame:
    """One row per trained epoch, with LEMUR's columns plus ``mae`` (raw eval MAE, years),
    ``test_mae`` (on the final epoch of trials with a held-out test set) and the trial status.

    ``only_best_accuracy`` keeps the best row per (task, dataset, metric, nn, epoch);
    ``unique_nn`` the best row per model; ``nn_prefixes`` selects models by name prefix.
    """
    rows = query.stat_rows(db_url(db), only_best_accuracy=only_best_accuracy, task=task, dataset=dataset,
                           metric=metric, nn=nn, epoch=epoch, max_rows=max_rows, nn_prefixes=nn_prefixes,
                           unique_nn=unique_nn, status=status)
    return _frame(rows, DATA_COLUMNS)


def trials(config=None, task=None, dataset=None, metric=None, nn=None, status=None, study=None,
           db=None) -> pd.DataFrame:
    """One row per Optuna trial, failed ones included: status, error, seed, split, final numbers."""
    rows = query.trial_rows(db_url(db), config=config, task=task, dataset=dataset, metric=metric, nn=nn,
                            status=status, study=study)
    return _frame(rows)


def ranked_trials(config=None, db=None) -> pd.DataFrame:
    """Trained trials (complete, or stopped early), best first by validation accuracy (LEMUR's
    selection metric; never the test split), ties to the earlier trial."""
    rows = trials(config=config, status=TRAINED, db=db)
    if rows.empty:
        return rows
    return rows.sort_values(["eval_accuracy", "id"], ascending=[False, True]).reset_index(drop=True)


def metrics(config=None, nn=None, split=None, name=None, trial_id=None, db=None) -> pd.DataFrame:
    """Every recorded metric value in long form (``split`` is ``eval`` or ``test``)."""
    return _frame(query.metric_rows(db_url(db), config=config, nn=nn, split=split, name=name, trial_id=trial_id),
                  ("trial_id", "config", "nn", "epoch", "split", "name", "value", "stat_id"))


def age_groups(config=None, nn=None, split: str = "test", trial_id=None, db=None) -> pd.DataFrame:
    """Per-age-group MAE, bias and count of each trial's final epoch on ``split`` (``test`` or
    ``eval``): one row per (trial, group), groups in age order."""
    from ab.nn.metric._age import AGE_GROUPS

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


def exports(trial_id=None, config=None, nn=None, format=None, precision=None, status=None, db=None) -> pd.DataFrame:
    """One row per artifact of a trial (``pytorch``, ``onnx``, ``tflite`` at each precision): file,
    sha256, size, layout, MAE on eval/test and the largest difference from PyTorch's ages, in
    years; failed conversions carry their error. Join with ``trials()`` on ``trial_id``."""
    return _frame(query.export_rows(db_url(db), trial_id=trial_id, config=config, nn=nn, format=format,
                                    precision=precision, status=status))


def latency(trial_id=None, config=None, nn=None, runtime=None, threads=None, status=None, db=None) -> pd.DataFrame:
    """One row per (artifact, runtime, thread count): batch, input shape, warm-up and timed runs,
    median/p90/min/mean in ms, CPU model, library versions. Join with ``exports()`` on
    ``export_id``, with ``trials()`` on ``trial_id``."""
    return _frame(query.latency_rows(db_url(db), trial_id=trial_id, config=config, nn=nn, runtime=runtime,
                                     threads=threads, status=status))
