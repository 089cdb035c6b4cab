"""From a detected face to a crop with UTKFace's geometry: the similarity transform (rotation,
uniform scale, translation) that moves the detected landmarks onto the template's in the least-
squares sense (Umeyama 1991), and the bilinear warp of the photo through it.

Imports only numpy and Pillow, so the bundle's reference implementation can mirror it line by line.
"""
from __future__ import annotations

import numpy as np

CROP_SIZE = 200
"""Side of UTKFace's aligned & cropped images, the frame the template is measured in."""


def similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 matrix ``M`` of the similarity transform minimising ``sum |M [p, 1] - q|^2`` over
    point pairs ``(p, q)`` of ``source`` and ``target`` (each ``(n, 2)``, n >= 2); no reflection."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 2 or len(source) < 2:
        raise ValueError(f"need matching (n, 2) point sets with n >= 2, got {source.shape} and {target.shape}")
    mu_s, mu_t = source.mean(axis=0), target.mean(axis=0)
    s, t = source - mu_s, target - mu_t
    variance = (s ** 2).sum() / len(s)
    if variance == 0:
        raise ValueError("the source points coincide")
    covariance = t.T @ s / len(s)
    u, sigma, vt = np.linalg.svd(covariance)
    d = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1, 1] = -1
    rotation = u @ d @ vt
    scale = np.trace(np.diag(sigma) @ d) / variance
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = mu_t - matrix[:, :2] @ mu_s
    return matrix


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``points`` (n, 2) moved by the 2x3 ``matrix``."""
    points = np.asarray(points, np.float64)
    return points @ np.asarray(matrix)[:, :2].T + np.asarray(matrix)[:, 2]


def invert(matrix: np.ndarray) -> np.ndarray:
    linear = np.linalg.inv(np.asarray(matrix, np.float64)[:, :2])
    return np.concatenate([linear, -linear @ np.asarray(matrix)[:, 2:]], axis=1)


def warp(image, matrix: np.ndarray, size: int = CROP_SIZE):
    """The ``size`` x ``size`` RGB crop whose pixel ``q`` shows the photo at ``M^-1 q`` (PIL bilinear;
    black outside the photo). ``matrix`` maps photo pixels to crop pixels."""
    from PIL import Image

    inverse = invert(matrix)
    # PIL maps continuous coordinates (pixel i spans [i, i + 1)), the detector's convention too
    return image.convert("RGB").transform((size, size), Image.Transform.AFFINE, tuple(inverse.reshape(6)),
                                          resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
