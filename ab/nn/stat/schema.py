"""Tables of the statistics database.

LEMUR's tables keep LEMUR's names and columns (``nn``, ``transform``, ``metric``, ``prm``,
``stat``, ``train_stat``) so that LEMUR's SQL keeps working; what LEMUR lacks lives in extra
nullable columns and in new tables: ``trial`` (one row per Optuna trial, whatever its outcome)
and ``stat_metric`` (every metric value of an epoch, on the eval and the test set). Optuna's own
tables (``studies``, ``trials``, ...) share the database but are Optuna's business.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, LargeBinary,
                        String, Text, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, UserDefinedType


class _SqliteObject(UserDefinedType):
    """LEMUR's ``OBJECT`` column: SQLite keeps ints, floats and strings as they are."""

    cache_ok = True

    def get_col_spec(self, **kw):
        return "OBJECT"


class PrmValue(TypeDecorator):
    """A hyperparameter value (int, float or str): native in SQLite, JSON elsewhere."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(_SqliteObject())
        return dialect.type_descriptor(JSON())

    def process_bind_param(self, value, dialect):
        return int(value) if isinstance(value, bool) else value


class Base(DeclarativeBase):
    pass


class _Code:
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    code: Mapped[str] = mapped_column(Text, nullable=False)
    id: Mapped[str] = mapped_column(Text, nullable=False, index=True)


class Nn(_Code, Base):
    __tablename__ = "nn"


class Transform(_Code, Base):
    __tablename__ = "transform"


class Metric(_Code, Base):
    __tablename__ = "metric"


class Prm(Base):
    """Hyperparameter sets, keyed by LEMUR's uid (md5 of the set) and the parameter name."""

    __tablename__ = "prm"
    uid: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    value = mapped_column(PrmValue, nullable=False)


class Trial(Base):
    """One Optuna trial of one config: its outcome, provenance and final numbers.

    Its results are comparable only with trials of the same config and ``data_key`` (dataset, split
    protocol, split seed, fold, ``max_samples`` and the digests of the image lists of the three
    parts; ``ab.nn.dataset.identity``)."""

    __tablename__ = "trial"
    __table_args__ = (UniqueConstraint("study", "number"), Index("ix_trial_config_key", "config", "data_key", "status"),
                      Index("ix_trial_uid", "uid", unique=True))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uid: Mapped[str | None] = mapped_column(Text)  # globally unique (uuid4): copies and imports map ids by it
    config: Mapped[str] = mapped_column(Text, index=True)
    task: Mapped[str] = mapped_column(Text)
    dataset: Mapped[str] = mapped_column(Text)
    metric: Mapped[str] = mapped_column(Text)
    nn: Mapped[str] = mapped_column(Text, index=True)
    transform: Mapped[str | None] = mapped_column(Text)
    prm: Mapped[str | None] = mapped_column(Text)
    study: Mapped[str] = mapped_column(Text)
    number: Mapped[int | None] = mapped_column(Integer)
    optuna_trial_id: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    seed: Mapped[int | None] = mapped_column(Integer)          # training seed (initialisation, order)
    split: Mapped[str | None] = mapped_column(Text)           # protocol/split seed[/fold], e.g. paper/42
    split_seed: Mapped[int | None] = mapped_column(Integer)
    data_key: Mapped[str | None] = mapped_column(Text)
    train_digest: Mapped[str | None] = mapped_column(Text)
    eval_digest: Mapped[str | None] = mapped_column(Text)
    test_digest: Mapped[str | None] = mapped_column(Text)
    replica_of: Mapped[int | None] = mapped_column(Integer)   # first trial of a group of --seeds replicas
    epoch_max: Mapped[int] = mapped_column(Integer)
    epochs_done: Mapped[int] = mapped_column(Integer, default=0)
    max_samples: Mapped[int | None] = mapped_column(Integer)
    n_train: Mapped[int | None] = mapped_column(Integer)
    n_eval: Mapped[int | None] = mapped_column(Integer)
    n_test: Mapped[int | None] = mapped_column(Integer)
    in_shape: Mapped[str | None] = mapped_column(Text)
    params: Mapped[int | None] = mapped_column(BigInteger)  # parameters of the model
    macs: Mapped[int | None] = mapped_column(BigInteger)    # multiply-adds of one batch-1 forward pass
    data_fingerprint: Mapped[str | None] = mapped_column(Text)
    eval_accuracy: Mapped[float | None] = mapped_column(Float)
    eval_mae: Mapped[float | None] = mapped_column(Float)
    test_accuracy: Mapped[float | None] = mapped_column(Float)
    test_mae: Mapped[float | None] = mapped_column(Float)
    test_mae_low: Mapped[float | None] = mapped_column(Float)   # 95% bootstrap interval over test images
    test_mae_high: Mapped[float | None] = mapped_column(Float)
    duration: Mapped[int | None] = mapped_column(BigInteger)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    host: Mapped[str | None] = mapped_column(Text)
    device: Mapped[str | None] = mapped_column(Text)
    pid: Mapped[int | None] = mapped_column(Integer)
    lease_id: Mapped[int | None] = mapped_column(Integer)  # the runner that runs it (ab.nn.stat.lease)
    nn_code_id: Mapped[str | None] = mapped_column(Text)
    bookkeeping_seconds: Mapped[float | None] = mapped_column(Float)  # database writes + JSON mirror
    search_params: Mapped[str | None] = mapped_column(Text)  # JSON: the sampled values and their distributions
    eval_group_gap: Mapped[float | None] = mapped_column(Float)  # years, on the validation part: see Study
    sandbox: Mapped[str | None] = mapped_column(Text)  # how its code ran: bubblewrap, or none and why (ab.nn.sweep.isolation)


class Stat(Base):
    """LEMUR's per-epoch row. Additions: ``trial_id``; ``mae`` (raw eval MAE in years);
    ``accuracy_scale`` (the MAE at which the metric's ``accuracy = max(0, 1 - MAE/scale)`` reaches 0:
    20 for this project's ``mae``, 15 for LEMUR's shipped age runs; NULL where unknown); the ids
    (LEMUR's code checksums) of the model, transform and metric code this row was produced with
    (NULL: unknown, e.g. rows imported from LEMUR's JSON, which carries no code; the code itself is in
    ``code_version``); ``extra``: what an imported LEMUR record held beyond the columns, as JSON, so
    that the JSON mirror writes it back as it was."""

    __tablename__ = "stat"
    __table_args__ = (Index("idx_accuracy_desc", "accuracy"),)

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    accuracy: Mapped[float | None] = mapped_column(Float)
    epoch: Mapped[int] = mapped_column(Integer)
    duration: Mapped[int | None] = mapped_column(BigInteger)
    task: Mapped[str] = mapped_column(Text, index=True)
    dataset: Mapped[str] = mapped_column(Text, index=True)
    nn: Mapped[str] = mapped_column(Text, ForeignKey("nn.name"), index=True)
    transform: Mapped[str | None] = mapped_column(Text, ForeignKey("transform.name"), index=True)
    metric: Mapped[str] = mapped_column(Text, ForeignKey("metric.name"), index=True)
    prm: Mapped[str | None] = mapped_column(Text, index=True)
    trial_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("trial.id"), index=True)
    mae: Mapped[float | None] = mapped_column(Float)
    accuracy_scale: Mapped[float | None] = mapped_column(Float)
    nn_code_id: Mapped[str | None] = mapped_column(Text)
    transform_code_id: Mapped[str | None] = mapped_column(Text)
    metric_code_id: Mapped[str | None] = mapped_column(Text)
    extra: Mapped[str | None] = mapped_column(Text)


class TrainStat(Base):
    """LEMUR's training diagnostics of one epoch (all 17 of LEMUR 2.2.11's columns), plus the learning
    rate, wall times and the epoch-limit flag."""

    __tablename__ = "train_stat"

    stat_id: Mapped[str] = mapped_column(Text, ForeignKey("stat.id"), primary_key=True)
    train_loss: Mapped[float | None] = mapped_column(Float)
    test_loss: Mapped[float | None] = mapped_column(Float)
    train_accuracy: Mapped[float | None] = mapped_column(Float)
    gradient_norm: Mapped[float | None] = mapped_column(Float)
    samples_per_second: Mapped[float | None] = mapped_column(Float)
    epoch_max: Mapped[int | None] = mapped_column(Integer)
    cpu_count: Mapped[int | None] = mapped_column(Integer)
    cpu_type: Mapped[str | None] = mapped_column(Text)
    total_ram_kb: Mapped[int | None] = mapped_column(BigInteger)
    occupied_ram_kb: Mapped[int | None] = mapped_column(BigInteger)
    gpu_type: Mapped[str | None] = mapped_column(Text)
    gpu_memory_kb: Mapped[int | None] = mapped_column(BigInteger)
    lr: Mapped[float | None] = mapped_column(Float)
    train_seconds: Mapped[float | None] = mapped_column(Float)
    eval_seconds: Mapped[float | None] = mapped_column(Float)
    truncated: Mapped[bool | None] = mapped_column(Boolean)
    cpu_usage_percent: Mapped[float | None] = mapped_column(Float)
    ram_usage_percent: Mapped[float | None] = mapped_column(Float)
    gpu_total_memory_kb: Mapped[int | None] = mapped_column(BigInteger)
    occupied_gpu_memory_kb: Mapped[int | None] = mapped_column(BigInteger)
    gpu_memory_usage_percent: Mapped[float | None] = mapped_column(Float)


class CodeVersion(Base):
    """Every version of model, transform and metric code ever recorded, by its LEMUR checksum
    (``kind``: ``nn``, ``transform`` or ``metric``). LEMUR's code tables hold one (the latest) code per
    name; a stat row's code is the version its ``*_code_id`` names, which stays right after the
    file changed."""

    __tablename__ = "code_version"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    code: Mapped[str] = mapped_column(Text)


class NnStat(Base):
    """LEMUR's architecture statistics of a model built with one hyperparameter set (``nn_stat``,
    LEMUR 2.2.11's columns; id = LEMUR's ``uuid4([nn_name, prm_id])``), computed by
    ``ab.nn.stat.architecture`` on first request. Additions: ``macs`` (multiply-adds of one batch-1
    forward pass; ``flops`` is twice it), ``in_shape`` and ``code_id`` (the code it was built from)."""

    __tablename__ = "nn_stat"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    nn_name: Mapped[str] = mapped_column(Text, index=True)
    prm_id: Mapped[str] = mapped_column(Text, index=True)
    total_layers: Mapped[int | None] = mapped_column(Integer)
    leaf_layers: Mapped[int | None] = mapped_column(Integer)
    max_depth: Mapped[int | None] = mapped_column(Integer)
    total_params: Mapped[int | None] = mapped_column(BigInteger)
    trainable_params: Mapped[int | None] = mapped_column(BigInteger)
    frozen_params: Mapped[int | None] = mapped_column(BigInteger)
    flops: Mapped[int | None] = mapped_column(BigInteger)
    model_size_mb: Mapped[float | None] = mapped_column(Float)
    buffer_size_mb: Mapped[float | None] = mapped_column(Float)
    total_memory_mb: Mapped[float | None] = mapped_column(Float)
    dropout_count: Mapped[int | None] = mapped_column(Integer)
    has_attention: Mapped[int | None] = mapped_column(Integer)
    has_residual_connections: Mapped[int | None] = mapped_column(Integer)
    is_resnet_like: Mapped[int | None] = mapped_column(Integer)
    is_vgg_like: Mapped[int | None] = mapped_column(Integer)
    is_inception_like: Mapped[int | None] = mapped_column(Integer)
    is_densenet_like: Mapped[int | None] = mapped_column(Integer)
    is_unet_like: Mapped[int | None] = mapped_column(Integer)
    is_transformer_like: Mapped[int | None] = mapped_column(Integer)
    is_mobilenet_like: Mapped[int | None] = mapped_column(Integer)
    is_efficientnet_like: Mapped[int | None] = mapped_column(Integer)
    code_length: Mapped[int | None] = mapped_column(Integer)
    num_classes_defined: Mapped[int | None] = mapped_column(Integer)
    num_functions_defined: Mapped[int | None] = mapped_column(Integer)
    uses_sequential: Mapped[int | None] = mapped_column(Integer)
    uses_modulelist: Mapped[int | None] = mapped_column(Integer)
    uses_moduledict: Mapped[int | None] = mapped_column(Integer)
    meta_json: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    macs: Mapped[int | None] = mapped_column(BigInteger)
    in_shape: Mapped[str | None] = mapped_column(Text)
    code_id: Mapped[str | None] = mapped_column(Text)


class NnMinhash(Base):
    """LEMUR's MinHash signature of a model's code (``nn_minhash``: ``num_perm`` 32-bit values packed
    little-endian in ``hashvalues``), computed by ``ab.nn.stat.code_similarity`` on first request.
    Addition: ``code_id``, the checksum of the code it was computed from, so a changed file gets a new one."""

    __tablename__ = "nn_minhash"

    nn: Mapped[str] = mapped_column(Text, primary_key=True)
    num_perm: Mapped[int] = mapped_column(Integer)
    shingle_n: Mapped[int] = mapped_column(Integer)
    hashvalues: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    code_id: Mapped[str | None] = mapped_column(Text)


class StatMetric(Base):
    """Every named metric value of an epoch: ``split`` is ``eval`` or ``test``."""

    __tablename__ = "stat_metric"

    stat_id: Mapped[str] = mapped_column(Text, ForeignKey("stat.id"), primary_key=True)
    split: Mapped[str] = mapped_column(String(8), primary_key=True)
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[float | None] = mapped_column(Float)


class Export(Base):
    """One deployable artifact of a trial (PyTorch itself included as the reference): its file,
    and its fidelity, MAE measured on the same preprocessed eval/test inputs as PyTorch's."""

    __tablename__ = "export"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trial_id: Mapped[int] = mapped_column(Integer, ForeignKey("trial.id"), index=True)
    format: Mapped[str] = mapped_column(String(16))       # pytorch, onnx, tflite
    precision: Mapped[str] = mapped_column(String(16))    # fp32, fp16, dynamic-int8, int8
    converter: Mapped[str | None] = mapped_column(Text)
    path: Mapped[str | None] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(Text)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    layout: Mapped[str | None] = mapped_column(String(8))  # NCHW or NHWC input
    input_shape: Mapped[str | None] = mapped_column(Text)
    eval_mae: Mapped[float | None] = mapped_column(Float)
    test_mae: Mapped[float | None] = mapped_column(Float)
    eval_max_diff: Mapped[float | None] = mapped_column(Float)  # years, against PyTorch's outputs
    test_max_diff: Mapped[float | None] = mapped_column(Float)
    n_eval: Mapped[int | None] = mapped_column(Integer)
    n_test: Mapped[int | None] = mapped_column(Integer)
    seconds: Mapped[float | None] = mapped_column(Float)  # conversion time
    status: Mapped[str] = mapped_column(String(16))       # ok, failed, deleted, skipped
    error: Mapped[str | None] = mapped_column(Text)
    host: Mapped[str | None] = mapped_column(Text)        # the machine whose disk holds ``path``
    created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    key: Mapped[str | None] = mapped_column(Text, index=True, unique=True)  # the writer's request key: a retried insert adds one row


class Latency(Base):
    """One timing of one artifact in one runtime at one thread count (batch 1 by default)."""

    __tablename__ = "latency"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    export_id: Mapped[int] = mapped_column(Integer, ForeignKey("export.id"), index=True)
    trial_id: Mapped[int] = mapped_column(Integer, ForeignKey("trial.id"), index=True)
    runtime: Mapped[str] = mapped_column(String(24))      # pytorch, onnxruntime, litert
    threads: Mapped[int] = mapped_column(Integer)
    batch: Mapped[int] = mapped_column(Integer)
    input_shape: Mapped[str | None] = mapped_column(Text)
    warmup: Mapped[int | None] = mapped_column(Integer)
    runs: Mapped[int | None] = mapped_column(Integer)
    median_ms: Mapped[float | None] = mapped_column(Float)
    p90_ms: Mapped[float | None] = mapped_column(Float)
    min_ms: Mapped[float | None] = mapped_column(Float)
    mean_ms: Mapped[float | None] = mapped_column(Float)
    cpu: Mapped[str | None] = mapped_column(Text)
    cpu_count: Mapped[int | None] = mapped_column(Integer)
    host: Mapped[str | None] = mapped_column(Text)
    versions: Mapped[str | None] = mapped_column(Text)    # JSON: library versions
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    key: Mapped[str | None] = mapped_column(Text, index=True, unique=True)  # the writer's request key


class Fusion(Base):
    """A fitted AgeMoE mixture: which experts it fuses and its fitted parameters (a trial of config
    ``age-regression_<dataset>_mae_AgeMoE``; its metrics are that trial's stat rows)."""

    __tablename__ = "fusion"

    trial_id: Mapped[int] = mapped_column(Integer, ForeignKey("trial.id"), primary_key=True)
    experts: Mapped[str] = mapped_column(Text)      # JSON list of expert descriptions
    settings: Mapped[str] = mapped_column(Text)     # JSON: calibrator kind, sizes, spread
    parameters: Mapped[str] = mapped_column(Text)   # JSON: the fitted state dict, as lists
    path: Mapped[str | None] = mapped_column(Text)  # the saved fusion file
    sha256: Mapped[str | None] = mapped_column(Text)


class Prediction(Base):
    """Per-image predictions of a trial's final evaluation (``split`` ``eval``: its last epoch;
    ``test``: the held-out test set), so that intervals and paired comparisons can be computed at any
    time, exactly, without running the model again. ``position`` is the order of the split's images."""

    __tablename__ = "prediction"

    trial_id: Mapped[int] = mapped_column(Integer, ForeignKey("trial.id"), primary_key=True)
    split: Mapped[str] = mapped_column(String(8), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[str | None] = mapped_column(Text)
    age: Mapped[float] = mapped_column(Float)
    predicted: Mapped[float | None] = mapped_column(Float)


class ImageAttribute(Base):
    """What a dataset's labels say about an image besides its age (UTKFace: gender and race), keyed by
    the image's content id, so that it joins ``prediction.image_id`` (with ``trial.dataset``) whatever
    layout the images were read from. ``gender``/``race`` are ``unknown`` where the label is missing or
    malformed (never guessed); ``*_from`` says where each value was read (``file name``, ``parquet
    column 'gender'``) or why it is unknown. Written by a trial for its eval and test images, or by
    ``python -m ab.nn.stat attributes`` for trials recorded before; the first reading of an image stays."""

    __tablename__ = "image_attribute"

    dataset: Mapped[str] = mapped_column(Text, primary_key=True)
    image_id: Mapped[str] = mapped_column(Text, primary_key=True)
    age: Mapped[float | None] = mapped_column(Float)
    gender: Mapped[str] = mapped_column(String(16))
    race: Mapped[str] = mapped_column(String(16))
    age_from: Mapped[str | None] = mapped_column(Text)
    gender_from: Mapped[str | None] = mapped_column(Text)
    race_from: Mapped[str | None] = mapped_column(Text)


class Lease(Base):
    """A runner's claim to be alive (``ab.nn.stat.lease``): its trials are reclaimed by other runners
    only once this heartbeat has lapsed, was released, or its process is certainly gone."""

    __tablename__ = "lease"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    host: Mapped[str | None] = mapped_column(Text)
    pid: Mapped[int | None] = mapped_column(Integer)
    boot_id: Mapped[str | None] = mapped_column(Text)
    pid_namespace: Mapped[str | None] = mapped_column(Text)
    process_started: Mapped[float | None] = mapped_column(Float)
    ttl_seconds: Mapped[float | None] = mapped_column(Float)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    beat_at: Mapped[datetime | None] = mapped_column(DateTime)  # the database's clock
    released_at: Mapped[datetime | None] = mapped_column(DateTime)


class Study(Base):
    """What a sweep's Optuna study optimises, as the runner that created it asked: the authority from
    which the Optuna study (a derived copy, ``ab.nn.stat.studies``) is rebuilt, and which ranking reads
    for the constraint and the objectives."""

    __tablename__ = "study"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    config: Mapped[str] = mapped_column(Text, index=True)
    data_key: Mapped[str | None] = mapped_column(Text)
    epoch_max: Mapped[int | None] = mapped_column(Integer)
    objectives: Mapped[str] = mapped_column(Text)  # JSON list, e.g. ["mae"] or ["mae", "latency"]
    max_latency_ms: Mapped[float | None] = mapped_column(Float)
    max_group_gap: Mapped[float | None] = mapped_column(Float)  # years, between the groups of group_gap_by
    group_gap_by: Mapped[str | None] = mapped_column(Text)  # "race", "gender", "age_group" or e.g. "race,gender"
    created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Outbox(Base):
    """Work that follows a commit but can fail on its own (the JSON mirror of a finished trial): written
    in the same transaction as the fact it follows, done afterwards and retried from here, so that a
    failure there never changes what the database says."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "done_at", "host"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # mirror
    trial_id: Mapped[int] = mapped_column(Integer, index=True)
    host: Mapped[str | None] = mapped_column(Text)  # whose mirror folder it goes to
    created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class ConstantBaseline(Base):
    """What predicting one age for every image scores on the data of a data key: the mean age of its
    training part (``train_mean``), and that constant's MAE on the eval and test parts, from the labels
    of the images the split assigns (``ab.nn.stat.constant_predictor``). A trial that is no better than
    this learned nothing from the pixels. Written by the runner before the first trial of a data key
    (an existing row is kept: the same data key is the same images), and carried by copies."""

    __tablename__ = "constant_baseline"

    data_key: Mapped[str] = mapped_column(Text, primary_key=True)
    dataset: Mapped[str] = mapped_column(Text)
    train_mean: Mapped[float] = mapped_column(Float)  # years
    n_train: Mapped[int] = mapped_column(Integer)
    eval_mae: Mapped[float | None] = mapped_column(Float)
    n_eval: Mapped[int] = mapped_column(Integer)
    test_mae: Mapped[float | None] = mapped_column(Float)  # NULL where the split has no test part
    n_test: Mapped[int] = mapped_column(Integer)
