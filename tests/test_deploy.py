"""Every trial deploys: ONNX and TFLite artifacts, their fidelity against PyTorch, latency rows."""
import numpy as np
import onnx
import pytest
import torch

from ab.nn import api
from ab.nn.deploy import options
from ab.nn.deploy.runtimes import LiteRtRuntime, OnnxRuntime
from ab.nn import checkpoint
from ab.nn.workspace import Workspace, active
from tests import helpers
from tests.test_sweep_cli import FAST, run

pytestmark = pytest.mark.slow
CONFIG = "age-regression_utkface_mae_MobileAgeNet"
EXPORT = ["--export", "onnx,tflite-fp32,tflite-fp16", "--export-unlearned", "--latency-threads", "1,all",
          "--latency-runs", "12", "--latency-warmup", "3"]


def deployed(root, utk_dir, config, *extra):
    """Train one trial with the given export flags; returns (trial, exports, latency)."""
    assert run(root, utk_dir, "-c", config, "-t", "1", "-e", "3", "-p", '{"lr": 0.001, "batch": 16}', *EXPORT,
               *extra) == 0
    db = root / "db" / "ab.nn.db"
    trial = api.trials(db=db).iloc[0]
    return trial, api.exports(trial_id=int(trial.id), db=db), api.latency(trial_id=int(trial.id), db=db)


def test_parse_formats():
    assert options.parse_formats("none") == ()
    assert options.parse_formats("default") == ("onnx", "tflite-fp32")  # what the recorded latency needs
    assert options.parse_formats("tflite-int8") == ("onnx", "tflite-int8")
    with pytest.raises(ValueError, match="unknown format"):
        options.parse_formats("onnx,coreml")


@pytest.mark.parametrize("model", ["MobileAgeNet", "TinyAge"])
def test_trial_exports_onnx_and_tflite_that_match_pytorch(root, utk_dir_large, tiny_model, model):
    """Fidelity on the trial's own images (recorded) and on random inputs in the normalised-image
    range, against the saved checkpoint."""
    config = f"age-regression_utkface_mae_{model}"
    trial, exports, latency = deployed(root, utk_dir_large, config, "--save_pth_weights")
    assert trial.status == "complete"
    by_kind = {(r.format, r.precision): r for r in exports.itertuples()}
    assert set(by_kind) == {("pytorch", "fp32"), ("onnx", "fp32"), ("tflite", "fp32"), ("tflite", "fp16"),
                            ("pipeline", "-")}
    assert by_kind[("pipeline", "-")].seconds > 0  # the whole export's time
    assert all(r.status == "ok" for r in exports.itertuples()), exports[["format", "precision", "error"]]
    reference = by_kind[("pytorch", "fp32")]
    assert reference.eval_mae == pytest.approx(trial.eval_mae, abs=1e-4)
    assert reference.test_mae == pytest.approx(trial.test_mae, abs=1e-4)
    for kind in (("onnx", "fp32"), ("tflite", "fp32")):
        row = by_kind[kind]
        assert row.eval_max_diff < 1e-3 and row.test_max_diff < 1e-3, kind
        assert abs(row.eval_mae - reference.eval_mae) < 1e-3 and abs(row.test_mae - reference.test_mae) < 1e-3
        assert row.size_bytes > 0 and len(row.sha256) == 64 and row.n_eval == trial.n_eval
    assert by_kind[("tflite", "fp32")].layout == "NHWC" and by_kind[("onnx", "fp32")].layout == "NCHW"
    assert by_kind[("tflite", "fp16")].eval_max_diff < 2.0  # recorded as measured; fp16 rounding only

    proto = onnx.load(by_kind[("onnx", "fp32")].path)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["model"] == model and meta["trial_id"] == str(trial.id) and meta["layout"] == "NCHW"
    assert meta["input_shape"] == "1x3x64x64" and meta["mean"] == "0.485,0.456,0.406" and meta["split"] == "paper/42"
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch

    assert set(latency.runtime) == {"pytorch", "onnxruntime", "litert"}
    assert len(latency) == 4 * len({1, __import__("os").cpu_count()})
    assert (latency.status == "ok").all() and (latency.runs == 12).all() and (latency.warmup == 3).all()
    assert (latency.median_ms <= latency.p90_ms).all() and (latency.min_ms <= latency.median_ms).all()
    assert (latency.median_ms > 0).all() and latency.cpu.notna().all() and latency.versions.str.contains("onnxruntime").all()

    with active.use(Workspace.resolve(root)):  # TinyAge's file is in that workspace's nn/ folder
        net, _ = checkpoint.load(root / "out" / config / str(int(trial.id)))
    x = np.random.default_rng(1).uniform(-2, 2, (8, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).reshape(-1).numpy()
    for row in (by_kind[("onnx", "fp32")], by_kind[("tflite", "fp32")]):
        runtime = (OnnxRuntime if row.format == "onnx" else LiteRtRuntime)(row.path, 1)
        assert np.abs(runtime.predict(x) - expected).max() < 1e-3, row.format


UNCONVERTIBLE = helpers.TINY_MODEL.replace(
    "return self.linear(x.mean(dim=(2, 3)))",
    "return self.linear(torch.fft.rfft(x, dim=-1).abs().mean(dim=(2, 3)))")


def test_a_conversion_failure_is_recorded_not_raised(root, utk_dir):
    helpers.write_model(root, "FftAge", UNCONVERTIBLE)
    trial, exports, _ = deployed(root, utk_dir, "age-regression_utkface_mae_FftAge")
    assert trial.status == "complete"  # the training result stands
    failed = exports[exports.status == "failed"]
    assert len(failed) >= 1 and failed.error.str.len().gt(0).all()
    assert exports[exports.format == "pytorch"].status.eq("ok").all()


def test_no_export_with_none(root, utk_dir):
    assert run(root, utk_dir, "-c", CONFIG, "-t", "1") == 0  # FAST has --export none
    assert api.exports(db=root / "db" / "ab.nn.db").empty


def test_keep_best_only_deletes_the_other_trials_files(root, utk_dir):
    assert run(root, utk_dir, "-c", CONFIG, "-t", "2", "--export", "onnx", "--export-unlearned",
               "--latency-runs", "3", "--latency-warmup", "0", "--keep-best-only") == 0
    db = root / "db" / "ab.nn.db"
    trials = api.trials(db=db)
    best = trials.sort_values("eval_accuracy", ascending=False).id.iloc[0]
    exports = api.exports(db=db)
    onnx_rows = exports[exports.format == "onnx"]
    assert set(onnx_rows[onnx_rows.trial_id == best].status) == {"ok"}
    assert set(onnx_rows[onnx_rows.trial_id != best].status) == {"deleted"}
    for row in onnx_rows.itertuples():
        assert __import__("pathlib").Path(row.path).exists() == (row.trial_id == best)


def test_int8_artifacts_are_made_or_their_failure_recorded(root, utk_dir, tiny_model):
    trial, exports, latency = deployed(root, utk_dir, f"age-regression_utkface_mae_{tiny_model}",
                                          "--export", "tflite-dynamic-int8,tflite-int8")
    rows = {r.precision: r for r in exports[exports.format == "tflite"].itertuples()}
    assert set(rows) == {"dynamic-int8", "int8"}
    for row in rows.values():
        assert (row.status == "ok" and row.eval_mae > 0 and row.size_bytes > 0) or \
            (row.status == "failed" and row.error)
    assert not (root / "out" / f"age-regression_utkface_mae_{tiny_model}" / "0" / "calibration.npy").exists()


def test_a_worker_killed_by_a_signal_is_reported(tmp_path, monkeypatch):
    from ab.nn.deploy import worker

    crashing = tmp_path / "python"
    crashing.write_text("#!/bin/sh\nkill -SEGV $$\n")
    crashing.chmod(0o755)
    monkeypatch.setattr(worker.sys, "executable", str(crashing))
    with pytest.raises(worker.WorkerFailed, match="crashed \\(signal SIGSEGV\\)"):
        worker.run({"kind": "convert"})


def test_a_graph_that_needs_a_static_batch_still_converts(tmp_path):
    """C3AE's crops are resized to a size computed from the dynamic batch, which onnx2tf cannot
    convert; the converter retries with a batch of 1 and the runtime feeds that model one image
    at a time."""
    from ab.nn.deploy.onnx_export import export_onnx
    from ab.nn.deploy.tflite_convert import convert
    from tests.test_model_contract import build

    model, _ = build("C3AE")
    model.eval()
    path = export_onnx(model, (1, 3, 64, 64), tmp_path / "c3ae.onnx")
    result = convert(path, tmp_path, ["fp32"])
    assert "path" in result["fp32"], result
    x = np.random.default_rng(3).uniform(-2, 2, (5, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).reshape(-1).numpy()
    runtime = LiteRtRuntime(result["fp32"]["path"], 1)
    assert runtime.fixed_batch == 1
    assert np.abs(runtime.predict(x) - expected).max() < 1e-3
    assert np.abs(OnnxRuntime(path, 1).predict(x) - expected).max() < 1e-3


def test_a_worker_that_crashes_hands_back_what_it_had_written(tmp_path, monkeypatch):
    """A convert-measure worker writes the conversion's result before it measures: a LiteRT abort
    while measuring loses no converted file (the pipeline measures the rest in separate workers)."""
    from ab.nn.deploy import worker

    crashing = tmp_path / "python"  # called as: python -m ab.nn.deploy.worker JOB RESULT
    written = '{"converter": "c", "results": {"fp32": {"path": "x"}}}'
    crashing.write_text(f"#!/bin/sh\necho '{written}' > \"$4\"\nkill -ABRT $$\n")
    crashing.chmod(0o755)
    monkeypatch.setattr(worker.sys, "executable", str(crashing))
    with pytest.raises(worker.WorkerFailed, match="crashed \\(signal SIGABRT\\)") as failed:
        worker.run({"kind": "convert-measure"})
    assert failed.value.partial == {"converter": "c", "results": {"fp32": {"path": "x"}}}


def test_a_crash_while_measuring_keeps_the_converted_file_and_measures_it_alone(root, utk_dir, tmp_path):
    """The converting worker is killed (as a LiteRT abort would) after its conversion, before it measures:
    the TFLite file's row is recorded and measured by a separate worker, as if nothing had happened."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.test_sweep_cli import FAST

    handshake = tmp_path / "faults"
    handshake.mkdir()
    env = {**os.environ, "AB_NN_FAULT": "measure", "AB_NN_FAULT_DIR": str(handshake), "AB_NN_FAULT_SECONDS": "600"}
    sweep = subprocess.Popen([sys.executable, "-m", "ab.nn.train", "--root", str(root), "--data-dir", str(utk_dir),
                              *FAST, "-c", CONFIG, "-t", "1", "-e", "1", "--export", "tflite-fp32", "--export-unlearned",
                              "--latency-runs", "3", "--latency-warmup", "0"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 900
    while not (held := list(handshake.glob("measure.*"))) and sweep.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert held, f"the converting worker never reached its measurement: {sweep.stderr.read()[-2000:]}"
    os.kill(int(held[0].name.split(".")[1]), signal.SIGABRT)
    assert sweep.wait(timeout=900) == 0, sweep.stderr.read()[-2000:]
    db = root / "db" / "ab.nn.db"
    row = api.exports(format="tflite", db=db).iloc[0]
    assert row.status == "ok" and row.size_bytes > 0 and row.n_eval > 0 and row.eval_max_diff < 1e-3
    litert = api.latency(runtime="litert", db=db)
    assert list(litert.status) == ["ok"] and (litert.runs == 3).all()
