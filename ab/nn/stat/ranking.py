"""Which trials are best: the one ranking behind the sweep's summary, ``--keep-best-only``, ``deploy
--best``, AgeMoE's ``best:`` experts, the report and ``api.ranked_trials``.

A trial is ranked within its config and data key by validation MAE (LEMUR's selection metric, never
the test set), and honours what its study was asked for (our ``study`` table): under
``--max-latency-ms X`` a trial whose deployment latency is unknown or above ``X`` is infeasible and
ranks after every feasible one, and so is, under ``--max-group-gap Y``, a trial whose validation group
gap (``trial.eval_group_gap``) is unknown or above ``Y``; in a study of two objectives (MAE and
latency or MACs) the trials that no other feasible trial beats on both (the Pareto front) rank first,
each part by MAE. The first trial is "the best"; ``best_set`` is what ``--keep-best-only`` keeps: the
best trial, or the whole front of a two-objective study. ``ranked_trials`` is the same order as a frame of
trials, each config on its default data key (``default_data_keys``) unless another is asked for.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from ab.nn.stat import engine as engines
from ab.nn.stat.frames import db_url, trials
from ab.nn.stat.schema import Export, Latency, Study, Trial
from ab.nn.stat.states import TRAINED_STATES

PREFERRED_RUNTIMES = ("litert", "onnxruntime", "pytorch")
"""Where a trial's deployment latency is read, in order: how a phone would run it first."""
UNSET = object()
DEFAULT_SPLIT = "paper/42"


@dataclass(frozen=True)
class Ranked:
    trial_id: int
    eval_mae: float | None
    latency_ms: float | None
    macs: int | None
    feasible: bool      # meets its study's latency and group gap constraints (or it has none)
    on_front: bool      # no feasible trial of a two-objective study beats it on both objectives


def latencies(session: Session, trial_ids) -> dict[int, tuple[float, str]]:
    """Each trial's deployment latency and its runtime: batch 1, 1 thread, median, fp32, in its preferred
    runtime (LiteRT, else onnxruntime, else PyTorch), the latest measurement."""
    ids = list(trial_ids)
    if not ids:
        return {}
    rows = session.execute(select(Latency.trial_id, Latency.runtime, Latency.median_ms)
                           .join(Export, Export.id == Latency.export_id)
                           .where(Latency.trial_id.in_(ids), Latency.threads == 1, Latency.status == "ok",
                                  Latency.batch == 1, Export.precision == "fp32", Latency.median_ms.is_not(None))
                           .order_by(Latency.id.desc())).all()
    found: dict[int, tuple[float, str]] = {}
    for runtime in PREFERRED_RUNTIMES:
        for trial_id, seen, median in rows:
            if seen == runtime and trial_id not in found:
                found[trial_id] = (float(median), runtime)
    return found


def _dominates(a: tuple, b: tuple) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def rank(session: Session, configs, data_key: str | None = None, *, max_latency_ms=UNSET,
         epoch_max: int | None = None) -> list[Ranked]:
    """Trained trials (complete or LEMUR-stopped, with a validation MAE or accuracy) of ``configs`` (a
    name or names), on ``data_key`` if given, best first. ``max_latency_ms`` overrides every study's own
    constraint (``None``: no constraint)."""
    names = [configs] if isinstance(configs, str) else list(configs)
    query = select(Trial.id, Trial.eval_mae, Trial.eval_accuracy, Trial.macs, Trial.study,
                   Trial.eval_group_gap).where(
        Trial.config.in_(names), Trial.status.in_(TRAINED_STATES),
        (Trial.eval_mae.is_not(None)) | (Trial.eval_accuracy.is_not(None)))
    if data_key is not None:
        query = query.where(Trial.data_key == data_key)
    if epoch_max is not None:
        query = query.where(Trial.epoch_max == epoch_max)
    rows = session.execute(query).all()
    studies = {s.name: s for s in session.scalars(select(Study).where(Study.name.in_({r.study for r in rows})))}
    timed = latencies(session, [r.id for r in rows])
    ranked = []
    for row in rows:
        study = studies.get(row.study)
        limit = (study.max_latency_ms if study else None) if max_latency_ms is UNSET else max_latency_ms
        latency = timed.get(row.id, (None, None))[0]
        gap_limit = study.max_group_gap if study else None
        feasible = (limit is None or (latency is not None and latency <= limit)) and (
            gap_limit is None or (row.eval_group_gap is not None and row.eval_group_gap <= gap_limit))
        ranked.append((row, study, latency, feasible))
    fronts = _fronts(ranked)

    def order(item):
        row, _, _, feasible = item
        mae = row.eval_mae if row.eval_mae is not None else float("inf")
        accuracy = row.eval_accuracy if row.eval_accuracy is not None else float("-inf")
        return (not feasible, row.id not in fronts, mae, -accuracy, row.id)

    return [Ranked(row.id, row.eval_mae, latency, row.macs, feasible, row.id in fronts)
            for row, _, latency, feasible in sorted(ranked, key=order)]


def _fronts(ranked) -> set[int]:
    """Ids on the Pareto front of their two-objective study (feasible trials only)."""
    on_front = set()
    by_study: dict[str, list] = {}
    for row, study, latency, feasible in ranked:
        objectives = json.loads(study.objectives) if study is not None else []
        if len(objectives) > 1 and feasible and row.eval_mae is not None:
            second = latency if objectives[1] == "latency" else row.macs
            if second is not None:
                by_study.setdefault(row.study, []).append((row.id, (row.eval_mae, float(second))))
    for members in by_study.values():
        for trial_id, point in members:
            if not any(_dominates(other, point) for _, other in members):
                on_front.add(trial_id)
    return on_front


def best(session: Session, configs, data_key: str | None = None, **kwargs) -> int | None:
    """The best trial's id (feasible ones only), or ``None``."""
    first = next(iter(rank(session, configs, data_key, **kwargs)), None)
    return first.trial_id if first is not None and first.feasible else None


def best_set(session: Session, configs, data_key: str | None = None, **kwargs) -> set[int]:
    """What ``--keep-best-only`` keeps: the best trial, and every trial on a two-objective study's front."""
    ranked = rank(session, configs, data_key, **kwargs)
    keep = {r.trial_id for r in ranked if r.on_front}
    if ranked and ranked[0].feasible:
        keep.add(ranked[0].trial_id)
    return keep


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
    """Trained trials (complete, or stopped early) as a frame, best first as ``rank`` orders them (by
    validation MAE, never the test split; within each study's latency limit, the ``feasible`` column;
    Pareto front first in a two-objective study), ties to the earlier trial.

    Trials are comparable only on the same data: by default each config keeps its default data key
    (``default_data_keys``); ``data_key`` picks one, ``all_data=True`` mixes them (explicitly)."""
    rows = trials(config=config, status=TRAINED_STATES, data_key=data_key, db=db)
    if rows.empty:
        return rows.assign(feasible=pd.Series(dtype=bool))
    if data_key is None and not all_data:
        keys = default_data_keys(rows)
        rows = rows[rows.data_key == rows.config.map(keys)]
    with Session(engines.engine(db_url(db), writer=False)) as session:
        order = rank(session, sorted(rows.config.unique()), data_key)
    position = {r.trial_id: (i, r.feasible) for i, r in enumerate(order)}
    rows = rows[rows.id.isin(position)].assign(feasible=lambda f: f.id.map(lambda i: position[i][1]))
    return rows.iloc[rows.id.map(lambda i: position[i][0]).argsort()].reset_index(drop=True)
