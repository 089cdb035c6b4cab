"""What a default sweep spends on export (issue 41, item 6): only the formats the recorded latency needs,
no export for a trial no better than the constant predictor (said, with the way to get one anyway),
each export's seconds on the trial's ``pipeline`` row, their share in the summary, and ``model.pth``
saved by default so that ``api.load_model`` opens the trial. Speed itself: benchmarks/export_share.py."""
import pytest

from ab.nn import api, train
from ab.nn.config import Config
from ab.nn.deploy import options
from ab.nn.sweep.runner import ConfigResult
from tests import helpers
from tests.test_constant_baseline import ORACLE_MODEL, _constant_model
from tests.test_sweep_cli import run

PREFIX = "age-regression_utkface_mae_"
ONNX_ONLY = ["--export", "onnx", "--latency-runs", "2", "--latency-warmup", "0", "-e", "1", "-t", "1"]


def test_the_default_exports_what_the_recorded_latency_needs_and_saves_the_weights():
    args = train.parser().parse_args(["-c", "x"])
    assert options.parse_formats(args.export) == ("onnx", "tflite-fp32")  # LiteRT fp32 and the file it comes from
    assert args.save_pth_weights is True and args.export_unlearned is False
    assert train.options_from(args).export.thread_counts() == (1,)  # the recorded latency's; all cores on request
    assert options.parse_threads("1,all") == (1, 0) and options.ExportOptions(threads=(1, 0)).thread_counts()[0] == 1
    with pytest.raises(ValueError, match="neither a positive thread count nor 'all'"):
        options.parse_threads("1,two")
    assert train.parser().parse_args(["-c", "x", "--save_pth_weights", "false"]).save_pth_weights is False
    assert train.options_from(args).export.export_unlearned is False
    assert train.options_from(args).export.fidelity_images == options.FIDELITY_IMAGES  # a seeded sample per split
    every = train.parser().parse_args(["-c", "x", "--fidelity-images", "all"])
    assert train.options_from(every).export.fidelity_images is None
    for bad in ("0", "-5", "half"):
        with pytest.raises(ValueError, match="--fidelity-images: .* neither a positive number of images nor 'all'"):
            train.options_from(train.parser().parse_args(["-c", "x", "--fidelity-images", bad]))
    latency_study = train.options_from(train.parser().parse_args(["-c", "x", "--max-latency-ms", "5"]))
    assert latency_study.export.export_unlearned is False  # the runner exports every trial of such a study


def test_the_summary_line_reports_the_share_and_the_trials_not_exported():
    result = ConfigResult(Config.parse(PREFIX + "X"), seconds=200.0, export_seconds=18.0, not_exported=2)
    assert result.export_share() == ("export: 18 s of this run's 200 s (9 %); 2 trials no better than the constant "
                                     "predictor not exported (--export-unlearned exports them)")
    assert ConfigResult(Config.parse(PREFIX + "X"), seconds=200.0).export_share() is None  # --export none


def test_only_a_trial_better_than_the_constant_predictor_is_exported(root, utk_dir, capsys):
    helpers.write_model(root, "EsConst", _constant_model("33.0"))  # near the training mean: runs to the end
    helpers.write_model(root, "EsOracle", ORACLE_MODEL)
    db = root / "db" / "ab.nn.db"

    capsys.readouterr()
    assert run(root, utk_dir, "-c", PREFIX + "EsConst", *ONNX_ONLY) == 0
    out = capsys.readouterr().out
    skipped = api.exports(db=db)
    assert list(zip(skipped.format, skipped.status)) == [("pipeline", "skipped")]
    assert skipped.error.iloc[0].startswith("not exported: not better than the constant predictor")
    assert "1 trial no better than the constant predictor not exported (--export-unlearned exports them)" in out

    assert run(root, utk_dir, "-c", PREFIX + "EsOracle", *ONNX_ONLY, "--fidelity-images", "4") == 0
    out = capsys.readouterr().out
    oracle = api.trials(config=PREFIX + "EsOracle", db=db).iloc[0]
    rows = api.exports(trial_id=int(oracle.id), db=db)
    assert set(zip(rows.format, rows.status)) == {("pytorch", "ok"), ("onnx", "ok"), ("pipeline", "ok")}
    measured = rows[rows.format != "pipeline"]  # PyTorch and ONNX on the same 4 + 4 images of more
    assert oracle.n_eval > 4 and (measured.n_eval == 4).all() and (measured.n_test == 4).all()
    assert (measured.eval_max_diff < 1e-3).all()
    oracle = int(oracle.id)
    seconds = rows[rows.format == "pipeline"].seconds.iloc[0]
    assert seconds > 0 and f"export: {seconds:.0f} s of this run's " in out
    assert not api.latency(trial_id=oracle, runtime="onnxruntime", threads=1, db=db).empty
    assert api.load_model(oracle, root=root) is not None  # model.pth without --save_pth_weights

    assert run(root, utk_dir, "-c", PREFIX + "EsConst", *ONNX_ONLY, "-t", "-1", "--export-unlearned") == 0
    forced = api.exports(config=PREFIX + "EsConst", format="onnx", db=db)
    assert list(forced.status) == ["ok"]
