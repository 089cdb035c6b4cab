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

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from ab.nn.stat.schema import SchemaVersion, Trial

CURRENT = 3


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


MIGRATIONS: dict[int, Callable[[Connection], None]] = {2: _data_keys, 3: _trial_uids}


def migrate(connection: Connection) -> list[int]:
    """Bring the database to ``CURRENT``; returns the versions applied. Call inside a transaction
    that holds the write lock."""
    if connection.dialect.name == "postgresql":
        connection.execute(select(func.pg_advisory_xact_lock(func.hashtext("ab_nn_schema"))))
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
