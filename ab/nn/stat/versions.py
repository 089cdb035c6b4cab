"""The schema revision of a statistics database: checked before every use, changed only by those who
create or fill databases.

Alembic applies the revisions in ``ab/nn/stat/alembic/versions`` and records the one reached in the
table ``ab_nn_alembic_version`` (Optuna records its own schema in ``alembic_version``, in the same
database). The runner and the commands that create or fill a database call ``upgrade`` once when they
open it; everything else (trial processes, stores, queries, reports) calls ``require_current``, which
refuses a database that needs an upgrade, and one written by newer code, with a one-line error.
"""
from __future__ import annotations

import functools
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, make_url

from ab.nn.stat import engine as engines

VERSION_TABLE = "ab_nn_alembic_version"
SCRIPTS = Path(__file__).with_name("alembic")
LEGACY_TABLE = "ab_nn_schema"
"""Where the hand-written migrations before Alembic recorded their version (1 to 4)."""
LOCK = "ab_nn_schema"
"""The advisory lock upgrades hold on PostgreSQL (the one the migrations before Alembic held too)."""


class SchemaError(engines.DatabaseError):
    """The database is not at this code's schema revision; the message says what to do."""


class Outdated(SchemaError):
    """Older than this code, or without tables: ``python -m ab.nn.stat upgrade`` brings it up."""


class Missing(Outdated):
    """No statistics tables yet (a new database): the runner creates them."""


class TooNew(SchemaError):
    """Written by newer code, whose schema this code does not know: neither read nor written here."""


@functools.lru_cache(maxsize=4)
def _scripts(location: Path):
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(location))


def head() -> str:
    """The newest revision this code knows."""
    heads = _scripts(SCRIPTS).get_heads()
    if len(heads) != 1:
        raise SchemaError(f"the schema revisions in {SCRIPTS} have {len(heads)} heads ({', '.join(heads)}), "
                          f"not one: merge them (docs/guide/schema-upgrades.md)")
    return heads[0]


def _known(revision: str) -> bool:
    return revision in {script.revision for script in _scripts(SCRIPTS).walk_revisions()}


def shown(url: str) -> str:
    """The URL as messages may show it (no password)."""
    return make_url(url).render_as_string(hide_password=True)


def _heads(connection: Connection) -> tuple[str, ...]:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_heads()


def _describe(connection: Connection, heads: tuple[str, ...]) -> str:
    """Where the database stands, in words: a revision, the schema before Alembic, or nothing yet."""
    if heads:
        return f"revision {', '.join(heads)}"
    tables = set(inspect(connection).get_table_names())
    if LEGACY_TABLE in tables:
        version = connection.execute(text(f"SELECT max(version) FROM {LEGACY_TABLE}")).scalar() or 1
        return f"the schema before Alembic (version {version})"
    return "the schema before Alembic (version 1)" if "trial" in tables else "no tables"


def _refuse_newer(url: str, heads: tuple[str, ...]) -> None:
    unknown = [revision for revision in heads if not _known(revision)]
    if unknown:
        raise TooNew(f"the statistics database {shown(url)} is at schema revision {', '.join(unknown)}, which this "
                     f"code does not know (its newest is {head()}): it was written by a newer ab.nn; use that version")


@contextmanager
def locked(url: str) -> Iterator[Connection]:
    """A transaction on ``url`` that holds its write lock (SQLite's ``BEGIN IMMEDIATE``, an advisory lock
    on PostgreSQL), so that processes opening one new database together take turns. SQLite's foreign
    keys are off inside it: a batch migration copies a table and drops the original (Alembic's SQLite
    recipe), which enforced keys would refuse."""
    made = engines.engine(url, writer=True)
    with made.connect() as connection:
        raw = connection.connection.driver_connection if made.dialect.name == "sqlite" else None
        if raw is not None:
            raw.execute("PRAGMA foreign_keys=OFF")  # outside a transaction, where SQLite honours it
        try:
            with connection.begin():
                engines.hold_transaction_lock(connection, LOCK)
                yield connection
        finally:
            if raw is not None:
                raw.execute("PRAGMA foreign_keys=ON")


def _orphans(connection: Connection) -> int:
    """Rows whose foreign key points nowhere (SQLite; checked around migrations that run without keys)."""
    if connection.dialect.name != "sqlite":
        return 0
    return len(connection.exec_driver_sql("PRAGMA foreign_key_check").all())


def alembic_config(connection: Connection):
    """Alembic's configuration for running its commands (``upgrade``, ``check``) on ``connection``."""
    from alembic.config import Config

    config = Config(stdout=sys.stdout)  # Config's default is the sys.stdout of alembic's import: maybe closed since
    config.set_main_option("script_location", str(SCRIPTS))
    config.attributes["connection"] = connection
    return config


def upgrade(url: str) -> tuple[str, str]:
    """Bring the database at ``url`` to this code's revision: a new (empty or missing) one gets every
    table, one from before Alembic is completed and its data migrated, one at an older revision is
    upgraded, one at this revision is left alone, one from newer code is refused (``TooNew``).
    Returns where it stood and where it stands, in words."""
    target = head()
    with locked(url) as connection:
        heads = _heads(connection)
        before = _describe(connection, heads)
        _refuse_newer(url, heads)
        if heads != (target,):
            from alembic import command

            orphans = _orphans(connection)
            command.upgrade(alembic_config(connection), target)
            if _orphans(connection) > orphans:
                raise SchemaError(f"upgrading {shown(url)} from {before} to revision {target} left rows whose "
                                  f"foreign key points nowhere; nothing was changed (a revision needs fixing)")
    return before, f"revision {target}"


def require_current(url: str) -> None:
    """Refuse a database that is not at this code's revision (``Outdated``, ``TooNew``); never changes it."""
    target = head()
    path = engines.sqlite_file(url)
    if path is not None and not path.exists():
        raise Missing(f"there is no statistics database at {path} yet: the runner (python -m ab.nn.train) creates "
                      f"it, or run `python -m ab.nn.stat upgrade --db {shown(url)}`")
    with engines.engine(url, writer=False).connect() as connection:
        heads = _heads(connection)
        if heads == (target,):
            return
        _refuse_newer(url, heads)
        before = _describe(connection, heads)
    command = f"`python -m ab.nn.stat upgrade --db {shown(url)}`"
    if before == "no tables":
        raise Missing(f"the statistics database {shown(url)} has no tables yet: the runner (python -m ab.nn.train) "
                      f"creates them, or run {command}")
    raise Outdated(f"the statistics database {shown(url)} is at {before}, this code needs revision {target}: run "
                   f"{command} (the runner does it when it starts)")
