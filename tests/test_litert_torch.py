"""The second TFLite converter: litert-torch (LEMUR's), run in its own environment, beside onnx2tf."""
import os

import numpy as np
import pytest
from PIL import Image

from ab.nn import api
from ab.nn.deploy import __main__ as deploy_cli
from ab.nn.deploy import converters
from ab.nn.deploy.report import deployment_table
from ab.nn.deploy.runtimes import LiteRtRuntime
from ab.nn.predict import models
from tests.test_deploy import EXPORT
from tests.test_sweep_cli import run

pytestmark = pytest.mark.slow
CONFIG = "age-regression_utkface_mae_MobileAgeNet"


@pytest.fixture(autouse=True)
def _litert_torch_environment():
    """CI installs it (scripts/setup_litert_torch.sh); elsewhere the tests say why they skip."""
    try:
        converters.litert_torch_python()
    except converters.ConverterUnavailable as error:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must provide the litert-torch environment: {error}")
        pytest.skip(str(error))


def test_parse_converters():
    assert converters.parse_converters("onnx2tf") == ("onnx2tf",)
    assert converters.parse_converters("both") == ("onnx2tf", "litert-torch")
    assert converters.parse_converters("litert-torch,onnx2tf") == ("litert-torch", "onnx2tf")
    with pytest.raises(ValueError, match="unknown converter"):
        converters.parse_converters("tflite-converter")


def test_both_converters_make_tflite_files_that_match_pytorch(root, utk_dir_large):
    assert run(root, utk_dir_large, "-c", CONFIG, "-t", "1", "-e", "2", "-p", '{"lr": 0.001, "batch": 16}', *EXPORT,
               "--converter", "both") == 0
    db = root / "db" / "ab.nn.db"
    trial = api.trials(db=db).iloc[0]
    exports = api.exports(trial_id=int(trial.id), db=db)
    assert (exports.status == "ok").all(), exports[["format", "precision", "converter", "error"]]
    tflite = exports[exports.format == "tflite"]
    by = {(converters.family(r.converter), r.precision): r for r in tflite.itertuples()}
    assert set(by) == {(c, p) for c in converters.CONVERTERS for p in ("fp32", "fp16")}
    assert by[("litert-torch", "fp32")].converter.startswith("litert-torch 0.10.0 (torch 2.14")
    reference = exports[exports.format == "pytorch"].iloc[0]
    for converter in converters.CONVERTERS:
        fp32 = by[(converter, "fp32")]
        assert fp32.layout == "NHWC" and fp32.eval_max_diff < 1e-3 and fp32.test_max_diff < 1e-3, converter
        assert abs(fp32.test_mae - reference.test_mae) < 1e-3 and fp32.n_test == trial.n_test
        assert by[(converter, "fp16")].eval_max_diff < 2.0  # fp16 weights: rounding only
        assert by[(converter, "fp16")].size_bytes < 0.6 * fp32.size_bytes
    assert by[("litert-torch", "fp32")].path != by[("onnx2tf", "fp32")].path

    latency = api.latency(trial_id=int(trial.id), db=db)
    timed = latency[latency.runtime == "litert"].export_id
    assert set(tflite.id) <= set(timed)  # every TFLite file of both converters is timed

    table = deployment_table(int(trial.id), db)  # one row per format, precision and converter
    rows = table[table.format == "tflite"]
    assert sorted(zip(rows.converter, rows.precision)) == sorted(by)

    x = np.random.default_rng(1).uniform(-2, 2, (4, 3, 64, 64)).astype(np.float32)
    a = LiteRtRuntime(by[("onnx2tf", "fp32")].path, 1).predict(x)
    b = LiteRtRuntime(by[("litert-torch", "fp32")].path, 1).predict(x)
    assert np.abs(a - b).max() < 1e-3  # the two converters agree with each other, not only on the data

    images = sorted((utk_dir_large / "UTKFace").glob("*.jpg"))[:3]
    crops = [Image.open(path).convert("RGB").resize((200, 200)) for path in images]
    ages = {}
    for converter in converters.CONVERTERS:  # predict reads a litert-torch file's metadata from its sidecar too
        resolved = models.resolve(by[(converter, "fp32")].path)
        ages[converter] = LiteRtRuntime(resolved.files["tflite"], 1).predict(resolved.info.preprocess(crops))
    assert np.abs(ages["onnx2tf"] - ages["litert-torch"]).max() < 1e-3


def test_redeploying_a_trial_with_litert_torch_adds_its_int8_files(root, utk_dir, tiny_model):
    config = f"age-regression_utkface_mae_{tiny_model}"
    assert run(root, utk_dir, "-c", config, "-t", "1", "-e", "2", "--save_pth_weights") == 0
    assert deploy_cli.cli(["--trial", "1", "--export", "tflite-fp32,tflite-dynamic-int8,tflite-int8",
                           "--converter", "litert-torch", "--latency-runs", "3", "--latency-warmup", "0",
                           "--root", str(root), "--data-dir", str(utk_dir)]) == 0
    exports = api.exports(trial_id=1, db=root / "db" / "ab.nn.db")
    tflite = {r.precision: r for r in exports[exports.format == "tflite"].itertuples()}
    assert set(tflite) == {"fp32", "dynamic-int8", "int8"}
    assert all(converters.family(r.converter) == "litert-torch" for r in tflite.values())
    assert all(r.status == "ok" and r.eval_mae > 0 for r in tflite.values()), exports[["precision", "error"]]
    assert tflite["fp32"].eval_max_diff < 1e-3
    for precision in ("dynamic-int8", "int8"):  # quantized: int8 tensors inside, unlike the fp32 file
        tensors = LiteRtRuntime(tflite[precision].path, 1).interpreter.get_tensor_details()
        assert any(t["dtype"] == np.int8 for t in tensors), precision
    assert not any(t["dtype"] == np.int8 for t in LiteRtRuntime(tflite["fp32"].path, 1).interpreter.get_tensor_details())
    assert not (root / "out" / config / "1" / "calibration.npy").exists()


def test_a_missing_converter_environment_is_a_clear_error_before_training(root, utk_dir, monkeypatch, capsys):
    monkeypatch.setenv(converters.PYTHON_ENV, str(root / "no-such-python"))
    with pytest.raises(SystemExit) as stopped:
        run(root, utk_dir, "-c", CONFIG, "-t", "1", "--export", "default", "--converter", "litert-torch")
    assert stopped.value.code == 2
    assert "LEMUR_LITERT_TORCH_PYTHON" in capsys.readouterr().err
    assert not (root / "db" / "ab.nn.db").exists()  # nothing trained for an export that cannot happen
