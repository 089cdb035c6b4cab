"""Per-age calibration fitted on the validation part (ab.nn.stat.calibration): the isotonic fits, the
map read back from JSON, and its judgement on the test part through api.groups/compare and the CLI."""
import json

import numpy as np
import pytest

from ab.nn.stat import calibration
from ab.nn.stat.calibration import AgeCalibration
from tests import helpers
from tests.test_groups import RACES, _labels, _store_trial


def _brute_isotonic(x, y):
    """Isotonic regression by its definition: the non-decreasing fit of least squares, found as the
    minimum over every upper set of the lower set's mean (the min-max formula)."""
    order = np.argsort(x, kind="stable")
    y = np.asarray(y, float)[order]
    return np.array([max(min(y[i:j + 1].mean() for j in range(k, len(y))) for i in range(k + 1))
                     for k in range(len(y))])


def test_the_fit_is_the_least_squares_monotone_fit():
    rng = np.random.default_rng(1)
    x = rng.permutation(60).astype(float)  # distinct predictions, so every block centre is a prediction mean
    y = 20 + 0.3 * x + rng.normal(0, 6, 60)
    fitted = calibration.fit(x, y, "forward")
    expected = _brute_isotonic(x, y)  # a step function: the map's knots are its steps, at their centres
    assert np.allclose(np.unique(expected.round(9)), np.unique(np.round(fitted.calibrated, 9)))
    steps = np.unique(expected.round(9), return_inverse=True)[1]
    centres = [np.sort(x)[steps == k].mean() for k in range(steps.max() + 1)]
    assert np.allclose(fitted.predicted, centres) and np.allclose(fitted(centres), np.unique(expected.round(9)))
    inverse = calibration.fit(y, x, "inverse")  # the same regression of x on y, read from y back to x
    assert inverse.predicted == fitted.calibrated and inverse.calibrated == fitted.predicted
    assert (np.diff(fitted.calibrated) >= 0).all() and (np.diff(fitted.predicted) > 0).all()


def test_ties_are_pooled_and_the_map_is_flat_beyond_its_ends():
    x = np.repeat([10.0, 20.0, 30.0], 20)
    y = np.concatenate([np.full(20, 4.0), np.full(20, 25.0), np.full(20, 50.0)])
    fitted = calibration.fit(x, y, "forward")
    assert fitted.predicted == (10.0, 20.0, 30.0) and fitted.calibrated == (4.0, 25.0, 50.0)
    assert fitted([0.0, 15.0, 99.0]).tolist() == [4.0, 14.5, 50.0]


def _bias(mapped, truth, where):
    return abs((mapped - truth)[where].mean())


def test_a_shrunk_model_is_stretched_back_on_images_it_was_not_fitted_on():
    """A model that regresses to the mean (children older, the old younger) is calibrated on one half
    and judged on the other: the inverse map removes most of the extremes' bias, and the MAE falls."""
    rng = np.random.default_rng(0)
    ages = rng.integers(1, 90, 6000).astype(float)
    predicted = 33 + 0.7 * (ages - 33) + rng.normal(0, 4, ages.size)
    fitted = calibration.fit(predicted[:3000], ages[:3000])
    plain, mapped, truth = predicted[3000:], fitted(predicted[3000:]), ages[3000:]
    young, old = truth < 10, truth >= 70
    assert _bias(mapped, truth, young) < _bias(plain, truth, young) / 4
    assert _bias(mapped, truth, old) < _bias(plain, truth, old) / 4
    assert np.abs(mapped - truth).mean() < np.abs(plain - truth).mean()


def test_the_forward_map_adds_bias_per_true_age_to_a_noisy_model_and_the_inverse_does_not():
    """A model without bias but with noise: the mean age per prediction (forward) pulls its answers
    towards the bulk of the ages, so children come out older; the inverse map leaves them as they were."""
    rng = np.random.default_rng(1)
    ages = np.r_[rng.integers(1, 18, 1500), rng.integers(18, 40, 4500)].astype(float)
    predicted = ages + rng.normal(0, 5, ages.size)
    order = rng.permutation(ages.size)
    ages, predicted = ages[order], predicted[order]
    truth, young = ages[3000:], ages[3000:] < 10
    forward = calibration.fit(predicted[:3000], ages[:3000], "forward")(predicted[3000:])
    inverse = calibration.fit(predicted[:3000], ages[:3000], "inverse")(predicted[3000:])
    plain = predicted[3000:]
    assert _bias(forward, truth, young) > _bias(plain, truth, young) + 0.5
    assert _bias(inverse, truth, young) < _bias(forward, truth, young) - 0.5


def test_fitting_refuses_too_few_or_bad_numbers():
    with pytest.raises(ValueError, match="at least 30"):
        calibration.fit(np.arange(10.0), np.arange(10.0))
    with pytest.raises(ValueError, match="finite"):
        calibration.fit(np.r_[np.arange(40.0), np.nan], np.arange(41.0))
    with pytest.raises(ValueError, match="40 predictions for 41"):
        calibration.fit(np.arange(40.0), np.arange(41.0))


def test_a_map_read_from_json_is_checked():
    for method in calibration.METHODS:
        fitted = calibration.fit(np.arange(50.0), np.arange(50.0) * 1.1, method)
        assert AgeCalibration.from_json(json.loads(json.dumps(fitted.to_json()))) == fitted
    good = fitted.to_json()
    for broken, message in [
        ({**good, "method": "platt"}, "not an age calibration"),
        ({**good, "method": "isotonic"}, "method inverse or forward"),
        ({**good, "predicted": good["predicted"][::-1]}, "must increase"),
        ({**good, "calibrated": good["calibrated"][:-1]}, "as many"),
        ({**good, "calibrated": [float("nan")] * 50}, "finite"),
        ({**good, "calibrated": [500.0] * 50}, "lie in"),
        ({**good, "images": True}, "at least 30 images"),
        ({**good, "predicted": "0,1,2"}, "lists of numbers"),
        ([1, 2], "not an age calibration"),
    ]:
        with pytest.raises(ValueError, match=message):
            AgeCalibration.from_json(broken)


# -- judged on the test part, from a real statistics database ------------------------------------
def _shrunk_replicas(tmp_path, seeds=3, n=1500):
    """Three replicas that regress to the mean, with validation and test predictions stored."""
    url = f"sqlite:///{tmp_path / 'ab.nn.db'}"
    store = helpers.new_store(url)
    rng = np.random.default_rng(7)
    ages = {split: rng.integers(1, 90, n).astype(float) for split in ("eval", "test")}
    ids = {split: [f"{split}{i}" for i in range(n)] for split in ages}
    race = RACES[np.arange(n) % 5]
    labels = [item for split in ages for item in
              _labels(n, race, ["male", "female"] * (n // 2), ages[split])]
    labels = [(f"{split}{i}", attrs) for split in ages for i, (_, attrs) in
              enumerate(labels[:n] if split == "eval" else labels[n:])]
    trials = []
    for seed in range(seeds):
        noise = np.random.default_rng(seed)
        predictions = {split: (a, 33 + 0.6 * (a - 33) + noise.normal(0, 4, n), ids[split]) for split, a in ages.items()}
        trials.append(_store_trial(store, predictions, labels))
    return url, trials


def test_calibrated_replicas_are_judged_on_the_test_part_paired_with_the_plain_ones(tmp_path):
    from ab.nn import api

    url, trials = _shrunk_replicas(tmp_path)
    calibrated = api.calibrated(trials)
    frame = api.compare(calibrated, trials, by="age_group", db=url)
    bias = frame[frame.metric == "bias"].set_index("group")
    assert bias.loc["70+", "verdict"] == "B lower" and bias.loc["70+", "a"] > bias.loc["70+", "b"]  # less negative
    adult = frame[frame.metric == "false_adult@18"].set_index("group").loc["all"]
    assert adult.a < adult.b and adult.verdict == "A lower"
    assert frame.attrs["trial_ids"] == trials and frame.attrs["trial_ids_b"] == trials
    overall = api.compare(calibrated, trials, db=url)
    assert overall.replicas_a == overall.replicas_b == 3 and overall.verdict == "A lower"

    plain = api.groups(trials, by="race", db=url)
    mapped = api.groups(calibrated, by="race", db=url)
    assert _all(mapped, "mae") < _all(plain, "mae")
    with pytest.raises(ValueError, match="fitted on the eval part"):
        api.groups(calibrated, split="eval", db=url)
    with pytest.raises(ValueError, match="method is one of inverse, forward"):
        api.calibrated(trials, "isotonic")


def test_paired_seeds_give_a_tighter_interval_than_independent_ones():
    from ab.nn.stat import uncertainty

    rng = np.random.default_rng(3)
    seed_effect = rng.normal(0, 1.0, (3, 1))  # seeds differ a lot, the same way on both sides
    a = np.abs(rng.normal(0, 5, (3, 2000)) + seed_effect)
    b = a + 0.1
    paired = uncertainty.compare(a, b, resamples=400, paired_replicas=True)
    independent = uncertainty.compare(a, b, resamples=400)
    assert paired.high - paired.low < (independent.high - independent.low) / 3
    assert paired.high < 0 and paired.verdict == "A lower"
    with pytest.raises(ValueError, match="as many"):
        uncertainty.compare(a, b[:2], paired_replicas=True)


def _all(frame, metric):
    return frame[(frame.group == "all") & (frame.metric == metric)].value.iloc[0]


def test_the_groups_command_judges_a_calibration_against_the_plain_models(tmp_path, capsys):
    from ab.nn.stat.__main__ import cli

    url, trials = _shrunk_replicas(tmp_path)
    ids = ",".join(map(str, trials))
    assert cli(["groups", "--trial", ids, "--by", "age_group", "--calibrated", "--against", "--db", url]) == 0
    out = capsys.readouterr().out
    assert "after inverse per-age calibration fitted on their eval part" in out and "paired over images and seeds" in out
    line = next(row for row in out.splitlines() if row.startswith("| 70+ | bias |"))
    assert "B lower" in line
    with pytest.raises(SystemExit):
        cli(["groups", "--trial", ids, "--against", "--db", url])
    assert "--against needs trial ids" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["groups", "--trial", "1,x", "--db", url])
    assert "whole numbers" in capsys.readouterr().err


def test_calibrate_writes_the_map_into_the_trial_folder(tmp_path, capsys):
    from ab.nn.stat.__main__ import cli

    root = tmp_path / "ws"
    (root / "db").mkdir(parents=True)
    store = helpers.new_store(f"sqlite:///{root / 'db' / 'ab.nn.db'}")
    rng = np.random.default_rng(0)
    ages = rng.integers(1, 90, 400).astype(float)
    predicted = 33 + 0.6 * (ages - 33) + rng.normal(0, 3, ages.size)
    ids = [f"img{i}" for i in range(ages.size)]
    trial = _store_trial(store, {"eval": (ages, predicted, ids)}, _labels(ages.size, RACES[np.arange(400) % 5],
                                                                          ["male"] * 400, ages))
    assert cli(["calibrate", "--trial", str(trial), "--root", str(root)]) == 0
    out = capsys.readouterr().out
    folder = root / "out" / "age-regression_utkface_mae_TinyAge" / str(trial)
    assert str(folder / calibration.FILE) in out and "fitted on 400 validation images" in out
    assert calibration.load(folder) == calibration.fit(predicted, ages)
    stored = json.loads((folder / calibration.FILE).read_text())
    assert stored["trial_id"] == trial and stored["data_key"] == "k" and stored["fitted_on"] == "eval"
    (folder / calibration.FILE).write_text('{"method": "inverse", "predicted": [1, 2]')
    with pytest.raises(ValueError, match="calibration.json"):
        calibration.load(folder)
    assert calibration.load(tmp_path) is None
    for argv, message in [(["calibrate", "--root", str(root)], "needs --trial ID"),
                          (["calibrate", "--trial", "99", "--root", str(root)], "99")]:
        with pytest.raises(SystemExit):
            cli(argv)
        assert message in capsys.readouterr().err
