"""How a sweep searches and what Optuna (and the dashboard) see: pruning, two objectives, a latency
constraint, metric names, learning curves, user attributes, states that say what happened, and
switches sampled as categoricals."""

import optuna
import pytest

from ab.nn import api, train
from ab.nn.sweep.search import Search, SearchError
from tests import helpers
from tests.test_sweep_cli import CONFIG, FAST, run

FIXED = '{"lr": 0.01, "momentum": 0.9}'
SANDBOXED = [a for a in FAST if a not in ("--in-process", "--unsafe")]


def _study(root):
    trials = api.trials(db=root / "db" / "ab.nn.db")
    return trials, optuna.load_study(study_name=trials.study.iloc[0], storage=f"sqlite:///{root / 'db' / 'ab.nn.db'}")


def test_a_losing_trial_is_pruned_and_recorded_with_its_epochs(root, utk_dir, tiny_model):
    config = f"age-regression_utkface_mae_{tiny_model}"
    assert run(root, utk_dir, "-c", config, "-t", "4", "-e", "4", "--pruner", "median", "-p", FIXED) == 0
    assert run(root, utk_dir, "-c", config, "-t", "-1", "-e", "4", "--pruner", "median",
               "-p", '{"lr": 1e-9, "momentum": 0.0}') == 0  # learns nothing: worse than the median at epoch 2
    trials, study = _study(root)
    pruned = trials[trials.status == "pruned"]
    assert len(pruned) == 1 and 1 <= pruned.epochs_done.iloc[0] < 4
    epochs = api.data(db=root / "db" / "ab.nn.db")
    assert (epochs[epochs.trial_id == pruned.id.iloc[0]].epoch.tolist()
            == list(range(1, pruned.epochs_done.iloc[0] + 1)))  # every epoch it ran is recorded
    frozen = study.trials[-1]
    assert frozen.state.name == "PRUNED" and frozen.user_attrs["status"] == "pruned"
    assert "pruned by --pruner median" in frozen.user_attrs["reason"]
    assert pruned.test_mae.isna().all()  # not trained to the end: no test number, no export
    assert run(root, utk_dir, "-c", config, "-t", "5", "-e", "4", "--pruner", "median", "-p", FIXED) == 0
    assert len(api.trials(db=root / "db" / "ab.nn.db")) == 5  # a pruned trial counts towards -t


def test_a_sandboxed_trial_is_pruned_too(root, utk_dir, tiny_model):
    """The pruner's answer crosses the sandbox's JSON protocol (Optuna's numpy bool once made every
    prunable sandboxed trial fail)."""
    config = f"age-regression_utkface_mae_{tiny_model}"
    assert run(root, utk_dir, "-c", config, "-t", "4", "-e", "4", "--pruner", "median", "-p", FIXED) == 0
    assert train.cli(["--root", str(root), "--data-dir", str(utk_dir), *SANDBOXED, "-c", config, "-t", "-1", "-e", "4",
                      "--pruner", "median", "-p", '{"lr": 1e-9, "momentum": 0.0}']) == 0
    trials, study = _study(root)
    assert trials.status.tolist() == ["complete"] * 4 + ["pruned"], trials.error.tolist()
    assert study.trials[-1].state.name == "PRUNED"


def test_no_trial_is_pruned_before_the_pruner_warmup(root, utk_dir, tiny_model):
    config = f"age-regression_utkface_mae_{tiny_model}"
    warm = ("-e", "5", "--pruner", "median", "--pruner-warmup", "3")
    assert run(root, utk_dir, "-c", config, "-t", "4", *warm, "-p", FIXED) == 0
    assert run(root, utk_dir, "-c", config, "-t", "-1", *warm, "-p", '{"lr": 1e-9, "momentum": 0.0}') == 0
    trials, study = _study(root)
    pruned = trials[trials.status == "pruned"]
    assert len(pruned) == 1 and 3 <= pruned.epochs_done.iloc[0] < 5  # judged at epoch 3 at the earliest
    assert min(study.trials[-1].intermediate_values) == 1  # the warm-up epochs are still reported


def test_a_trial_below_the_floor_is_stopped_from_epoch_2_even_without_a_pruner(root, utk_dir, tiny_model):
    """No trial of a few tiny-model epochs reaches accuracy 0.99 (MAE 0.2 years): the floor stops it
    after epoch 2, not after epoch 1, and the reason names the floor."""
    config = f"age-regression_utkface_mae_{tiny_model}"
    assert run(root, utk_dir, "-c", config, "-t", "1", "-e", "4", "--pruner-floor", "0.99", "-p", FIXED) == 0
    trials, study = _study(root)
    assert trials.status.tolist() == ["pruned"] and trials.epochs_done.tolist() == [2]
    assert sorted(study.trials[0].intermediate_values) == [1, 2]
    assert "pruned by --pruner-floor 0.99 after epoch 2" in study.trials[0].user_attrs["reason"]


def test_optuna_sees_names_curves_attributes_and_true_states(root, utk_dir, misbehaving, monkeypatch):
    monkeypatch.setenv("AB_NN_FAULT_MISBEHAVE", "raise")
    assert run(root, utk_dir, "-c", misbehaving, "-t", "1", "-e", "2") == 0
    monkeypatch.setenv("AB_NN_FAULT_MISBEHAVE", "hopeless")
    # it reads $AB_NN_FAULT_MISBEHAVE when imported; a changed workspace file is imported afresh
    helpers.write_model(root, "Misbehaves", helpers.MISBEHAVING + "\n# hopeless\n")
    assert run(root, utk_dir, "-c", misbehaving, "-t", "-1", "-e", "2") == 0
    trials, study = _study(root)
    assert study.metric_names == ["val MAE (years)"] and study.direction.name == "MINIMIZE"
    failed, complete, stopped = study.trials
    assert failed.state.name == "FAIL" and "forward exploded" in failed.user_attrs["reason"]
    assert complete.state.name == "COMPLETE" and complete.intermediate_values.keys() == {1, 2}
    attrs = complete.user_attrs
    row = trials.set_index("id").loc[attrs["ab_nn_trial"]]
    assert attrs["eval_mae"] == pytest.approx(row.eval_mae) and attrs["test_mae"] == pytest.approx(row.test_mae)
    assert attrs["status"] == "complete" and attrs["split"] == "paper/42" and attrs["n_train"] == row.n_train
    assert attrs["data_key"] == row.data_key and attrs["epochs_done"] == 2
    assert complete.value == pytest.approx(row.eval_mae)  # Optuna optimises the validation MAE in years
    epochs = api.data(db=root / "db" / "ab.nn.db")
    assert complete.intermediate_values[2] == pytest.approx(
        epochs[(epochs.trial_id == attrs["ab_nn_trial"]) & (epochs.epoch == 2)].eval_mae.iloc[0])
    assert stopped.state.name == "PRUNED" and "LEMUR's early stop" in stopped.user_attrs["reason"]
    notes = "".join(str(v) for k, v in study._storage.get_study_system_attrs(study._study_id).items()
                    if k.startswith("dashboard:"))
    assert f"**ab.nn trial {attrs['ab_nn_trial']}**: complete after 2 of 2 epochs" in notes  # the dashboard's note
    assert f"validation MAE {row.eval_mae:.2f} years" in notes and "reason: RuntimeError: forward exploded" in notes


def test_model_switches_are_categorical_and_model_ranges_are_used(root, utk_dir, capsys):
    args = ["--root", str(root), "--data-dir", str(utk_dir), "-c", CONFIG, "-t", "1", "-f", "norm_64", "-w", "0",
            "--quiet", "--export", "none", "--in-process", "--min_batch_binary_power", "3", "-b", "3"]  # no --pretrained
    assert train.cli(args) == 0
    assert capsys.readouterr().out.count("no pretrained weights on this machine, so pretrained is fixed to 0") == 1
    trials, study = _study(root)
    distributions = study.trials[0].distributions
    for switch in ("bounded", "sgd", "smooth_l1", "onecycle", "head", "flip_average"):
        assert isinstance(distributions[switch], optuna.distributions.CategoricalDistribution), switch
    assert distributions["lr"].low == 1e-4 and distributions["lr"].high == 3e-3  # the model's own range
    assert distributions["batch"].choices == (8,)  # set on the command line: the user's range wins
    assert "pretrained" not in distributions and trials.prm[0]["pretrained"] == 0  # no weights here: fixed


def test_two_objectives_record_both_values_and_a_pareto_front(root, utk_dir, tiny_model):
    config = f"age-regression_utkface_mae_{tiny_model}"
    assert run(root, utk_dir, "-c", config, "-t", "3", "--objectives", "mae,macs") == 0
    trials, study = _study(root)
    assert len(study.directions) == 2 and study.metric_names[1] == "MMACs (batch 1)"
    assert all(len(t.values) == 2 and t.values[1] == pytest.approx(t.user_attrs["macs"] / 1e6) for t in study.trials)
    assert 1 <= len(study.best_trials) <= 3


def test_latency_objective_is_the_measured_latency(root, utk_dir, tiny_model):
    config = f"age-regression_utkface_mae_{tiny_model}"
    assert run(root, utk_dir, "-c", config, "-t", "1", "--objectives", "mae,latency", "--export", "onnx",
               "--latency-runs", "3", "--latency-warmup", "0") == 0
    trials, study = _study(root)
    latency = api.latency(trial_id=int(trials.id[0]), threads=1, db=root / "db" / "ab.nn.db")
    onnx = latency[latency.format == "onnx"].median_ms.iloc[0]
    assert study.trials[0].values[1] == pytest.approx(onnx)


@pytest.mark.parametrize("limit, feasible", [(1e6, True), (1e-6, False)])
def test_a_latency_constraint_is_recorded_and_honoured(root, utk_dir, tiny_model, limit, feasible, capsys):
    config = f"age-regression_utkface_mae_{tiny_model}"
    assert run(root, utk_dir, "-c", config, "-t", "2", "--max-latency-ms", str(limit), "--export", "onnx",
               "--latency-runs", "3", "--latency-warmup", "0") == 0
    _, study = _study(root)
    assert all((t.constraints["latency_ms"] <= 0) == feasible for t in study.trials)
    summary = capsys.readouterr().out
    if feasible:
        assert study.best_trial.constraints["latency_ms"] <= 0 and "best: trial" in summary
    else:
        with pytest.raises(ValueError):
            study.best_trial  # no feasible trial: Optuna names none best, and neither do we
        assert "best: trial" not in summary


def test_bad_search_settings_are_refused():
    with pytest.raises(SearchError, match="at least 1 epoch"):
        Search.parse("median", warmup=0)
    with pytest.raises(SearchError, match="no epoch of 4 at which to prune"):
        Search.parse("hyperband", warmup=4).check(exporting=False, epochs=4)
    with pytest.raises(SearchError, match="pruners do not work with several objectives"):
        Search.parse("median", "accuracy,latency")
    with pytest.raises(SearchError, match="mae .* first"):
        Search.parse("none", "latency")
    with pytest.raises(SearchError, match="exported model"):
        Search.parse("none", "accuracy,latency").check(exporting=False)
    for floor in (0.0, 1.0, 15.0):  # an MAE given where an accuracy is meant
        with pytest.raises(SearchError, match="accuracy between 0 and 1"):
            Search.parse("median", floor=floor)
    with pytest.raises(SearchError, match="cannot go with hyperband"):
        Search.parse("hyperband", floor=0.25)
    with pytest.raises(SearchError, match="several objectives"):
        Search.parse("none", "accuracy,macs", floor=0.25)
    with pytest.raises(SearchError, match="-e of at least 3"):
        Search.parse("none", floor=0.25).check(exporting=False, epochs=2)


def _curve(study, accuracies) -> int | None:
    """Reports a learning curve as the runner does (validation MAE, from accuracies written as the CLI's
    --pruner-floor reads them); the epoch after which the trial is stopped."""
    trial = study.ask()
    maes = [(1 - a) * 20 for a in accuracies]
    for epoch, mae in enumerate(maes, start=1):
        trial.report(mae, epoch)
        if epoch < len(maes) and trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return epoch
    study.tell(trial, maes[-1])
    return None


def test_the_floor_stops_only_trials_below_it_and_leaves_the_ranking_to_the_pruner():
    search = Search.parse("successive-halving", warmup=3, floor=0.25)
    study = optuna.create_study(direction="minimize", pruner=search.make_pruner(epochs=6))
    assert _curve(study, [0.2, 0.3, 0.4, 0.5, 0.6, 0.7]) is None  # below the floor at epoch 1 only: exempt
    assert _curve(study, [0.3, 0.24, 0.5, 0.5, 0.5, 0.5]) == 2  # below it at epoch 2
    assert _curve(study, [0.3, 0.3, 0.1, 0.5, 0.5, 0.5]) == 3  # and at any later epoch
    assert _curve(study, [0.3, 0.3, 0.3, 0.3, 0.3, 0.3]) == 3  # above the floor, ranked at rung 3: not the best
    rungs = [t.system_attrs.get("completed_rung_0") for t in study.trials]
    assert rungs == pytest.approx([12, None, 18, 14])  # the rung values (MAE) include the floored trial's
    alone = optuna.create_study(direction="minimize", pruner=Search.parse("none", floor=0.25).make_pruner(6))
    assert [_curve(alone, c) for c in ([0.5] * 6, [0.3, 0.1, 0.5, 0.5, 0.5, 0.5], [0.3] * 6)] == [None, 2, None]


@pytest.mark.parametrize("pruner, pruned_ranks", [("median", [3, 4]), ("percentile", [2, 3, 4])])
def test_median_stops_the_worse_half_and_percentile_all_but_the_best_quarter(pruner, pruned_ranks):
    """Eight finished trials with validation accuracies 0.1 ... 0.8 at the judged epoch; a new trial
    at each quarter's accuracy (rank 1 is the best quarter) is stopped or kept as the README says."""
    search = Search.parse(pruner, warmup=1)
    study = optuna.create_study(direction="minimize", pruner=search.make_pruner(epochs=4))
    for accuracy in [0.1 * i for i in range(1, 9)]:
        trial = study.ask()
        trial.report((1 - accuracy) * 20, step=1)
        study.tell(trial, (1 - accuracy) * 20)
    stopped = []
    for rank, accuracy in enumerate([0.75, 0.55, 0.35, 0.15], start=1):
        trial = study.ask()
        trial.report((1 - accuracy) * 20, step=1)
        if trial.should_prune():
            stopped.append(rank)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert stopped == pruned_ranks
