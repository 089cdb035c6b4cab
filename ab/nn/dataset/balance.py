"""Balanced sampling of the training part (``--balance``): rare ages (children, the old) and, where asked,
rare races drawn more often, so that the loss a model minimises is not dominated by the crowded 20s.

Why: an age model trained on UTKFace's distribution regresses towards its 20-40 year bulk, which is
where minors are taken for adults and ages 70+ are predicted a decade too young (issue 42). The
weights follow label distribution smoothing (Yang et al., "Delving into Deep Imbalanced Regression",
ICML 2021): the histogram of whole-year ages smoothed with a Gaussian kernel (sigma 2 years), each
image weighted by the inverse square root of the smoothed density at its age. ``race`` weights each
image by the inverse square root of its race's share (``unknown`` is a group of its own); ``age,race``
multiplies both. Weights are normalised to a mean of 1; an epoch draws as many images as the part
holds, with replacement.
"""
from __future__ import annotations

import numpy as np

CHOICES = ("age", "race", "age,race")
SIGMA = 2.0
"""Years: the kernel that smooths the age histogram (the paper's choice for ages)."""


def parse(value) -> str:
    """``value`` as one of ``CHOICES`` (spaces and order ignored); a one-line ``ValueError`` otherwise."""
    parts = sorted({p.strip() for p in str(value).split(",") if p.strip()}) if isinstance(value, str) else None
    name = ",".join(parts) if parts else None
    if name not in CHOICES:
        raise ValueError(f"balance must be one of {', '.join(CHOICES)}, got {value!r}")
    return name


def _age_weights(ages: np.ndarray) -> np.ndarray:
    years = np.clip(np.rint(ages), 0, None).astype(np.int64)
    counts = np.bincount(years).astype(np.float64)
    reach = int(4 * SIGMA)
    offsets = np.arange(-reach, reach + 1)
    kernel = np.exp(-0.5 * (offsets / SIGMA) ** 2)
    smoothed = np.convolve(np.pad(counts, reach), kernel / kernel.sum(), mode="valid")
    return 1.0 / np.sqrt(smoothed[years])


def _race_weights(races) -> np.ndarray:
    labels = np.asarray([str(r) for r in races], dtype=object)
    names, index, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return 1.0 / np.sqrt(counts[index] / labels.size)


def weights(by: str, ages, races=None) -> np.ndarray:
    """One sampling weight per training image (mean 1) for balancing ``by`` (one of ``CHOICES``)."""
    by = parse(by)
    ages = np.asarray(ages, dtype=np.float64).reshape(-1)
    if ages.size == 0:
        raise ValueError("no training images to balance")
    if not np.isfinite(ages).all():
        raise ValueError("balancing needs a finite age for every training image")
    out = np.ones(ages.size)
    if "age" in by.split(","):
        out *= _age_weights(ages)
    if "race" in by.split(","):
        if races is None or len(races) != ages.size:
            raise ValueError("balance by race needs the race label of every training image (UTKFace's loader "
                             "states them)")
        out *= _race_weights(races)
    return out / out.mean()


def of_dataset(by: str, dataset) -> np.ndarray:
    """``weights`` for a training ``Dataset`` that states its ages (``.ages``) and, for race, its images'
    labels (``.attributes``, as ``ab.nn.dataset.images.CachedImages`` does)."""
    ages = getattr(dataset, "ages", None)
    if ages is None or len(ages) != len(dataset):
        raise ValueError(f"--balance needs a training set that states its ages; {type(dataset).__name__} does not")
    attributes = getattr(dataset, "attributes", None)
    races = [a.race for a in attributes] if attributes is not None and len(attributes) == len(dataset) else None
    return weights(by, ages, races)
