"""LEMUR's JSON mirror of the statistics: ``stat/train/<config>/<epoch>.json``.

Each file is LEMUR's list of trial records for that epoch, best accuracy first: the
hyperparameters, ``accuracy``, ``duration`` (ns), ``uid`` and ``metric_<name>`` at the top level,
LEMUR-style diagnostics under ``train_stat``, and what LEMUR lacks (the stat and trial ids, every
metric on eval and test) under ``ab_nn``. Trials themselves, failed ones included, are listed in
``stat/trial/<config>.json``, outside the folder LEMUR's importer walks. The database is the
source of truth: files are re-rendered from it after each write, so the mirror cannot drift.
``ab.nn.stat.json_import`` rebuilds a database from such files.
"""
from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from ab.nn.config import Config
from ab.nn.stat import engine as engines
from ab.nn.util.filelock import locked
from ab.nn.stat.schema import Prm, Stat, StatMetric, TrainStat, Trial

TRAIN_STAT_COLUMNS = [c.name for c in TrainStat.__table__.c if c.name != "stat_id"]
TRIAL_COLUMNS = [c.name for c in Trial.__table__.c]


def _json_value(value):
    return value.isoformat() if isinstance(value, datetime) else value


def _records(session: Session, config: Config, epoch: int) -> list[dict]:
    stats = session.scalars(select(Stat).where(
        Stat.task == config.task, Stat.dataset == config.dataset, Stat.metric == config.metric,
        Stat.nn == config.nn, Stat.epoch == epoch)).all()
    records = []
    for stat in stats:
        prm = {p.name: p.value for p in session.scalars(select(Prm).where(Prm.uid == stat.prm))} if stat.prm else {}
        metrics: dict[str, dict] = {}
        for m in session.scalars(select(StatMetric).where(StatMetric.stat_id == stat.id)):
            metrics.setdefault(m.split, {})[m.name] = m.value
        train = session.get(TrainStat, stat.id)
        record = dict(prm)
        record.update({k: v for k, v in metrics.get("eval", {}).items() if k.startswith("metric_")})
        record.update(accuracy=stat.accuracy, duration=stat.duration, uid=stat.prm)
        record["train_stat"] = {c: getattr(train, c) for c in TRAIN_STAT_COLUMNS} if train else {}
        record["train_stat"]["mae"] = stat.mae
        record["ab_nn"] = {"stat_id": stat.id, "trial_id": stat.trial_id, "metrics": metrics}
        records.append(record)
    records.sort(key=lambda r: (-(r["accuracy"] if r["accuracy"] is not None else float("-inf")),
                                r["ab_nn"]["stat_id"]))
    return records


def _write(path: Path, records: list[dict]) -> Path:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(records, indent=1, default=str))
    os.replace(tmp, path)
    return path


def trial_file(stat_dir: Path, config: Config) -> Path:
    """``stat/trial/<config>.json`` beside ``stat/train/`` (``stat_dir`` is the ``train`` folder)."""
    return stat_dir.parent / "trial" / f"{config.name}.json"


def write_epoch(url: str, stat_dir: Path, config: Config, epoch: int) -> Path:
    """Re-render one ``<epoch>.json`` from the database (atomic, under a folder lock)."""
    folder = stat_dir / config.name
    with locked(folder / ".lock"):
        with Session(engines.engine(url, writer=False)) as session:
            records = _records(session, config, epoch)
        return _write(folder / f"{epoch}.json", records)


def write_trials(url: str, stat_dir: Path, config: Config) -> Path:
    """Re-render the list of every trial of ``config`` with its outcome."""
    path = trial_file(stat_dir, config)
    with locked(path.parent / ".lock"):
        with Session(engines.engine(url, writer=False)) as session:
            trials = session.scalars(select(Trial).where(Trial.config == config.name).order_by(Trial.id)).all()
            records = [{c: _json_value(getattr(t, c)) for c in TRIAL_COLUMNS} for t in trials]
            for record in records:
                record["prm_values"] = {p.name: p.value for p in session.scalars(
                    select(Prm).where(Prm.uid == record["prm"]))} if record["prm"] else {}
        return _write(path, records)


def export_tree(url: str, stat_dir: Path) -> int:
    """Write every config's trial list and epoch files; returns the number of files written."""
    with Session(engines.engine(url, writer=False)) as session:
        keys = session.execute(select(Stat.task, Stat.dataset, Stat.metric, Stat.nn, Stat.epoch).distinct()).all()
        configs = set(session.scalars(select(Trial.config).distinct()))
    for name in sorted(configs):
        write_trials(url, stat_dir, Config.parse(name))
    for task, dataset, metric, nn, epoch in keys:
        write_epoch(url, stat_dir, Config(task, dataset, metric, nn), epoch)
    return len(keys) + len(configs)
