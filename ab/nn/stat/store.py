"""Writes to the statistics database, the one authority on what happened to a trial.

Each public method is one transaction: a crash leaves either all of a write or none of it. Writes that
are retried after a dropped connection (where the first commit may have been applied) have the effect
of one: inserts carry a key chosen before the first attempt, updates are conditional. Writes about a
running trial can be *fenced* with the lease of the runner that owns it (``fence=lease_id``): once
another runner has reclaimed the trial they are refused (``LeaseLost``), so a runner that was thought
dead can no longer change the record. Nothing that can fail on its own (the JSON mirror) happens inside
a write: it is queued in ``outbox`` by the same transaction and done afterwards (``ab.nn.stat.mirror``)."""
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
from typing import Iterator, Mapping

import psutil
from sqlalchemy import Integer, case, delete, func, insert, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from ab.nn import registry
from ab.nn.config import Config
from ab.nn.stat import engine as engines, versions
from ab.nn.stat import accuracy_scale, ranking
from ab.nn.stat.lease import states as lease_states
from ab.nn.stat.schema import (Base, CodeVersion, ConstantBaseline, Export, ImageAttribute, Latency, Metric, Nn,
                               NnMinhash, Outbox, Prediction, Prm, Stat, StatMetric, TrainStat, Transform, Trial)
from ab.nn.stat.states import FINAL_STATES, INTERRUPTED, RESULT_STATES, RUNNING, TRAINED_STATES, LeaseLost
from ab.nn.util import system

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


def fenced(session: Session, trial_id: int, fence: int | None, running: bool = True) -> Trial:
    """The trial, locked for this transaction, after checking that the runner holding lease ``fence``
    still owns it (and, with ``running``, that it is still running); ``fence=None`` checks nothing."""
    trial = session.get(Trial, trial_id, with_for_update=True)
    if fence is not None and (trial is None or trial.lease_id != fence or (running and trial.status != RUNNING)):
        raise LeaseLost(trial_id, getattr(trial, "status", None))
    return trial


def reclaim_lapsed(session: Session, study: str | None = None, *, config: str | None = None,
                   dry_run: bool = False) -> list[tuple[int, str]]:
    """Running trials (of ``study`` or ``config``) whose runner is gone are recorded ``interrupted``, so that
    they stop holding slots: their lease lapsed, was released or belongs to a process certainly gone
    (``ab.nn.stat.lease``), or, for trials recorded before leases, their process is gone from this host.
    A live runner's trials are never touched. Returns (trial id, reason) for each."""
    query = select(Trial).where(Trial.status == RUNNING)
    if study is not None:
        query = query.where(Trial.study == study)
    if config is not None:
        query = query.where(Trial.config == config)
    running = list(session.scalars(query))
    alive = lease_states(session, [t.lease_id for t in running])
    reclaimed = []
    for trial in running:
        if trial.lease_id is not None:
            state = alive[trial.lease_id]
            if state.alive:
                continue
            reason = f"interrupted: {state.reason}"
        elif trial.host == system.host() and trial.pid and not psutil.pid_exists(trial.pid):
            reason = f"interrupted: its runner (process {trial.pid} on {trial.host}) is gone"
        else:
            continue
        if dry_run:
            reclaimed.append((trial.id, reason))
            continue
        done = session.execute(update(Trial).where(Trial.id == trial.id, Trial.status == RUNNING).values(
            status=INTERRUPTED, error=reason, finished_at=now())).rowcount
        if done:
            session.add(Outbox(kind="mirror", trial_id=trial.id, host=system.host(), created_at=now(), attempts=0))
            reclaimed.append((trial.id, reason))
    return reclaimed


class StatStore:
    """The write side of the statistics database (reads live in ``ab.nn.stat.query``)."""

    def __init__(self, url: str):
        """The database must be at this code's schema revision (``versions.upgrade`` makes it so); it is never
        upgraded here."""
        versions.require_current(url)
        self.url = url
        self.engine = engines.engine(url, writer=True)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        self.seconds = 0.0  # time spent writing: the sweep's bookkeeping cost

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
    def reserve_trials(self, config: Config, epoch_max: int, total: int | None, *, data_key: str,
                       study: str | None = None, count: int = 1, **fields) -> list[int]:
        """Claim up to ``count`` slots for more trials of ``config`` on the data ``data_key``; fewer
        (or none) when ``total`` trials of that key and ``epoch_max`` are already trained or running.
        Several workers calling this together never claim more than ``total``, and a retried call whose
        first commit was applied returns the slots that commit made instead of making more."""
        uids = [uuid.uuid4().hex for _ in range(count)]
        return [trial_id for trial_id, _ in self._reserve(config, epoch_max, total, data_key, study, uids,
                                                          [{}] * count, None, fields)]

    def reserve_replicas(self, config: Config, epoch_max: int, total: int | None, *, data_key: str, group: int,
                         seeds: list[int], study: str | None = None, **fields) -> list[tuple[int, int]]:
        """Claim slots for the missing ``seeds`` of replica group ``group``, (trial id, seed) each; a seed
        another worker trained, or is training, in the meantime is left out (checked under the lock)."""
        uids = [uuid.uuid4().hex for _ in seeds]
        return self._reserve(config, epoch_max, total, data_key, study, uids,
                             [{"seed": seed, "replica_of": group} for seed in seeds], group, fields)

    @retried
    def _reserve(self, config: Config, epoch_max: int, total: int | None, data_key: str, study: str | None,
                 uids: list[str], slots: list[dict], group: int | None, fields: Mapping) -> list[tuple[int, int]]:
        with self.transaction() as session:
            made = session.execute(select(Trial.id, Trial.seed).where(Trial.uid.in_(uids)).order_by(Trial.id)).all()
            if made:  # an earlier attempt committed before its answer was lost
                return [(row.id, row.seed) for row in made]
            engines.hold_transaction_lock(session, f"{config.name}|{data_key}")
            chosen = list(zip(uids, slots))
            if group is not None:
                taken = set(session.scalars(select(Trial.seed).where(
                    Trial.replica_of == group, Trial.status.in_(RESULT_STATES + (RUNNING,)))))
                chosen = [(uid, slot) for uid, slot in chosen if slot["seed"] not in taken]
            chosen = chosen[:max(0, self._room(session, config, epoch_max, total, data_key, len(chosen)))]
            trials = self._add_slots(session, config, epoch_max, data_key, study, chosen, fields)
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
                   slots: list[tuple[str, dict]], fields: Mapping) -> list[Trial]:
        trials = [Trial(config=config.name, task=config.task, dataset=config.dataset, metric=config.metric,
                        nn=config.nn, study=study or config.name, number=None, status=RUNNING, uid=uid,
                        epoch_max=epoch_max, epochs_done=0, started_at=now(), data_key=data_key, **fields, **slot)
                  for uid, slot in slots]
        session.add_all(trials)
        session.flush()
        return trials

    # -- continuing interrupted trials (ab.nn.sweep.resume) --------------------------------------
    def interrupted_trials(self, config: Config, epoch_max: int, data_key: str, nn_code_id: str | None) -> list[dict]:
        """Interrupted trials of ``config`` at this ``epoch_max`` on the data ``data_key``, trained with the model
        code ``nn_code_id``, that were given hyperparameters: the ones a runner may continue, oldest first."""
        with self.transaction() as session:
            rows = session.execute(select(Trial.id, Trial.seed, Trial.number, Trial.replica_of, Trial.epochs_done)
                                   .where(Trial.config == config.name, Trial.epoch_max == epoch_max,
                                          Trial.data_key == data_key, Trial.status == INTERRUPTED,
                                          Trial.prm.is_not(None), Trial.seed.is_not(None),
                                          Trial.nn_code_id == nn_code_id)
                                   .order_by(Trial.id)).all()
        return [row._asdict() for row in rows]

    @retried
    def continue_trial(self, config: Config, trial_id: int, epoch_max: int, total: int | None, *, data_key: str,
                       lease_id: int, **fields) -> bool:
        """Claim interrupted trial ``trial_id`` for the runner of ``lease_id``: it is ``running`` again (its
        recorded epochs stay), under the same lock and the same limit (``total``) as a reservation, and a
        replica only while no other trial of its group has its seed. Of several runners claiming it at once,
        one gets True; a retried call whose first commit was applied gets True again."""
        with self.transaction() as session:
            engines.hold_transaction_lock(session, f"{config.name}|{data_key}")
            trial = session.get(Trial, trial_id, with_for_update=True)
            if trial is None or trial.status != INTERRUPTED:
                return trial is not None and trial.status == RUNNING and trial.lease_id == lease_id
            if self._room(session, config, epoch_max, total, data_key, 1) < 1:
                return False
            if trial.replica_of is not None and session.scalar(select(func.count()).select_from(Trial).where(
                    Trial.replica_of == trial.replica_of, Trial.seed == trial.seed, Trial.id != trial.id,
                    Trial.status.in_(RESULT_STATES + (RUNNING,)))):
                return False
            return bool(session.execute(update(Trial).where(Trial.id == trial_id, Trial.status == INTERRUPTED).values(
                status=RUNNING, lease_id=lease_id, error=None, finished_at=None, **fields)).rowcount)

    @retried
    def not_continued(self, trial_id: int, reason: str) -> None:
        """Say on an interrupted trial why it was not continued (its resume file could not be used)."""
        with self.transaction() as session:
            trial = session.get(Trial, trial_id, with_for_update=True)
            if trial is None or trial.status != INTERRUPTED or reason in (trial.error or ""):
                return
            trial.error = f"{trial.error or 'interrupted'}\nnot continued: {reason}"[:8000]
            session.add(Outbox(kind="mirror", trial_id=trial_id, host=system.host(), created_at=now(), attempts=0))

    def reserve_trial(self, config: Config, epoch_max: int, total: int | None, *, data_key: str,
                      **fields) -> int | None:
        """One slot (see ``reserve_trials``), or ``None``."""
        ids = self.reserve_trials(config, epoch_max, total, data_key=data_key, **fields)
        return ids[0] if ids else None

    @retried
    def assign_trial(self, trial_id: int, *, number: int | None, optuna_trial_id: int | None,
                     prm: Mapping[str, object], fence: int | None = None, **fields) -> None:
        """Attach the Optuna trial and its sampled hyperparameters to a reserved trial."""
        with self.transaction() as session:
            fenced(session, trial_id, fence)
            uid = self.save_prm(session, prm)
            session.execute(update(Trial).where(Trial.id == trial_id).values(
                number=number, optuna_trial_id=optuna_trial_id, prm=uid, transform=prm.get("transform"),
                **fields))

    @retried
    def update_trial(self, trial_id: int, *, fence: int | None = None, **fields) -> None:
        if "status" in fields:
            raise ValueError("a trial's status changes only through finish_trial")
        with self.transaction() as session:
            fenced(session, trial_id, fence)
            session.execute(update(Trial).where(Trial.id == trial_id).values(**fields))

    @retried
    def finish_trial(self, trial_id: int, status: str, error: str | None = None, *, fence: int | None = None,
                     **fields) -> bool:
        """Move a trial from ``running`` to its final ``status``, once: the condition is in the UPDATE
        itself, so a trial another process already finished (or reclaimed) is left as it is and
        ``False`` is returned; with ``fence``, only while the runner of that lease owns it. A trial already
        in ``status`` answers ``True`` (a retry whose first commit was applied, or another process that
        recorded the same end). The JSON
        mirror of the finished trial is queued in the same transaction."""
        if status not in FINAL_STATES:
            raise ValueError(f"{status!r} is not a final status ({', '.join(FINAL_STATES)})")
        with self.transaction() as session:
            condition = [Trial.id == trial_id, Trial.status == RUNNING]
            if fence is not None:
                condition.append(Trial.lease_id == fence)
            done = session.execute(update(Trial).where(*condition).values(
                status=status, error=error, finished_at=now(), **fields)).rowcount
            if done:
                session.add(Outbox(kind="mirror", trial_id=trial_id, host=system.host(), created_at=now(), attempts=0))
                return True
            return session.scalar(select(Trial.status).where(Trial.id == trial_id)) == status

    @retried
    def record_epoch(self, trial_id: int, epoch: int, *, accuracy: float, duration: int,
                     metrics: Mapping[str, float], train_stat: Mapping[str, object], fence: int | None = None) -> str:
        """One epoch: the LEMUR ``stat`` row, its ``train_stat`` and every eval metric value. Recording an
        epoch that is already recorded (a retry) returns its row."""
        with self.transaction() as session:
            trial = fenced(session, trial_id, fence)
            known = session.scalar(select(Stat.id).where(Stat.trial_id == trial_id, Stat.epoch == epoch))
            if known is not None:
                return known
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
                    interval: tuple[float, float] | None = None, *, fence: int | None = None) -> None:
        """Held-out test numbers of the final model, attached to its last epoch (replacing any recorded
        before: a retry writes the same); ``interval`` is the 95 % bootstrap interval of the test MAE."""
        with self.transaction() as session:
            trial = fenced(session, trial_id, fence)
            session.execute(delete(StatMetric).where(StatMetric.stat_id == stat_id, StatMetric.split == "test"))
            add_metrics(session, stat_id, "test", metrics)
            trial.test_accuracy = _finite(accuracy)
            trial.test_mae = _finite(metrics.get("mae"))
            if interval is not None:
                trial.test_mae_low, trial.test_mae_high = (_finite(v) for v in interval)

    @retried
    def record_predictions(self, trial_id: int, split: str, ages, predicted, image_ids=None, *,
                           fence: int | None = None) -> None:
        """Per-image predictions of the final evaluation on ``split`` (replacing earlier ones)."""
        rows = [{"trial_id": trial_id, "split": split, "position": i, "age": float(age),
                 "predicted": _finite(value), "image_id": image_ids[i] if image_ids is not None else None}
                for i, (age, value) in enumerate(zip(ages, predicted))]
        with self.transaction() as session:
            fenced(session, trial_id, fence)
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

    @retried
    def record_baseline(self, baseline) -> None:
        """The constant-predictor baseline of a data key (``constant_predictor.Baseline``); a data key that has
        one keeps it (the same key is the same images, so the same labels)."""
        with self.transaction() as session:
            insert_ignore(session, ConstantBaseline, [baseline.to_row()])

    def baseline(self, data_key: str | None) -> dict | None:
        """The constant-predictor baseline of ``data_key`` as a row, or None where none is recorded."""
        if data_key is None:
            return None
        with self.transaction() as session:
            found = session.get(ConstantBaseline, data_key)
            return None if found is None else {c.name: getattr(found, c.name) for c in ConstantBaseline.__table__.columns}

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
        training: its id, seed and sampled values, and the seeds its trials trained or are training with."""
        with self.transaction() as session:
            firsts = session.execute(select(Trial.id, Trial.seed, Trial.search_params).where(
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
        return [{"id": row.id, "seed": row.seed, "search_params": row.search_params, "seeds": used.get(row.id, set())}
                for row in firsts]

    def trial_prm(self, trial_id: int) -> dict:
        """The hyperparameters a trial was given (its ``prm`` set)."""
        with self.transaction() as session:
            uid = session.scalar(select(Trial.prm).where(Trial.id == trial_id))
            return {p.name: p.value for p in session.scalars(select(Prm).where(Prm.uid == uid))} if uid else {}

    def count_results(self, config: Config, epoch_max: int, data_key: str | None = None) -> int:
        """Trials of a config at this ``epoch_max`` (on the data ``data_key``, if given) that trained;
        LEMUR counts the same, without the data key."""
        with self.transaction() as session:
            return session.scalar(select(func.count()).select_from(Trial).where(
                Trial.config == config.name, Trial.epoch_max == epoch_max, Trial.status.in_(RESULT_STATES),
                *([Trial.data_key == data_key] if data_key is not None else [])))

    def held_by_live_runners(self, config: Config, epoch_max: int, data_key: str) -> int:
        """Running trials of a config at this ``epoch_max`` on the data ``data_key`` whose runner's lease is
        alive: each still ends with a result, a failure, or a lapse that frees its slot. Running trials
        without such a lease (recorded before leases, on another host) never end by themselves and are
        not counted."""
        with self.transaction() as session:
            leases = list(session.scalars(select(Trial.lease_id).where(
                Trial.config == config.name, Trial.epoch_max == epoch_max, Trial.data_key == data_key,
                Trial.status == RUNNING, Trial.lease_id.is_not(None))))
            alive = lease_states(session, set(leases))
        return sum(1 for lease_id in leases if alive[lease_id].alive)

    # -- deployment ----------------------------------------------------------------------------
    def add_export(self, trial_id: int, *, fence: int | None = None, **fields) -> int:
        """One artifact row; with ``fence``, only while the runner of that lease owns the trial (it may
        have finished)."""
        return self._add_keyed(Export, uuid.uuid4().hex, trial_id, fence, dict(host=system.host(), **fields))

    @retried
    def update_export(self, export_id: int, **fields) -> None:
        with self.transaction() as session:
            session.execute(update(Export).where(Export.id == export_id).values(**fields))

    def add_latency(self, export_id: int, trial_id: int, *, fence: int | None = None, **fields) -> int:
        return self._add_keyed(Latency, uuid.uuid4().hex, trial_id, fence, dict(export_id=export_id, **fields))

    @retried
    def _add_keyed(self, table, key: str, trial_id: int, fence: int | None, fields: Mapping) -> int:
        """Insert a row whose ``key`` was chosen before the first attempt: a retry after a commit that was
        applied finds it and returns its id instead of adding a second."""
        with self.transaction() as session:
            found = session.scalar(select(table.id).where(table.key == key))
            if found is not None:
                return found
            fenced(session, trial_id, fence, running=False)
            row = table(trial_id=trial_id, created_at=now(), key=key, **fields)
            session.add(row)
            session.flush()
            return row.id

    def exports_of(self, trial_ids) -> list[Export]:
        with self.transaction() as session:
            return list(session.scalars(select(Export).where(Export.trial_id.in_(list(trial_ids)))))

    def ranked_trials(self, config: Config, data_key: str, **kwargs) -> list[int]:
        """Trained trials of ``config`` on the data ``data_key``, best first (``ab.nn.stat.ranking``)."""
        with self.transaction() as session:
            return [r.trial_id for r in ranking.rank(session, config.name, data_key, **kwargs)]

    def best_trial(self, config: Config, data_key: str, **kwargs) -> int | None:
        """The best trial (``ab.nn.stat.ranking.best``): by validation MAE, within its study's constraint."""
        with self.transaction() as session:
            return ranking.best(session, config.name, data_key, **kwargs)

    def trial_ids(self, config: Config, data_key: str | None = None) -> list[int]:
        with self.transaction() as session:
            return list(session.scalars(select(Trial.id).where(
                Trial.config == config.name, *([Trial.data_key == data_key] if data_key is not None else []))))

    def recorded_predictions(self, trial_id: int) -> dict:
        """What a trial's final evaluation recorded image by image, for an export to compare its artifacts
        with instead of running PyTorch again: ``device``, ``data_key`` and, per split, ``ages``,
        ``predicted`` and ``image_ids`` in position order (``ab.nn.deploy.reference``)."""
        with self.transaction() as session:
            trial = session.get(Trial, trial_id)
            splits: dict[str, dict] = {}
            for row in session.execute(select(Prediction.split, Prediction.age, Prediction.predicted,
                                              Prediction.image_id).where(Prediction.trial_id == trial_id)
                                       .order_by(Prediction.split, Prediction.position)):
                split = splits.setdefault(row.split, {"ages": [], "predicted": [], "image_ids": []})
                split["ages"].append(row.age)
                split["predicted"].append(row.predicted)
                split["image_ids"].append(row.image_id)
            return {"device": trial.device if trial else None, "data_key": trial.data_key if trial else None,
                    "splits": splits}

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
        """The trial's deployment latency and its runtime (``ab.nn.stat.ranking.latencies``)."""
        with self.transaction() as session:
            return ranking.latencies(session, [trial_id]).get(trial_id)

    def latency_ms(self, trial_id: int) -> float | None:
        found = self.latency(trial_id)
        return None if found is None else found[0]

    def trial_counts(self) -> dict[str, tuple[int, int]]:
        """Per config: (trials, trained trials)."""
        with self.transaction() as session:
            rows = session.execute(select(Trial.config, func.count(), func.sum(
                case((Trial.status.in_(TRAINED_STATES), 1), else_=0))).group_by(Trial.config)).all()
        return {config: (int(n), int(trained or 0)) for config, n, trained in rows}
