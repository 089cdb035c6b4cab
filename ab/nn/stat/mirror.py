"""LEMUR's JSON mirror of the statistics: ``stat/train/<config>/<epoch>.json``.

Each file is LEMUR's list of trial records for that epoch: the hyperparameters, ``accuracy``,
``duration`` (ns), ``uid`` and ``metric_<name>`` at the top level, LEMUR-style diagnostics under
``train_stat``, and what LEMUR lacks (the stat and trial ids, every metric on eval and test, the raw
MAE and its accuracy scale, the checksums of the code) under ``ab_nn``, a dict, which LEMUR's
importer drops. A record imported from LEMUR's own JSON is written back as it was read (its
diagnostics at the top level, its ``train_stat`` as written), so LEMUR's importer gets the same rows
from the mirror as from the original. Finished trials themselves, failed ones included, are listed
in ``stat/trial/<config>.json``, and every code version in ``stat/code/<kind>/<id>.json``, outside the
folder LEMUR's importer walks.

The database is the source of truth. When a trial finishes, its records are *appended* to those
files in place, so the cost is that trial's rows, never the config's history (a sweep's
bookkeeping stays flat however many trials a config already has); ``export-json`` rewrites every
file from the database, best accuracy first as LEMUR sorts them. ``ab.nn.stat.json_import``
rebuilds a database from such files.
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
from ab.nn.stat.schema import CodeVersion, Prm, Stat, StatMetric, TrainStat, Trial
from ab.nn.util.filelock import locked

TRAIN_STAT_COLUMNS = [c.name for c in TrainStat.__table__.c if c.name != "stat_id"]
TRIAL_COLUMNS = [c.name for c in Trial.__table__.c]
CODE_KINDS = ("nn", "transform", "metric")
_TAIL = 4096  # bytes read back from the end of a file to find its closing bracket


def _json_value(value):
    return value.isoformat() if isinstance(value, datetime) else value


def _prm(session: Session, uid: str | None) -> dict:
    return {p.name: p.value for p in session.scalars(select(Prm).where(Prm.uid == uid))} if uid else {}


def epoch_record(session: Session, stat: Stat) -> dict:
    metrics: dict[str, dict] = {}
    for m in session.scalars(select(StatMetric).where(StatMetric.stat_id == stat.id)):
        metrics.setdefault(m.split, {})[m.name] = m.value
    lemur = json.loads(stat.extra) if stat.extra else None  # a record imported from LEMUR's JSON
    record = _prm(session, stat.prm)
    record.update({k: v for k, v in metrics.get("eval", {}).items() if k.startswith("metric_")})
    if lemur is not None:
        record.update(lemur.get("record") or {})
    record.update(accuracy=stat.accuracy, duration=stat.duration, uid=stat.prm)
    if lemur is None:
        train = session.get(TrainStat, stat.id)
        record["train_stat"] = {c: getattr(train, c) for c in TRAIN_STAT_COLUMNS} if train else {}
        record["train_stat"]["mae"] = stat.mae
    elif lemur.get("train_stat") is not None:
        record["train_stat"] = lemur["train_stat"]
    record["ab_nn"] = {"stat_id": stat.id, "trial_id": stat.trial_id, "metrics": metrics, "mae": stat.mae,
                       "accuracy_scale": stat.accuracy_scale,
                       "code": {"nn": stat.nn_code_id, "transform": stat.transform_code_id,
                                "metric": stat.metric_code_id}}
    if lemur is not None:
        record["ab_nn"]["lemur"] = lemur
    return record


def code_dir(stat_dir: Path) -> Path:
    """``stat/code/`` beside ``stat/train/`` (``stat_dir`` is the ``train`` folder)."""
    return stat_dir.parent / "code"


def write_code(session: Session, stat_dir: Path, ids: dict[str, set]) -> int:
    """Write the code versions named in ``ids`` (kind -> checksums) to ``stat/code/<kind>/<id>.json``
    where missing (a file's content never changes: its name is its checksum); returns files written."""
    written = 0
    for kind, wanted in ids.items():
        folder = code_dir(stat_dir) / kind
        missing = [i for i in wanted if i and not (folder / f"{i}.json").exists()]
        if not missing:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        for version in session.scalars(select(CodeVersion).where(CodeVersion.kind == kind,
                                                                 CodeVersion.id.in_(missing))):
            _write(folder / f"{version.id}.json", {"kind": kind, "id": version.id, "name": version.name,
                                                   "code": version.code})
            written += 1
    return written


def _code_ids(stats) -> dict[str, set]:
    return {kind: {getattr(stat, f"{kind}_code_id") for stat in stats} for kind in CODE_KINDS}


def _trial_record(session: Session, trial: Trial) -> dict:
    record = {c: _json_value(getattr(trial, c)) for c in TRIAL_COLUMNS}
    record["prm_values"] = _prm(session, record["prm"])
    return record


def _dump(records: list[dict]) -> str:
    return ",\n".join(json.dumps(r, indent=1, default=str) for r in records)


def _write(path: Path, records: list[dict] | dict) -> Path:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    if isinstance(records, dict):
        tmp.write_text(json.dumps(records, indent=1))
    else:
        tmp.write_text("[\n" + _dump(records) + "\n]" if records else "[]")
    os.replace(tmp, path)
    return path


def _append(path: Path, records: list[dict]) -> None:
    """Add ``records`` to the JSON list in ``path`` by rewriting only its closing bracket."""
    if not records:
        return
    if not path.exists() or path.stat().st_size == 0:
        _write(path, records)
        return
    with open(path, "r+b") as f:
        end = f.seek(0, os.SEEK_END)
        start = max(0, end - _TAIL)
        f.seek(start)
        tail = f.read()
        close = tail.rstrip().rfind(b"]")
        if close < 0:
            raise ValueError(f"{path} does not end like a JSON list; rewrite it with "
                             f"`python -m ab.nn.stat export-json`")
        empty = start == 0 and tail[:close].strip() == b"["
        f.seek(start + close)
        f.write((b"\n" if empty else b",\n") + _dump(records).encode() + b"\n]")
        f.truncate()


def trial_file(stat_dir: Path, config: Config) -> Path:
    """``stat/trial/<config>.json`` beside ``stat/train/`` (``stat_dir`` is the ``train`` folder)."""
    return stat_dir.parent / "trial" / f"{config.name}.json"


def append_trial(url: str, stat_dir: Path, trial_id: int) -> None:
    """Add a finished trial to the mirror: its epochs' records to ``<epoch>.json`` and the trial to
    ``stat/trial/<config>.json``; reads and writes only this trial's rows."""
    with Session(engines.engine(url, writer=False)) as session:
        trial = session.get(Trial, trial_id)
        config = Config.parse(trial.config)
        by_epoch: dict[int, list[dict]] = {}
        stats = session.scalars(select(Stat).where(Stat.trial_id == trial_id).order_by(Stat.epoch)).all()
        for stat in stats:
            by_epoch.setdefault(stat.epoch, []).append(epoch_record(session, stat))
        trial_record = _trial_record(session, trial)
        write_code(session, stat_dir, _code_ids(stats))
    folder = stat_dir / config.name
    folder.mkdir(parents=True, exist_ok=True)
    with locked(folder / ".lock"):
        for epoch, records in by_epoch.items():
            _append(folder / f"{epoch}.json", records)
    path = trial_file(stat_dir, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path.parent / ".lock"):
        _append(path, [trial_record])


def write_epoch(url: str, stat_dir: Path, config: Config, epoch: int) -> Path:
    """Rewrite one ``<epoch>.json`` from the database, best accuracy first (atomic, under a folder lock)."""
    folder = stat_dir / config.name
    folder.mkdir(parents=True, exist_ok=True)
    with locked(folder / ".lock"):
        with Session(engines.engine(url, writer=False)) as session:
            stats = session.scalars(select(Stat).where(
                Stat.task == config.task, Stat.dataset == config.dataset, Stat.metric == config.metric,
                Stat.nn == config.nn, Stat.epoch == epoch)).all()
            records = [epoch_record(session, stat) for stat in stats]
            write_code(session, stat_dir, _code_ids(stats))
        records.sort(key=lambda r: (-(r["accuracy"] if r["accuracy"] is not None else float("-inf")),
                                    r["ab_nn"]["stat_id"]))
        return _write(folder / f"{epoch}.json", records)


def write_trials(url: str, stat_dir: Path, config: Config) -> Path:
    """Rewrite the list of every finished trial of ``config`` with its outcome."""
    path = trial_file(stat_dir, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path.parent / ".lock"):
        with Session(engines.engine(url, writer=False)) as session:
            trials = session.scalars(select(Trial).where(Trial.config == config.name, Trial.status != "running")
                                     .order_by(Trial.id)).all()
            records = [_trial_record(session, t) for t in trials]
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
