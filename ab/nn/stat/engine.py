"""SQLAlchemy engines for the statistics database, one pair (writer, reader) per URL per process.

SQLite gets WAL mode, a long busy timeout and enforced foreign keys. Writers start their
transactions with ``BEGIN IMMEDIATE`` so that two processes never both hold a read lock and then
deadlock on the upgrade to a write lock (SQLite's "database is locked" under concurrency).
The schema is ``ab.nn.stat.versions``' business (Alembic), never created here.
"""
from __future__ import annotations

import errno
import re
import threading
from pathlib import Path

from sqlalchemy import create_engine, event, func, select
from sqlalchemy.engine import Engine, make_url

BUSY_TIMEOUT_S = 120
_engines: dict[tuple[str, bool], Engine] = {}
_lock = threading.Lock()


class DatabaseError(RuntimeError):
    """The statistics database cannot be opened or written; the message says which and why."""


STORAGE_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS)
_BUG = re.compile(r"no such (table|column)|syntax error|has no column|datatype mismatch|constraint", re.I)
_TRANSIENT = re.compile(r"locked|busy|connection|server closed|terminat|could not connect|timeout|reset by peer|"
                        r"broken pipe|the database system is (starting|shutting)", re.I)


def _cause(error: BaseException) -> BaseException:
    """Optuna wraps SQLAlchemy's errors in ``StorageInternalError``; judge the original."""
    from optuna.exceptions import StorageInternalError

    while isinstance(error, StorageInternalError) and error.__cause__ is not None:
        error = error.__cause__
    return error


def is_storage_error(error: BaseException) -> bool:
    """The workspace or the database cannot take writes (server gone, locked for too long, full disk,
    read-only): nothing more can be recorded, so the sweep stops with a clear message rather than
    failing trial after trial. Integrity and programming errors are bugs, not this: they are raised
    as they are, with their statement."""
    from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError, TimeoutError

    error = _cause(error)
    if isinstance(error, (DisconnectionError, InterfaceError, TimeoutError)):
        return True
    if isinstance(error, OperationalError):
        return not _BUG.search(str(error.orig or error))
    return isinstance(error, OSError) and error.errno in STORAGE_ERRNOS


def is_database_bug(error: BaseException) -> bool:
    """An SQLAlchemy error that is not about storage (integrity, programming): a bug, never retried."""
    from sqlalchemy.exc import SQLAlchemyError

    return isinstance(_cause(error), SQLAlchemyError) and not is_storage_error(error)


def is_transient(error: BaseException) -> bool:
    """A connection-type error that trying again can cure (a dropped connection, a busy database)."""
    error = _cause(error)
    return is_storage_error(error) and not isinstance(error, OSError) and bool(_TRANSIENT.search(str(error)))


def sqlite_file(url: str) -> Path | None:
    """The file of an SQLite URL (``None``: another database, in memory, or a ``file:`` URI)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:") \
            or parsed.query.get("uri"):  # file: URIs (e.g. ?mode=ro) are the caller's business
        return None
    return Path(parsed.database)


def configure_sqlite(engine: Engine, immediate: bool) -> None:
    """WAL, busy timeout, foreign keys; writers take the write lock when their transaction begins."""
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # let the "begin" hook below own transactions
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA foreign_keys=ON")
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except Exception:  # a read-only file keeps its journal mode; reading still works
            pass
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def engine(url: str, *, writer: bool = True) -> Engine:
    """The process-wide engine for ``url``. It creates no tables: ``ab.nn.stat.versions`` owns the
    schema."""
    key = (url, writer)
    with _lock:
        if key in _engines:
            return _engines[key]
        path = sqlite_file(url)
        kwargs: dict = {"pool_pre_ping": True}
        sqlite = make_url(url).get_backend_name() == "sqlite"
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise DatabaseError(f"cannot create the database folder {path.parent}: {error}") from error
        if sqlite:
            kwargs = {"connect_args": {"timeout": BUSY_TIMEOUT_S}}
        made = create_engine(url, **kwargs)
        if sqlite:
            configure_sqlite(made, immediate=writer)
        _engines[key] = made
        return made


def hold_transaction_lock(executor, key: str) -> None:
    """Until the transaction of ``executor`` (a Connection or a Session) ends, hold PostgreSQL's advisory
    lock named ``key``, so that processes doing the same check-then-write take turns. SQLite serialises
    writers itself (``BEGIN IMMEDIATE``); nothing is taken there."""
    bind = executor.get_bind() if hasattr(executor, "get_bind") else executor
    if bind.dialect.name == "postgresql":
        executor.execute(select(func.pg_advisory_xact_lock(func.hashtext(key))))


def dispose_all() -> None:
    """Close every pooled connection (tests, and child processes after fork)."""
    with _lock:
        for made in _engines.values():
            made.dispose()
        _engines.clear()
