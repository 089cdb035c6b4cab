"""The messages between a trial child and its runner, framed as in ``ab.nn.sandbox.protocol`` (JSON,
length-prefixed, size-capped, never pickle).

1. The runner sends ``{"type": "trial", "id": ..., "spec": TrialSpec.to_json()}``.
2. The child sends a ``call`` for every write it would make to the statistics database, for its own
   trial's status and recorded predictions (its export compares with them), for Optuna's pruning
   question, for an image cache it lacks and for each phase it enters:
   ``{"type": "call", "id": ..., "method": ..., "args": {...}}``. The runner answers each with
   ``{"type": "reply", "id": ..., "value": ...}``, or ``{"type": "refused", "id": ..., "error": ...,
   "status": ...}`` when the runner's lease no longer covers the trial (another runner reclaimed it).
3. The child ends with ``{"type": "end", "id": <the trial's id>, "status": ..., "error": ..., "fatal": ...}``.

A call names one of ``METHODS`` and is checked against that method's schema: known arguments only,
their types, strings no longer than their columns, bounded lists, and numbers that are finite (JSON
carries no others). No call names a trial: every write is about the child's own trial, which the
runner fills in, fenced with its lease.
"""
from __future__ import annotations

from ab.nn.dataset.utkface.attributes import GENDERS, RACES, UNKNOWN
from ab.nn.sandbox.limits import MiB

MAX_MESSAGE = 32 * MiB
"""Per-image predictions of a large test set fit in one message (about 90 bytes an image)."""
MAX_IMAGES = 250_000
MAX_ERROR = 20_000
PHASES = ("setup", "learn", "evaluate", "saved", "test", "export")
"""``saved``: the epoch's resume file is written (``ab.nn.sweep.resume``); the runner of a sandboxed trial
copies it out of the sandbox then."""
ENDINGS = ("complete", "stopped", "diverged", "pruned", "failed")
"""What a trial child may record as its trial's end (never ``interrupted``: that is the runner's word)."""


def _text(length: int) -> dict:
    return {"type": ["string", "null"], "maxLength": length}


def _args(required=(), **properties) -> dict:
    return {"type": "object", "additionalProperties": False, "required": list(required), "properties": properties}


ID = {"type": "string", "maxLength": 64}
COUNT = {"type": ["integer", "null"], "minimum": 0, "maximum": (1 << 31) - 1}
"""A count for an INTEGER column (32 bits in PostgreSQL)."""
BIG = {"type": ["integer", "null"], "minimum": 0, "maximum": 1 << 53}
"""A count for a BIGINT column."""
NUMBER = {"type": ["number", "null"]}
METRICS = {"type": "object", "maxProperties": 256, "additionalProperties": NUMBER}
TRAIN_STAT = _args(cpu_count=COUNT, cpu_type=_text(300), total_ram_kb=BIG, gpu_type=_text(300), train_loss=NUMBER,
                   samples_per_second=NUMBER, epoch_max=COUNT, occupied_ram_kb=BIG, gpu_memory_kb=BIG, lr=NUMBER,
                   train_seconds=NUMBER, eval_seconds=NUMBER, truncated={"type": ["boolean", "null"]})
EXPORT = dict(format={"type": "string", "maxLength": 16}, precision={"type": "string", "maxLength": 16},
              converter=_text(300), path=_text(4096), sha256=_text(64), size_bytes=BIG, layout=_text(8),
              input_shape=_text(100), eval_mae=NUMBER, test_mae=NUMBER, eval_max_diff=NUMBER, test_max_diff=NUMBER,
              n_eval=COUNT, n_test=COUNT, seconds=NUMBER, status={"enum": ["ok", "failed", "skipped"]}, error=_text(4000))
LATENCY = dict(runtime={"type": "string", "maxLength": 24}, threads=COUNT, batch=COUNT, input_shape=_text(100),
               warmup=COUNT, runs=COUNT, median_ms=NUMBER, p90_ms=NUMBER, min_ms=NUMBER, mean_ms=NUMBER, cpu=_text(300),
               cpu_count=COUNT, host=_text(300), versions=_text(4000), status={"enum": ["ok", "failed"]},
               error=_text(4000))
ATTRIBUTES = _args(("image_id", "age", "gender", "race", "age_from", "gender_from", "race_from"),
                   image_id={"type": "string", "maxLength": 64}, age=NUMBER, gender={"enum": [*GENDERS, UNKNOWN]},
                   race={"enum": [*RACES, UNKNOWN]}, age_from=_text(300), gender_from=_text(300), race_from=_text(300))
"""An image's labels (``ab.nn.dataset.utkface.attributes.Attributes``) with its content id."""

METHODS = {
    "phase": _args(("phase", "epoch"), phase={"enum": list(PHASES)}, epoch=COUNT),
    "update_trial": _args(n_train=COUNT, n_eval=COUNT, n_test=COUNT, in_shape=_text(100), device=_text(50),
                          params=BIG, macs=BIG),
    "record_epoch": _args(("epoch", "accuracy", "duration", "metrics", "train_stat"), epoch=COUNT, accuracy=NUMBER,
                          duration=BIG, metrics=METRICS, train_stat=TRAIN_STAT),
    "record_test": _args(("stat_id", "accuracy", "metrics", "interval"), stat_id=ID, accuracy=NUMBER, metrics=METRICS,
                         interval={"type": ["array", "null"], "minItems": 2, "maxItems": 2, "items": NUMBER}),
    "record_predictions": _args(("split", "ages", "predicted", "image_ids"), split={"enum": ["eval", "test"]},
                                ages={"type": "array", "maxItems": MAX_IMAGES, "items": {"type": "number"}},
                                predicted={"type": "array", "maxItems": MAX_IMAGES, "items": NUMBER},
                                image_ids={"type": ["array", "null"], "maxItems": MAX_IMAGES, "items": _text(64)}),
    "record_attributes": _args(("images",), images={"type": "array", "maxItems": MAX_IMAGES, "items": ATTRIBUTES}),
    "finish_trial": _args(("status", "error"), status={"enum": list(ENDINGS)}, error=_text(MAX_ERROR),
                          bookkeeping_seconds=NUMBER),
    "trial_status": _args(),
    "recorded_predictions": _args(),
    "add_export": _args(("format", "precision", "status"), **EXPORT),
    "update_export": _args(("export_id",), export_id=COUNT, **EXPORT),
    "add_latency": _args(("export_id", "runtime", "status"), export_id=COUNT, **LATENCY),
    "report_epoch": _args(("epoch", "mae"), epoch=COUNT, mae=NUMBER),
    "prepare_images": _args(("size",), size={"type": ["integer", "null"], "minimum": 8, "maximum": 1024}),
}
"""Every call a trial child may make, with its arguments' schema (``ab.nn.sandbox.protocol.validate``)."""

FROM_CHILD = {"type": "object", "additionalProperties": False, "required": ["type", "id"],
              "properties": {"type": {"enum": ["call", "end"]}, "id": ID, "method": {"enum": list(METHODS)},
                             "args": {"type": "object", "maxProperties": 64},
                             "status": {"type": "string", "maxLength": 16}, "error": _text(MAX_ERROR),
                             "fatal": {"type": "boolean"}}}
"""Any message of a trial child: a ``call`` (``method``, ``args``) or its ``end`` (``status``, ``error``,
``fatal``)."""
