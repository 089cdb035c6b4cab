"""Epoch records of a JSON tree to rows of ``stat``, ``train_stat``, ``stat_metric``, ``prm`` and the code
tables, a batch at a time, in both of LEMUR's layouts:

* 2.2.11 (nested): hyperparameters, ``accuracy``, ``duration``, ``duration_seconds``, ``metric_<m>``,
  ``train_stat {...}``, ``transform``, ``uid``, then ``task, dataset, metric, model`` (and ``epoch`` from
  ``check_nn``);
* the older flat layout of LEMUR's shipped age runs: hyperparameters and diagnostics (``test_mae``,
  ``train_mae``, ``test_accuracy``, ``train_loss``, ``cpu_type`` ...) side by side at the top level.

A LEMUR record keeps what it says, and nothing is made up:

* its stat id is LEMUR's (``md5`` of ``[transform, uid, task, dataset, metric, nn, epoch, duration,
  accuracy]`` with whitespace removed), its hyperparameters are stored under its own ``uid``;
* its accuracy scale is never assumed: where it carries its raw MAE (``test_mae``), the scale is the
  one its accuracy implies, record by record; a record of an MAE metric without one gets the scale
  the importer was given (``json_import`` refuses to start without it, and refuses records that imply
  different scales: ``accuracy_scale.Evidence``);
* LEMUR's JSON carries no code, so the row's code is unknown (NULL code ids); a code-table row is
  added only where the name is new (the foreign key needs one), with empty code, never a file of
  this checkout that happens to have the same name;
* whatever else it holds (diagnostics, ``duration_seconds``, ``task``..``model``, the ``train_stat``
  as written, a value that differs from what its ``uid`` already holds) is kept in ``stat.extra``,
  and the mirror writes it back, so LEMUR's importer reads the same rows from our mirror.

Records of our own mirror (with ``ab_nn``) carry their stat and trial ids, every metric, the scale,
the raw MAE and their code ids; the code itself is read from ``stat/code/<kind>/<id>.json`` (its name
and checksum checked). Names and code ids are validated before they become paths, values before they
become rows; a batch is one executemany per table, its rows in key order, never a query per record.
"""
from __future__ import annotations

import json
import math
import operator
from pathlib import Path

from sqlalchemy import update

from ab.nn import registry
from ab.nn.config import Config
from ab.nn.stat import accuracy_scale, bulk, untrusted
from ab.nn.stat.json_tree import read_json
from ab.nn.stat.mirror import trial_file
from ab.nn.stat.schema import CodeVersion, Metric, Nn, Prm, Stat, StatMetric, TrainStat, Transform
from ab.nn.stat.store import prm_uid
from ab.nn.stat.untrusted import BadRecord
from ab.nn.util.lemur_hash import lemur_md5

LEMUR_DIAGNOSTICS = {
    "train_loss", "test_loss", "train_accuracy", "gradient_norm", "samples_per_second", "best_accuracy",
    "best_epoch", "cpu_type", "cpu_count", "total_ram_kb", "gpu_type", "gpu_total_memory_kb", "occupied_ram_kb",
    "ram_usage_percent", "cpu_usage_percent", "occupied_gpu_memory_kb", "gpu_memory_usage_percent",
    "gpu_memory_kb", "lr_now", "duration_seconds", "layer_stat", "task", "dataset", "metric", "model",
    "test_mae", "train_mae", "test_accuracy", "train_max_age", "train_min_age", "epoch"}
"""Keys of a LEMUR record that describe the run, not the hyperparameter set (LEMUR itself puts all of
them into ``prm``; here they stay with their row, in ``stat.extra``)."""
RAW_MAE = "test_mae"
"""The key of a LEMUR record that holds its raw MAE (the flat layout's evaluation MAE)."""
_RESERVED = {"accuracy", "duration", "uid", "train_stat", "ab_nn"}
_FLAT_TRAIN_STAT = {"lr_now": "lr"}
"""Flat-layout names of a train_stat column that differ from the column's."""
_CODE_TABLES = {"nn": Nn, "transform": Transform, "metric": Metric}
_TRAIN_COLUMNS = {c.name: c for c in TrainStat.__table__.c if c.name != "stat_id"}
_TRAIN_TYPES = {name: column.type.python_type for name, column in _TRAIN_COLUMNS.items()}
_SPLIT_LENGTH = StatMetric.__table__.c.split.type.length
_PRM_KEY = operator.itemgetter("uid", "name")
_ID, _STAT_ID = operator.itemgetter("id"), operator.itemgetter("stat_id")


def lemur_stat_id(config: Config, epoch: int, record: dict) -> str:
    """LEMUR's stat id (``Write.save_stat``): ``uuid4([transform, uid, task, dataset, metric, nn, epoch,
    duration, accuracy])``, the md5 of the list's ``str`` with all whitespace removed."""
    return lemur_md5([record.get("transform"), record.get("uid"), *config.parts, epoch, record.get("duration"),
                      record.get("accuracy")])


def _finite(value) -> bool:
    """A JSON number (not a boolean) that is neither NaN nor infinite."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def raw_mae(record: dict) -> float | None:
    """The raw MAE a LEMUR record carries beside its accuracy, if it does."""
    value = record.get(RAW_MAE)
    return float(value) if _finite(value) else None


def prm_value(value) -> bool:
    """Whether a hyperparameter value can be a ``prm`` row (int, float, str or bool, finite, in range)."""
    if isinstance(value, (bool, str)):
        return True
    if isinstance(value, int):
        return -untrusted.INT64 <= value < untrusted.INT64
    return _finite(value)


def _train_row(stat_id: str, values: dict) -> dict | None:
    """A ``train_stat`` row of every column (``None`` where the record has none), or ``None`` when the
    record holds none of them."""
    found = values.keys() & _TRAIN_COLUMNS.keys()
    if not found:
        return None
    row = dict.fromkeys(_TRAIN_COLUMNS)
    row["stat_id"] = stat_id
    for name in found:
        value, kind = values[name], _TRAIN_TYPES[name]
        if value is None or (kind is str and type(value) is str) or (kind is float and type(value) is float
                                                                    and math.isfinite(value)):
            row[name] = value  # the common case, without _coerce's conversions
        else:
            row[name] = _coerce(_TRAIN_COLUMNS[name], value)
    return row


def _coerce(column, value):
    """A diagnostic in its column's type where it can be (``"12.5"``, ``64.0``), else unknown (the exact
    value stays in ``stat.extra``)."""
    if value is None:
        return None
    python_type = column.type.python_type
    if python_type is str:
        return value if isinstance(value, str) else str(value)
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if not _finite(number):
        return None
    if python_type is bool:
        return bool(number)
    if python_type is int:
        number = round(number)
        return number if -untrusted.INT64 <= number < untrusted.INT64 else None
    return number


class CodeFiles:
    """The code-table rows the foreign keys need, and the code of our mirror (``stat/code/<kind>/<id>.json``)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.named: set[tuple[str, str]] = set()
        self.filled: set[tuple[str, str]] = set()
        self.versions: dict[tuple[str, str], dict | None] = {}

    def read(self, kind: str, code_id: str) -> dict | None:
        """The code file of ``code_id`` (already validated), checked: its kind, name and checksum."""
        key = (kind, code_id)
        if key not in self.versions:
            path = self.folder / kind / f"{code_id}.json"
            found = None
            if path.is_file():
                found = read_json(path)
                if not isinstance(found, dict):
                    raise BadRecord(path, "not a code record")
                code, name = found.get("code"), found.get("name")
                if not isinstance(code, str) or registry.checksum(code) != code_id:
                    raise BadRecord(path, f"its code does not have the checksum {code_id}")
                untrusted.code_name(kind, name, path)
            self.versions[key] = found
        return self.versions[key]

    def ensure(self, session, needs: set[tuple[str, str, str | None]]) -> None:
        """Rows for every (kind, name) in ``needs`` (empty code where the name is new and its code unknown),
        and each code version the mirror carries. Known code only fills an empty row: the code table
        keeps the latest code per name."""
        new = {(kind, name) for kind, name, _ in needs} - self.named
        for kind, table in _CODE_TABLES.items():
            bulk.insert(session, table, [{"name": name, "code": "", "id": ""} for k, name in sorted(new) if k == kind])
        self.named |= new
        versions = []
        for kind, name, code_id in sorted(needs, key=str):
            found = self.read(kind, code_id) if code_id else None
            if found is None:
                continue
            versions.append({"kind": kind, "id": code_id, "name": found["name"], "code": found["code"]})
            if (kind, name) not in self.filled:
                table = _CODE_TABLES[kind]
                session.execute(update(table).where(table.name == name, table.code == "")
                                .values(code=found["code"], id=code_id))
                self.filled.add((kind, name))
        bulk.insert(session, CodeVersion, versions)


class EpochRecords:
    """Epoch records to rows, a batch at a time."""

    def __init__(self, code_folder: Path, trials: dict[int, int], lemur_mae_scale: float | None):
        """``trials``: trial ids of the import -> ids here; ``lemur_mae_scale``: the scale of LEMUR records of an
        MAE metric without a raw MAE."""
        self.codes = CodeFiles(code_folder)
        self.trials = trials
        self.scale = lemur_mae_scale
        self.without_trial = 0
        """Records of trials the import does not hold, left out."""
        self.example: str | None = None

    def add(self, session, batch: list[tuple[Config, int, Path, list]]) -> int:
        """Add the records of ``batch`` not yet here; returns how many."""
        items = []
        for config, epoch, path, records in batch:
            for record in records:
                ours = record.get("ab_nn")
                if ours is not None and not isinstance(ours, dict):
                    raise BadRecord(path, "ab_nn is not a dict")
                stat_id = ours.get("stat_id") if ours is not None else lemur_stat_id(config, epoch, record)
                if not isinstance(stat_id, str) or not stat_id or len(stat_id) > 64:
                    raise BadRecord(path, f"stat id {untrusted.shown(stat_id)} is not a string of at most 64 characters")
                items.append((config, epoch, path, record, ours, stat_id))
        done = bulk.present(session, Stat.id, (item[-1] for item in items))
        held: dict[str, dict] = {}
        uids = {item[3].get("uid") for item in items if item[-1] not in done and isinstance(item[3].get("uid"), str)}
        for uid, name, value in bulk.lookup(session, Prm.uid, [Prm.uid, Prm.name, Prm.value], uids):
            held.setdefault(uid, {})[name] = value
        rows = _Rows()
        for config, epoch, path, record, ours, stat_id in items:
            if stat_id in done:
                continue
            done.add(stat_id)
            self._record(rows, held, config, epoch, path, record, ours, stat_id)
        self.codes.ensure(session, rows.codes)
        bulk.insert(session, Prm, sorted(rows.prm, key=_PRM_KEY))  # in key order: fewer index pages touched
        bulk.insert(session, Stat, sorted(rows.stat, key=_ID))
        bulk.insert(session, TrainStat, sorted(rows.train, key=_STAT_ID))
        bulk.insert(session, StatMetric, sorted(rows.metrics, key=_STAT_ID))
        return len(rows.stat)

    def _record(self, rows: "_Rows", held: dict, config: Config, epoch: int, path: Path, record: dict,
                ours: dict | None, stat_id: str) -> None:
        """Rows of one record; none for a record of a trial the import does not hold (left out and counted:
        it was running when the mirror was written, and comes with its trial from a later mirror)."""
        trial_id = untrusted.integer((ours or {}).get("trial_id"), path, "ab_nn.trial_id")
        if trial_id is not None:
            if trial_id not in self.trials:
                self.without_trial += 1
                self.example = self.example or f"{path} (trial {trial_id}, not in {trial_file(path.parent.parent, config)})"
                return
            trial_id = self.trials[trial_id]
        top = {k: v for k, v in record.items() if k not in _RESERVED}
        metric_keys = {k for k in top if k.startswith("metric_")}
        if ours is not None:
            carried = ours.get("lemur")  # a LEMUR record imported earlier, written back by our mirror
            if carried is not None and not (isinstance(carried, dict) and isinstance(carried.get("record") or {}, dict)
                                            and isinstance(carried.get("train_stat") or {}, dict)):
                raise BadRecord(path, "ab_nn.lemur is not a dict of record and train_stat")
            apart = set((carried or {}).get("record") or ())
        else:
            carried = None
            apart = {k for k, v in top.items() if k in LEMUR_DIAGNOSTICS or not (v is None or isinstance(v, (
                bool, int, float, str))) or (k in metric_keys and not _finite(v))}
        hyper = {k: v for k, v in top.items() if k not in apart and k not in metric_keys}
        uid = record.get("uid")
        if uid is not None and not isinstance(uid, str):
            raise BadRecord(path, f"uid {untrusted.shown(uid)} is not a string")
        if uid:
            have = held.setdefault(uid, {})
            differ = {k for k, v in hyper.items() if not prm_value(v) or (k in have and have[k] != v)}
            for k, v in sorted(hyper.items()):
                if k not in differ and k not in have:
                    rows.prm.append({"uid": uid, "name": k, "value": v})
                    have[k] = v
            apart |= differ
        elif hyper:
            apart |= {k for k, v in hyper.items() if not prm_value(v)}
            values = {k: v for k, v in hyper.items() if k not in apart}
            uid = prm_uid(values) if values else None
            if uid is not None and uid not in held:
                held[uid] = values
                rows.prm.extend({"uid": uid, "name": k, "value": v} for k, v in sorted(values.items()))

        code = (ours or {}).get("code") or {}
        if not isinstance(code, dict):
            raise BadRecord(path, "ab_nn.code is not a dict")
        code = {kind: untrusted.code_id(code.get(kind), path) for kind in _CODE_TABLES}
        transform = untrusted.optional_name(registry.TRANSFORM, record.get("transform"), path)
        rows.codes.update({("nn", config.nn, code["nn"]), ("metric", config.metric, code["metric"])})
        if transform is not None:
            rows.codes.add(("transform", transform, code["transform"]))

        accuracy = untrusted.number(record.get("accuracy"), path, "accuracy")
        train = record.get("train_stat") if isinstance(record.get("train_stat"), dict) else None
        if ours is not None:
            train = dict(train or {})
            mae = untrusted.number(ours["mae"] if "mae" in ours else train.get("mae"), path, "mae")
            train.pop("mae", None)
            scale = untrusted.number(ours.get("accuracy_scale"), path, "accuracy_scale")
            extra = json.dumps(carried) if carried is not None else None
            train_values = train if carried is None else dict(carried.get("train_stat") or {})
            metrics = ours.get("metrics") or {}
        else:
            mae, scale = self._lemur_mae(config, record, accuracy)
            extra = json.dumps({"record": {k: top[k] for k in sorted(apart) if k in top}, "train_stat": train})
            train_values = dict(train) if train is not None else \
                {_FLAT_TRAIN_STAT.get(k, k): v for k, v in top.items() if k in LEMUR_DIAGNOSTICS or k == "epoch_max"}
            metrics = {"eval": {k: top[k] for k in sorted(metric_keys - apart)}}
        rows.stat.append({"id": stat_id, "accuracy": accuracy, "epoch": epoch,
                          "duration": untrusted.integer(record.get("duration"), path, "duration"),
                          "task": config.task, "dataset": config.dataset, "nn": config.nn, "transform": transform,
                          "metric": config.metric, "prm": uid or None, "trial_id": trial_id, "mae": mae,
                          "accuracy_scale": scale, "nn_code_id": code["nn"], "transform_code_id": code["transform"],
                          "metric_code_id": code["metric"], "extra": extra})
        train_row = _train_row(stat_id, train_values)
        if train_row is not None:
            rows.train.append(train_row)
        if not isinstance(metrics, dict):
            raise BadRecord(path, "ab_nn.metrics is not a dict")
        for split, values in metrics.items():
            if not isinstance(values, dict) or len(split) > _SPLIT_LENGTH:
                raise BadRecord(path, f"metrics of split {untrusted.shown(split)} are not a dict of a short split")
            rows.metrics.extend({"stat_id": stat_id, "split": split, "name": name,
                                 "value": untrusted.number(value, path, f"metric {untrusted.shown(name)}")}
                                for name, value in sorted(values.items()))

    def _lemur_mae(self, config: Config, record: dict, accuracy: float | None) -> tuple[float | None, float | None]:
        """(raw MAE, accuracy scale) of a LEMUR record: its raw MAE and the scale its accuracy implies; else,
        for an MAE metric, the MAE its accuracy stands for at the scale given for such records."""
        raw = raw_mae(record)
        if raw is not None:
            return raw, accuracy_scale.implied(raw, accuracy)
        if config.metrics[0] in accuracy_scale.MAE_METRICS:
            return accuracy_scale.mae_from(accuracy, self.scale), self.scale
        return None, None


class _Rows:
    def __init__(self):
        self.prm: list[dict] = []
        self.stat: list[dict] = []
        self.train: list[dict] = []
        self.metrics: list[dict] = []
        self.codes: set[tuple[str, str, str | None]] = set()
