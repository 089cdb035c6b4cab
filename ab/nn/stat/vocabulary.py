"""The values a query filter can take, so that a typo (``status="completed"``, ``runtime="tflite"``) is a
one-line error listing the right ones instead of an empty table."""
from __future__ import annotations

from ab.nn.stat.states import FINAL_STATES, RUNNING

TRIAL_STATUS = (RUNNING,) + FINAL_STATES
EXPORT_STATUS = ("ok", "failed", "deleted", "skipped")  # ab.nn.deploy.options OK, FAILED, DELETED, SKIPPED
LATENCY_STATUS = ("ok", "failed")
RUNTIMES = ("pytorch", "onnxruntime", "litert")   # ab.nn.deploy.runtimes *.name
FORMATS = ("pytorch", "onnx", "tflite", "export", "pipeline")  # the last two: a crashed export; the export as a whole
PRECISIONS = ("fp32", "fp16", "dynamic-int8", "int8", "-")     # ab.nn.deploy.tflite_convert.PRECISIONS
SPLITS = ("eval", "test")


def check(name: str, value, allowed: tuple) -> None:
    """Raise ``ValueError`` naming the argument and listing ``allowed`` when ``value`` (a scalar, or each
    element of a list/tuple/set) is not one of them; ``None`` means no filter."""
    if value is None:
        return
    values = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
    wrong = [v for v in values if v not in allowed]
    if wrong:
        raise ValueError(f"{name}={wrong[0]!r} is not one of: {', '.join(allowed)}")
