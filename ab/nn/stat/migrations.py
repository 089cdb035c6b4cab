"""Versioned upgrades of this project's tables, run when a writer first opens a database.

``create_all`` adds missing tables, ``engine.add_missing_columns`` missing nullable columns; what
needs data to be rewritten is a numbered migration here. The version reached is recorded in
``ab_nn_schema``; each migration is idempotent (it only fills what is still empty), so processes
opening the same database together are safe, and they run under the database's write lock.
"""
from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timezone
from typing import Callable

from sqlalchemy import and_, func, select, update
from sqlalchemy.engine import Connection

from ab.nn.stat import engine as engines
from ab.nn.stat.schema import CodeVersion, Metric, Nn, SchemaVersion, Stat, Transform, Trial

CURRENT = 4


def _data_keys(connection: Connection) -> None:
    """Version 2: every trial gets its split seed and comparability key. Trials recorded before part
    digests existed get a key from their split settings alone, so they stay comparable with each
    other and never mix with trials whose image lists are known."""
    from ab.nn.dataset.identity import data_key
    from ab.nn.dataset.settings import DataSettings

    rows = connection.execute(select(Trial.id, Trial.dataset, Trial.split, Trial.max_samples)
                              .where(Trial.data_key.is_(None))).all()
    for trial_id, dataset, split, max_samples in rows:
        try:
            settings = DataSettings.from_label(split, max_samples)
            key, seed = data_key(dataset, settings, None), settings.split_seed
        except ValueError:  # a label this version does not know: keep it apart from every other
            key, seed = hashlib.sha256(f"{dataset}|{split}|{max_samples}".encode()).hexdigest()[:12], None
        connection.execute(update(Trial).where(Trial.id == trial_id).values(data_key=key, split_seed=seed))


def _trial_uids(connection: Connection) -> None:
    """Version 3: every trial gets a globally unique id, by which copies and imports recognise it."""
    for (trial_id,) in connection.execute(select(Trial.id).where(Trial.uid.is_(None))).all():
        connection.execute(update(Trial).where(Trial.id == trial_id).values(uid=uuid.uuid4().hex))


def _lemur_random(connection: Connection) -> None:
    """The split recorded as ``lemur`` until version 3 was ``random_split`` 70/30; ``lemur`` now names
    LEMUR 2.2.11's stratified 70/10/20 protocol. Those trials become ``lemur-random/<seed>``, their data
    key computed again from the new label (and their part digests, where recorded)."""
    from ab.nn.dataset.identity import data_key
    from ab.nn.dataset.settings import DataSettings

    rows = connection.execute(select(Trial.id, Trial.dataset, Trial.split, Trial.max_samples, Trial.train_digest,
                                     Trial.eval_digest, Trial.test_digest)
                              .where(Trial.split.like("lemur/%"))).all()
    for trial_id, dataset, split, max_samples, *digests in rows:
        label = "lemur-random/" + split.split("/", 1)[1]
        known = dict(zip(("train", "eval", "test"), digests)) if any(digests) else None
        key = data_key(dataset, DataSettings.from_label(label, max_samples), known)
        connection.execute(update(Trial).where(Trial.id == trial_id).values(split=label, data_key=key))


def _code_versions(connection: Connection) -> None:
    """Every code the code tables hold becomes a ``code_version``; the epochs of recorded trials get the
    checksums of their code (the model's as its trial reserved it). Epochs without a trial (imported
    from LEMUR's JSON, whose code was taken from files of the same name) keep unknown code."""
    for table in (Nn, Transform, Metric):
        known = {(kind, id_) for kind, id_ in connection.execute(select(CodeVersion.kind, CodeVersion.id))}
        for name, code, id_ in connection.execute(select(table.name, table.code, table.id)).all():
            if (table.__tablename__, id_) not in known and code:
                connection.execute(CodeVersion.__table__.insert().values(kind=table.__tablename__, id=id_, name=name,
                                                                         code=code))
                known.add((table.__tablename__, id_))
    rows = connection.execute(
        select(Stat.id, Trial.nn_code_id, Nn.id, Transform.id, Metric.id).select_from(Stat)
        .join(Trial, Trial.id == Stat.trial_id).outerjoin(Nn, Nn.name == Stat.nn)
        .outerjoin(Transform, Transform.name == Stat.transform).outerjoin(Metric, Metric.name == Stat.metric)
        .where(and_(Stat.nn_code_id.is_(None), Stat.trial_id.is_not(None)))).all()
    for stat_id, reserved, model, transform, metric in rows:
        connection.execute(update(Stat).where(Stat.id == stat_id).values(
            nn_code_id=reserved or model, transform_code_id=transform, metric_code_id=metric))


def _accuracy_scales(connection: Connection) -> None:
    """Rows with a raw MAE get the scale their accuracy implies (``1 - MAE/scale``)."""
    from ab.nn.stat import accuracy_scale

    rows = connection.execute(select(Stat.id, Stat.mae, Stat.accuracy)
                              .where(Stat.accuracy_scale.is_(None), Stat.mae.is_not(None))).all()
    for stat_id, mae, accuracy in rows:
        scale = accuracy_scale.implied(mae, accuracy)
        if scale is not None:
            connection.execute(update(Stat).where(Stat.id == stat_id).values(accuracy_scale=scale))


def _lemur_parity(connection: Connection) -> None:
    """Version 4: LEMUR 2.2.11 parity (the ``lemur`` split renamed, per-row code and accuracy scale)."""
    _lemur_random(connection)
    _code_versions(connection)
    _accuracy_scales(connection)


MIGRATIONS: dict[int, Callable[[Connection], None]] = {2: _data_keys, 3: _trial_uids, 4: _lemur_parity}


def migrate(connection: Connection) -> list[int]:
    """Bring the database to ``CURRENT``; returns the versions applied. Call inside a transaction
    that holds the write lock."""
    engines.hold_transaction_lock(connection, "ab_nn_schema")
    version = connection.execute(select(func.max(SchemaVersion.version))).scalar() or 1
    applied = []
    for number in sorted(MIGRATIONS):
        if number > version:
            MIGRATIONS[number](connection)
            applied.append(number)
    if version < CURRENT:
        connection.execute(SchemaVersion.__table__.insert().values(version=CURRENT,
                                                                   migrated_at=datetime.now(timezone.utc)))
    return applied
