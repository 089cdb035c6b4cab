"""On the real UTKFace images (CI sets LEMUR_DATA; skipped elsewhere without them)."""
import numpy as np
import pytest

from ab.nn import api, train
from ab.nn.dataset import utkface
from ab.nn.dataset.settings import DataSettings
from ab.nn.transform import norm_64

pytestmark = [pytest.mark.real_data, pytest.mark.slow]
SAMPLES = 2048
RECIPE = ('{"lr": 0.001, "batch": 32, "dropout": 0.1, "momentum": 0.9, "freeze": 0, "backbone_lr_mult": 1, '
          '"bounded": 1, "sgd": 0, "smooth_l1": 0, "onecycle": 0, "head": 0, "flip_average": 0}')


def test_the_real_folder_parses_completely(real_utkface, root):
    catalog = utkface.catalog(utkface.find_source(real_utkface), root / "cache")
    assert catalog.total == 23_707 and len(catalog.entries) == 23_707 and not catalog.skipped
    assert abs(float(catalog.ages.mean()) - 33.3) < 0.05


def test_a_short_trial_beats_the_training_mean(real_utkface, root):
    args = ["--root", str(root), "--data-dir", str(real_utkface), "-c", "age-regression_utkface_mae_MobileAgeNet",
            "-e", "2", "-t", "1", "--max-samples", str(SAMPLES), "-f", "norm_64_flip", "-w", "0", "--quiet", "--pretrained", "0", "--export", "onnx,tflite-fp32", "--export-unlearned", "--fidelity-images", "all", "--latency-runs", "5", "--in-process",
            "-p", RECIPE]
    assert train.cli(args) == 0
    trial = api.trials(db=root / "db" / "ab.nn.db").iloc[0]
    assert trial.status == "complete" and trial.n_train == SAMPLES and trial.n_eval == SAMPLES

    parts = utkface.load(real_utkface, root / "data" / "utkface" / "cache", norm_64.transform(utkface.IMAGENET_NORM),
                         norm_64.eval_transform(utkface.IMAGENET_NORM), DataSettings(max_samples=SAMPLES),
                         progress=False)
    mean_predictor = float(np.abs(parts.eval.ages - parts.train.ages.mean()).mean())
    assert mean_predictor > 14  # UTKFace: about 15 years
    assert trial.eval_mae < mean_predictor - 1.0, (trial.eval_mae, mean_predictor)
    assert trial.test_mae is not None and trial.test_mae < mean_predictor

    exports = api.exports(trial_id=int(trial.id), db=root / "db" / "ab.nn.db")
    rows = {(r.format, r.precision): r for r in exports.itertuples()}
    for kind in (("onnx", "fp32"), ("tflite", "fp32")):  # fidelity on real, preprocessed images
        row = rows[kind]
        assert row.status == "ok" and row.n_eval == SAMPLES and row.n_test == SAMPLES, row.error
        assert row.eval_max_diff < 1e-3 and row.test_max_diff < 1e-3
        assert abs(row.test_mae - trial.test_mae) < 1e-3
