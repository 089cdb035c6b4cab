"""Per-age calibration: a monotone map from a model's predicted age to a corrected age, fitted on the
validation part and applied to the test part (and, once written into a trial folder, in predict and
bundles).

Why: an age model trained with an L1 or L2 loss regresses to the mean: children are predicted older,
the old younger (issue 42: minors taken for adults, ages 70+ predicted years too young). Two maps,
both isotonic regressions (pool adjacent violators, squared error), both monotone (they never reorder
two faces), linear between their knots and flat beyond the outermost:

* ``forward``: the true age regressed on the predicted age, E[true | predicted]. It gives each
  prediction the mean age of the faces that received it: the lowest squared error for a given
  prediction, but it pulls a noisy model's answers further towards the bulk of the ages, so it does
  not remove the bias *per true age*.
* ``inverse``: the predicted age regressed on the true age, g(true) = E[predicted | true], then
  inverted: each prediction p is read as the age t with g(t) = p. It removes the bias per true age
  (what the minors' and the 70+ numbers measure) at the cost of spreading a noisy model's errors:
  the MAE can grow.

``docs/experiments/calibration.md`` measures both. A map is judged on the test part only
(``ab.nn.stat.comparison`` refuses to judge it on the part it was fitted on).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ab.nn.util import atomic

MIN_IMAGES = 30
"""Fewer validation images than this leave too few blocks for a map worth applying."""
MAX_KNOTS = 100_000
"""A stored map with more knots than this is not one this module wrote (``from_json``)."""
AGE_LIMITS = (0.0, 130.0)
METHODS = ("inverse", "forward")
FILE = "calibration.json"
"""The map in a trial folder (``python -m ab.nn.stat calibrate``), beside the model it belongs to."""
MAX_FILE_BYTES = 8 << 20


@dataclass(frozen=True)
class AgeCalibration:
    """The fitted map: ``predicted`` (strictly increasing) -> ``calibrated`` (non-decreasing), the
    ``method`` that fitted it and the number of validation images it was fitted on."""

    predicted: tuple[float, ...]
    calibrated: tuple[float, ...]
    images: int
    method: str = "inverse"

    def __post_init__(self):
        x, y = np.asarray(self.predicted, dtype=np.float64), np.asarray(self.calibrated, dtype=np.float64)
        if x.ndim != 1 or x.shape != y.shape or not 1 <= x.size <= MAX_KNOTS:
            raise ValueError(f"a calibration has 1 to {MAX_KNOTS:,} knots, as many calibrated as predicted ages")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise ValueError("a calibration's knots must be finite numbers")
        if (np.diff(x) <= 0).any() or (np.diff(y) < 0).any():
            raise ValueError("a calibration's predicted ages must increase and its calibrated ages must not decrease")
        low, high = AGE_LIMITS
        if y.min() < low or y.max() > high:
            raise ValueError(f"calibrated ages must lie in [{low:g}, {high:g}] years")
        if self.method not in METHODS:
            raise ValueError(f"a calibration's method is one of {', '.join(METHODS)}, got {self.method!r:.40}")
        if not (isinstance(self.images, int) and self.images >= MIN_IMAGES):
            raise ValueError(f"a calibration is fitted on at least {MIN_IMAGES} images, got {self.images!r}")

    def __call__(self, ages) -> np.ndarray:
        """The calibrated ages of predicted ``ages`` (any shape)."""
        ages = np.asarray(ages, dtype=np.float64)
        return np.interp(ages, self.predicted, self.calibrated)

    def to_json(self) -> dict:
        return {"method": self.method, "images": self.images, "predicted": list(self.predicted),
                "calibrated": list(self.calibrated)}

    @classmethod
    def from_json(cls, value) -> "AgeCalibration":
        """A map read back from JSON (a bundle, a trial folder): checked, never trusted."""
        if not isinstance(value, dict) or value.get("method") not in METHODS:
            raise ValueError(f"not an age calibration (expected an object with method {' or '.join(METHODS)})")
        try:
            knots = [tuple(float(v) for v in value[key]) for key in ("predicted", "calibrated")]
        except (KeyError, TypeError, ValueError):
            raise ValueError("an age calibration needs lists of numbers 'predicted' and 'calibrated'") from None
        images = value.get("images")
        return cls(*knots, images=images if isinstance(images, int) and not isinstance(images, bool) else -1,
                   method=value["method"])


def _isotonic(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Isotonic regression of ``y`` on ``x``: the pooled blocks' centres in ``x`` and their means of
    ``y``, both strictly increasing (blocks of equal mean are pooled too)."""
    values, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    blocks: list[list[float]] = []  # [sum of y, sum of x, count]
    for sum_y, sum_x, count in zip(np.bincount(inverse, weights=y), np.bincount(inverse, weights=x), counts):
        blocks.append([sum_y, sum_x, float(count)])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][2] >= blocks[-1][0] / blocks[-1][2]:
            last = blocks.pop()
            blocks[-1] = [a + b for a, b in zip(blocks[-1], last)]
    pooled = np.asarray(blocks)
    return pooled[:, 1] / pooled[:, 2], pooled[:, 0] / pooled[:, 2]


def fit(predicted, ages, method: str = "inverse") -> AgeCalibration:
    """The map of ``method`` (see the module's docstring) from one model's validation predictions and
    the true ``ages``."""
    if method not in METHODS:
        raise ValueError(f"method is one of {', '.join(METHODS)}, got {method!r}")
    predicted = np.asarray(predicted, dtype=np.float64).reshape(-1)
    ages = np.asarray(ages, dtype=np.float64).reshape(-1)
    if predicted.shape != ages.shape:
        raise ValueError(f"{predicted.size} predictions for {ages.size} true ages")
    if predicted.size < MIN_IMAGES:
        raise ValueError(f"a calibration needs at least {MIN_IMAGES} validation images, got {predicted.size}")
    if not (np.isfinite(predicted).all() and np.isfinite(ages).all()):
        raise ValueError("predictions and true ages must be finite to fit a calibration")
    if method == "forward":
        knots, values = _isotonic(predicted, ages)
    else:
        values, knots = _isotonic(ages, predicted)  # g(true) = E[predicted | true], read backwards
    return AgeCalibration(tuple(map(float, knots)), tuple(map(float, values)), images=int(predicted.size),
                          method=method)


def apply(judged, fitted_on, method: str = "inverse"):
    """``judged`` (an ``ab.nn.stat.groups.Judged``) with each replica's predictions calibrated by a map
    fitted on the same replica's predictions in ``fitted_on`` (its validation part)."""
    from ab.nn.stat.groups import Judged

    if list(judged.trial_ids) != list(fitted_on.trial_ids):
        raise ValueError("each replica is calibrated on its own validation predictions: the trials must match")
    maps = [fit(row, fitted_on.ages, method) for row in fitted_on.predicted]
    predicted = np.stack([calibration(row) for calibration, row in zip(maps, judged.predicted)])
    return Judged(judged.ages, predicted, judged.labels, list(judged.trial_ids), judged.unrecorded)



def save(calibration: AgeCalibration, folder: Path, **provenance) -> Path:
    """Write the map into a trial folder (atomically), with where it was fitted (``provenance``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return atomic.write(folder / FILE, json.dumps({**calibration.to_json(), **provenance}, indent=1))


def load(folder: Path) -> AgeCalibration | None:
    """The map of a trial folder; None where it has none. A file that is too large, not JSON or not a
    valid map is an error, never silently ignored."""
    path = Path(folder) / FILE
    if not path.is_file():
        return None
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size:,} bytes, more than an age calibration can hold")
    try:
        return AgeCalibration.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, RecursionError) as error:
        raise ValueError(f"{path}: {error}") from None
