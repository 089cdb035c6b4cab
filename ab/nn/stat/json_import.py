"""Rebuild a statistics database from JSON: this project's mirror (``stat/train`` and
``stat/trial``) or LEMUR's own ``stat/train/<config>/<epoch>.json`` files (records without
``ab_nn``: their stat ids follow LEMUR's formula, their trials are unknown)."""
from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session
from tqdm.auto import tqdm

from ab.nn import registry
from ab.nn.config import Config
from ab.nn.stat.mirror import TRAIN_STAT_COLUMNS, TRIAL_COLUMNS, trial_file
from ab.nn.stat.copy import derived_uid
from ab.nn.stat.schema import Metric, Nn, Prm, Stat, TrainStat, Transform, Trial
from ab.nn.stat.store import StatStore, add_metrics, insert_ignore

LEMUR_DIAGNOSTICS = {
    "train_loss", "test_loss", "train_accuracy", "gradient_norm", "samples_per_second", "best_accuracy",
    "best_epoch", "cpu_type", "cpu_count", "total_ram_kb", "gpu_type", "gpu_total_memory_kb", "occupied_ram_kb",
    "ram_usage_percent", "cpu_usage_percent", "occupied_gpu_memory_kb", "gpu_memory_usage_percent",
    "gpu_memory_kb", "lr_now", "duration_seconds", "layer_stat", "task", "dataset", "metric", "model"}
_RESERVED = {"accuracy", "duration", "uid", "train_stat", "ab_nn"} | LEMUR_DIAGNOSTICS
_DATETIME_COLUMNS = {"started_at", "finished_at"}


def _lemur_stat_id(config: Config, epoch: int, record: dict) -> str:
    """LEMUR's stat id: md5 of [transform, uid, task, dataset, metric, nn, epoch, duration, accuracy]."""
    parts = [record.get("transform"), record.get("uid"), *config.parts, epoch, record.get("duration"),
             record.get("accuracy")]
    return hashlib.md5(str(parts).encode("utf-8")).hexdigest()


def _ensure_code(session: Session, table, kind: registry.Kind, name: str | None, seen: set) -> None:
    if not name or (table, name) in seen:
        return
    seen.add((table, name))
    if session.get(table, name) is not None:
        return
    try:
        code = registry.source(kind, name)
    except registry.RegistryError:
        code = ""  # the file is not in this checkout (e.g. one of LEMUR's generated models)
    session.add(table(name=name, code=code, id=registry.checksum(code)))
    session.flush()


def _trial_from_json(session: Session, fields: dict) -> Trial:
    if fields.get("prm") and fields.get("prm_values"):
        insert_ignore(session, Prm, [{"uid": fields["prm"], "name": k, "value": v}
                                     for k, v in sorted(fields["prm_values"].items())])
    values = {c: fields.get(c) for c in TRIAL_COLUMNS if c != "id"}
    for c in _DATETIME_COLUMNS:
        if values[c]:
            values[c] = datetime.fromisoformat(values[c])
    values["uid"] = fields.get("uid") or derived_uid(fields)
    values["lease_id"] = None
    return Trial(**values)


def _import_trials(store: StatStore, trial_dir: Path) -> dict[int, int]:
    """Trials of ``stat/trial/*.json``: ids in the file -> ids here. A trial already present (same
    uid) is not added again; a new one gets a new id when its own is taken."""
    mapping: dict[int, int] = {}
    with store.transaction() as session:
        known = dict(session.execute(select(Trial.uid, Trial.id)).all())
    for path in sorted(trial_dir.glob("*.json")) if trial_dir.is_dir() else []:
        with store.transaction() as session:
            for fields in json.loads(path.read_text()):
                trial = _trial_from_json(session, fields)
                if trial.uid in known:
                    mapping[fields["id"]] = known[trial.uid]
                    continue
                if session.get(Trial, fields["id"]) is None:
                    trial.id = fields["id"]  # keep the id where it is free: the mirror's JSON stays valid
                session.add(trial)
                session.flush()
                mapping[fields["id"]] = known[trial.uid] = trial.id
    return mapping


def import_tree(url: str, stat_dir: Path, progress: bool = True) -> int:
    """Load every ``<config>/<epoch>.json`` under ``stat_dir`` (and the trials of ``stat/trial``) into
    the database; returns the epoch rows added. One transaction per file; rows already present (same
    stat id, same trial uid) are left alone, so importing twice adds nothing."""
    store = StatStore(url)
    trials = _import_trials(store, Path(stat_dir).parent / "trial")
    added, seen = 0, set()
    files = [(config, path) for config, path in _epoch_files(Path(stat_dir))]
    for config, path in tqdm(files, desc="importing", unit="file", disable=not progress):
        records = json.loads(path.read_text())
        with store.transaction() as session:
            for record in records:
                added += _import_record(session, store, config, int(path.stem), record, trials, seen)
    store.advance_id_sequences()
    return added


def _epoch_files(stat_dir: Path):
    for folder in sorted(p for p in stat_dir.iterdir() if p.is_dir()):
        try:
            config = Config.parse(folder.name)
        except ValueError:
            continue
        for path in sorted(folder.glob("*.json"), key=lambda p: (len(p.stem), p.stem)):
            if path.stem.isdigit():
                yield config, path


def _import_record(session: Session, store: StatStore, config: Config, epoch: int, record: dict,
                   trials: dict[int, int], seen: set) -> int:
    extra = record.get("ab_nn") or {}
    stat_id = extra.get("stat_id") or _lemur_stat_id(config, epoch, record)
    if session.get(Stat, stat_id) is not None:
        return 0
    prm = {k: v for k, v in record.items() if k not in _RESERVED and not k.startswith("metric_")}
    uid = record.get("uid")
    if prm and uid:
        insert_ignore(session, Prm, [{"uid": uid, "name": k, "value": v} for k, v in sorted(prm.items())])
    elif prm:
        uid = store.save_prm(session, prm)
    _ensure_code(session, Nn, registry.MODEL, config.nn, seen)
    _ensure_code(session, Metric, registry.METRIC, config.metric, seen)
    _ensure_code(session, Transform, registry.TRANSFORM, prm.get("transform"), seen)
    trial_id = extra.get("trial_id")
    if trial_id is not None:
        if trial_id not in trials:
            raise ValueError(f"{config.name} epoch {epoch}: trial {trial_id} is not in "
                             f"{trial_file(Path('stat/train'), config)}")
        trial_id = trials[trial_id]
    train = dict(record.get("train_stat") or {})
    mae = train.pop("mae", None)
    session.add(Stat(id=stat_id, accuracy=record.get("accuracy"), epoch=epoch, duration=record.get("duration"),
                     task=config.task, dataset=config.dataset, nn=config.nn, transform=prm.get("transform"),
                     metric=config.metric, prm=uid, trial_id=trial_id, mae=mae))
    session.flush()
    train_values = {c: train.get(c) for c in TRAIN_STAT_COLUMNS if c in train}
    if train_values or not extra:
        lemur = {c: record.get(c) for c in TRAIN_STAT_COLUMNS if c in record}
        session.add(TrainStat(stat_id=stat_id, **(train_values or lemur)))
    metrics = extra.get("metrics") or {"eval": {k: v for k, v in record.items() if k.startswith("metric_")}}
    for split, values in metrics.items():
        add_metrics(session, stat_id, split, values)
    return 1
