"""Rebuild a statistics database from JSON: this project's mirror (``stat/train``, ``stat/trial``,
``stat/code``) or LEMUR's own ``stat/train/<config>/<epoch>.json`` files, in both of LEMUR's layouts:

* 2.2.11 (nested): hyperparameters, ``accuracy``, ``duration``, ``duration_seconds``, ``metric_<m>``,
  ``train_stat {...}``, ``transform``, ``uid``, then ``task, dataset, metric, model`` (and ``epoch`` from
  ``check_nn``);
* the older flat layout of LEMUR's shipped age runs: hyperparameters and diagnostics (``test_mae``,
  ``train_mae``, ``test_accuracy``, ``train_loss``, ``cpu_type`` ...) side by side at the top level.

A LEMUR record keeps what it says, and nothing is made up:

* its stat id is LEMUR's (``md5`` of ``[transform, uid, task, dataset, metric, nn, epoch, duration,
  accuracy]`` with whitespace removed), its hyperparameters are stored under its own ``uid``;
* the raw MAE comes from ``test_mae`` (LEMUR's evaluation MAE), else from ``accuracy`` and the
  scale of LEMUR's ``mae`` metric (``lemur_mae_scale``, 15 by default); the scale is stored per row;
* LEMUR's JSON carries no code, so the row's code is unknown (NULL code ids); a code-table row is
  added only where the name is new (the foreign key needs one), with empty code, never a file of
  this checkout that happens to have the same name;
* whatever else it holds (diagnostics, ``duration_seconds``, ``task``..``model``, the ``train_stat``
  as written, a value that differs from what its ``uid`` already holds) is kept in ``stat.extra``,
  and the mirror writes it back, so LEMUR's importer reads the same rows from our mirror.

Records of our own mirror (with ``ab_nn``) carry their stat and trial ids, every metric, the scale,
the raw MAE and their code ids; the code itself is read from ``stat/code/<kind>/<id>.json``.
"""
from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

from sqlalchemy import BigInteger, Boolean, Float, Integer, select
from sqlalchemy.orm import Session
from tqdm.auto import tqdm

from ab.nn.config import Config
from ab.nn.stat import accuracy_scale
from ab.nn.stat.copy import derived_uid
from ab.nn.stat.mirror import TRIAL_COLUMNS, code_dir, trial_file
from ab.nn.stat.schema import Metric, Nn, Prm, Stat, TrainStat, Transform, Trial
from ab.nn.stat.store import StatStore, add_metrics, insert_ignore, save_code_version
from ab.nn.util.lemur_hash import lemur_md5

LEMUR_DIAGNOSTICS = {
    "train_loss", "test_loss", "train_accuracy", "gradient_norm", "samples_per_second", "best_accuracy",
    "best_epoch", "cpu_type", "cpu_count", "total_ram_kb", "gpu_type", "gpu_total_memory_kb", "occupied_ram_kb",
    "ram_usage_percent", "cpu_usage_percent", "occupied_gpu_memory_kb", "gpu_memory_usage_percent",
    "gpu_memory_kb", "lr_now", "duration_seconds", "layer_stat", "task", "dataset", "metric", "model",
    "test_mae", "train_mae", "test_accuracy", "train_max_age", "train_min_age", "epoch"}
"""Keys of a LEMUR record that describe the run, not the hyperparameter set (LEMUR itself puts all of
them into ``prm``; here they stay with their row, in ``stat.extra``)."""
_RESERVED = {"accuracy", "duration", "uid", "train_stat", "ab_nn"}
_DATETIME_COLUMNS = {"started_at", "finished_at"}
_TABLES = {"nn": Nn, "transform": Transform, "metric": Metric}
_FLAT_TRAIN_STAT = {"lr_now": "lr"}
"""Flat-layout names of a train_stat column that differ from the column's."""


def lemur_stat_id(config: Config, epoch: int, record: dict) -> str:
    """LEMUR's stat id (``Write.save_stat``): ``uuid4([transform, uid, task, dataset, metric, nn, epoch,
    duration, accuracy])``, the md5 of the list's ``str`` with all whitespace removed."""
    return lemur_md5([record.get("transform"), record.get("uid"), *config.parts, epoch, record.get("duration"),
                      record.get("accuracy")])


class _Codes:
    """Code of our mirror (``stat/code/<kind>/<id>.json``) and the code-table names seen so far."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.seen: set[tuple[str, str]] = set()

    def read(self, kind: str, code_id: str | None) -> dict | None:
        path = self.folder / kind / f"{code_id}.json" if code_id else None
        if path is None or not path.is_file():
            return None
        return json.loads(path.read_text(encoding="utf-8"))

    def ensure(self, session: Session, kind: str, name: str | None, code_id: str | None) -> None:
        """The code-table row the foreign key needs (empty code where the name is new and its code
        unknown), and the code version, where the mirror carries it. Known code only replaces an empty
        row: the code table keeps the latest code per name."""
        if not name:
            return
        table = _TABLES[kind]
        found = self.read(kind, code_id)
        if found is not None:
            save_code_version(session, kind, found.get("name", name), found["code"], code_id)
        if (kind, name) in self.seen and found is None:
            return
        self.seen.add((kind, name))
        row = session.get(table, name)
        if row is None:
            session.add(table(name=name, code=found["code"] if found else "", id=code_id if found else ""))
        elif found is not None and not row.code:
            row.code, row.id = found["code"], code_id
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


def import_tree(url: str, stat_dir: Path, progress: bool = True,
                lemur_mae_scale: float = accuracy_scale.LEMUR_MAE_SCALE) -> int:
    """Load every ``<config>/<epoch>.json`` under ``stat_dir`` (and the trials of ``stat/trial``, the
    code of ``stat/code``) into the database; returns the epoch rows added. One transaction per file;
    rows already present (same stat id, same trial uid) are left alone, so importing twice adds
    nothing. ``lemur_mae_scale`` is the scale assumed for LEMUR records of the ``mae`` metric that
    carry no ``test_mae`` (LEMUR 2.2.11's layout)."""
    if not lemur_mae_scale > 0:
        raise ValueError(f"the MAE scale must be positive, got {lemur_mae_scale}")
    store = StatStore(url)
    stat_dir = Path(stat_dir)
    trials = _import_trials(store, stat_dir.parent / "trial")
    codes = _Codes(code_dir(stat_dir))
    added = 0
    files = list(_epoch_files(stat_dir))
    for config, path in tqdm(files, desc="importing", unit="file", disable=not progress):
        records = json.loads(path.read_text(encoding="utf-8", errors="replace"))
        if isinstance(records, dict):  # LEMUR wraps a single dict into a list when it reads one
            records = [records]
        with store.transaction() as session:
            for record in records:
                added += _import_record(session, store, config, int(path.stem), record, trials, codes,
                                        lemur_mae_scale)
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


def _scalar(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _coerce(column, value):
    """A JSON value in a train_stat column's type (the exact value stays in ``stat.extra``)."""
    if value is None:
        return None
    kind = column.type
    try:
        if isinstance(kind, Boolean):
            return bool(value)
        if isinstance(kind, (Integer, BigInteger)):
            return int(round(float(value)))
        if isinstance(kind, Float):
            value = float(value)
            return value if math.isfinite(value) else None
        return str(value)
    except (TypeError, ValueError):
        return None


def _train_stat(stat_id: str, values: dict) -> TrainStat | None:
    columns = {c.name: c for c in TrainStat.__table__.c if c.name != "stat_id"}
    row = {name: _coerce(columns[name], value) for name, value in values.items() if name in columns}
    return TrainStat(stat_id=stat_id, **row) if row else None


def _held(session: Session, uid: str) -> dict:
    return {p.name: p.value for p in session.scalars(select(Prm).where(Prm.uid == uid))}


def _import_record(session: Session, store: StatStore, config: Config, epoch: int, record: dict,
                   trials: dict[int, int], codes: _Codes, lemur_mae_scale: float) -> int:
    ours = record.get("ab_nn")
    stat_id = ours["stat_id"] if ours else lemur_stat_id(config, epoch, record)
    if session.get(Stat, stat_id) is not None:
        return 0
    top = {k: v for k, v in record.items() if k not in _RESERVED}
    metrics_top = {k: v for k, v in top.items() if k.startswith("metric_")}
    if ours:
        carried = ours.get("lemur")  # a LEMUR record imported earlier, written back by our mirror
        apart = set((carried or {}).get("record") or ())
    else:
        carried = None
        apart = {k for k, v in top.items() if k in LEMUR_DIAGNOSTICS or not _scalar(v)}
    hyper = {k: v for k, v in top.items() if k not in apart and k not in metrics_top}
    uid = record.get("uid")
    if uid:
        held = _held(session, uid)
        differ = {k for k, v in hyper.items() if v is None or (k in held and held[k] != v)}
        insert_ignore(session, Prm, [{"uid": uid, "name": k, "value": v} for k, v in sorted(hyper.items())
                                     if k not in differ])
        apart |= differ
    elif hyper:
        apart |= {k for k, v in hyper.items() if v is None}
        uid = store.save_prm(session, {k: v for k, v in hyper.items() if v is not None})

    code = (ours or {}).get("code") or {}
    codes.ensure(session, "nn", config.nn, code.get("nn"))
    codes.ensure(session, "metric", config.metric, code.get("metric"))
    codes.ensure(session, "transform", record.get("transform"), code.get("transform"))

    trial_id = (ours or {}).get("trial_id")
    if trial_id is not None:
        if trial_id not in trials:
            raise ValueError(f"{config.name} epoch {epoch}: trial {trial_id} is not in "
                             f"{trial_file(Path('stat/train'), config)}")
        trial_id = trials[trial_id]

    accuracy = record.get("accuracy")
    train = record.get("train_stat") if isinstance(record.get("train_stat"), dict) else None
    if ours:
        train = dict(train or {})
        mae = ours["mae"] if "mae" in ours else train.pop("mae", None)
        train.pop("mae", None)
        scale = ours.get("accuracy_scale")
        extra = json.dumps(carried) if carried is not None else None
        train_values = train if carried is None else dict(carried.get("train_stat") or {})
    else:
        mae, scale = _lemur_mae(config, top, accuracy, lemur_mae_scale)
        extra = json.dumps({"record": {k: top[k] for k in sorted(apart) if k in top}, "train_stat": train})
        train_values = dict(train) if train is not None else \
            {_FLAT_TRAIN_STAT.get(k, k): v for k, v in top.items() if k in LEMUR_DIAGNOSTICS or k == "epoch_max"}
    session.add(Stat(id=stat_id, accuracy=accuracy, epoch=epoch, duration=record.get("duration"),
                     task=config.task, dataset=config.dataset, nn=config.nn, transform=record.get("transform"),
                     metric=config.metric, prm=uid, trial_id=trial_id, mae=mae, accuracy_scale=scale,
                     nn_code_id=code.get("nn"), transform_code_id=code.get("transform"),
                     metric_code_id=code.get("metric"), extra=extra))
    session.flush()
    row = _train_stat(stat_id, train_values)
    if row is not None:
        session.add(row)
    metrics = (ours or {}).get("metrics") or {"eval": metrics_top}
    for split, values in metrics.items():
        add_metrics(session, stat_id, split, values)
    return 1


def _lemur_mae(config: Config, top: dict, accuracy, lemur_mae_scale: float) -> tuple[float | None, float | None]:
    """(raw MAE, accuracy scale) of a LEMUR record: ``test_mae`` (the flat layout's evaluation MAE) and
    the scale its accuracy implies; else, for the ``mae`` metric, the MAE its accuracy stands for at
    ``lemur_mae_scale``."""
    test_mae = top.get("test_mae")
    if isinstance(test_mae, (int, float)) and not isinstance(test_mae, bool) and math.isfinite(test_mae):
        return float(test_mae), accuracy_scale.implied(float(test_mae), accuracy)
    if config.metrics[0] == "mae":
        return accuracy_scale.mae_from(accuracy, lemur_mae_scale), lemur_mae_scale
    return None, None
