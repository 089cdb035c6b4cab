"""The report folder, the ablation table and deploying a trained trial again."""
import pandas as pd
import pytest
from PIL import Image

from ab.nn import api, train
from ab.nn.deploy import __main__ as deploy_cli
from ab.nn.deploy.report import deployment_table
from ab.nn.report import __main__ as report_cli
from ab.nn.report.plots import best_so_far, pareto_front
from tests.helpers import experiment
from tests.test_sweep_cli import CONFIG, run

pytestmark = pytest.mark.slow


def test_pareto_front():
    points = pd.DataFrame({"latency_ms": [1, 2, 3, 4, 5], "mae": [9, 7, 8, 5, 6], "model": list("abcde")})
    assert list(pareto_front(points).model) == ["a", "b", "d"]


def test_report_has_tables_and_plots(root, utk_dir, tiny_model):
    for config, fixed in ((CONFIG, ["-p", '{"head": "regression"}']), (f"age-regression_utkface_mae_{tiny_model}", [])):
        assert run(root, utk_dir, "-c", config, "-t", "2", "--save_pth_weights", "--export", "onnx",
                   "--export-unlearned", "--latency-runs", "5", "--latency-warmup", "1", *fixed) == 0
    assert report_cli.cli(["--root", str(root), "--data-dir", str(utk_dir)]) == 0
    folder = root / "report"
    text = (folder / "README.md").read_text()
    assert "| model | trials |" in text and "MobileAgeNet" in text and tiny_model in text
    for name in ("predicted_vs_true.png", "mae_by_age_group.png", "bias_by_age.png", "minors.png",
                 "mae_by_gender_race.png", "mae_vs_latency.png", f"history_{CONFIG}.png"):
        assert f"]({name})" in text
        with Image.open(folder / name) as image:
            assert image.size[0] > 300
    table = next(chunk for chunk in text.split("\n\n") if chunk.startswith("| model |"))
    assert "3.218" in table  # MobileAgeNet's parameters (millions)
    key = api.trials(db=root / "db" / "ab.nn.db").data_key.iloc[0]
    for caption in ("Summary.", "By race.", "By gender.", "Minors and adults at three ages."):
        assert f"{caption} Data key `{key}`, test part" in text  # every group table names its data key
    header, _, *rows = ([cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines())
    tiny = next(row for row in rows if tiny_model in row[0])
    assert tiny[header.index("params (M)")] != "-"  # built from the nn/ folder of the report's --root


def test_ablation_commands_and_table(root, utk_dir):
    ablations = experiment("ablations")
    commands = [ablations.command(v, 1, 32, []) for v in ablations.VARIANTS]
    assert len(commands) == 5 and len({tuple(c) for c in commands}) == 5
    reference = commands[0][3:]  # what follows python -m ab.nn.train
    assert train.cli([*reference, "--root", str(root), "--data-dir", str(utk_dir), "--in-process"]) == 0
    frame = ablations.results(root / "db" / "ab.nn.db", 1, 32)
    assert list(frame.ablation) == [v.name for v in ablations.VARIANTS]
    assert frame.status.tolist() == ["1 complete"] + ["not run"] * 4 and frame.seeds.iloc[0] == 1
    assert frame["test MAE"].iloc[0] > 0


def test_deploy_a_trained_trial_again(root, utk_dir):
    assert run(root, utk_dir, "-c", CONFIG, "-t", "1", "--save_pth_weights") == 0  # FAST: --export none
    db = root / "db" / "ab.nn.db"
    assert api.exports(db=db).empty
    assert deploy_cli.cli(["--trial", "1", "--export", "onnx", "--latency-runs", "3", "--latency-warmup", "0",
                           "--root", str(root), "--data-dir", str(utk_dir)]) == 0
    exports = api.exports(db=db)
    assert set(exports.format) == {"pytorch", "onnx"} and (exports.status == "ok").all()
    assert exports[exports.format == "onnx"].eval_max_diff.iloc[0] < 1e-3

    assert deploy_cli.cli(["--best", CONFIG, "--export", "onnx", "--latency-runs", "3", "--latency-warmup", "0",
                           "--root", str(root), "--data-dir", str(utk_dir)]) == 0
    assert len(api.exports(db=db)) == 4  # the earlier rows stay
    latest = deployment_table(1, db)
    assert list(zip(latest.format, latest.precision)) == [("pytorch", "fp32"), ("onnx", "fp32")]
    assert len(deployment_table(1, db, history=True)) == 4
    assert latest["1T median ms"].gt(0).all()


def test_best_so_far_is_carried_over_trials_that_did_not_finish():
    mae = pd.Series([15.0, 9.0, 12.0, 11.0, 8.0])
    status = pd.Series(["complete", "pruned", "complete", "failed", "complete"])
    assert best_so_far(mae, status).tolist() == [15.0, 15.0, 12.0, 12.0, 8.0]
