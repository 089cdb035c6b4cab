"""Query API for researchers: every function returns a fresh pandas DataFrame, with its columns even
when no row matches.

``db`` is a SQLAlchemy URL or a path to a SQLite file; ``root`` (every function that reads the
database takes it, keyword-only) a workspace, as a path or a ``Workspace``, whose ``db/ab.nn.db`` is
read when ``db`` is not given. With neither, the environment's workspace (``$LEMUR_DB``, else
``<root>/db/ab.nn.db`` with the root from ``$LEMUR_ROOT`` or the current directory). Every trial is
named by its trial id, never by Optuna's numbering (``docs/guide/ids.md``). All filters are bound
parameters; a scalar means equality, a list or tuple ``IN``.
Filters with a fixed set of values (``status``, ``runtime``, ``format``, ``precision``, ``split``)
refuse any other value with a one-line ``ValueError`` listing the allowed ones.

LEMUR's functions keep LEMUR 2.2.11's positional order and columns (``data``,
``data_withnonnullvalue``, ``run_data``, ``nn_stat_data``, ``check_nn``); this project's additions
to them are keyword-only. Naming is the same everywhere: ``eval_mae`` and ``test_mae`` are MAEs in
years on the evaluation and the test part (``data()``'s LEMUR-era ``mae`` is ``eval_mae``, and
``trials()`` has ``mae`` too), and every duration in ns has ``duration_s`` beside it.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from typing import Sequence

import pandas as pd

from ab.nn import workspace
from ab.nn.check_nn import check_nn
from ab.nn.deploy import converters
from ab.nn.stat import architecture, code_similarity, filters, frames, join, query, vocabulary
from ab.nn.stat import comparison, ranking
from ab.nn.stat.comparison import Calibrated, attributes, calibrated, compare, groups, versus_constant
from ab.nn.stat.frames import as_frame as _frame, seconds as _seconds
from ab.nn.stat.join import JoinConf
from ab.nn.stat.ranking import default_data_keys
from ab.nn.stat.uncertainty import Comparison
from ab.nn.sweep import replay

__all__ = ("data", "data_withnonnullvalue", "run_data", "nn_stat_data", "check_nn", "JoinConf", "trials", "trial",
           "load_model", "ranked_trials", "default_data_keys", "predictions", "compare", "Comparison", "replicas",
           "replay_pruner", "replay_pruners", "metrics", "age_groups", "exports", "latency", "db_url", "attributes", "groups",
           "baselines", "versus_constant", "calibrated", "Calibrated")

LEMUR_DATA_COLUMNS = ("id", "task", "dataset", "metric", "metric_code", "metric_id", "nn", "nn_code", "nn_id",
                      "epoch", "accuracy", "duration", "prm_id", "transform_code", "transform_id")
"""``data()``'s columns before ``prm``, in LEMUR 2.2.11's order (``nn_*`` statistics go between them
and ``prm``)."""
CODE_COLUMNS = ("metric_code", "nn_code", "transform_code")
EXTRA_DATA_COLUMNS = ("transform", "mae", "eval_mae", "test_mae", "accuracy_scale", "duration_s", "trial_id",
                      "status", "error", "epoch_max", "seed", "split", "data_key", "study")
"""``data()``'s columns after LEMUR's: this project's. ``id`` is LEMUR's stat id (one per epoch row),
``trial_id`` the trial's: the one number people see (``docs/guide/ids.md``)."""
DATA_COLUMNS = LEMUR_DATA_COLUMNS + ("prm",) + EXTRA_DATA_COLUMNS
NN_STAT_COLUMNS = tuple(architecture.OUTPUT_ALIASES) + tuple(architecture.EXTRA_ALIASES)


def _rooted(function):
    """``function`` with the keyword ``root=`` (a path or a ``Workspace``): where ``db`` is not given, the
    database of that workspace (``ab.nn.workspace.of``) is read, not the environment's."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def rooted(*args, root=None, **kwargs):
        if root is not None:
            given = signature.bind_partial(*args, **kwargs)
            if given.arguments.get("db") is None:
                given.arguments["db"] = workspace.of(root).db_url
            args, kwargs = given.args, given.kwargs
        return function(*args, **kwargs)

    rooted.__signature__ = signature.replace(parameters=[
        *signature.parameters.values(), inspect.Parameter("root", inspect.Parameter.KEYWORD_ONLY, default=None)])
    return rooted


def _names_checked(function, *names):
    """``function`` with the filters that name things checked first (``ab.nn.stat.filters``): a typo is a
    one-line error with a did-you-mean, not an empty frame. The library calls the unchecked originals,
    which answer "nothing" for a name they are asked about in their own terms. Takes ``root=``."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def checked(*args, **kwargs):
        given = signature.bind(*args, **kwargs).arguments
        filters.check(frames.db_url(given.get("db")), **{name: given.get(name) for name in names})
        return function(*args, **kwargs)

    return _rooted(checked)


trials = _names_checked(frames.trials, "config", "task", "dataset", "metric", "nn")
metrics = _names_checked(frames.metrics, "config", "nn", "name")
latency = _names_checked(frames.latency, "config", "nn")
age_groups = _names_checked(frames.age_groups, "config", "nn")
ranked_trials = _names_checked(ranking.ranked_trials, "config")
replicas = _names_checked(comparison.replicas, "config")
trial = _rooted(frames.trial)
predictions = _rooted(frames.predictions)
db_url = _rooted(frames.db_url)
attributes = _rooted(attributes)
groups = _rooted(groups)
compare = _rooted(compare)
versus_constant = _rooted(versus_constant)
baselines = _rooted(frames.baselines)
replay_pruner = _rooted(replay.replay_pruner)
replay_pruners = _rooted(replay.replay_pruners)


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


def _data_rows(only_best_accuracy, task, dataset, metric, nn, epoch, max_rows, nn_prefixes, unique_nn,
               include_nn_stats, status, with_code, url) -> list[dict]:
    vocabulary.check("status", status, vocabulary.TRIAL_STATUS)
    filters.check(url, lenient=True, task=task, dataset=dataset, metric=metric, nn=nn)
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
@_rooted
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
        url = frames.db_url(db)
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


@_rooted
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
    url = frames.db_url(db)
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
@_rooted
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
    rows = query.latency_rows(frames.db_url(db), trial_id=trial_id, nn=model_name, runtime=runtime,
                              status=status)
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
@_rooted
def nn_stat_data(nn_name=None, prm_id=None, max_rows=None, *, db=None, progress: bool = True) -> pd.DataFrame:
    """LEMUR 2.2.11's ``nn_stat_data``: architecture statistics per (model, hyperparameter set) of the
    recorded epochs, in LEMUR's columns (``architecture.LEMUR_COLUMNS``, then ``meta`` as a dict), then
    ours (``macs``, ``in_shape``, ``code_id``); computed on first request (``ab.nn.stat.architecture``).
    A model whose recorded code is not its file's here carries the reason in ``error``."""
    url = frames.db_url(db)
    rows = sorted(architecture.ensure(url, nn_name=nn_name, prm_id=prm_id, progress=progress).values(),
                  key=lambda r: (r["nn_name"], r["prm_id"]))
    for row in rows:
        row["meta"] = _json(row.pop("meta_json", None))
    columns = list(architecture.LEMUR_COLUMNS) + ["meta", "macs", "in_shape", "code_id"]
    return _frame(rows[:max_rows] if max_rows else rows, columns)


def load_model(trial_id: int, db=None, root=None, device: str = "cpu"):
    """A trained trial's model, in eval mode, with ``model.preprocessing``: input size, layout, colour
    order, scaling, mean/std, age range, alignment template, split and data key (what ``meta.json``
    holds). Needs the trial's checkpoint (``model.pth``). The trial's files are found in ``root`` (a path
    or a ``Workspace``; its database too, unless ``db`` is given), else beside the database ``db``
    (``<root>/db/ab.nn.db``), else in the environment's workspace."""
    from ab.nn import checkpoint

    ws = _workspace(root, db)
    row = frames.trial(trial_id, db=ws.db_url)
    folder = checkpoint.folder_of(ws, row)
    if not (folder / checkpoint.WEIGHTS).is_file():
        raise LookupError(f"trial {trial_id} has no checkpoint in {folder} (train with --save-pth-weights, or "
                          f"pass root= the workspace it was trained in)")
    with workspace.active.use(ws):  # a model file of that workspace's nn/ folder is found too
        model, _ = checkpoint.load(folder, device)
    return model


def _workspace(root, db) -> workspace.Workspace:
    """The workspace of ``root=``; without one, the workspace ``db`` lives in, else the environment's; its
    database ``db`` where given."""
    if root is not None or db is None:
        ws = workspace.of(root)
    else:
        home = workspace.home_of(frames.db_url(db))
        ws = workspace.Workspace(root=home) if home is not None else workspace.active.current()
    return ws if db is None else dataclasses.replace(ws, db=frames.db_url(db))


@_rooted
def exports(trial_id=None, config=None, nn=None, format=None, precision=None, status=None, converter=None,
            db=None) -> pd.DataFrame:
    """One row per artifact of a trial (``pytorch``, ``onnx``, ``tflite`` at each precision and
    ``converter``, with its version): file, sha256, size, layout, MAE on eval/test and the largest
    difference from PyTorch's ages, in years; failed conversions carry their error; one ``pipeline`` row
    per trial holds its whole export's ``seconds``, or why it failed or was ``skipped``. ``converter``
    (``onnx2tf`` or ``litert-torch``) keeps that converter's TFLite rows. Join with ``trials()`` on
    ``trial_id``."""
    vocabulary.check("converter", converter, converters.CONVERTERS)
    filters.check(frames.db_url(db), config=config, nn=nn)
    frame = frames.exports(trial_id=trial_id, config=config, nn=nn, format=format, precision=precision,
                           status=status, db=db)
    if converter is not None and not frame.empty:
        wanted = [converter] if isinstance(converter, str) else list(converter)
        frame = frame[frame.converter.map(converters.family).isin(wanted)].reset_index(drop=True)
    return frame
