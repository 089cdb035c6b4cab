"""Results are bound to the data they were judged on: the data key decides what counts, what is
ranked, kept and deleted; commands refuse other data; training seeds never move the split."""
import numpy as np
import pytest
from sqlalchemy import create_engine, text

from ab.nn import api
from ab.nn.config import Config
from ab.nn.deploy import __main__ as deploy_cli
from ab.nn.moe import __main__ as moe_cli
from ab.nn.report import __main__ as report_cli
from ab.nn.stat import __main__ as stat_cli
from ab.nn.stat.store import StatStore
from tests import helpers
from tests.test_sweep_cli import run

FIXED = '{"lr": 0.01, "momentum": 0.9}'


def _db(root):
    return root / "db" / "ab.nn.db"


def test_a_smoke_run_cannot_change_what_a_real_run_trains_ranks_or_keeps(root, utk_dir, tiny_model):
    config = f"age-regression_utkface_mae_{tiny_model}"
    assert run(root, utk_dir, "-c", config, "-t", "1", "--max-samples", "8", "--save_pth_weights",
               "--export", "onnx", "--export-unlearned", "--latency-runs", "2", "--latency-warmup", "0") == 0
    assert run(root, utk_dir, "-c", config, "-t", "2", "--export", "onnx", "--export-unlearned", "--keep-best-only",
               "--latency-runs", "2", "--latency-warmup", "0") == 0  # the smoke trial does not count
    trials = api.trials(db=_db(root)).sort_values("id")
    smoke, real = trials.iloc[0], trials.iloc[1:]
    assert len(trials) == 3 and smoke.max_samples == 8 and real.max_samples.isna().all()
    assert real.data_key.nunique() == 1 and smoke.data_key != real.data_key.iloc[0]
    assert set(api.ranked_trials(config=config, db=_db(root)).id) == set(real.id)
    exports = api.exports(format="onnx", db=_db(root))
    assert exports[exports.trial_id == smoke.id].status.tolist() == ["ok"]  # another key: never deleted
    kept = exports[exports.trial_id.isin(real.id)]
    assert sorted(kept.status) == ["deleted", "ok"]
    assert kept[kept.status == "ok"].trial_id.iloc[0] == api.ranked_trials(config=config, db=_db(root)).id[0]
    assert report_cli.cli(["--root", str(root)]) == 0
    text = (root / "report" / "README.md").read_text()
    main, other = text.split("## Main data")[1].split("## Other data")
    assert f"`{real.data_key.iloc[0]}`" in main and "all images" in main
    assert f"`{smoke.data_key}`" in other and "--max-samples 8" in other


def test_split_seed_fixes_the_images_and_seed_only_the_training(root, utk_dir, tiny_model):
    config = f"age-regression_utkface_mae_{tiny_model}"
    assert run(root, utk_dir, "-c", config, "-t", "1", "--seed", "1", "-p", FIXED) == 0
    assert run(root, utk_dir, "-c", config, "-t", "-1", "--seed", "2", "-p", FIXED) == 0
    assert run(root, utk_dir, "-c", config, "-t", "1", "--split-seed", "43", "-p", FIXED) == 0
    a, b, c = (row for _, row in api.trials(db=_db(root)).sort_values("id").iterrows())
    digests = lambda t: (t.train_digest, t.eval_digest, t.test_digest)  # noqa: E731
    assert digests(a) == digests(b) and a.data_key == b.data_key and a.seed != b.seed
    assert a.study == b.study  # one Optuna study: same data, same epochs
    first, second = (api.predictions(trial_id=int(t.id), split="eval", db=_db(root)) for t in (a, b))
    assert list(first.image_id) == list(second.image_id)
    assert not np.allclose(first.predicted, second.predicted)  # same data and hyperparameters: the seed differs
    assert c.test_digest != a.test_digest and c.data_key != a.data_key and c.split == "paper/43"


def test_seed_replicas_share_hyperparameters_and_are_summarised(root, utk_dir, tiny_model, capsys):
    config = f"age-regression_utkface_mae_{tiny_model}"
    assert run(root, utk_dir, "-c", config, "-t", "1", "--seeds", "3") == 0
    trials = api.trials(db=_db(root)).sort_values("id")
    assert len(trials) == 3 and sorted(trials.seed) == [42, 43, 44]
    assert trials.prm_id.nunique() == 1 and (trials.replica_of == trials.id.iloc[0]).all()
    assert (trials.test_mae_low < trials.test_mae).all() and (trials.test_mae < trials.test_mae_high).all()
    group = api.replicas(config=config, db=_db(root)).iloc[0]
    assert group.n == 3 and group.seeds == [42, 43, 44]
    assert group.test_mae_mean == pytest.approx(trials.test_mae.mean()) and group.test_mae_std > 0
    assert group.test_mae_low < group.test_mae_mean < group.test_mae_high
    capsys.readouterr()
    assert stat_cli.cli(["replicas", "-c", config, "--root", str(root)]) == 0
    printed = capsys.readouterr().out
    assert "[42, 43, 44]" in printed and f"{group.test_mae_low:.3f}" in printed
    comparison = api.compare(list(trials.id[:2]), [int(trials.id.iloc[2])], db=_db(root))
    assert comparison.n_images == trials.n_test.iloc[0] and comparison.replicas_a == 2
    assert run(root, utk_dir, "-c", config, "-t", "1", "--seeds", "3") == 0  # one set of three wanted: done
    assert len(api.trials(db=_db(root))) == 3


def test_an_interrupted_replica_group_is_completed_with_its_missing_seed(root, utk_dir, tiny_model):
    """A --seeds run cut short leaves a group without some replicas; the next run trains exactly those
    (same hyperparameters, the missing seed) instead of a new group that would repeat seed 42."""
    config = f"age-regression_utkface_mae_{tiny_model}"
    assert run(root, utk_dir, "-c", config, "-t", "1", "--seeds", "3") == 0
    cut = int(api.trials(db=_db(root)).sort_values("id").id.iloc[2])
    engine = create_engine(f"sqlite:///{_db(root)}")
    with engine.begin() as connection:  # what a runner's reconciliation records for a replica it lost
        connection.execute(text("UPDATE trial SET status = 'interrupted' WHERE id = :id"), {"id": cut})
    engine.dispose()
    assert run(root, utk_dir, "-c", config, "-t", "1", "--seeds", "3") == 0
    trials = api.trials(db=_db(root)).sort_values("id")
    done = trials[trials.status == "complete"]
    assert len(trials) == 4 and sorted(done.seed) == [42, 43, 44]
    assert (done.replica_of == trials.id.iloc[0]).all() and done.prm_id.nunique() == 1
    assert api.replicas(config=config, db=_db(root)).iloc[0].n == 3


def test_two_workers_cannot_claim_the_same_missing_seed(root, utk_dir, tiny_model):
    config = f"age-regression_utkface_mae_{tiny_model}"
    assert run(root, utk_dir, "-c", config, "-t", "1", "--seeds", "2") == 0
    first = api.trials(db=_db(root)).sort_values("id").iloc[0]
    store = StatStore(f"sqlite:///{_db(root)}")
    claim = dict(data_key=first.data_key, group=int(first.id), seeds=[43, 44])
    one = store.reserve_replicas(Config.parse(config), 1, None, **claim)
    two = store.reserve_replicas(Config.parse(config), 1, None, **claim)  # 43 is trained, 44 now held
    assert [seed for _, seed in one] == [44] and two == []
    assert store.reserve_replicas(Config.parse(config), 1, 3, data_key=first.data_key, group=int(first.id),
                                  seeds=[45]) == []  # -t 1 x 2 seeds (+1 held) leaves no room in 3


def test_commands_refuse_data_that_differs_from_the_trials(root, utk_dir, tiny_model, capsys):
    config = f"age-regression_utkface_mae_{tiny_model}"
    assert run(root, utk_dir, "-c", config, "-t", "2", "--save_pth_weights") == 0
    helpers.make_face(30, seed=500).save(utk_dir / "UTKFace" / helpers.utk_name(30, 1, 2, 500))  # the data changes
    capsys.readouterr()
    for command in (lambda: deploy_cli.cli(["--trial", "1", "--export", "onnx", "--root", str(root),
                                            "--data-dir", str(utk_dir)]),
                    lambda: moe_cli.cli(["fit", "--experts", "trial:1", "trial:2", "--root", str(root),
                                         "--data-dir", str(utk_dir)])):
        with pytest.raises(SystemExit) as stopped:
            command()
        lines = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line.strip()]
        err = [line for line in lines if "error:" in line]
        assert stopped.value.code == 2 and len(err) == 1 and err[0] == lines[-1], lines
        recorded, here = err[0].split("but the data here is")
        assert "was judged on data key" in recorded and "data key" in here and "61/" not in recorded
    assert api.exports(db=_db(root)).empty and api.trials(config="age-regression_utkface_mae_AgeMoE",
                                                          db=_db(root)).empty
