"""Baseline: the schema of 6 December 2026, from a new database or from any database of the schema
before Alembic.

Revision ID: 7f50c18d4e82
Revises:
Create Date: 2026-12-06

Three starting points, told apart by the tables present:

- no table of ours (a new database, perhaps with Optuna's tables): every table is created;
- tables from before Alembic, at the version the hand-written migrations recorded in ``ab_nn_schema``
  (1 where that table is missing): missing tables, nullable columns and indexes are added (what those
  migrations' ``create_all`` and ``ALTER TABLE ... ADD COLUMN`` did on every open), then the data
  migrations that version had not run yet (2: data keys, 3: trial uids, 4: the old ``lemur`` split
  renamed, code versions, accuracy scales);
- a database made by the code just before this revision (version 4, every column): nothing changes.

``ab_nn_schema`` is kept at version 4 (also on new databases), so that a release from before Alembic
that opens the database finds no migration left to run (its version-4 migration would rename every
``lemur`` split, which now names LEMUR's stratified protocol).

Frozen: everything below is a copy of what the code computed on 6 December 2026 (tables, the data key of
``ab.nn.dataset.identity``, split labels of ``ab.nn.dataset.settings``, accuracy scales of
``ab.nn.stat.accuracy_scale``); nothing from ab.nn is imported, so later changes there cannot change
what this revision does.
"""
from __future__ import annotations

import hashlib
import json
import math
import uuid
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op
from sqlalchemy.types import TypeDecorator, UserDefinedType

revision = "7f50c18d4e82"
down_revision = None
branch_labels = None
depends_on = None

LEGACY_VERSION = 4
"""The last version of the hand-written migrations (``ab_nn_schema``)."""


class _SqliteObject(UserDefinedType):
    cache_ok = True

    def get_col_spec(self, **kw):
        return "OBJECT"


class _PrmValue(TypeDecorator):
    """LEMUR's ``OBJECT`` column in SQLite, JSON elsewhere."""

    impl = sa.JSON
    cache_ok = True

    def load_dialect_impl(self, dialect):
        return dialect.type_descriptor(_SqliteObject() if dialect.name == "sqlite" else sa.JSON())


def _schema() -> sa.MetaData:
    metadata = sa.MetaData()
    sa.Table("ab_nn_schema", metadata,
             sa.Column("version", sa.Integer(), nullable=False),
             sa.Column("migrated_at", sa.DateTime(timezone=True), nullable=True),
             sa.PrimaryKeyConstraint("version"))
    sa.Table("code_version", metadata,
             sa.Column("kind", sa.String(length=16), nullable=False),
             sa.Column("id", sa.Text(), nullable=False),
             sa.Column("name", sa.Text(), nullable=False),
             sa.Column("code", sa.Text(), nullable=False),
             sa.PrimaryKeyConstraint("kind", "id"))
    sa.Table("lease", metadata,
             sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
             sa.Column("host", sa.Text(), nullable=True),
             sa.Column("pid", sa.Integer(), nullable=True),
             sa.Column("boot_id", sa.Text(), nullable=True),
             sa.Column("pid_namespace", sa.Text(), nullable=True),
             sa.Column("process_started", sa.Float(), nullable=True),
             sa.Column("ttl_seconds", sa.Float(), nullable=True),
             sa.Column("started_at", sa.DateTime(), nullable=True),
             sa.Column("beat_at", sa.DateTime(), nullable=True),
             sa.Column("released_at", sa.DateTime(), nullable=True),
             sa.PrimaryKeyConstraint("id"))
    sa.Table("metric", metadata,
             sa.Column("name", sa.Text(), nullable=False),
             sa.Column("code", sa.Text(), nullable=False),
             sa.Column("id", sa.Text(), nullable=False),
             sa.PrimaryKeyConstraint("name"),
             sa.Index("ix_metric_id", "id"))
    sa.Table("nn", metadata,
             sa.Column("name", sa.Text(), nullable=False),
             sa.Column("code", sa.Text(), nullable=False),
             sa.Column("id", sa.Text(), nullable=False),
             sa.PrimaryKeyConstraint("name"),
             sa.Index("ix_nn_id", "id"))
    sa.Table("nn_minhash", metadata,
             sa.Column("nn", sa.Text(), nullable=False),
             sa.Column("num_perm", sa.Integer(), nullable=False),
             sa.Column("shingle_n", sa.Integer(), nullable=False),
             sa.Column("hashvalues", sa.LargeBinary(), nullable=False),
             sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
             sa.Column("code_id", sa.Text(), nullable=True),
             sa.PrimaryKeyConstraint("nn"))
    sa.Table("nn_stat", metadata,
             sa.Column("id", sa.Text(), nullable=False),
             sa.Column("nn_name", sa.Text(), nullable=False),
             sa.Column("prm_id", sa.Text(), nullable=False),
             sa.Column("total_layers", sa.Integer(), nullable=True),
             sa.Column("leaf_layers", sa.Integer(), nullable=True),
             sa.Column("max_depth", sa.Integer(), nullable=True),
             sa.Column("total_params", sa.BigInteger(), nullable=True),
             sa.Column("trainable_params", sa.BigInteger(), nullable=True),
             sa.Column("frozen_params", sa.BigInteger(), nullable=True),
             sa.Column("flops", sa.BigInteger(), nullable=True),
             sa.Column("model_size_mb", sa.Float(), nullable=True),
             sa.Column("buffer_size_mb", sa.Float(), nullable=True),
             sa.Column("total_memory_mb", sa.Float(), nullable=True),
             sa.Column("dropout_count", sa.Integer(), nullable=True),
             sa.Column("has_attention", sa.Integer(), nullable=True),
             sa.Column("has_residual_connections", sa.Integer(), nullable=True),
             sa.Column("is_resnet_like", sa.Integer(), nullable=True),
             sa.Column("is_vgg_like", sa.Integer(), nullable=True),
             sa.Column("is_inception_like", sa.Integer(), nullable=True),
             sa.Column("is_densenet_like", sa.Integer(), nullable=True),
             sa.Column("is_unet_like", sa.Integer(), nullable=True),
             sa.Column("is_transformer_like", sa.Integer(), nullable=True),
             sa.Column("is_mobilenet_like", sa.Integer(), nullable=True),
             sa.Column("is_efficientnet_like", sa.Integer(), nullable=True),
             sa.Column("code_length", sa.Integer(), nullable=True),
             sa.Column("num_classes_defined", sa.Integer(), nullable=True),
             sa.Column("num_functions_defined", sa.Integer(), nullable=True),
             sa.Column("uses_sequential", sa.Integer(), nullable=True),
             sa.Column("uses_modulelist", sa.Integer(), nullable=True),
             sa.Column("uses_moduledict", sa.Integer(), nullable=True),
             sa.Column("meta_json", sa.Text(), nullable=True),
             sa.Column("error", sa.Text(), nullable=True),
             sa.Column("macs", sa.BigInteger(), nullable=True),
             sa.Column("in_shape", sa.Text(), nullable=True),
             sa.Column("code_id", sa.Text(), nullable=True),
             sa.PrimaryKeyConstraint("id"),
             sa.Index("ix_nn_stat_nn_name", "nn_name"),
             sa.Index("ix_nn_stat_prm_id", "prm_id"))
    sa.Table("prm", metadata,
             sa.Column("uid", sa.Text(), nullable=False),
             sa.Column("name", sa.Text(), nullable=False),
             sa.Column("value", _PrmValue(), nullable=False),
             sa.PrimaryKeyConstraint("uid", "name"))
    sa.Table("transform", metadata,
             sa.Column("name", sa.Text(), nullable=False),
             sa.Column("code", sa.Text(), nullable=False),
             sa.Column("id", sa.Text(), nullable=False),
             sa.PrimaryKeyConstraint("name"),
             sa.Index("ix_transform_id", "id"))
    sa.Table("trial", metadata,
             sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
             sa.Column("uid", sa.Text(), nullable=True),
             sa.Column("config", sa.Text(), nullable=False),
             sa.Column("task", sa.Text(), nullable=False),
             sa.Column("dataset", sa.Text(), nullable=False),
             sa.Column("metric", sa.Text(), nullable=False),
             sa.Column("nn", sa.Text(), nullable=False),
             sa.Column("transform", sa.Text(), nullable=True),
             sa.Column("prm", sa.Text(), nullable=True),
             sa.Column("study", sa.Text(), nullable=False),
             sa.Column("number", sa.Integer(), nullable=True),
             sa.Column("optuna_trial_id", sa.Integer(), nullable=True),
             sa.Column("status", sa.String(length=16), nullable=False),
             sa.Column("error", sa.Text(), nullable=True),
             sa.Column("seed", sa.Integer(), nullable=True),
             sa.Column("split", sa.Text(), nullable=True),
             sa.Column("split_seed", sa.Integer(), nullable=True),
             sa.Column("data_key", sa.Text(), nullable=True),
             sa.Column("train_digest", sa.Text(), nullable=True),
             sa.Column("eval_digest", sa.Text(), nullable=True),
             sa.Column("test_digest", sa.Text(), nullable=True),
             sa.Column("replica_of", sa.Integer(), nullable=True),
             sa.Column("epoch_max", sa.Integer(), nullable=False),
             sa.Column("epochs_done", sa.Integer(), nullable=False),
             sa.Column("max_samples", sa.Integer(), nullable=True),
             sa.Column("n_train", sa.Integer(), nullable=True),
             sa.Column("n_eval", sa.Integer(), nullable=True),
             sa.Column("n_test", sa.Integer(), nullable=True),
             sa.Column("in_shape", sa.Text(), nullable=True),
             sa.Column("params", sa.BigInteger(), nullable=True),
             sa.Column("macs", sa.BigInteger(), nullable=True),
             sa.Column("data_fingerprint", sa.Text(), nullable=True),
             sa.Column("eval_accuracy", sa.Float(), nullable=True),
             sa.Column("eval_mae", sa.Float(), nullable=True),
             sa.Column("test_accuracy", sa.Float(), nullable=True),
             sa.Column("test_mae", sa.Float(), nullable=True),
             sa.Column("test_mae_low", sa.Float(), nullable=True),
             sa.Column("test_mae_high", sa.Float(), nullable=True),
             sa.Column("duration", sa.BigInteger(), nullable=True),
             sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
             sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
             sa.Column("host", sa.Text(), nullable=True),
             sa.Column("device", sa.Text(), nullable=True),
             sa.Column("pid", sa.Integer(), nullable=True),
             sa.Column("lease_id", sa.Integer(), nullable=True),
             sa.Column("nn_code_id", sa.Text(), nullable=True),
             sa.Column("bookkeeping_seconds", sa.Float(), nullable=True),
             sa.PrimaryKeyConstraint("id"),
             sa.UniqueConstraint("study", "number"),
             sa.Index("ix_trial_config", "config"),
             sa.Index("ix_trial_config_key", "config", "data_key", "status"),
             sa.Index("ix_trial_nn", "nn"),
             sa.Index("ix_trial_status", "status"),
             sa.Index("ix_trial_uid", "uid", unique=True))
    sa.Table("export", metadata,
             sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
             sa.Column("trial_id", sa.Integer(), nullable=False),
             sa.Column("format", sa.String(length=16), nullable=False),
             sa.Column("precision", sa.String(length=16), nullable=False),
             sa.Column("converter", sa.Text(), nullable=True),
             sa.Column("path", sa.Text(), nullable=True),
             sa.Column("sha256", sa.Text(), nullable=True),
             sa.Column("size_bytes", sa.BigInteger(), nullable=True),
             sa.Column("layout", sa.String(length=8), nullable=True),
             sa.Column("input_shape", sa.Text(), nullable=True),
             sa.Column("eval_mae", sa.Float(), nullable=True),
             sa.Column("test_mae", sa.Float(), nullable=True),
             sa.Column("eval_max_diff", sa.Float(), nullable=True),
             sa.Column("test_max_diff", sa.Float(), nullable=True),
             sa.Column("n_eval", sa.Integer(), nullable=True),
             sa.Column("n_test", sa.Integer(), nullable=True),
             sa.Column("seconds", sa.Float(), nullable=True),
             sa.Column("status", sa.String(length=16), nullable=False),
             sa.Column("error", sa.Text(), nullable=True),
             sa.Column("host", sa.Text(), nullable=True),
             sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
             sa.ForeignKeyConstraint(["trial_id"], ["trial.id"]),
             sa.PrimaryKeyConstraint("id"),
             sa.Index("ix_export_trial_id", "trial_id"))
    sa.Table("fusion", metadata,
             sa.Column("trial_id", sa.Integer(), nullable=False),
             sa.Column("experts", sa.Text(), nullable=False),
             sa.Column("settings", sa.Text(), nullable=False),
             sa.Column("parameters", sa.Text(), nullable=False),
             sa.Column("path", sa.Text(), nullable=True),
             sa.Column("sha256", sa.Text(), nullable=True),
             sa.ForeignKeyConstraint(["trial_id"], ["trial.id"]),
             sa.PrimaryKeyConstraint("trial_id"))
    sa.Table("prediction", metadata,
             sa.Column("trial_id", sa.Integer(), nullable=False),
             sa.Column("split", sa.String(length=8), nullable=False),
             sa.Column("position", sa.Integer(), nullable=False),
             sa.Column("image_id", sa.Text(), nullable=True),
             sa.Column("age", sa.Float(), nullable=False),
             sa.Column("predicted", sa.Float(), nullable=True),
             sa.ForeignKeyConstraint(["trial_id"], ["trial.id"]),
             sa.PrimaryKeyConstraint("trial_id", "split", "position"))
    sa.Table("stat", metadata,
             sa.Column("id", sa.Text(), nullable=False),
             sa.Column("accuracy", sa.Float(), nullable=True),
             sa.Column("epoch", sa.Integer(), nullable=False),
             sa.Column("duration", sa.BigInteger(), nullable=True),
             sa.Column("task", sa.Text(), nullable=False),
             sa.Column("dataset", sa.Text(), nullable=False),
             sa.Column("nn", sa.Text(), nullable=False),
             sa.Column("transform", sa.Text(), nullable=True),
             sa.Column("metric", sa.Text(), nullable=False),
             sa.Column("prm", sa.Text(), nullable=True),
             sa.Column("trial_id", sa.Integer(), nullable=True),
             sa.Column("mae", sa.Float(), nullable=True),
             sa.Column("accuracy_scale", sa.Float(), nullable=True),
             sa.Column("nn_code_id", sa.Text(), nullable=True),
             sa.Column("transform_code_id", sa.Text(), nullable=True),
             sa.Column("metric_code_id", sa.Text(), nullable=True),
             sa.Column("extra", sa.Text(), nullable=True),
             sa.ForeignKeyConstraint(["metric"], ["metric.name"]),
             sa.ForeignKeyConstraint(["nn"], ["nn.name"]),
             sa.ForeignKeyConstraint(["transform"], ["transform.name"]),
             sa.ForeignKeyConstraint(["trial_id"], ["trial.id"]),
             sa.PrimaryKeyConstraint("id"),
             sa.Index("idx_accuracy_desc", "accuracy"),
             sa.Index("ix_stat_dataset", "dataset"),
             sa.Index("ix_stat_metric", "metric"),
             sa.Index("ix_stat_nn", "nn"),
             sa.Index("ix_stat_prm", "prm"),
             sa.Index("ix_stat_task", "task"),
             sa.Index("ix_stat_transform", "transform"),
             sa.Index("ix_stat_trial_id", "trial_id"))
    sa.Table("latency", metadata,
             sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
             sa.Column("export_id", sa.Integer(), nullable=False),
             sa.Column("trial_id", sa.Integer(), nullable=False),
             sa.Column("runtime", sa.String(length=24), nullable=False),
             sa.Column("threads", sa.Integer(), nullable=False),
             sa.Column("batch", sa.Integer(), nullable=False),
             sa.Column("input_shape", sa.Text(), nullable=True),
             sa.Column("warmup", sa.Integer(), nullable=True),
             sa.Column("runs", sa.Integer(), nullable=True),
             sa.Column("median_ms", sa.Float(), nullable=True),
             sa.Column("p90_ms", sa.Float(), nullable=True),
             sa.Column("min_ms", sa.Float(), nullable=True),
             sa.Column("mean_ms", sa.Float(), nullable=True),
             sa.Column("cpu", sa.Text(), nullable=True),
             sa.Column("cpu_count", sa.Integer(), nullable=True),
             sa.Column("host", sa.Text(), nullable=True),
             sa.Column("versions", sa.Text(), nullable=True),
             sa.Column("status", sa.String(length=16), nullable=False),
             sa.Column("error", sa.Text(), nullable=True),
             sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
             sa.ForeignKeyConstraint(["export_id"], ["export.id"]),
             sa.ForeignKeyConstraint(["trial_id"], ["trial.id"]),
             sa.PrimaryKeyConstraint("id"),
             sa.Index("ix_latency_export_id", "export_id"),
             sa.Index("ix_latency_trial_id", "trial_id"))
    sa.Table("stat_metric", metadata,
             sa.Column("stat_id", sa.Text(), nullable=False),
             sa.Column("split", sa.String(length=8), nullable=False),
             sa.Column("name", sa.Text(), nullable=False),
             sa.Column("value", sa.Float(), nullable=True),
             sa.ForeignKeyConstraint(["stat_id"], ["stat.id"]),
             sa.PrimaryKeyConstraint("stat_id", "split", "name"))
    sa.Table("train_stat", metadata,
             sa.Column("stat_id", sa.Text(), nullable=False),
             sa.Column("train_loss", sa.Float(), nullable=True),
             sa.Column("test_loss", sa.Float(), nullable=True),
             sa.Column("train_accuracy", sa.Float(), nullable=True),
             sa.Column("gradient_norm", sa.Float(), nullable=True),
             sa.Column("samples_per_second", sa.Float(), nullable=True),
             sa.Column("epoch_max", sa.Integer(), nullable=True),
             sa.Column("cpu_count", sa.Integer(), nullable=True),
             sa.Column("cpu_type", sa.Text(), nullable=True),
             sa.Column("total_ram_kb", sa.BigInteger(), nullable=True),
             sa.Column("occupied_ram_kb", sa.BigInteger(), nullable=True),
             sa.Column("gpu_type", sa.Text(), nullable=True),
             sa.Column("gpu_memory_kb", sa.BigInteger(), nullable=True),
             sa.Column("lr", sa.Float(), nullable=True),
             sa.Column("train_seconds", sa.Float(), nullable=True),
             sa.Column("eval_seconds", sa.Float(), nullable=True),
             sa.Column("truncated", sa.Boolean(), nullable=True),
             sa.Column("cpu_usage_percent", sa.Float(), nullable=True),
             sa.Column("ram_usage_percent", sa.Float(), nullable=True),
             sa.Column("gpu_total_memory_kb", sa.BigInteger(), nullable=True),
             sa.Column("occupied_gpu_memory_kb", sa.BigInteger(), nullable=True),
             sa.Column("gpu_memory_usage_percent", sa.Float(), nullable=True),
             sa.ForeignKeyConstraint(["stat_id"], ["stat.id"]),
             sa.PrimaryKeyConstraint("stat_id"))
    return metadata


def upgrade() -> None:
    bind = op.get_bind()
    metadata = _schema()
    present = set(sa.inspect(bind).get_table_names())
    if not present & set(metadata.tables):
        metadata.create_all(bind)
    else:
        recorded = _recorded_version(bind, present)
        _complete(bind, metadata)
        for version, migrate in ((2, _data_keys), (3, _trial_uids), (4, _lemur_parity)):
            if version > recorded:
                migrate(bind)
    if _recorded_version(bind, set(sa.inspect(bind).get_table_names())) < LEGACY_VERSION:
        bind.execute(metadata.tables["ab_nn_schema"].insert().values(version=LEGACY_VERSION,
                                                                      migrated_at=datetime.now(timezone.utc)))


def downgrade() -> None:
    raise NotImplementedError("the baseline is the first revision: there is nothing to go back to")


def _recorded_version(bind, present: set[str]) -> int:
    if "ab_nn_schema" not in present:
        return 1
    return bind.execute(sa.text("SELECT max(version) FROM ab_nn_schema")).scalar() or 1


def _complete(bind, metadata: sa.MetaData) -> None:
    """Missing tables, missing (nullable) columns and missing indexes; existing rows stay as they are."""
    inspector = sa.inspect(bind)
    present = set(inspector.get_table_names())
    for table in metadata.sorted_tables:
        if table.name not in present:
            table.create(bind)
            continue
        have = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            if not column.nullable:
                raise RuntimeError(f"table {table.name} lacks the required column {column.name}, which no "
                                   f"schema before Alembic left out; this database was not made by ab.nn")
            op.add_column(table.name, sa.Column(column.name, column.type, nullable=True))
        for index in table.indexes:
            index.create(bind, checkfirst=True)


def _update(bind, table, rows: list[dict]) -> None:
    """``UPDATE table SET ... WHERE id = row['_id']`` for every row, in one executemany."""
    if rows:
        names = [name for name in rows[0] if name != "_id"]
        statement = table.update().where(table.c.id == sa.bindparam("_id")) \
            .values({name: sa.bindparam(f"new_{name}") for name in names})
        bind.execute(statement, [{"_id": row["_id"], **{f"new_{n}": row[n] for n in names}} for row in rows])


PROTOCOLS = ("paper", "lemur", "lemur-random", "kfold")
ALIGNED = "+aligned"
PARTS = ("train", "eval", "test")


def _split(label: str | None, max_samples) -> tuple[str, int, int | None]:
    """(label as recorded from now on, split seed, sample cap) of a recorded split; ValueError for one
    that names no known protocol."""
    label = label or "paper/42"
    align = label.endswith(ALIGNED)
    protocol, _, rest = label.removesuffix(ALIGNED).partition("/")
    seed_text, _, fold = rest.partition("/")
    seed = int(seed_text or 42)
    limit = None if max_samples is None else int(max_samples)
    if protocol not in PROTOCOLS or (limit is not None and limit < 1):
        raise ValueError(label)
    if protocol == "kfold":
        index, folds = (int(fold.partition("of")[0]), int(fold.partition("of")[2])) if fold else (0, 5)
        if folds < 3 or not 0 <= index < folds:
            raise ValueError(label)
        label = f"kfold/{seed}/{index}of{folds}"
    else:
        label = f"{protocol}/{seed}"
    return label + (ALIGNED if align else ""), seed, limit


def _data_key(dataset: str, label: str, limit: int | None, digests: dict | None) -> str:
    payload = {"dataset": dataset, "split": label, "max_samples": limit,
               "digests": [digests.get(part) for part in PARTS] if digests else None}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def _apart(dataset: str, split: str | None, max_samples) -> str:
    """The key of a split this code cannot read: apart from every other."""
    return hashlib.sha256(f"{dataset}|{split}|{max_samples}".encode()).hexdigest()[:12]


TRIAL = sa.table("trial", *map(sa.column, ("id", "uid", "dataset", "split", "split_seed", "max_samples", "data_key",
                                           "train_digest", "eval_digest", "test_digest", "nn_code_id")))
STAT = sa.table("stat", *map(sa.column, ("id", "trial_id", "nn", "transform", "metric", "mae", "accuracy",
                                         "accuracy_scale", "nn_code_id", "transform_code_id", "metric_code_id")))
CODE_VERSION = sa.table("code_version", *map(sa.column, ("kind", "id", "name", "code")))


def _data_keys(bind) -> None:
    """Version 2: every trial gets its split seed and data key. Trials recorded before part digests
    existed get a key from their split settings alone."""
    rows = bind.execute(sa.select(TRIAL.c.id, TRIAL.c.dataset, TRIAL.c.split, TRIAL.c.max_samples)
                        .where(TRIAL.c.data_key.is_(None))).all()
    updates = []
    for trial_id, dataset, split, max_samples in rows:
        try:
            label, seed, limit = _split(split, max_samples)
            key = _data_key(dataset, label, limit, None)
        except ValueError:
            key, seed = _apart(dataset, split, max_samples), None
        updates.append({"_id": trial_id, "data_key": key, "split_seed": seed})
    _update(bind, TRIAL, updates)


def _trial_uids(bind) -> None:
    """Version 3: every trial gets a globally unique id, by which copies and imports recognise it."""
    rows = bind.execute(sa.select(TRIAL.c.id).where(TRIAL.c.uid.is_(None))).all()
    _update(bind, TRIAL, [{"_id": trial_id, "uid": uuid.uuid4().hex} for (trial_id,) in rows])


def _lemur_parity(bind) -> None:
    """Version 4: LEMUR 2.2.11 parity."""
    _lemur_random(bind)
    _code_versions(bind)
    _accuracy_scales(bind)


def _lemur_random(bind) -> None:
    """Trials recorded as ``lemur/<seed>`` before version 4 used a random 70/30 split, now
    ``lemur-random/<seed>`` (``lemur`` names LEMUR 2.2.11's stratified protocol); their data key is
    computed again from the new label and their part digests, where recorded."""
    rows = bind.execute(sa.select(TRIAL.c.id, TRIAL.c.dataset, TRIAL.c.split, TRIAL.c.max_samples,
                                  TRIAL.c.train_digest, TRIAL.c.eval_digest, TRIAL.c.test_digest)
                        .where(TRIAL.c.split.like("lemur/%"))).all()
    updates = []
    for trial_id, dataset, split, max_samples, *digests in rows:
        renamed = "lemur-random/" + split.split("/", 1)[1]
        known = dict(zip(PARTS, digests)) if any(digests) else None
        try:
            label, _, limit = _split(renamed, max_samples)
            key = _data_key(dataset, label, limit, known)
        except ValueError:
            key = _apart(dataset, renamed, max_samples)
        updates.append({"_id": trial_id, "split": renamed, "data_key": key})
    _update(bind, TRIAL, updates)


def _code_versions(bind) -> None:
    """Every code in the code tables becomes a ``code_version``; the epochs of recorded trials get the
    checksums of their code (the model's as its trial reserved it). Epochs without a trial (imported
    from LEMUR's JSON, whose code was taken from files of the same name) keep unknown code."""
    known = {tuple(row) for row in bind.execute(sa.select(CODE_VERSION.c.kind, CODE_VERSION.c.id))}
    for kind in ("nn", "transform", "metric"):
        code = sa.table(kind, sa.column("name"), sa.column("code"), sa.column("id"))
        for name, text, checksum in bind.execute(sa.select(code.c.name, code.c.code, code.c.id)).all():
            if (kind, checksum) not in known and text:
                bind.execute(CODE_VERSION.insert().values(kind=kind, id=checksum, name=name, code=text))
                known.add((kind, checksum))
    nn, transform, metric = (sa.table(kind, sa.column("name"), sa.column("id"))
                             for kind in ("nn", "transform", "metric"))
    rows = bind.execute(
        sa.select(STAT.c.id, TRIAL.c.nn_code_id, nn.c.id, transform.c.id, metric.c.id).select_from(STAT)
        .join(TRIAL, TRIAL.c.id == STAT.c.trial_id).outerjoin(nn, nn.c.name == STAT.c.nn)
        .outerjoin(transform, transform.c.name == STAT.c.transform).outerjoin(metric, metric.c.name == STAT.c.metric)
        .where(sa.and_(STAT.c.nn_code_id.is_(None), STAT.c.trial_id.is_not(None)))).all()
    _update(bind, STAT, [{"_id": stat_id, "nn_code_id": reserved or model, "transform_code_id": transform_id,
                          "metric_code_id": metric_id}
                         for stat_id, reserved, model, transform_id, metric_id in rows])


SCALES = (15.0, 20.0)
"""The accuracy scales known on 6 December 2026 (``accuracy = 1 - MAE/scale``)."""


def _implied(mae, accuracy) -> float | None:
    if mae is None or accuracy is None or not (math.isfinite(mae) and math.isfinite(accuracy)) or accuracy <= 0:
        return None
    return next((scale for scale in SCALES if abs(1.0 - mae / scale - accuracy) <= 1e-6), None)


def _accuracy_scales(bind) -> None:
    """Rows with a raw MAE get the scale their accuracy implies."""
    rows = bind.execute(sa.select(STAT.c.id, STAT.c.mae, STAT.c.accuracy)
                        .where(STAT.c.accuracy_scale.is_(None), STAT.c.mae.is_not(None))).all()
    _update(bind, STAT, [{"_id": stat_id, "accuracy_scale": scale} for stat_id, mae, accuracy in rows
                         if (scale := _implied(mae, accuracy)) is not None])
