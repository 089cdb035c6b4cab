"""How sure a number is: bootstrap intervals of an MAE, and paired comparisons of two models judged
on the same images.

Every interval is a percentile bootstrap over test images (95 %, 2,000 resamples, seeded, so a
number recomputed later is the same number). A paired comparison resamples the *same* images for
both models, which is far tighter than comparing two separate intervals; with training-seed
replicas it also resamples the replicas of each model, so the interval includes seed-to-seed
spread. A difference whose interval contains 0, or comes closer to it than ``RESOLUTION``, is a tie:
one model is called better or worse only when the whole interval is on one side of 0 by at least
half a hundredth of a year (so an interval printed as [+0.00, +0.00] is a tie, however small its p).
The Wilcoxon signed-rank p-value on the per-image absolute errors is reported beside it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
RESOLUTION = 0.005
"""Years: a difference whose interval comes this close to 0 is a tie (ages are labelled in whole years;
the report prints hundredths)."""
RESAMPLES = 2000
_CHUNK = 200


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def _resampled_means(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``resamples`` bootstrap resamples of ``values``."""
    out = np.empty(resamples)
    for start in range(0, resamples, _CHUNK):
        count = min(_CHUNK, resamples - start)
        out[start:start + count] = values[rng.integers(0, values.size, size=(count, values.size))].mean(axis=1)
    return out


def bootstrap_mae(abs_errors, level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Interval of the mean of ``abs_errors`` (one per image)."""
    errors = np.asarray(abs_errors, dtype=np.float64).reshape(-1)
    if errors.size == 0:
        raise ValueError("no errors to bootstrap")
    return _percentiles(_resampled_means(errors, resamples, np.random.default_rng(seed)), level)


@dataclass(frozen=True)
class Comparison:
    """A minus B on the same images (negative: A has the lower MAE)."""

    n_images: int
    replicas_a: int
    replicas_b: int
    mae_a: float
    mae_b: float
    difference: float
    low: float
    high: float
    p_value: float  # Wilcoxon signed-rank on the per-image (replica-averaged) absolute errors

    @property
    def significant(self) -> bool:
        """The whole interval lies on one side of 0, at least ``RESOLUTION`` from it."""
        return self.low >= RESOLUTION or self.high <= -RESOLUTION

    @property
    def verdict(self) -> str:
        if not self.significant:
            return "tie"
        return "A lower" if self.difference < 0 else "B lower"


def _wilcoxon(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import wilcoxon

    if np.allclose(a, b):
        return 1.0
    return float(wilcoxon(a, b, zero_method="zsplit").pvalue)


def _replicas_mean(errors: np.ndarray, images: np.ndarray, rng: np.random.Generator,
                   drawn: np.ndarray | None = None) -> np.ndarray:
    """MAE of each resample: replicas of ``errors`` (replicas, images) drawn with replacement (or the
    given ``drawn`` replica indices, (resamples, replicas)), then the resampled ``images`` (resamples, n)
    of their per-image mean."""
    if drawn is None:
        drawn = rng.integers(0, errors.shape[0], size=(images.shape[0], errors.shape[0]))
    return np.take_along_axis(errors[drawn].mean(axis=1), images, axis=1).mean(axis=1)


def bootstrap_replicas(abs_errors, level: float = LEVEL, resamples: int = RESAMPLES,
                       seed: int = 0) -> tuple[float, float]:
    """Interval of the MAE of training-seed replicas judged on the same images, (replicas, images):
    images and replicas resampled, so it holds the test-set and the seed-to-seed uncertainty (with one
    replica it is ``bootstrap_mae``'s)."""
    errors = np.atleast_2d(np.asarray(abs_errors, dtype=np.float64))
    if errors.size == 0:
        raise ValueError("no errors to bootstrap")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, _CHUNK):
        count = min(_CHUNK, resamples - start)
        means[start:start + count] = _replicas_mean(errors, rng.integers(0, errors.shape[1],
                                                                         size=(count, errors.shape[1])), rng)
    return _percentiles(means, level)


def compare(abs_a, abs_b, level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0,
            paired_replicas: bool = False) -> Comparison:
    """Paired comparison of two models' absolute errors on the same images, in the same order.

    Each argument is one row of per-image errors, or a (replicas, images) array of training-seed
    replicas: the bootstrap then draws images (shared by both sides) and, independently per side,
    replicas, so the interval holds both the test-set and the seed-to-seed uncertainty.
    ``paired_replicas``: row i of both sides is the same training seed (the same models read two ways,
    e.g. with and without a calibration), so the same replicas are drawn for both."""
    a = np.atleast_2d(np.asarray(abs_a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(abs_b, dtype=np.float64))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a paired comparison needs the same images: {a.shape[1]} vs {b.shape[1]} errors")
    if paired_replicas and a.shape[0] != b.shape[0]:
        raise ValueError(f"paired replicas need as many on both sides: {a.shape[0]} vs {b.shape[0]}")
    rng = np.random.default_rng(seed)
    n = a.shape[1]
    differences = np.empty(resamples)
    for start in range(0, resamples, _CHUNK):
        count = min(_CHUNK, resamples - start)
        images = rng.integers(0, n, size=(count, n))
        drawn = rng.integers(0, a.shape[0], size=(count, a.shape[0])) if paired_replicas else None
        differences[start:start + count] = (_replicas_mean(a, images, rng, drawn)
                                            - _replicas_mean(b, images, rng, drawn))
    low, high = _percentiles(differences, level)
    per_image_a, per_image_b = a.mean(axis=0), b.mean(axis=0)
    return Comparison(n_images=n, replicas_a=a.shape[0], replicas_b=b.shape[0], mae_a=float(per_image_a.mean()),
                      mae_b=float(per_image_b.mean()), difference=float(per_image_a.mean() - per_image_b.mean()),
                      low=low, high=high, p_value=_wilcoxon(per_image_a, per_image_b))


def mean_std(values) -> tuple[float, float, int]:
    """Mean and sample standard deviation across replicas (std 0 for a single one), and n."""
    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan"), 0
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0, int(values.size)


def t_interval(values, level: float = LEVEL) -> tuple[float, float]:
    """Student's t interval of the mean over a few replicas (seeds, sampler seeds), for numbers that
    only exist once per replica, where no images can be resampled; NaNs below two replicas."""
    mean, std, n = mean_std(values)
    if n < 2:
        return float("nan"), float("nan")
    from scipy import stats

    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / np.sqrt(n)
    return mean - half, mean + half
