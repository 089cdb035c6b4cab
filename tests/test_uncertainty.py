"""Intervals and paired comparisons of MAE (ab.nn.stat.uncertainty)."""
import numpy as np
import pytest

from ab.nn.stat import uncertainty


def _errors(n, seed=0, scale=5.0):
    return np.abs(np.random.default_rng(seed).normal(0, scale, n))


def test_bootstrap_interval_contains_the_mae_and_narrows_with_more_images():
    widths = []
    for n in (100, 1000, 10000):
        errors = _errors(n)
        low, high = uncertainty.bootstrap_mae(errors)
        assert low < errors.mean() < high
        widths.append(high - low)
    assert widths[0] > 2 * widths[1] > 4 * widths[2]  # ~1/sqrt(n)
    assert uncertainty.bootstrap_mae(_errors(500)) == uncertainty.bootstrap_mae(_errors(500))  # seeded: repeatable


def test_identical_predictions_are_a_tie():
    errors = _errors(400)
    c = uncertainty.compare(errors, errors.copy())
    assert c.difference == 0 and c.low == 0 and c.high == 0
    assert c.p_value == 1.0 and not c.significant and c.verdict == "tie"


def test_a_clearly_better_model_is_significant_and_a_tiny_shift_is_a_tie():
    errors = _errors(2000)
    better = uncertainty.compare(errors * 0.8, errors)
    assert better.significant and better.verdict == "A lower" and better.high < 0 and better.p_value < 1e-6
    noise = np.random.default_rng(1).normal(0, 2.0, errors.size)
    tiny = uncertainty.compare(np.abs(errors + noise), np.abs(errors + noise[::-1]))
    assert tiny.low < 0 < tiny.high and tiny.verdict == "tie"


def test_a_difference_that_prints_as_zero_is_a_tie_however_small_its_p():
    errors = _errors(400)
    shifted = uncertainty.compare(errors + 0.00045, errors)  # the "+0.00 [+0.00, +0.00] p=0.012 worse"
    assert 0 < shifted.low <= shifted.high < uncertainty.RESOLUTION and shifted.p_value < 0.05
    assert not shifted.significant and shifted.verdict == "tie"
    resolved = uncertainty.compare(errors + 0.02, errors)
    assert resolved.significant and resolved.verdict == "B lower"


def test_replicas_widen_the_interval_by_their_spread():
    errors = _errors(1000)
    single = uncertainty.compare(errors, errors * 0.97)
    rng = np.random.default_rng(3)
    spread = np.stack([errors * f for f in (0.85, 1.0, 1.15)])  # seeds that disagree a lot
    replicated = uncertainty.compare(spread, np.stack([errors * 0.97 * f for f in rng.uniform(0.85, 1.15, 3)]))
    assert (replicated.high - replicated.low) > 3 * (single.high - single.low)
    assert replicated.replicas_a == 3 and replicated.n_images == 1000


def test_unpaired_inputs_are_refused():
    with pytest.raises(ValueError, match="same images"):
        uncertainty.compare(_errors(10), _errors(11))


def test_mean_std_across_replicas():
    assert uncertainty.mean_std([5.0, 6.0, 7.0]) == (6.0, 1.0, 3)
    assert uncertainty.mean_std([5.5, None, float("nan")]) == (5.5, 0.0, 1)


def test_t_interval_over_three_seeds():
    low, high = uncertainty.t_interval([5.0, 6.0, 7.0])  # mean 6, std 1: 6 ± t(0.975, 2) / sqrt(3)
    assert (low, high) == pytest.approx((6 - 4.302653 / np.sqrt(3), 6 + 4.302653 / np.sqrt(3)))
    assert all(np.isnan(uncertainty.t_interval([5.0])))


def test_a_replica_groups_interval_holds_its_seed_spread():
    rng = np.random.default_rng(3)
    base = np.abs(rng.normal(0, 6, 3000))
    same = np.stack([base, base, base])
    spread = np.stack([base - 0.6, base, base + 0.6])
    low, high = uncertainty.bootstrap_replicas(same)
    alone = uncertainty.bootstrap_mae(base)
    assert low < base.mean() < high
    assert (high - low) == pytest.approx(alone[1] - alone[0], rel=0.15)  # identical replicas: images only
    wide = uncertainty.bootstrap_replicas(spread)
    assert wide[0] < spread.mean() < wide[1] and (wide[1] - wide[0]) > 2 * (high - low)
    with pytest.raises(ValueError):
        uncertainty.bootstrap_replicas(np.empty((2, 0)))
