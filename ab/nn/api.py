"""Query API for researchers: every function returns a fresh pandas DataFrame.

``db`` is a SQLAlchemy URL or a path to a SQLite file; by default the workspace's database
(``$LEMUR_DB``, else ``<root>/db/ab.nn.db`` with the root from ``$LEMUR_ROOT`` or the current
directory). All filters are bound parameters; a scalar means equality, a list or tuple ``IN``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from sqlalchemy.engine import make_url

from ab.nn import workspace
from ab.nn.dataset.identity import DataMismatch
from ab.nn.stat import engine as engines, query, uncertainty
from ab.nn.stat.uncertainty import Comparison
from ab.nn.stat.schema import TRAINED_STATES as TRAINED

DATA_COLUMNS = ("id", "task", "dataset", "metric", "metric_code", "metric_id", "nn", "nn_code", "nn_id", "epoch",
                "accuracy", "duration", "prm_id", "transform_code", "transform_id", "prm",
                "transform", "mae", "test_mae", "trial_id", "status", "error", "epoch_max", "seed", "split",
                "data_key", "study", "number")


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
    engines.current(url)
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


def trials(config=None, task=None, dataset=None, metric=None, nn=None, status=None, study=None, trial_id=None,
           data_key=None, db=None) -> pd.DataFrame:
    """One row per trial, failed ones included: status, error, training seed, split, data key and part
    digests, final numbers with the test MAE's 95 % bootstrap interval (``test_mae_low/high``)."""
    rows = query.trial_rows(db_url(db), config=config, task=task, dataset=dataset, metric=metric, nn=nn,
                            status=status, study=study, trial_id=trial_id, data_key=data_key)
    return _frame(rows)


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


def load_model(trial_id: int, db=None, root=None, device: str = "cpu"):
    """A trained trial's model, in eval mode, with ``model.preprocessing``: input size, layout, colour
    order, scaling, mean/std, age range, alignment template, split and data key (what ``meta.json``
    holds). Needs the trial's checkpoint (``--save_pth_weights``)."""
    from ab.nn.util import checkpoint

    row = trial(trial_id, db=db)
    ws = workspace.Workspace.resolve(root, db=db_url(db) if db is not None else None)
    folder = checkpoint.folder_of(ws, row)
    if not (folder / checkpoint.WEIGHTS).is_file():
        raise LookupError(f"trial {trial_id} has no checkpoint in {folder} (train with --save_pth_weights, or "
                          f"pass root= the workspace it was trained in)")
    model, _ = checkpoint.load(folder, device)
    return model


DEFAULT_SPLIT = "paper/42"


def default_data_keys(frame: pd.DataFrame) -> dict[str, str]:
    """The data key each config is judged on unless another is asked for: the newest trial's key on the
    default split (``paper/42``) with every image, else on any split with every image, else the newest.
    A smoke run (``--max-samples``) therefore never displaces a real one."""
    keys = {}
    for config, group in frame.groupby("config"):
        full = group[group.max_samples.isna()]
        for candidates in (full[full.split == DEFAULT_SPLIT], full, group):
            if not candidates.empty:
                keys[config] = candidates.sort_values("id").data_key.iloc[-1]
                break
    return keys


def ranked_trials(config=None, data_key=None, all_data: bool = False, db=None) -> pd.DataFrame:
    """Trained trials (complete, or stopped early), best first by validation accuracy (LEMUR's
    selection metric; never the test split), ties to the earlier trial.

    Trials are comparable only on the same data: by default each config keeps its default data key
    (``default_data_keys``); ``data_key`` picks one, ``all_data=True`` mixes them (explicitly)."""
    rows = trials(config=config, status=TRAINED, data_key=data_key, db=db)
    if rows.empty:
        return rows
    if data_key is None and not all_data:
        keys = default_data_keys(rows)
        rows = rows[rows.data_key == rows.config.map(keys)]
    return rows.sort_values(["eval_accuracy", "id"], ascending=[False, True]).reset_index(drop=True)


def predictions(trial_id=None, split=None, db=None) -> pd.DataFrame:
    """Per-image predictions of the final evaluation of trials: ``split`` (``eval``: the last epoch;
    ``test``), ``position``, ``image_id`` (content id), ``age`` (true) and ``predicted``."""
    return _frame(query.prediction_rows(db_url(db), trial_id=trial_id, split=split),
                  ("trial_id", "split", "position", "image_id", "age", "predicted"))


def _errors(trial_ids: Sequence[int], split: str, db) -> tuple[np.ndarray, list]:
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


def compare(a, b, split: str = "test", db=None) -> Comparison:
    """Paired comparison of trial(s) ``a`` against ``b`` on the same images: MAE difference (a - b)
    with its 95 % paired-bootstrap interval and the Wilcoxon p-value; ``.verdict`` says ``tie`` when
    the interval contains 0. ``a`` and ``b`` are trial ids or lists of replica trial ids."""
    ids_a = [int(a)] if np.isscalar(a) else [int(t) for t in a]
    ids_b = [int(b)] if np.isscalar(b) else [int(t) for t in b]
    errors_a, images = _errors(ids_a, split, db)
    errors_b, other = _errors(ids_b, split, db)
    if images != other:
        raise DataMismatch(f"trials {ids_a} and {ids_b} were judged on different {split} images; compare trials "
                           f"of the same data key")
    return uncertainty.compare(errors_a, errors_b)


def replicas(config=None, data_key=None, db=None) -> pd.DataFrame:
    """Training-seed replicas grouped: one row per (config, data key, epochs, hyperparameter set) with
    ``n``, the seeds, and mean ± std of the eval and test MAE across replicas."""
    rows = trials(config=config, status=TRAINED, data_key=data_key, db=db)
    columns = ["config", "data_key", "epoch_max", "prm_id", "n", "seeds", "trial_ids", "eval_mae_mean",
               "eval_mae_std", "test_mae_mean", "test_mae_std"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    out = []
    for (cfg, key, epochs, prm_id), group in rows.groupby(["config", "data_key", "epoch_max", "prm_id"], dropna=False):
        eval_mean, eval_std, n = uncertainty.mean_std(group.eval_mae)
        test_mean, test_std, _ = uncertainty.mean_std(group.test_mae)
        out.append({"config": cfg, "data_key": key, "epoch_max": epochs, "prm_id": prm_id, "n": n,
                    "seeds": sorted(int(s) for s in group.seed.dropna()), "trial_ids": sorted(group.id),
                    "eval_mae_mean": eval_mean, "eval_mae_std": eval_std, "test_mae_mean": test_mean,
                    "test_mae_std": test_std})
    return pd.DataFrame(out, columns=columns).sort_values(["config", "eval_mae_mean"]).reset_index(drop=True)


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
