"""SQLAlchemy engines for the statistics database: per URL per process, a pair (writer, reader) on SQLite,
one bounded pool on a database server.

SQLite gets WAL mode, a long busy timeout and enforced foreign keys. Writers start their
transactions with ``BEGIN IMMEDIATE`` so that two processes never both hold a read lock and then
deadlock on the upgrade to a write lock (SQLite's "database is locked" under concurrency).

A server (PostgreSQL) is shared by a fleet of workers, each holding connections: every connection is
checked before use (pre-ping: a server restart or a dropped idle connection costs a reconnect, not a
failed trial), and each pool is bounded (``PoolSettings``, from ``$LEMUR_DB_POOL_*``), so that workers x
connections per worker stays within the server's ``max_connections`` (docs/guide/many-machines.md).
The schema is ``ab.nn.stat.versions``' business (Alembic), never created here.
"""
from __future__ import annotations

import errno
import os
import re
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.engine import Engine, make_url

from ab.nn.util import system

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


@dataclass(frozen=True)
class PoolSettings:
    """The bound on one process's connections to a database server. Each pool (ours, and Optuna's:
    ``ab.nn.stat.studies.storage``) keeps up to ``size`` connections open and opens up to ``overflow`` more
    while that many are in use at once; a thread that finds them all in use waits ``timeout`` seconds, then
    fails (a storage error: the sweep stops and says why) rather than asking the server for more."""
    size: int = 2
    overflow: int = 2
    timeout: float = 30.0
    connect_timeout: int = 10  # seconds to reach the server (a Service not up yet, a host unreachable)

    POOLS_PER_PROCESS = 2  # ours and Optuna's

    ENVIRONMENT = {"size": ("LEMUR_DB_POOL_SIZE", 1), "overflow": ("LEMUR_DB_MAX_OVERFLOW", 0),
                   "timeout": ("LEMUR_DB_POOL_TIMEOUT", 1), "connect_timeout": ("LEMUR_DB_CONNECT_TIMEOUT", 1)}
    """Each field's environment variable and its smallest value."""

    @property
    def per_process(self) -> int:
        """The most connections one process (a runner, or its trial process) ever holds."""
        return self.POOLS_PER_PROCESS * (self.size + self.overflow)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> "PoolSettings":
        values = {}
        for field_name, (variable, least) in cls.ENVIRONMENT.items():
            text = environ.get(variable, "").strip()
            if not text:
                continue
            kind = type(getattr(cls, field_name))  # the default's type: int, or float for the timeout
            try:
                value = kind(text)
            except ValueError:
                value = None
            if value is None or value < least:
                raise DatabaseError(f"${variable} must be a {'number' if kind is float else 'whole number'} of at "
                                    f"least {least}, got {text!r}")
            values[field_name] = value
        return cls(**values)


def engine_kwargs(url: str) -> dict:
    """``create_engine``'s keyword arguments for ``url``, ours and Optuna's alike: SQLite waits for its
    lock; a server gets pre-ping, the bounded pool of ``PoolSettings`` and, on PostgreSQL, a connect
    timeout, TCP keepalives (a server or network that died is noticed in about a minute, not hours) and
    ``application_name`` ``ab.nn@<host>`` (``pg_stat_activity`` shows which host holds which connections).
    Connection parameters given in the URL's query win."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return {"connect_args": {"timeout": BUSY_TIMEOUT_S}}
    pool = PoolSettings.from_environment()
    kwargs: dict = {"pool_pre_ping": True, "pool_size": pool.size, "max_overflow": pool.overflow,
                    "pool_timeout": pool.timeout}
    if parsed.get_backend_name() == "postgresql":
        wanted = {"connect_timeout": pool.connect_timeout, "application_name": f"ab.nn@{system.host()}"[:63],
                  "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}
        kwargs["connect_args"] = {k: v for k, v in wanted.items() if k not in parsed.query}
    return kwargs


def engine(url: str, *, writer: bool = True) -> Engine:
    """The process-wide engine for ``url``: on SQLite one for writers and one for readers, on a server one
    pool for both (the split exists only for SQLite's ``BEGIN IMMEDIATE``). It creates no tables:
    ``ab.nn.stat.versions`` owns the schema."""
    sqlite = make_url(url).get_backend_name() == "sqlite"
    key = (url, writer or not sqlite)
    with _lock:
        if key in _engines:
            return _engines[key]
        path = sqlite_file(url)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise DatabaseError(f"cannot create the database folder {path.parent}: {error}") from error
        made = create_engine(url, **engine_kwargs(url))
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


def new_postgres_database(url: str, prefix: str = "ab_nn") -> str:
    """Create an empty database named ``<prefix>_<random>`` on the PostgreSQL server of ``url`` and return
    its URL: one per test, benchmark run or fleet that must not share rows with another."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False)
