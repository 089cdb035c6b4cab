"""Many rows at once for imports and copies: one executemany per table and batch (never an ORM object
or a query per row), and key look-ups for a whole batch in a few ``IN`` queries.

On SQLite, tables whose columns sqlite3 binds exactly as SQLAlchemy would (numbers, text, booleans,
hyperparameter values; not dates) are written with the driver's own executemany: SQLAlchemy's
per-row parameter processing cost as much as SQLite's own work when importing LEMUR's 750,000 records.
"""
from __future__ import annotations

import functools
import operator
from datetime import datetime, timezone
from typing import Iterable, Iterator

from sqlalchemy import Boolean, DateTime, Float, Integer, String, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ab.nn.stat.schema import PrmValue

IN_CHUNK = 2000
"""Values per ``IN (...)``: far below SQLite's 32,766 bound variables."""
SQLITE_CACHE_KIB = 65536
"""SQLite's page cache on a connection that bulk-inserts (its default is 2 MiB): index pages touched at
random (stat ids and uids are digests) stay in memory instead of being read again; bounded, so memory
stays flat."""


def chunks(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def insert(session: Session, table, rows: list[dict], *, ignore: bool = True) -> None:
    """Insert ``rows`` into ``table`` (an ORM class) with one executemany; with ``ignore``, rows whose key
    is already there are skipped (SQLite and PostgreSQL: ``ON CONFLICT DO NOTHING``)."""
    if not rows:
        return
    core = table.__table__
    connection = session.connection()
    dialect = connection.dialect.name
    if dialect == "sqlite":
        connection.exec_driver_sql(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        if _native(core):
            columns = tuple(rows[0])
            values = operator.itemgetter(*columns)
            connection.exec_driver_sql(_sqlite_insert(core.name, columns, ignore),
                                       [values(row) for row in rows] if len(columns) > 1 else
                                       [(values(row),) for row in rows])
            return
    module = {"sqlite": sqlite, "postgresql": postgresql}.get(dialect)
    statement = module.insert(core).on_conflict_do_nothing() if ignore and module else core.insert()
    connection.execute(statement, as_utc(core, rows))


def as_utc(core, rows: list[dict]) -> list[dict]:
    """Rows whose naive times in time-zone columns are made UTC, which they are: this project writes
    UTC, and SQLite gives it back without its zone (PostgreSQL would read it in its session's zone)."""
    columns = [c.name for c in core.columns if isinstance(c.type, DateTime) and c.type.timezone]
    for row in rows:
        for name in columns:
            value = row.get(name)
            if isinstance(value, datetime) and value.tzinfo is None:
                row[name] = value.replace(tzinfo=timezone.utc)
    return rows


@functools.cache
def _native(core) -> bool:
    """Whether sqlite3 stores every column of ``core`` as SQLAlchemy would (no dates, JSON or decimals)."""
    return all(isinstance(c.type, (Integer, Float, String, Boolean, PrmValue)) for c in core.columns)


@functools.cache
def _sqlite_insert(name: str, columns: tuple[str, ...], ignore: bool) -> str:
    quoted = ", ".join(f'"{c}"' for c in columns)
    return f'INSERT {"OR IGNORE " if ignore else ""}INTO "{name}" ({quoted}) VALUES ({", ".join("?" * len(columns))})'


def present(session: Session, column, values: Iterable) -> set:
    """The ``values`` that ``column`` already holds."""
    values = list(dict.fromkeys(v for v in values if v is not None))
    found: set = set()
    for start in range(0, len(values), IN_CHUNK):
        found.update(session.scalars(select(column).where(column.in_(values[start:start + IN_CHUNK]))))
    return found


def lookup(session: Session, key, columns: list, values: Iterable) -> list:
    """Rows (``columns``) whose ``key`` column is one of ``values``."""
    values = list(dict.fromkeys(v for v in values if v is not None))
    rows: list = []
    for start in range(0, len(values), IN_CHUNK):
        rows.extend(session.execute(select(*columns).where(key.in_(values[start:start + IN_CHUNK]))).all())
    return rows

