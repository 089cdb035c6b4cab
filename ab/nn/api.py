"""Query API for researchers: every function returns a fresh pandas DataFrame, with its columns even
when no row matches.

``db`` is a SQLAlchemy URL or a path to a SQLite file; by default the workspace's database
(``$LEMUR_DB``, else ``<root>/db/ab.nn.db`` with the root from ``$LEMUR_ROOT`` or the current
directory). All filters are bound parameters; a scalar means equality, a list or tuple ``IN``.
Filters with a fixed set of values (``status``, ``runtime``, ``format``, ``precision``, ``split``)
refuse any other value with a one-line ``ValueError`` listing the allowed ones.

LEMUR's functions keep LEMUR 2.2.11's positional order and columns (``data``,
``data_withnonnullvalue``, ``run_data``, ``nn_stat_data``, ``check_nn``); this project's additions
to them are keyword-only. Naming is the same everywhere: ``eval_mae`` and ``test_mae`` are MAEs in
years on the evaluation and the test part (``data()``'s LEMUR-era ``mae`` is ``eval_mae``, and
``trials()`` has ``mae`` too), and every duration in ns has ``duration_s`` beside it.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from sqlalchemy.engine import make_url

from ab.nn import workspace
from ab.nn.check_nn import check_nn  # noqa: F401  (LEMUR's api.check_nn)
from ab.nn.deploy import converters
from ab.nn.dataset.identity import DataMismatch
from ab.nn.stat import architecture, code_similarity, engine as engines, join, query, ranking, uncertainty, versions, vocabulary
from ab.nn.stat.join import JoinConf
from ab.nn.stat.uncertainty import Comparison
from ab.nn.stat.schema import TRAINED_STATES as TRAINED
from ab.nn.sweep import replay
from ab.nn.sweep.search import PRUNERS, Search

LEMUR_DATA_COLUMNS = ("id", "task", "dataset", "metric", "metric_code", "metric_id", "nn", "nn_code", "nn_id",
                      "epoch", "accuracy", "duration", "prm_id", "transform_code", "transform_id")
"""``data()``'s columns before ``prm``, in LEMUR 2.2.11's order (``nn_*`` statistics go between them
and ``prm``)."""
CODE_COLUMNS = ("metric_code", "nn_code", "transform_code")
EXTRA_DATA_COLUMNS = ("transform", "mae", "eval_mae", "test_mae", "accuracy_scale", "duration_s", "trial_id",
                      "status", "error", "epoch_max", "seed", "split", "data_key", "study", "number")
"""``data()``'s columns after LEMUR's: this project's."""
DATA_COLUMNS = LEMUR_DATA_COLUMNS + ("prm",) + EXTRA_DATA_COLUMNS
NN_STAT_COLUMNS = tuple(architecture.OUTPUT_ALIASES) + tuple(architecture.EXTRA_ALIASES)


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
    versions.require_current(url)
    return url


def _frame(rows: list[dict], columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows as a frame with ``columns`` (else the query's own), so that no result is a 0x0 frame."""
    columns = list(columns) if columns is not None else list(getattr(rows, "columns", ()) or ())
    frame = pd.DataFrame(list(rows))
    if columns:
        frame = frame.reindex(columns=columns + [c for c in frame.columns if c not in columns])
    return frame


def _code_frame(rows: list[dict], columns: Sequence[str]) -> pd.DataFrame:
    """``_frame``, with the code columns kept as Python objects: the rows of one code version share its
    one string (``query.stat_rows``), where pandas' string dtype would copy it into every row."""
    codes = {c: [row.pop(c) for row in rows] for c in CODE_COLUMNS if c in columns}
    frame = _frame(rows, columns)
    for column, texts in codes.items():
        frame[column] = pd.Series(texts, index=frame.index, dtype=object)
    return frame


def _uncached(function):
    """LEMUR's query functions are ``functools.lru_cache``d, so LEMUR code calls ``data.cache_clear()``
    before it reads what it has just written. Here nothing is cached (``lru_cache(maxsize=0)``: every
    call queries the database and returns a new frame), so ``cache_clear()`` exists and has nothing to
    clear: a sweep or ``check_nn`` writes rows at any time, from any process, and a cached frame would
    miss them; LEMUR's cache also hands every caller the same mutable frame. ``cache_info().misses``
    counts the calls."""
    return functools.lru_cache(maxsize=0)(function)


def _seconds(value):
    return None if value is None or value != value else value / 1e9


def _data_rows(only_best_accuracy, task, dataset, metric, nn, epoch, max_rows, nn_prefixes, unique_nn,
               include_nn_stats, status, with_code, url) -> list[dict]:
    vocabulary.check("status", status, vocabulary.TRIAL_STATUS)
    rows = query.stat_rows(url, only_best_accuracy=only_best_accuracy, task=task, dataset=dataset, metric=metric,
                           nn=nn, epoch=epoch, max_rows=max_rows or None, nn_prefixes=nn_prefixes,
                           unique_nn=unique_nn, status=status, with_code=with_code)
    stats = architecture.ensure(url, nn_name=sorted({r["nn"] for r in rows})) if include_nn_stats and rows else {}
    out = []
    for row in rows:
        row["eval_mae"] = row["mae"]
        row["duration_s"] = _seconds(row["duration"])
        if include_nn_stats:
            found = stats.get(architecture.stat_id(row["nn"], row["prm_id"])) if row["prm_id"] else None
            for alias, column in {**architecture.OUTPUT_ALIASES, **architecture.EXTRA_ALIASES}.items():
                row[alias] = (found or {}).get(column)
            row["nn_stats_meta"] = _json(row["nn_stats_meta"])
        out.append(row)
    return out


def _json(text):
    import json

    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _data_columns(with_code: bool, include_nn_stats: bool) -> list[str]:
    lemur = [c for c in LEMUR_DATA_COLUMNS if with_code or c not in CODE_COLUMNS]
    return lemur + (list(NN_STAT_COLUMNS) if include_nn_stats else []) + ["prm"] + list(EXTRA_DATA_COLUMNS)


@_uncached
def data(only_best_accuracy: bool = False, task=None, dataset=None, metric=None, nn=None, epoch=None,
         max_rows: int | None = None, sql: JoinConf | None = None, nn_prefixes: Sequence[str] | None = None,
         unique_nn: bool = False, include_nn_stats: bool = False, *, status=None, with_code: bool = True,
         db=None) -> pd.DataFrame:
    """One row per trained epoch: LEMUR 2.2.11's ``data()`` (same positional order, arguments and columns:
    ``id, task, dataset, metric, metric_code, metric_id, nn, nn_code, nn_id, epoch, accuracy, duration,
    prm_id, transform_code, transform_id, prm``), then this project's columns (``EXTRA_DATA_COLUMNS``).

    ``only_best_accuracy`` keeps the best row per (task, dataset, metric, nn, epoch); ``unique_nn`` the
    best row per model; ``nn_prefixes`` selects models by name prefix; ``max_rows`` (0: no limit) caps
    the rows; ``sql`` (a ``JoinConf``) joins several models per row as LEMUR does (``ab.nn.stat.join``);
    ``include_nn_stats`` inserts LEMUR's ``nn_*`` architecture columns before ``prm`` (and ``nn_macs``),
    computed on first request for the row's model and hyperparameter set. A row's code is the version
    it was produced with (None where unknown, e.g. imported from LEMUR's JSON); the code columns are
    there however the function is called, as in LEMUR (``with_code=False`` leaves them out; each code
    version is one string shared by its rows: ``benchmarks/data_code_columns.py``).
    ``status`` filters by trial status. Nothing is cached (``cache_clear()``: see ``_uncached``).
    Without ``db=`` and before the workspace has a database, the frame is empty (LEMUR always has one;
    NN-GPT asks ``data(nn=...)`` before its first ``check_nn``).
    """
    try:
        url = db_url(db)
    except FileNotFoundError:
        if db is not None:
            raise
        return _frame([], _data_columns(with_code, include_nn_stats))
    rows = _data_rows(only_best_accuracy, task, dataset, metric, nn, epoch, max_rows, nn_prefixes, unique_nn,
                      include_nn_stats, status, with_code, url)
    columns = _data_columns(with_code, include_nn_stats)
    if sql is not None:
        signatures = None
        if sql.similarity_mode == join.ANCHOR_BAND:
            named = {r["nn"] for r in rows} | ({sql.anchor_nn} if isinstance(sql.anchor_nn, str) else set())
            signatures = code_similarity.ensure(url, named)
        rows = join.apply(sql, rows, max_rows, signatures)
        return _frame(rows, list(dict.fromkeys([c for r in rows[:1] for c in r] or columns)))
    return _code_frame(rows, columns)


REQUIRABLE_STAT = ("id", "task", "dataset", "metric", "nn", "epoch", "accuracy", "duration", "transform", "prm")
"""LEMUR's ``require_stat_nonnull`` names (``prm`` is the row's hyperparameter uid, ``prm_id`` here)."""


def data_withnonnullvalue(only_best_accuracy=False, task=None, dataset=None, metric=None, nn=None, epoch=None,
                          max_rows=None, nn_prefixes=None, sql=None, unique_nn=False, include_nn_stats=False,
                          include_prm=True, require_stat_nonnull=(), require_nn_stat_nonnull=(),
                          require_prm_nonnull=(), prm_as_columns=False, *, status=None,
                          with_code: bool = True, db=None) -> pd.DataFrame:
    """LEMUR 2.2.11's ``data_withnonnullvalue`` (its positional order: ``nn_prefixes`` before ``sql``):
    ``data()``'s rows without those where a required field is NULL or NaN. ``require_stat_nonnull`` names
    stat fields (``REQUIRABLE_STAT``), ``require_nn_stat_nonnull`` ``nn_stat`` fields (LEMUR's ``nn_*``
    names or the raw column names; implies ``include_nn_stats``), ``require_prm_nonnull`` hyperparameter
    names. ``include_prm=False`` empties ``prm``; ``prm_as_columns`` moves its keys into columns.
    ``sql`` is refused, as in LEMUR. ``max_rows`` applies before the rows are dropped, as in LEMUR."""
    if sql is not None:
        raise ValueError("data_withnonnullvalue does not support sql=...; use data(sql=...)")
    wrong = [c for c in require_stat_nonnull if c not in REQUIRABLE_STAT]
    if wrong:
        raise ValueError(f"require_stat_nonnull: {wrong[0]!r} is not one of: {', '.join(REQUIRABLE_STAT)}")
    raw = {column: alias for alias, column in {**architecture.OUTPUT_ALIASES, **architecture.EXTRA_ALIASES}.items()}
    nn_required = []
    for name in require_nn_stat_nonnull:
        alias = name if name in NN_STAT_COLUMNS else raw.get(name)
        if alias is None:
            raise ValueError(f"require_nn_stat_nonnull: {name!r} is not an nn_stat field "
                             f"({', '.join(NN_STAT_COLUMNS)})")
        nn_required.append(alias)
    include_nn_stats = bool(include_nn_stats or nn_required)
    url = db_url(db)
    rows = _data_rows(only_best_accuracy, task, dataset, metric, nn, epoch, max_rows, nn_prefixes, unique_nn,
                      include_nn_stats, status, with_code, url)
    stat_names = {"prm": "prm_id"}
    kept = []
    for row in rows:
        values = [row.get(stat_names.get(c, c)) for c in require_stat_nonnull] + [row.get(c) for c in nn_required]
        values += [row["prm"].get(name) for name in require_prm_nonnull]
        if any(_missing(v) for v in values):
            continue
        if not include_prm:
            row["prm"] = {}
        kept.append(row)
    columns = _data_columns(with_code, include_nn_stats)
    if prm_as_columns:
        keys = sorted({k for row in kept for k in row["prm"]})
        for row in kept:
            prm = row.pop("prm")
            row.update({k: prm.get(k) for k in keys})
        columns = [c for c in columns if c != "prm"] + [k for k in keys if k not in columns]
    return _code_frame(kept, columns)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


RUN_COLUMNS = ("id", "model_name", "device_type", "os_version", "valid", "emulator", "error_message", "duration",
               "iterations", "unit", "cpu_duration", "cpu_min_duration", "cpu_max_duration", "cpu_std_dev",
               "cpu_error", "gpu_duration", "gpu_min_duration", "gpu_max_duration", "gpu_std_dev", "gpu_error",
               "npu_duration", "npu_min_duration", "npu_max_duration", "npu_std_dev", "npu_error", "total_ram_kb",
               "free_ram_kb", "available_ram_kb", "cached_kb", "in_dim_0", "in_dim_1", "in_dim_2", "in_dim_3",
               "precision_type", "device_analytics", "tflite_id", "tflite_accuracy", "tflite_transform",
               "tflite_precision_type")
"""``run_data()``'s LEMUR columns, in LEMUR 2.2.11's order."""
RUN_EXTRA_COLUMNS = ("trial_id", "export_id", "config", "format", "runtime", "threads", "batch", "median_ms",
                     "p90_ms", "min_ms", "mean_ms", "eval_mae", "test_mae", "cpu_count", "host")


@_uncached
def run_data(model_name=None, device_type=None, max_rows=None, *, runtime=None, trial_id=None, status=None,
             db=None) -> pd.DataFrame:
    """LEMUR 2.2.11's ``run_data`` (device runs of deployed models), from this project's latency rows:
    one row per (artifact, runtime, thread count) timing, in LEMUR's columns where they exist
    (``RUN_COLUMNS``), then ours (``RUN_EXTRA_COLUMNS``). ``model_name`` is the model (``nn``),
    ``device_type`` the CPU model, ``duration``/``cpu_duration`` the median and ``cpu_min_duration`` the
    fastest run in ns (``unit``), ``iterations`` the timed runs, ``in_dim_*`` the input shape,
    ``precision_type`` the artifact's precision; ``tflite_*`` describe the artifact when it is a TFLite
    file (``tflite_accuracy``: its MAE as the trial metric's accuracy, ``1 - eval MAE/scale``). What LEMUR
    measures on phones (GPU/NPU, RAM, OS) is None."""
    import ast

    from ab.nn.stat import accuracy_scale

    vocabulary.check("runtime", runtime, vocabulary.RUNTIMES)
    vocabulary.check("status", status, vocabulary.LATENCY_STATUS)
    rows = query.latency_rows(db_url(db), trial_id=trial_id, nn=model_name, runtime=runtime, status=status)
    out = []
    for r in rows:
        if device_type is not None and r["cpu"] not in ((device_type,) if isinstance(device_type, str)
                                                        else tuple(device_type)):
            continue
        dims = list(ast.literal_eval(r["input_shape"])) if r["input_shape"] else []
        dims += [None] * (4 - len(dims))
        ns = (lambda ms: None if ms is None else int(round(ms * 1e6)))
        tflite = r["format"] == "tflite"
        scale = accuracy_scale.declared(r["config"].split("_")[2]) if r["config"] else None
        accuracy = None if r["eval_mae"] is None or scale is None else max(0.0, 1.0 - r["eval_mae"] / scale)
        row = {c: None for c in RUN_COLUMNS}
        row.update(id=r["id"], model_name=r["nn"], device_type=r["cpu"], valid=r["status"] == "ok", emulator=False,
                   error_message=r["error"], duration=ns(r["median_ms"]), iterations=r["runs"], unit="ns",
                   cpu_duration=ns(r["median_ms"]), cpu_min_duration=ns(r["min_ms"]),
                   in_dim_0=dims[0], in_dim_1=dims[1], in_dim_2=dims[2], in_dim_3=dims[3],
                   precision_type=r["precision"], tflite_id=r["export_id"] if tflite else None,
                   tflite_accuracy=accuracy if tflite else None, tflite_transform=r["transform"] if tflite else None,
                   tflite_precision_type=r["precision"] if tflite else None)
        row.update({c: r.get(c) for c in RUN_EXTRA_COLUMNS})
        out.append(row)
    return _frame(out[:max_rows] if max_rows else out, RUN_COLUMNS + RUN_EXTRA_COLUMNS)


@_uncached
def nn_stat_data(nn_name=None, prm_id=None, max_rows=None, *, db=None, progress: bool = True) -> pd.DataFrame:
    """LEMUR 2.2.11's ``nn_stat_data``: architecture statistics per (model, hyperparameter set) of the
    recorded epochs, in LEMUR's columns (``architecture.LEMUR_COLUMNS``, then ``meta`` as a dict), then
    ours (``macs``, ``in_shape``, ``code_id``); computed on first request (``ab.nn.stat.architecture``).
    A model whose recorded code is not its file's here carries the reason in ``error``."""
    url = db_url(db)
    rows = sorted(architecture.ensure(url, nn_name=nn_name, prm_id=prm_id, progress=progress).values(),
                  key=lambda r: (r["nn_name"], r["prm_id"]))
    for row in rows:
        row["meta"] = _json(row.pop("meta_json", None))
    columns = list(architecture.LEMUR_COLUMNS) + ["meta", "macs", "in_shape", "code_id"]
    return _frame(rows[:max_rows] if max_rows else rows, columns)


def trials(config=None, task=None, dataset=None, metric=None, nn=None, status=None, study=None, trial_id=None,
           data_key=None, db=None) -> pd.DataFrame:
    """One row per trial, failed ones included: status, error, training seed, split, data key and part
    digests, final numbers with the test MAE's 95 % bootstrap interval (``test_mae_low/high``);
    ``mae`` repeats ``eval_mae`` (``data()``'s name), ``duration_s`` is ``duration`` (ns) in seconds."""
    vocabulary.check("status", status, vocabulary.TRIAL_STATUS)
    rows = query.trial_rows(db_url(db), config=config, task=task, dataset=dataset, metric=metric, nn=nn,
                            status=status, study=study, trial_id=trial_id, data_key=data_key)
    for row in rows:
        row["mae"] = row["eval_mae"]
        row["duration_s"] = _seconds(row["duration"])
    return _frame(rows, list(rows.columns) + ["mae", "duration_s"])


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
    with workspace.active.use(ws):  # a model file of that workspace's nn/ folder is found too
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
    """Trained trials (complete, or stopped early), best first as ``ab.nn.stat.ranking`` ranks them
    everywhere (by validation MAE, never the test split; within each study's latency limit, the
    ``feasible`` column; Pareto front first in a two-objective study), ties to the earlier trial.

    Trials are comparable only on the same data: by default each config keeps its default data key
    (``default_data_keys``); ``data_key`` picks one, ``all_data=True`` mixes them (explicitly)."""
    rows = trials(config=config, status=TRAINED, data_key=data_key, db=db)
    if rows.empty:
        return rows.assign(feasible=pd.Series(dtype=bool))
    if data_key is None and not all_data:
        keys = default_data_keys(rows)
        rows = rows[rows.data_key == rows.config.map(keys)]
    from sqlalchemy.orm import Session

    with Session(engines.engine(db_url(db), writer=False)) as session:
        order = ranking.rank(session, sorted(rows.config.unique()), data_key)
    position = {r.trial_id: (i, r.feasible) for i, r in enumerate(order)}
    rows = rows[rows.id.isin(position)].assign(feasible=lambda f: f.id.map(lambda i: position[i][1]))
    return rows.iloc[rows.id.map(lambda i: position[i][0]).argsort()].reset_index(drop=True)


def predictions(trial_id=None, split=None, db=None) -> pd.DataFrame:
    """Per-image predictions of the final evaluation of trials: ``split`` (``eval``: the last epoch;
    ``test``), ``position``, ``image_id`` (content id), ``age`` (true) and ``predicted``."""
    vocabulary.check("split", split, vocabulary.SPLITS)
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
            low, high = uncertainty.bootstrap_replicas(_errors(sorted(group.id), "test", db)[0])
        except (LookupError, DataMismatch):
            low = high = float("nan")
        out.append({"config": cfg, "data_key": key, "epoch_max": epochs, "prm_id": prm_id, "n": n,
                    "seeds": sorted(int(s) for s in group.seed.dropna()), "trial_ids": sorted(group.id),
                    "eval_mae_mean": eval_mean, "eval_mae_std": eval_std, "test_mae_mean": test_mean,
                    "test_mae_std": test_std, "test_mae_low": low, "test_mae_high": high})
    return pd.DataFrame(out, columns=columns).sort_values(["config", "eval_mae_mean"]).reset_index(drop=True)


def _recorded_study(config, study, db) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One study's trials and their epoch rows (accuracy, MAE, elapsed seconds), for a pruner replay."""
    rows = trials(config=config, study=study, db=db)
    rows = rows[rows.status.isin(replay.FINISHED)]
    studies = sorted(rows.study.dropna().unique())
    if not studies:
        raise LookupError(f"no finished trials{f' of {config}' if config else ''}"
                          f"{f' in study {study!r}' if study else ''} in {db_url(db)}")
    if len(studies) > 1:
        raise ValueError(f"{len(studies)} studies have finished trials here; name one (study=..., or --study): "
                         f"{', '.join(studies)}")
    epochs = query.stat_rows(db_url(db), trial_id=[int(i) for i in rows.id], with_code=False)
    frame = pd.DataFrame([{"trial_id": r["trial_id"], "epoch": r["epoch"], "accuracy": r["accuracy"], "mae": r["mae"],
                           "duration_s": _seconds(r["duration"])} for r in epochs], columns=replay.EPOCH_COLUMNS)
    return rows, frame


def replay_pruner(config=None, pruner: str = "median", warmup: int = 1, study=None, db=None,
                  floor: float | None = None) -> pd.DataFrame:
    """What ``--pruner`` with ``--pruner-warmup`` (and ``--pruner-floor``) would have done to a finished
    study (``study``: its Optuna name, needed when the trials of ``config`` belong to several): one row
    per trial with its recorded and replayed status and epochs, the seconds charged and the study's
    elapsed time. The sampled points are held fixed (see ``ab.nn.sweep.replay``)."""
    rows, epochs = _recorded_study(config, study, db)
    return replay.replay(rows, epochs, Search.parse(pruner, warmup=warmup, floor=floor))


def replay_pruners(config=None, pruners: Sequence[str] = PRUNERS[1:], warmups: Sequence[int] = (1, 2),
                   study=None, db=None, floor: float | None = None) -> pd.DataFrame:
    """Each pruner x warm-up replayed on a finished study (``replay_pruner``), one row each after the
    recording's own row (pruner ``none``), each with ``--pruner-floor floor`` when given (after a row
    for the floor alone; hyperband, which takes no floor, left out): trials stopped, minutes against
    the recording's, the best validation MAE still trained to the end, and the minutes until a complete
    trial was within the recorded best's 95 % interval over validation images (its high end; the best's
    own MAE where its predictions are not stored), with ``half_time_met``: within half the recorded time."""
    rows, epochs = _recorded_study(config, study, db)
    complete = rows[rows.status == "complete"]
    if complete.empty:
        raise LookupError("the study has no complete trial: no recorded best to reach")
    best = complete.loc[complete.eval_mae.idxmin()]
    try:
        target = uncertainty.bootstrap_mae(_errors([int(best.id)], "eval", db)[0][0])[1]
    except LookupError:
        target = float(best.eval_mae)
    return replay.grid(rows, epochs, pruners, warmups, target, floor)


def metrics(config=None, nn=None, split=None, name=None, trial_id=None, db=None) -> pd.DataFrame:
    """Every recorded metric value in long form (``split`` is ``eval`` or ``test``)."""
    vocabulary.check("split", split, vocabulary.SPLITS)
    return _frame(query.metric_rows(db_url(db), config=config, nn=nn, split=split, name=name, trial_id=trial_id),
                  ("trial_id", "config", "nn", "epoch", "split", "name", "value", "stat_id"))


def age_groups(config=None, nn=None, split: str = "test", trial_id=None, db=None) -> pd.DataFrame:
    """Per-age-group MAE, bias and count of each trial's final epoch on ``split`` (``test`` or
    ``eval``): one row per (trial, group), groups in age order."""
    from ab.nn.metric._age import AGE_GROUPS

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


def exports(trial_id=None, config=None, nn=None, format=None, precision=None, status=None, converter=None,
            db=None) -> pd.DataFrame:
    """One row per artifact of a trial (``pytorch``, ``onnx``, ``tflite`` at each precision and
    ``converter``, with its version): file, sha256, size, layout, MAE on eval/test and the largest
    difference from PyTorch's ages, in years; failed conversions carry their error. ``converter``
    (``onnx2tf`` or ``litert-torch``) keeps that converter's TFLite rows. Join with ``trials()`` on
    ``trial_id``."""
    vocabulary.check("format", format, vocabulary.FORMATS)
    vocabulary.check("precision", precision, vocabulary.PRECISIONS)
    vocabulary.check("status", status, vocabulary.EXPORT_STATUS)
    vocabulary.check("converter", converter, converters.CONVERTERS)
    frame = _frame(query.export_rows(db_url(db), trial_id=trial_id, config=config, nn=nn, format=format,
                                     precision=precision, status=status))
    if converter is not None and not frame.empty:
        wanted = [converter] if isinstance(converter, str) else list(converter)
        frame = frame[frame.converter.map(converters.family).isin(wanted)].reset_index(drop=True)
    return frame


def latency(trial_id=None, config=None, nn=None, runtime=None, threads=None, status=None, db=None) -> pd.DataFrame:
    """One row per (artifact, runtime, thread count): batch, input shape, warm-up and timed runs,
    median/p90/min/mean in ms, CPU model, library versions. Join with ``exports()`` on
    ``export_id``, with ``trials()`` on ``trial_id``."""
    vocabulary.check("runtime", runtime, vocabulary.RUNTIMES)
    vocabulary.check("status", status, vocabulary.LATENCY_STATUS)
    return _frame(query.latency_rows(db_url(db), trial_id=trial_id, config=config, nn=nn, runtime=runtime,
                                     threads=threads, status=status))
