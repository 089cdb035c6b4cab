"""Replaying pruners on a finished study: the replay makes the runner's own decisions on the runner's
own recordings, charges a stopped trial only the epochs it trained, and says whether the best trial
was still found within half the time."""
import math

import pandas as pd
import pytest

from ab.nn import api
from ab.nn.stat.__main__ import cli as stat_cli
from ab.nn.sweep import replay
from ab.nn.sweep.search import Search, SearchError
from tests.test_search import FIXED
from tests.test_sweep_cli import run

STUDY = "cfg@key/e4"


def recording(curves: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trials of one study, run one after another, each ``{"acc": [...], "status": ..., "replica_of": ...}``;
    every epoch takes 10 s and every trial 5 s more (start-up, test, bookkeeping)."""
    trials, epochs, clock = [], [], pd.Timestamp("2026-12-02 10:00")
    for i, c in enumerate(curves, start=1):
        accs = c["acc"]
        seconds = 10 * len(accs) + 5
        trials.append({"id": i, "study": STUDY, "replica_of": c.get("replica_of"), "status": c.get("status", "complete"),
                       "epoch_max": 4, "epochs_done": len(accs), "eval_mae": 20 * (1 - accs[-1]) if accs else math.nan,
                       "eval_accuracy": accs[-1] if accs else math.nan, "started_at": clock,
                       "finished_at": clock + pd.Timedelta(seconds=seconds)})
        epochs += [{"trial_id": i, "epoch": e, "accuracy": a, "duration_s": 10.0 * e} for e, a in enumerate(accs, 1)]
        clock += pd.Timedelta(seconds=seconds + 1)
    return pd.DataFrame(trials), pd.DataFrame(epochs)


GOOD = [0.50, 0.60, 0.70, 0.80]


def test_a_stopped_trial_is_charged_the_epochs_it_trained_and_the_rest_as_recorded():
    trials, epochs = recording([{"acc": GOOD}] * 4 + [{"acc": [0.1, 0.2, 0.3, 0.4]}])
    out = replay.replay(trials, epochs, Search("median", warmup=1)).set_index("id")
    assert out.status.tolist() == ["complete"] * 4 + ["pruned"]
    assert out.epochs[5] == 1 and out.seconds[5] == pytest.approx(45 - 30)  # 3 epochs of 10 s not trained
    assert out.seconds[:4].tolist() == [45.0] * 4 and out.elapsed[5] == pytest.approx(4 * 45 + 15)
    recorded = replay.replay(trials, epochs, Search("none")).set_index("id")
    assert (recorded.status == recorded.recorded_status).all() and recorded.seconds.sum() == 5 * 45


def test_the_replay_decides_in_the_runners_order():
    """Never at the last epoch; LEMUR's gate and divergence come before the pruner at the epoch they
    ended a trial; a trial that failed later would have been stopped first; replicas are not judged."""
    low = [0.1, 0.1, 0.1, 0.1]
    trials, epochs = recording([{"acc": GOOD}] * 4 + [
        {"acc": GOOD[:3] + [0.1]},  # bad only at the last epoch: trains to the end
        {"acc": [0.1], "status": "stopped"},  # LEMUR's gate ended it after epoch 1
        {"acc": [0.1, 0.1], "status": "diverged"},  # would be pruned at 1; diverged at 2
        {"acc": [0.1], "status": "failed"},  # failed during epoch 2: would have been pruned after epoch 1
        {"acc": low, "replica_of": 1},  # a replica of trial 1: never judged
    ])
    out = replay.replay(trials, epochs, Search("median", warmup=1)).set_index("id")
    assert out.status.tolist() == ["complete"] * 5 + ["stopped", "pruned", "pruned", "complete"]
    assert out.epochs[7] == 1 and out.epochs[8] == 1 and out.seconds[8] == out.seconds_recorded[8]
    assert not out.judged[9]


def test_a_trial_the_recording_pruned_cannot_train_on_in_the_replay():
    trials, epochs = recording([{"acc": GOOD}] * 4 + [{"acc": [0.1, 0.1], "status": "pruned"}])
    out = replay.replay(trials, epochs, Search("none")).set_index("id")
    assert out.status[5] == "pruned" and out.beyond_record[5]
    assert not replay.replay(trials, epochs, Search("median", warmup=2)).beyond_record.any()


def test_the_summary_says_whether_the_best_was_still_found_in_half_the_time():
    # the best trial comes last and starts slowly: a pruner with no warm-up stops it
    slow_best = [0.2, 0.3, 0.9, 0.95]
    trials, epochs = recording([{"acc": GOOD}] * 4 + [{"acc": [0.1] * 4}] * 6 + [{"acc": slow_best}])
    early = replay.summarise(replay.replay(trials, epochs, Search("median", warmup=1)), Search("median", warmup=1),
                             target=20 * (1 - 0.95))
    assert not early["best_kept"] and math.isnan(early["minutes_to_target"]) and not early["half_time_met"]
    late = replay.grid(trials, epochs, ["median"], [3, 4], target=20 * (1 - 0.95))
    assert late.pruner.tolist() == ["none", "median"]  # warm-up 4 leaves no epoch of 4: skipped, as the runner does
    assert late.half_time_met[0] is None and late.best_kept.all() and late.stopped.tolist() == [0, 6]
    assert late.minutes_to_target[1] == pytest.approx((4 * 45 + 6 * 35 + 45) / 60)
    assert late.time_ratio[1] == pytest.approx((4 * 45 + 6 * 35 + 45) / (11 * 45))
    assert late.half_time_met[1] == (late.target_ratio[1] <= 0.5)


def test_a_floor_is_replayed_alone_and_with_each_pruner_but_hyperband():
    dead = [0.1, 0.1, 0.1, 0.1]
    trials, epochs = recording([{"acc": GOOD}] * 4 + [{"acc": dead}] * 3 + [{"acc": [0.1, 0.3, 0.6, 0.9]}])
    out = replay.replay(trials, epochs, Search("none", floor=0.2)).set_index("id")
    assert out.status.tolist() == ["complete"] * 4 + ["pruned"] * 3 + ["complete"]
    assert out.epochs[5:7].tolist() == [2, 2] and out.judged.all()  # judged from epoch 2, not before
    table = replay.grid(trials, epochs, ["median", "hyperband"], [1], target=20 * (1 - 0.9), floor=0.2)
    assert table.pruner.tolist() == ["none", "none", "median"] and table.floor.isna().tolist() == [True, False, False]
    assert table.stopped[1] == 3 and table.half_time_met[0] is None and table.half_time_met[1] is not None


def test_a_replay_is_of_one_single_objective_study():
    trials, epochs = recording([{"acc": GOOD}] * 2)
    with pytest.raises(ValueError, match="one study"):
        replay.replay(trials.assign(study=["a", "b"]), epochs, Search("median"))
    with pytest.raises(SearchError, match="several objectives"):
        replay.replay(trials, epochs, Search("none", ("accuracy", "macs")))


def test_replaying_a_real_pruned_sweep_makes_its_decisions_again(root, utk_dir, tiny_model, capsys):
    config = f"age-regression_utkface_mae_{tiny_model}"
    assert run(root, utk_dir, "-c", config, "-t", "4", "-e", "4", "--pruner", "median", "-p", FIXED) == 0
    assert run(root, utk_dir, "-c", config, "-t", "-1", "-e", "4", "--pruner", "median",
               "-p", '{"lr": 1e-9, "momentum": 0.0}') == 0  # learns nothing: pruned
    db = root / "db" / "ab.nn.db"
    same = api.replay_pruner(config=config, pruner="median", warmup=1, db=db)
    assert len(same) == 5 and same.recorded_status.tolist().count("pruned") == 1
    assert (same.status == same.recorded_status).all() and (same.epochs == same.epochs_recorded).all()
    assert not same.beyond_record.any() and (same.seconds == same.seconds_recorded).all()
    unpruned = api.replay_pruner(config=config, pruner="none", db=db)
    assert unpruned.beyond_record.sum() == 1  # without the pruner it would have trained on: unknown

    assert stat_cli(["replay-pruners", "--root", str(root), "-c", config, "--pruner", "median", "hyperband",
                     "--pruner-warmup", "1", "2"]) == 0
    out = capsys.readouterr().out
    assert "5 trials" in out and "| none | - |" in out and "| median | 2 |" in out and "| hyperband | 1 |" in out
    assert stat_cli(["replay-pruners", "--root", str(root), "-c", config, "--pruner", "median", "hyperband",
                     "--pruner-warmup", "2", "--pruner-floor", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "| none | - | - |" in out and "| none | - | 0.2 |" in out and "| median | 2 | 0.2 |" in out
    assert "hyperband" not in out  # takes no floor

    assert run(root, utk_dir, "-c", config, "-t", "1", "-e", "2", "-p", FIXED) == 0  # a second study (2 epochs)
    with pytest.raises(SystemExit) as stopped:
        stat_cli(["replay-pruners", "--root", str(root), "-c", config])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "2 studies have finished trials here" in err and "/e4" in err and "/e2" in err
    study = api.trials(config=config, db=db).study.iloc[-1]
    assert len(api.replay_pruner(config=config, study=study, db=db)) == 1
