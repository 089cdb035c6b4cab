"""The scale of an MAE metric's normalised accuracy, ``accuracy = max(0, 1 - MAE/scale)``.

This project's ``mae`` metric uses 20 years; the age results LEMUR 2.2.11 ships use 15 (all 400 of
its rows fit ``1 - test_mae/15`` exactly). Each stat row stores its scale, so that accuracies of
different origins are never compared as if they meant the same MAE, and the raw MAE can be
recovered from an accuracy.
"""
from __future__ import annotations

import functools
import math

LEMUR_MAE_SCALE = 15.0
"""The scale of LEMUR's ``mae`` metric in its shipped age results (``1 - MAE/15``)."""
KNOWN = (15.0, 20.0)
TOLERANCE = 1e-6


@functools.lru_cache(maxsize=64)
def declared(metric: str) -> float | None:
    """The scale of a config's primary metric (the first of a comma list), from its file's
    ``create_metric(...).max_mae``; ``None`` for metrics without one."""
    from ab.nn import registry

    try:
        instance = registry.load(registry.METRIC, metric.split(",")[0]).create_metric((1,))
    except Exception:
        return None
    scale = getattr(instance, "max_mae", None)
    return float(scale) if isinstance(scale, (int, float)) and scale > 0 else None


def implied(mae: float | None, accuracy: float | None) -> float | None:
    """The known scale that ``accuracy = 1 - mae/scale`` holds for (within 1e-6), else ``None``
    (an accuracy clipped at 0 says nothing about its scale)."""
    if mae is None or accuracy is None or not (math.isfinite(mae) and math.isfinite(accuracy)) or accuracy <= 0:
        return None
    for scale in KNOWN:
        if abs(1.0 - mae / scale - accuracy) <= TOLERANCE:
            return scale
    return None


def mae_from(accuracy: float | None, scale: float | None) -> float | None:
    """The raw MAE an accuracy stands for; ``None`` when the accuracy is clipped at 0 (the MAE was at
    least ``scale``, but how much is lost) or unknown."""
    if accuracy is None or scale is None or not math.isfinite(accuracy) or accuracy <= 0:
        return None
    return (1.0 - accuracy) * scale
