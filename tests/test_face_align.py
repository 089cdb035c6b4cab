"""Similarity fitting and warping: known transforms are recovered, points land on the template."""
import numpy as np
import pytest
from PIL import Image, ImageDraw

from ab.nn.face import align


def _similarity(angle_deg, scale, tx, ty):
    t = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(t), -scale * np.sin(t), tx], [scale * np.sin(t), scale * np.cos(t), ty]])


def test_a_known_similarity_is_recovered_exactly():
    rng = np.random.default_rng(0)
    source = rng.uniform(0, 300, (6, 2))
    truth = _similarity(17.0, 0.63, -40.0, 12.5)
    fitted = align.similarity(source, align.apply(truth, source))
    assert np.allclose(fitted, truth, atol=1e-9)
    assert np.allclose(align.apply(align.invert(truth), align.apply(truth, source)), source)


def test_the_fit_never_reflects_and_is_least_squares():
    rng = np.random.default_rng(1)
    source = rng.uniform(0, 100, (5, 2))
    mirrored = source * [-1, 1]
    fitted = align.similarity(source, mirrored)
    assert np.linalg.det(fitted[:, :2]) > 0  # a rotation and a scale, never a mirror
    noisy_target = align.apply(_similarity(5, 1.2, 3, 4), source) + rng.normal(0, 2, source.shape)
    best = align.similarity(source, noisy_target)
    residual = ((align.apply(best, source) - noisy_target) ** 2).sum()
    for nudge in (_similarity(1, 1.0, 0, 0), _similarity(0, 1.01, 0, 0), _similarity(0, 1, 0.5, 0)):
        moved = np.vstack([nudge @ np.vstack([best, [0, 0, 1]])])
        assert ((align.apply(moved, source) - noisy_target) ** 2).sum() > residual


@pytest.mark.parametrize("bad", [np.zeros((1, 2)), np.zeros((3, 3)), np.ones((4, 2))])
def test_degenerate_points_are_refused(bad):
    with pytest.raises(ValueError):
        align.similarity(bad, np.zeros_like(bad) if bad.shape[1] == 2 else np.zeros((3, 3)))


def test_the_warp_puts_marked_points_where_the_matrix_says():
    """Dots drawn at landmarks in a rotated, scaled 'photo' arrive at the template positions."""
    template = np.array([[60.0, 60.0], [140.0, 60.0], [100.0, 105.0], [100.0, 145.0]])
    photo_points = align.apply(_similarity(-25.0, 1.7, 210.0, 90.0), template)
    photo = Image.new("RGB", (640, 480))
    draw = ImageDraw.Draw(photo)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    for (x, y), colour in zip(photo_points, colours):
        draw.ellipse((x - 6, y - 6, x + 6, y + 6), fill=colour)
    matrix = align.similarity(photo_points, template)
    crop = np.asarray(align.warp(photo, matrix, 200), np.float64)
    assert crop.shape == (200, 200, 3)
    for (x, y), colour in zip(template, colours):
        channel = int(np.argmax(colour)) if colour != (255, 255, 0) else 0
        weights = crop[..., channel] * (crop.sum(axis=2) > 100) * (np.abs(crop - colour).sum(axis=2) < 200)
        ys, xs = np.nonzero(weights)
        centre = np.array([np.average(xs + 0.5, weights=weights[ys, xs]), np.average(ys + 0.5, weights=weights[ys, xs])])
        assert np.abs(centre - (x, y)).max() < 0.6, (colour, centre, (x, y))
    assert crop[0:5, 0:5].sum() == 0  # outside the photo: black
