"""Alembic's environment for the statistics database: this project's tables only, versioned in
``ab_nn_alembic_version``. Optuna keeps its own ``alembic_version`` and tables in the same database;
they are never reflected, compared or touched here.

``ab.nn.stat.versions.upgrade`` hands in its connection, which holds the database's write lock; the
``alembic`` command line (``-x db=URL``) takes the same lock.
"""
from alembic import context

from ab.nn.stat import versions
from ab.nn.stat.schema import Base, PrmValue


def ours(name, type_, parent_names) -> bool:
    """Only tables this project declares are compared: autogenerate must never propose dropping
    Optuna's (or the pre-Alembic ``ab_nn_schema``)."""
    return type_ != "table" or name in Base.metadata.tables


def same_type(context, inspected_column, metadata_column, inspected_type, metadata_type) -> bool | None:
    """SQLite reads LEMUR's ``OBJECT`` column back as ``NUMERIC``: not a change. ``None``: Alembic decides."""
    if isinstance(metadata_type, PrmValue) and context.dialect.name == "sqlite":
        return False
    return None


def run(connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, version_table=versions.VERSION_TABLE,
                      include_name=ours, compare_type=same_type, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("the statistics schema is upgraded online only: python -m ab.nn.stat upgrade --db URL")
given = context.config.attributes.get("connection")
if given is not None:
    run(given)
else:
    url = context.get_x_argument(as_dictionary=True).get("db")
    if not url:
        raise SystemExit("name the database: alembic -c ab/nn/stat/alembic/alembic.ini -x db=URL ...")
    with versions.locked(url) as connection:
        run(connection)
