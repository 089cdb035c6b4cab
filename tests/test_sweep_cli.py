"""The sweep runner end to end through its CLI, on generated UTKFace-style images."""
import json
import sqlite3
import subprocess
import sys

import optuna
import pytest

from ab.nn import registry, api, train
from ab.nn.sweep import estimate
from tests.helpers import optuna_links

CONFIG = "age-regression_utkface_mae_MobileAgeNet"
FAST = ["-f", "norm_64", "--min_batch_binary_power", "4", "-b", "4", "--min_learning_rate", "1e-4", "-l", "1e-3",
        "-w", "0", "--quiet", "--pretrained", "0", "--export", "none", "--in-process", "--unsafe"]
"""In the test's own process: the tests' workspace models too (``--unsafe``), without a process per trial."""


def run(root, data, *args):
    return train.cli(["--root", str(root), "--data-dir", str(data), *FAST, *args])


def db(root):
    return sqlite3.connect(root / "db" / "ab.nn.db")


def test_two_trials_two_epochs_are_recorded(root, utk_dir):
    assert run(root, utk_dir, "-c", CONFIG, "-e", "2", "-t", "2") == 0
    with db(root) as con:
        assert con.execute("select count(*) from trial where status='complete'").fetchone()[0] == 2
        assert con.execute("select count(*) from stat").fetchone()[0] == 4
        names = {r[0] for r in con.execute("select distinct name from prm")}
        assert {"lr", "momentum", "dropout", "batch", "transform", "epoch_max"} <= names
        assert con.execute("select count(*) from stat where mae is null").fetchone()[0] == 0
    frame = api.data(task="age-regression", db=root / "db" / "ab.nn.db")
    assert len(frame) == 4
    assert set(frame.epoch) == {1, 2}
    assert frame.mae.between(0, 120).all()
    assert ((1 - frame.mae / 20).clip(lower=0) - frame.accuracy).abs().max() < 1e-6
    assert frame.prm.map(lambda p: p["transform"]).eq("norm_64").all()
    assert frame.status.eq("complete").all()
    assert frame.test_mae.notna().sum() == 2  # once per trial, on its final epoch
    assert {"duration", "duration_s", "prm_id", "nn_id", "eval_mae"} <= set(frame.columns)
    assert {"nn_code", "metric_code", "transform_code"} <= set(frame.columns)  # LEMUR's: however it is called
    assert set(frame.nn_code) == {registry.source(registry.MODEL, "MobileAgeNet")}
    plain = api.data(task="age-regression", with_code=False, db=root / "db" / "ab.nn.db")
    assert not {"nn_code", "metric_code", "transform_code"} & set(plain.columns)
    mirror = root / "stat" / "train" / CONFIG
    assert sorted(p.name for p in mirror.glob("*.json")) == ["1.json", "2.json"]
    records = json.loads((mirror / "2.json").read_text())
    assert len(records) == 2  # appended as trials finish (export-json rewrites them best first)
    assert {"lr", "batch", "transform", "uid", "duration", "accuracy"} <= set(records[0])


def test_second_run_continues_the_study(root, utk_dir):
    assert run(root, utk_dir, "-c", CONFIG, "-t", "1") == 0
    assert run(root, utk_dir, "-c", CONFIG, "-t", "1") == 0  # a total: already reached, nothing to do
    assert run(root, utk_dir, "-c", CONFIG, "-t", "-2") == 0  # two more
    trials = api.trials(db=root / "db" / "ab.nn.db")
    assert trials.study.nunique() == 1 and trials.study[0].startswith(f"{CONFIG}@")  # one study per data key
    study = optuna.load_study(study_name=trials.study[0], storage=f"sqlite:///{root / 'db' / 'ab.nn.db'}")
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert sorted(optuna_links(root / "db" / "ab.nn.db").number) == [0, 1, 2]
    assert [t.user_attrs["ab_nn_trial"] for t in study.trials] == sorted(trials.id)


def test_fixed_zero_is_used_as_given(root, utk_dir):
    assert run(root, utk_dir, "-c", CONFIG, "-t", "1", "-p", '{"dropout": 0, "momentum": 0.0, "batch": 8}') == 0
    prm = api.trials(db=root / "db" / "ab.nn.db").prm[0]
    assert prm["dropout"] == 0 and prm["momentum"] == 0 and prm["batch"] == 8


def test_prefix_selects_every_matching_config(root, utk_dir, tiny_model):
    assert run(root, utk_dir, "-c", "age-regression_utkface", "-t", "1") == 0
    trained = set(api.trials(db=root / "db" / "ab.nn.db").nn)
    assert {"MobileAgeNet", tiny_model} <= trained


@pytest.mark.parametrize("args, expected", [
    (["-c", "a_b_c_d_e"], "at most 4"),
    (["-c", "age-regression_utkface_mae_NoSuchNet"], "unknown model 'NoSuchNet'"),
    (["-c", "age-regression_nosuchdata_mae_MobileAgeNet"], "unknown dataset loader 'nosuchdata'"),
    (["-c", "age-regression_utkface_nosuchmetric_MobileAgeNet"], "unknown metric 'nosuchmetric'"),
    (["-c", CONFIG, "-f", "nosuchtransform"], "unknown transform 'nosuchtransform'"),
    (["-c", "age-regression_nothing"], "no config matches"),
    (["-c", "age-regression_utkface_mae_../../x"], "invalid nn part"),
    (["-c", CONFIG, "-p", "{broken"], "not valid JSON"),
    (["-c", CONFIG, "-p", '{"nosuch": 1}'], "unknown hyperparameter"),
])
def test_bad_input_gives_a_one_line_error(root, utk_dir, capsys, args, expected):
    with pytest.raises(SystemExit) as stopped:
        run(root, utk_dir, *args)
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1


def test_failing_trial_is_recorded_and_the_next_one_runs(root, utk_dir, misbehaving, monkeypatch):
    monkeypatch.setenv("AB_NN_FAULT_MISBEHAVE", "raise")
    assert run(root, utk_dir, "-c", misbehaving, "-t", "1") == 0
    trials = api.trials(db=root / "db" / "ab.nn.db").sort_values("id")
    assert list(trials.status) == ["failed", "complete"]
    assert trials.error.iloc[0].startswith("RuntimeError: forward exploded on purpose")
    study = optuna.load_study(study_name=trials.study.iloc[0], storage=f"sqlite:///{root / 'db' / 'ab.nn.db'}")
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]


def test_gives_up_after_fail_attempts(root, utk_dir, misbehaving, monkeypatch):
    monkeypatch.setenv("AB_NN_FAULT_MISBEHAVE", "always")
    assert run(root, utk_dir, "-c", misbehaving, "-t", "5", "-a", "3") == 1
    assert list(api.trials(db=root / "db" / "ab.nn.db").status) == ["failed"] * 3


def test_early_stop_is_recorded_not_dropped(root, utk_dir, misbehaving, monkeypatch):
    # a model that always answers 100 years: MAE far above 20, so LEMUR's gate stops it after epoch 1
    monkeypatch.setenv("AB_NN_FAULT_MISBEHAVE", "hopeless")
    assert run(root, utk_dir, "-c", misbehaving, "-e", "3", "-t", "1") == 0
    trial = api.trials(db=root / "db" / "ab.nn.db").iloc[0]
    frame = api.data(db=root / "db" / "ab.nn.db")
    assert trial.status == "stopped" and trial.epochs_done == 1
    assert list(frame.epoch) == [1] and frame.accuracy[0] == 0 and frame.mae[0] > 60


def test_boolean_flags_are_booleans(root, utk_dir):
    args = train.parser().parse_args(["--save_pth_weights", "false", "-r", "--save_onnx_weights", "0"])
    assert args.save_pth_weights is False and args.random_config_order is True and args.save_onnx_weights is False
    with pytest.raises(SystemExit):
        train.parser().parse_args(["--save_pth_weights", "maybe"])
    assert run(root, utk_dir, "-c", CONFIG, "-t", "1", "--save_pth_weights") == 0
    trial_id = int(api.trials(db=root / "db" / "ab.nn.db").id[0])
    assert (root / "out" / CONFIG / str(trial_id) / "model.pth").is_file()  # folders are named by trial id
    assert json.loads((root / "out" / CONFIG / str(trial_id) / "meta.json").read_text())["config"] == CONFIG


def test_missing_images_stop_the_run_with_one_line_before_any_trial(root, tmp_path, capsys):
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(SystemExit) as stopped:
        train.cli(["--root", str(root), "--data-dir", str(empty), *FAST, "-c", CONFIG, "-t", "1", "-a", "1"])
    assert stopped.value.code == 2
    out = capsys.readouterr()
    assert out.err.count(f"no UTKFace images in {empty}") == 1 and len(out.err.strip().splitlines()) == 1
    assert "UTKFace.tar.gz" in out.err
    assert api.trials(db=root / "db" / "ab.nn.db").empty  # no trial was spawned


def test_help_explains_every_flag_in_kebab_case_and_names_lemurs_spellings():
    out = subprocess.run([sys.executable, "-m", "ab.nn.train", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for flag in ("-c", "-p", "-e", "-t", "-b", "--min-batch-binary-power", "-l", "--min-learning-rate", "-m",
                 "--min-momentum", "-d", "--min-dropout", "-f", "-a", "-r", "-w", "--pretrained",
                 "--epoch-limit-minutes", "--save-pth-weights", "--save-onnx-weights", "--root", "--db",
                 "--data-dir", "--seed", "--device", "--max-samples", "--split"):
        assert f"{flag} " in out or f"{flag}," in out or f"{flag}\n" in out, flag
    options, aliases = out.split("LEMUR's spellings are accepted too:")
    assert "_" not in "".join(w for w in options.split() if w.startswith("--"))  # one style in the flag lines
    for alias in ("--nn_prm", "--min_batch_binary_power", "--save_pth_weights", "--epoch_limit_minutes"):
        assert alias in aliases


@pytest.mark.parametrize("spelling", ["--save_pth_weights", "--save-pth-weights"])
def test_lemurs_spelling_and_the_kebab_one_are_the_same_flag(spelling):
    args = train.parser().parse_args([spelling, "0", "--nn_prm", "{}", "--min-learning-rate", "0.1",
                                      "--min_learning_rate", "0.2", "--epoch_limit_minutes", "3"])
    assert args.save_pth_weights is False and args.nn_prm == "{}" and args.epoch_limit_minutes == 3
    assert args.min_learning_rate == 0.2  # the later one wins: both spellings set the same value


def test_dry_run_estimates_the_time_from_earlier_trials_seconds_per_image(root, utk_dir, capsys):
    def dry_run() -> str:
        assert run(root, utk_dir, "-c", CONFIG, "-e", "3", "-t", "4", "--dry-run") == 0
        return next(line for line in capsys.readouterr().out.splitlines() if line.startswith("  time: "))

    assert dry_run() == "  time: no measurement yet (no trial of this config has finished an epoch on cpu)"
    assert run(root, utk_dir, "-c", CONFIG, "-e", "1", "-t", "1", "--device", "cpu") == 0
    with db(root) as con:
        seconds, images = con.execute("select max(s.duration) / 1e9, t.n_train + t.n_eval from stat s "
                                      "join trial t on s.trial_id = t.id").fetchone()
    per_trial = seconds / images * images * 3  # the planned trials see the same images, for 3 epochs
    line = dry_run()
    assert f"~{estimate.duration(per_trial)} per trial, ~{estimate.duration(per_trial * 4)} for 4 (" in line, line
    assert f"{seconds / images * 1e3:.2f} ms per image, the median of 1 earlier trial on cpu" in line


def test_the_device_is_resolved_without_torch_where_the_machine_shows_no_gpu(monkeypatch):
    """``--device auto`` is ``cpu`` without importing torch on a machine whose kernel shows no GPU device
    (the runner's start stays torch-free); one that shows one asks torch; a bad name is refused first."""
    from ab.nn.sweep import runner
    from ab.nn.util import system

    monkeypatch.setattr(system, "GPU_DEVICE_NODES", ())
    assert runner.resolve_device("auto") == "cpu" and runner.resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="no CUDA device is available"):
        runner.resolve_device("cuda:0")
    with pytest.raises(ValueError, match="--device must be auto, cpu or cuda"):
        runner.resolve_device("tpu")
    code = ("import sys; from ab.nn.util import system; system.GPU_DEVICE_NODES = (); "
            "from ab.nn.sweep.runner import resolve_device; print(resolve_device('auto'), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["cpu", "False"], out
    import torch

    monkeypatch.setattr(system, "GPU_DEVICE_NODES", (sys.executable,))  # a node that exists: torch is asked
    assert runner.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
