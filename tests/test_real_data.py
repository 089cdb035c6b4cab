"""On the real UTKFace images (CI sets LEMUR_DATA; skipped elsewhere without them)."""
import numpy as np
import pytest

from ab.nn import api, train
from ab.nn.dataset import utkface
from ab.nn.dataset.settings import DataSettings
from ab.nn.transform import norm_64

pytestmark = [pytest.mark.real_data, pytest.mark.slow]
SAMPLES = 2048


def test_the_real_folder_parses_completely(real_utkface):
    catalog = utkface.catalog(utkface.find_source(real_utkface))
    assert catalog.total == 23_707 and len(catalog.entries) == 23_707 and not catalog.skipped
    assert abs(float(catalog.ages.mean()) - 33.3) < 0.05


def test_a_short_trial_beats_the_training_mean(real_utkface, root):
    args = ["--root", str(root), "--data-dir", str(real_utkface), "-c", "age-regression_utkface_mae_MobileAgeNet",
            "-e", "2", "-t", "1", "--max-samples", str(SAMPLES), "-f", "norm_64_flip", "-w", "0", "--quiet", "--pretrained", "0",
            "-p", '{"lr": 0.001, "batch": 32, "dropout": 0.1}']
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
