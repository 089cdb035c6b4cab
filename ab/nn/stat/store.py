"""Writes to the statistics database. Each public method is one transaction: a crash leaves
either all of a write or none of it, never half a trial or half an epoch."""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Mapping

from sqlalchemy import Integer, case, delete, func, insert, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from ab.nn import registry
from ab.nn.config import Config
from ab.nn.stat import engine as engines, mirror, versions
from ab.nn.stat import accuracy_scale
from ab.nn.stat.schema import (FINAL_STATES, RESULT_STATES, RUNNING, TRAINED_STATES, Base, CodeVersion, Export,
                               ImageAttribute, Latency, Metric, Nn, NnMinhash, Prediction, Prm, Stat, StatMetric,
                               TrainStat, Transform, Trial)
from ab.nn.util import system

PREFERRED_RUNTIMES = ("litert", "onnxruntime", "pytorch")
"""Where a trial's deployment latency is read, in order: how a phone would run it first."""
_CODE_TABLES = {registry.MODEL: Nn, registry.TRANSFORM: Transform, registry.METRIC: Metric}
log = logging.getLogger(__name__)


def now() -> datetime:
    return datetime.now(timezone.utc)


def prm_uid(prm: Mapping[str, object]) -> str:
    """LEMUR's uid: identifies a hyperparameter set (not a trial)."""
    text = json.dumps({k: prm[k] for k in sorted(prm)}, sort_keys=True, default=str)
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def _finite(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


RETRIES = 5
ATTRIBUTE_CHUNK = 1000  # rows per INSERT of image attributes: 8 bound values each, under SQLite's 32,766


def retried(method):
    """Run a one-transaction write again when the connection failed in a way that may pass (a dropped
    PostgreSQL connection, SQLite busy past its timeout); other errors go up at once."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        for attempt in range(RETRIES):
            try:
                return method(self, *args, **kwargs)
            except Exception as error:
                if attempt == RETRIES - 1 or not engines.is_transient(error):
                    raise
                log.warning("statistics database: %s; trying again", str(error).splitlines()[0])
                time.sleep(min(30.0, 0.5 * 2 ** attempt))
    return wrapper


def insert_ignore(session: Session, table, rows: list[dict]) -> None:
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    module = {"sqlite": sqlite, "postgresql": postgresql}.get(dialect)
    if module is not None:
        session.execute(module.insert(table).values(rows).on_conflict_do_nothing())
        return
    for row in rows:
        keys = {c.name: row[c.name] for c in table.__table__.primary_key.columns}
        if session.get(table, tuple(keys.values())) is None:
            session.add(table(**row))


def save_code_version(session: Session, kind: str, name: str, code: str, checksum: str) -> None:
    """Keep every version of a code (``code_version``), whatever the code table holds later."""
    insert_ignore(session, CodeVersion, [{"kind": kind, "id": checksum, "name": name, "code": code}])


def code_ids(session: Session, trial: Trial) -> dict[str, str | None]:
    """The checksums of the code a trial's epochs are produced with: its model code as reserved, the
    transform and metric code as the sweep saved them."""
    transform = session.get(Transform, trial.transform) if trial.transform else None
    metric = session.get(Metric, trial.metric)
    model = trial.nn_code_id or getattr(session.get(Nn, trial.nn), "id", None)
    return {"nn_code_id": model, "transform_code_id": getattr(transform, "id", None),
            "metric_code_id": getattr(metric, "id", None)}


def add_metrics(session: Session, stat_id: str, split: str, metrics: Mapping[str, float]) -> None:
    session.add_all(StatMetric(stat_id=stat_id, split=split, name=name, value=_finite(value))
                    for name, value in sorted(metrics.items()))


class StatStore:
    """The write side of the statistics database (reads live in ``ab.nn.stat.query``)."""

    def __init__(self, url: str, mirror_dir: Path | None = None):
        """``mirror_dir`` (LEMUR's ``stat/train``) turns on the JSON mirror of every write. The database must
        be at this code's schema revision (``versions.upgrade`` makes it so); it is never upgraded here."""
        versions.require_current(url)
        self.url = url
        self.mirror_dir = mirror_dir
        self.engine = engines.engine(url, writer=True)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        self.seconds = 0.0  # time spent writing (database and mirror): the sweep's bookkeeping cost

    def _mirror(self, trial_id: int) -> None:
        """Append a finished trial to the LEMUR JSON mirror (its own rows only)."""
        if self.mirror_dir is not None:
            start = time.perf_counter()
            mirror.append_trial(self.url, self.mirror_dir, trial_id)
            self.seconds += time.perf_counter() - start

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        start = time.perf_counter()
        try:
            with self._session.begin() as session:
                yield session
        finally:
            self.seconds += time.perf_counter() - start

    # -- code tables ---------------------------------------------------------------------------
    @retried
    def save_code(self, kind: registry.Kind, name: str, code: str | None = None) -> str:
        """Insert or update the code of a model, transform or metric; returns its checksum."""
        table = _CODE_TABLES[kind]
        code = registry.source(kind, name) if code is None else code
        checksum = registry.checksum(code)
        with self.transaction() as session:
            # insert-or-ignore then update: two workers registering the same name at once must not collide
            insert_ignore(session, table, [{"name": name, "code": code, "id": checksum}])
            session.execute(update(table).where(table.name == name, table.id != checksum)
                            .values(code=code, id=checksum))
            save_code_version(session, table.__tablename__, name, code, checksum)
        return checksum

    def save_signatures(self, rows: list[dict]) -> None:
        """Insert or replace models' code signatures (``nn_minhash`` rows): insert-or-ignore, then update
        the rows that were made from another code (as ``save_code``), so two readers computing the same
        ones at once do not collide."""
        with self.transaction() as session:
            insert_ignore(session, NnMinhash, rows)
            for row in rows:
                session.execute(update(NnMinhash).where(NnMinhash.nn == row["nn"], or_(
                    NnMinhash.code_id.is_(None), NnMinhash.code_id != row["code_id"],
                    NnMinhash.num_perm != row["num_perm"], NnMinhash.shingle_n != row["shingle_n"]))
                                .values({k: v for k, v in row.items() if k != "nn"}))

    def save_prm(self, session: Session, prm: Mapping[str, object]) -> str:
        uid = prm_uid(prm)
        insert_ignore(session, Prm, [{"uid": uid, "name": k, "value": v} for k, v in sorted(prm.items())])
        return uid

    # -- trials --------------------------------------------------------------------------------
    @retried
    def reserve_trials(self, config: Config, epoch_max: int, total: int | None, *, data_key: str,
                       study: str | None = None, count: int = 1, **fields) -> list[int]:
        """Claim up to ``count`` slots for more trials of ``config`` on the data ``data_key``; fewer
        (or none) when ``total`` trials of that key and ``epoch_max`` are already trained or running.
        Several workers calling this together never claim more than ``total``."""
        with self.transaction() as session:
            engines.hold_transaction_lock(session, f"{config.name}|{data_key}")
            slots = [{}] * max(0, self._room(session, config, epoch_max, total, data_key, count))
            return [trial.id for trial in self._add_slots(session, config, epoch_max, data_key, study, slots, fields)]

    def reserve_replicas(self, config: Config, epoch_max: int, total: int | None, *, data_key: str, group: int,
                         seeds: list[int], study: str | None = None, **fields) -> list[tuple[int, int]]:
        """Claim slots for the missing ``seeds`` of replica group ``group``, (trial id, seed) each; a seed
        another worker trained, or is training, in the meantime is left out (checked under the lock)."""
        with self.transaction() as session:
            engines.hold_transaction_lock(session, f"{config.name}|{data_key}")
            taken = set(session.scalars(select(Trial.seed).where(
                Trial.replica_of == group, Trial.status.in_(RESULT_STATES + (RUNNING,)))))
            free = [seed for seed in seeds if seed not in taken]
            free = free[:max(0, self._room(session, config, epoch_max, total, data_key, len(free)))]
            trials = self._add_slots(session, config, epoch_max, data_key, study,
                                     [{"seed": seed, "replica_of": group} for seed in free], fields)
            return [(trial.id, trial.seed) for trial in trials]

    @staticmethod
    def _room(session: Session, config: Config, epoch_max: int, total: int | None, data_key: str, count: int) -> int:
        if total is None:
            return count
        taken = session.scalar(select(func.count()).select_from(Trial).where(
            Trial.config == config.name, Trial.data_key == data_key, Trial.epoch_max == epoch_max,
            Trial.status.in_(RESULT_STATES + (RUNNING,))))
        return min(count, total - taken)

    @staticmethod
    def _add_slots(session: Session, config: Config, epoch_max: int, data_key: str, study: str | None,
                   slots: list[dict], fields: Mapping) -> list[Trial]:
        trials = [Trial(config=config.name, task=config.task, dataset=config.dataset, metric=config.metric,
                        nn=config.nn, study=study or config.name, number=None, status=RUNNING, uid=uuid.uuid4().hex,
                        epoch_max=epoch_max, epochs_done=0, started_at=now(), data_key=data_key, **fields, **slot)
                  for slot in slots]
        session.add_all(trials)
        session.flush()
        return trials

    def reserve_trial(self, config: Config, epoch_max: int, total: int | None, *, data_key: str,
                      **fields) -> int | None:
        """One slot (see ``reserve_trials``), or ``None``."""
        ids = self.reserve_trials(config, epoch_max, total, data_key=data_key, **fields)
        return ids[0] if ids else None

    @retried
    def assign_trial(self, trial_id: int, *, number: int | None, optuna_trial_id: int | None,
                     prm: Mapping[str, object], **fields) -> None:
        """Attach the Optuna trial and its sampled hyperparameters to a reserved trial."""
        with self.transaction() as session:
            uid = self.save_prm(session, prm)
            session.execute(update(Trial).where(Trial.id == trial_id).values(
                number=number, optuna_trial_id=optuna_trial_id, prm=uid, transform=prm.get("transform"),
                **fields))

    @retried
    def update_trial(self, trial_id: int, **fields) -> None:
        if "status" in fields:
            raise ValueError("a trial's status changes only through finish_trial")
        with self.transaction() as session:
            session.execute(update(Trial).where(Trial.id == trial_id).values(**fields))

    @retried
    def finish_trial(self, trial_id: int, status: str, error: str | None = None, **fields) -> bool:
        """Move a trial from ``running`` to its final ``status``, once: the condition is in the UPDATE
        itself, so a trial another process already finished (or reclaimed) is left as it is and
        ``False`` is returned."""
        if status not in FINAL_STATES:
            raise ValueError(f"{status!r} is not a final status ({', '.join(FINAL_STATES)})")
        with self.transaction() as session:
            done = session.execute(update(Trial).where(Trial.id == trial_id, Trial.status == RUNNING).values(
                status=status, error=error, finished_at=now(), **fields)).rowcount
        if done:
            self._mirror(trial_id)
        return bool(done)

    @retried
    def record_epoch(self, trial_id: int, epoch: int, *, accuracy: float, duration: int,
                     metrics: Mapping[str, float], train_stat: Mapping[str, object]) -> str:
        """One epoch: the LEMUR ``stat`` row, its ``train_stat`` and every eval metric value."""
        with self.transaction() as session:
            trial = session.get(Trial, trial_id)
            stat_id = uuid.uuid4().hex
            session.add(Stat(id=stat_id, accuracy=_finite(accuracy), epoch=epoch, duration=duration,
                             task=trial.task, dataset=trial.dataset, nn=trial.nn, transform=trial.transform,
                             metric=trial.metric, prm=trial.prm, trial_id=trial_id,
                             mae=_finite(metrics.get("mae")), accuracy_scale=accuracy_scale.declared(trial.metric),
                             **code_ids(session, trial)))
            session.flush()
            session.add(TrainStat(stat_id=stat_id, **train_stat))
            add_metrics(session, stat_id, "eval", metrics)
            trial.epochs_done = epoch
            trial.eval_accuracy = _finite(accuracy)
            trial.eval_mae = _finite(metrics.get("mae"))
            trial.duration = duration
        return stat_id

    @retried
    def record_test(self, trial_id: int, stat_id: str, accuracy: float, metrics: Mapping[str, float],
                    interval: tuple[float, float] | None = None) -> None:
        """Held-out test numbers of the final model, attached to its last epoch; ``interval`` is the
        95 % bootstrap interval of the test MAE."""
        with self.transaction() as session:
            add_metrics(session, stat_id, "test", metrics)
            trial = session.get(Trial, trial_id)
            trial.test_accuracy = _finite(accuracy)
            trial.test_mae = _finite(metrics.get("mae"))
            if interval is not None:
                trial.test_mae_low, trial.test_mae_high = (_finite(v) for v in interval)

    @retried
    def record_predictions(self, trial_id: int, split: str, ages, predicted, image_ids=None) -> None:
        """Per-image predictions of the final evaluation on ``split`` (replacing earlier ones)."""
        rows = [{"trial_id": trial_id, "split": split, "position": i, "age": float(age),
                 "predicted": _finite(value), "image_id": image_ids[i] if image_ids is not None else None}
                for i, (age, value) in enumerate(zip(ages, predicted))]
        with self.transaction() as session:
            session.execute(delete(Prediction).where(Prediction.trial_id == trial_id, Prediction.split == split))
            for start in range(0, len(rows), 5000):
                session.execute(insert(Prediction), rows[start:start + 5000])

    @retried
    def record_attributes(self, dataset: str, images) -> int:
        """Gender and race labels of images, ``(image id, attributes)`` pairs (``attributes`` with the
        fields of ``ImageAttribute``); an image already recorded keeps its row, so a retried or repeated
        write changes nothing. Returns the number of distinct images given."""
        rows = {image_id: {"dataset": dataset, "image_id": image_id, "age": _finite(found.age), "gender": found.gender,
                           "race": found.race, "age_from": found.age_from, "gender_from": found.gender_from,
                           "race_from": found.race_from}
                for image_id, found in images if image_id is not None}
        ordered = list(rows.values())
        if not ordered:
            return 0
        with self.transaction() as session:
            for start in range(0, len(ordered), ATTRIBUTE_CHUNK):
                insert_ignore(session, ImageAttribute, ordered[start:start + ATTRIBUTE_CHUNK])
        return len(ordered)

    def advance_id_sequences(self) -> None:
        """After rows were inserted with explicit ids (copy, JSON import), move PostgreSQL's id
        sequences past them (SQLite needs nothing: it continues after the largest id)."""
        if self.engine.dialect.name != "postgresql":
            return
        with self.transaction() as session:
            for table in Base.metadata.sorted_tables:
                key = list(table.primary_key.columns)
                if len(key) == 1 and key[0].autoincrement is True and isinstance(key[0].type, Integer):
                    session.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', '{key[0].name}'), "
                                         f"COALESCE((SELECT MAX({key[0].name}) FROM {table.name}), 0) + 1, false)"))

    # -- questions the runner asks -------------------------------------------------------------
    def replica_groups(self, config: Config, epoch_max: int, data_key: str) -> list[dict]:
        """Replica groups (``--seeds``) of this config, budget and data whose first trial trained or is
        training: its id, seed and Optuna trial, and the seeds its trials trained or are training with."""
        with self.transaction() as session:
            firsts = session.execute(select(Trial.id, Trial.seed, Trial.optuna_trial_id).where(
                Trial.config == config.name, Trial.epoch_max == epoch_max, Trial.data_key == data_key,
                Trial.replica_of == Trial.id, Trial.seed.is_not(None),
                Trial.status.in_(RESULT_STATES + (RUNNING,)))
                .order_by(Trial.id)).all()
            seeds = session.execute(select(Trial.replica_of, Trial.seed).where(
                Trial.replica_of.in_([row.id for row in firsts]), Trial.seed.is_not(None),
                Trial.status.in_(RESULT_STATES + (RUNNING,)))).all()
        used: dict[int, set] = {}
        for group, seed in seeds:
            used.setdefault(group, set()).add(seed)
        return [{"id": row.id, "seed": row.seed, "optuna_trial_id": row.optuna_trial_id, "seeds": used.get(row.id, set())}
                for row in firsts]

    def count_results(self, config: Config, epoch_max: int, data_key: str | None = None) -> int:
        """Trials of a config at this ``epoch_max`` (on the data ``data_key``, if given) that trained;
        LEMUR counts the same, without the data key."""
        with self.transaction() as session:
            return session.scalar(select(func.count()).select_from(Trial).where(
                Trial.config == config.name, Trial.epoch_max == epoch_max, Trial.status.in_(RESULT_STATES),
                *([Trial.data_key == data_key] if data_key is not None else [])))

    # -- deployment ----------------------------------------------------------------------------
    @retried
    def add_export(self, trial_id: int, **fields) -> int:
        with self.transaction() as session:
            row = Export(trial_id=trial_id, created_at=now(), host=system.host(), **fields)
            session.add(row)
            session.flush()
            return row.id

    @retried
    def update_export(self, export_id: int, **fields) -> None:
        with self.transaction() as session:
            session.execute(update(Export).where(Export.id == export_id).values(**fields))

    @retried
    def add_latency(self, export_id: int, trial_id: int, **fields) -> int:
        with self.transaction() as session:
            row = Latency(export_id=export_id, trial_id=trial_id, created_at=now(), **fields)
            session.add(row)
            session.flush()
            return row.id

    def exports_of(self, trial_ids) -> list[Export]:
        with self.transaction() as session:
            return list(session.scalars(select(Export).where(Export.trial_id.in_(list(trial_ids)))))

    def ranked_trials(self, config: Config, data_key: str) -> list[int]:
        """Trained trials of ``config`` on the data ``data_key``, best eval accuracy first (LEMUR's selection
        metric); the same order as ``api.ranked_trials``."""
        with self.transaction() as session:
            return list(session.scalars(select(Trial.id).where(
                Trial.config == config.name, Trial.data_key == data_key, Trial.status.in_(TRAINED_STATES),
                Trial.eval_accuracy.is_not(None)).order_by(Trial.eval_accuracy.desc(), Trial.id)))

    def best_trial(self, config: Config, data_key: str, max_latency_ms: float | None = None) -> int | None:
        """The first of ``ranked_trials``; with ``max_latency_ms``, the first whose latency meets it."""
        for trial_id in self.ranked_trials(config, data_key):
            if max_latency_ms is None or (self.latency_ms(trial_id) or float("inf")) <= max_latency_ms:
                return trial_id
        return None

    def trial_ids(self, config: Config, data_key: str | None = None) -> list[int]:
        with self.transaction() as session:
            return list(session.scalars(select(Trial.id).where(
                Trial.config == config.name, *([Trial.data_key == data_key] if data_key is not None else []))))

    def trial_status(self, trial_id: int) -> str | None:
        with self.transaction() as session:
            return session.scalar(select(Trial.status).where(Trial.id == trial_id))

    def running_trials(self, config: Config) -> list[Trial]:
        with self.transaction() as session:
            return list(session.scalars(select(Trial).where(Trial.config == config.name, Trial.status == RUNNING)))

    def configs(self) -> list[Config]:
        """Configs that already have statistics (LEMUR's source of configs)."""
        with self.transaction() as session:
            rows = session.execute(select(Stat.task, Stat.dataset, Stat.metric, Stat.nn).distinct()).all()
            rows += session.execute(select(Trial.task, Trial.dataset, Trial.metric, Trial.nn).distinct()).all()
        configs = set()
        for row in rows:
            try:
                configs.add(Config.parse("_".join(row)))
            except ValueError:
                continue
        return sorted(configs)


    # -- what the runner tells Optuna ----------------------------------------------------------
    def trial_row(self, trial_id: int) -> dict:
        with self.transaction() as session:
            trial = session.get(Trial, trial_id)
            return {c.name: getattr(trial, c.name) for c in Trial.__table__.columns}

    def epoch_accuracies(self, trial_id: int) -> list[float | None]:
        """Validation accuracy of each epoch, in order (Optuna's intermediate values)."""
        with self.transaction() as session:
            return list(session.scalars(select(Stat.accuracy).where(Stat.trial_id == trial_id).order_by(Stat.epoch)))

    def latency(self, trial_id: int) -> tuple[float, str] | None:
        """The trial's deployment latency and its runtime: batch 1, 1 thread, median, fp32, in its preferred
        runtime (LiteRT, else onnxruntime, else PyTorch), the latest measurement."""
        with self.transaction() as session:
            rows = session.execute(select(Latency.runtime, Latency.median_ms).join(Export, Export.id == Latency.export_id)
                                   .where(Latency.trial_id == trial_id, Latency.threads == 1, Latency.status == "ok",
                                          Export.precision == "fp32").order_by(Latency.id.desc())).all()
        for runtime in PREFERRED_RUNTIMES:
            for found, median in rows:
                if found == runtime and median is not None:
                    return float(median), runtime
        return None

    def latency_ms(self, trial_id: int) -> float | None:
        found = self.latency(trial_id)
        return None if found is None else found[0]

    def trial_counts(self) -> dict[str, tuple[int, int]]:
        """Per config: (trials, trained trials)."""
        with self.transaction() as session:
            rows = session.execute(select(Trial.config, func.count(), func.sum(
                case((Trial.status.in_(TRAINED_STATES), 1), else_=0))).group_by(Trial.config)).all()
        return {config: (int(n), int(trained or 0)) for config, n, trained in rows}
