"""The scale of an MAE metric's normalised accuracy, ``accuracy = max(0, 1 - MAE/scale)``.

This project's ``mae`` metric uses 20 years, and so does LEMUR's ``mae.py`` today
(ABrain-One/nn-dataset, ``ab/nn/metric/mae.py``: ``max_mae_threshold=20.0``); the age results LEMUR
2.2.11 ships use 15 (all 400 of its rows fit ``1 - test_mae/15`` exactly). A record's scale is
therefore never assumed: it is detected where the record carries its raw MAE, and otherwise given by
whoever imports it (``Evidence``). Each stat row stores its scale, so that accuracies of different
origins are never compared as if they meant the same MAE, and the raw MAE can be recovered from an
accuracy.
"""
from __future__ import annotations

import functools
import math
from collections import Counter

LEMUR_SHIPPED_SCALE = 15.0
"""The scale of the age results LEMUR 2.2.11 ships (``1 - test_mae/15``)."""
LEMUR_CURRENT_SCALE = 20.0
"""The scale LEMUR's ``mae.py`` writes today (``1 - MAE/20``)."""
KNOWN = (LEMUR_SHIPPED_SCALE, LEMUR_CURRENT_SCALE)
TOLERANCE = 1e-6
MAE_METRICS = ("mae",)
"""Metrics whose accuracy is ``1 - MAE/scale`` (LEMUR's and ours)."""


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


def _scale(scale: float | None) -> str:
    return f"1 - MAE/{scale:g}" if scale is not None else "no known scale"


class ScaleError(ValueError):
    """An import whose accuracy scale is unknown or mixed; the message gives the evidence."""


class Evidence:
    """The accuracy scales of an import's LEMUR records of an MAE metric, gathered before anything is
    written: per scale the records whose raw MAE implies it (``None``: their accuracy is clipped at 0 or
    fits no known scale) and one file as an example, and the records without a raw MAE."""

    def __init__(self):
        self.detected: Counter = Counter()
        self.without_raw = 0
        self._examples: dict = {}

    def add(self, scale: float | None, where) -> None:
        """One record whose raw MAE implies ``scale``."""
        self.detected[scale] += 1
        self._examples.setdefault(scale, str(where))

    def add_without_raw(self, where) -> None:
        self.without_raw += 1
        self._examples.setdefault("without", str(where))

    def _counts(self) -> str:
        return ", ".join(f"{_scale(scale)} for {n:,} record(s) (e.g. {self._examples[scale]})"
                         for scale, n in sorted(self.detected.items(), key=lambda item: item[0] or 0))

    def check(self, explicit: float | None) -> None:
        """Refuse an import whose records imply different scales, or whose records without a raw MAE have no
        scale given (``explicit``, which applies to those records only)."""
        if explicit is not None and not (math.isfinite(explicit) and explicit > 0):
            raise ScaleError(f"the MAE scale must be a positive number, got {explicit}")
        scales = [scale for scale in self.detected if scale is not None]
        if len(scales) > 1:
            raise ScaleError(f"the records imply different accuracy scales: {self._counts()}; import the files of "
                             f"each scale on their own")
        if self.without_raw and explicit is None:
            implied = f"; the records that carry it imply {_scale(scales[0])}" if scales else ""
            raise ScaleError(f"{self.without_raw:,} record(s) of an MAE metric carry no raw MAE (e.g. "
                             f"{self._examples['without']}), so their accuracy scale is unknown{implied}: pass "
                             f"--lemur-mae-scale {LEMUR_CURRENT_SCALE:g} (LEMUR's mae.py today) or "
                             f"{LEMUR_SHIPPED_SCALE:g} (the age results LEMUR 2.2.11 ships)")

    def summary(self, explicit: float | None) -> str:
        """Which scale the records were stored with, and why."""
        parts = [f"{_scale(scale)} for {n:,} (raw MAE)" for scale, n in sorted(self.detected.items(),
                                                                                 key=lambda item: item[0] or 0)]
        if self.without_raw:
            parts.append(f"{_scale(explicit)} for {self.without_raw:,} (--lemur-mae-scale)")
        return ", ".join(parts)
