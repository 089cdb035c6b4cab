"""Copy a statistics database into another: our tables row by row (rows already there are kept),
and every Optuna study with ``optuna.copy_study``. Typical use: pull a PostgreSQL sweep shared by
many machines into a local SQLite file for analysis."""
from __future__ import annotations

import optuna
from sqlalchemy import inspect, select

from ab.nn.stat import engine as engines
from ab.nn.stat.schema import Base
from ab.nn.stat.store import StatStore, insert_ignore

CHUNK = 200  # rows per INSERT: SQLite allows at most 32,766 bound values per statement


def copy_database(source: str, target: str) -> dict[str, int]:
    """Rows copied per table (``optuna studies`` counts studies)."""
    reader = engines.engine(source, writer=False)
    store = StatStore(target)
    copied: dict[str, int] = {}
    existing = inspect(reader)
    for table in Base.metadata.sorted_tables:  # parents before children (foreign keys)
        if not existing.has_table(table.name):
            continue  # an older database: a table added later has nothing to copy
        mapped = next(m.class_ for m in Base.registry.mappers if m.local_table is table)
        present = {c["name"] for c in existing.get_columns(table.name)}
        columns = [c for c in table.columns if c.name in present]  # the source is only read, never migrated
        count = 0
        with reader.connect() as connection:
            result = connection.execution_options(stream_results=True).execute(select(*columns))
            while rows := result.fetchmany(CHUNK):
                with store.transaction() as session:
                    insert_ignore(session, mapped, [dict(row._mapping) for row in rows])
                count += len(rows)
        copied[table.name] = count
    store.advance_id_sequences()
    copied["optuna studies"] = _copy_studies(source, target)
    return copied


def _copy_studies(source: str, target: str) -> int:
    existing = set(optuna.get_all_study_names(storage=target))
    names = [n for n in optuna.get_all_study_names(storage=source) if n not in existing]
    for name in names:
        optuna.copy_study(from_study_name=name, from_storage=source, to_storage=target)
    return len(names)
