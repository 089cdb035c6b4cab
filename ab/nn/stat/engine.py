"""SQLAlchemy engines for the statistics database, one pair (writer, reader) per URL per process.

SQLite gets WAL mode, a long busy timeout and enforced foreign keys. Writers start their
transactions with ``BEGIN IMMEDIATE`` so that two processes never both hold a read lock and then
deadlock on the upgrade to a write lock (SQLite's "database is locked" under concurrency).
Tables are created on first use, never on import.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError, ProgrammingError, IntegrityError

from ab.nn.stat.schema import Base

BUSY_TIMEOUT_S = 120
_engines: dict[tuple[str, bool], Engine] = {}
_lock = threading.Lock()


class DatabaseError(RuntimeError):
    """The statistics database cannot be opened or written; the message says which and why."""


def _sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _configure_sqlite(engine: Engine, immediate: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # let the "begin" hook below own transactions
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def engine(url: str, *, writer: bool = True) -> Engine:
    """The process-wide engine for ``url``; the first writer creates missing tables."""
    key = (url, writer)
    with _lock:
        if key in _engines:
            return _engines[key]
        sqlite_file = _sqlite_file(url)
        kwargs: dict = {"pool_pre_ping": True}
        if sqlite_file is not None:
            try:
                sqlite_file.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise DatabaseError(f"cannot create the database folder {sqlite_file.parent}: {error}") from error
            kwargs = {"connect_args": {"timeout": BUSY_TIMEOUT_S}}
        made = create_engine(url, **kwargs)
        if sqlite_file is not None:
            _configure_sqlite(made, immediate=writer)
        if writer:
            create_tables(made)
        _engines[key] = made
        return made


def create_tables(made: Engine, attempts: int = 5) -> None:
    """``create_all`` that tolerates another process creating the same tables at the same time."""
    for attempt in range(attempts):
        try:
            Base.metadata.create_all(made)
            return
        except (IntegrityError, ProgrammingError, OperationalError) as error:
            if attempt == attempts - 1:
                raise DatabaseError(f"cannot create the statistics tables at {made.url!r}: {error}") from error
            time.sleep(0.2 * (attempt + 1))


def dispose_all() -> None:
    """Close every pooled connection (tests, and child processes after fork)."""
    with _lock:
        for made in _engines.values():
            made.dispose()
        _engines.clear()
