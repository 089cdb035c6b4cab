"""Hostile and broken inputs: each gives a clear error, and nothing already recorded is lost."""
import os
import resource
import signal
import sqlite3
import subprocess
import sys

import pytest
from PIL import Image

from ab.nn import api, registry
from ab.nn.dataset import utkface
from ab.nn.dataset.settings import DataSettings
from ab.nn.transform import norm_64
from tests import helpers
from tests.test_sweep_cli import CONFIG, FAST, run


def test_images_of_any_mode_or_size_are_used(tmp_path):
    folder = tmp_path / "UTKFace"
    helpers.make_utkface(folder, count=20)
    face = helpers.make_face(40, size=48)
    face.convert("L").save(folder / helpers.utk_name(41, 0, 0, 101))
    face.convert("CMYK").save(folder / helpers.utk_name(42, 0, 0, 102))
    face.convert("RGBA").save(folder / helpers.utk_name(43, 0, 0, 103).replace(".jpg.chip.jpg", ".png"))
    face.convert("P").save(folder / helpers.utk_name(44, 0, 0, 104).replace(".jpg.chip.jpg", ".png"))
    Image.new("RGB", (1, 1), (90, 90, 90)).save(folder / helpers.utk_name(45, 0, 0, 105))
    Image.new("RGB", (1200, 700), (90, 90, 90)).save(folder / helpers.utk_name(46, 0, 0, 106))
    parts = utkface.load(tmp_path, tmp_path / "cache", norm_64.transform(utkface.IMAGENET_NORM),
                         norm_64.eval_transform(utkface.IMAGENET_NORM), DataSettings(), progress=False)
    assert not parts.skipped and len(parts.train) + len(parts.eval) + len(parts.test) == 26
    assert all(parts.train[i][0].shape == (3, 64, 64) for i in range(len(parts.train)))


def test_a_data_folder_that_is_a_file_or_a_loop_is_reported(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    for target in (tmp_path / "file", tmp_path / "loop", tmp_path / "missing"):
        with pytest.raises(utkface.DataNotFound, match="no UTKFace images in"):
            utkface.find_source(target)


@pytest.mark.skipif(os.geteuid() == 0, reason="permissions do not stop root from reading")
def test_an_unreadable_data_folder_is_reported(tmp_path):
    folder = tmp_path / "locked"
    helpers.make_utkface(folder / "UTKFace", count=3)
    folder.chmod(0)
    try:
        with pytest.raises(utkface.DataError, match="cannot read"):
            utkface.find_source(folder)
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("prm, expected", [
    ('{"lr": "fast"}', "lr must be a finite number"),
    ('{"lr": -1}', "lr must be positive"),
    ('{"dropout": 1.5}', "must lie in [0, 1]"),
    ('{"momentum": true}', "momentum must be a finite number"),
    ('{"batch": 0}', "batch must be a positive integer"),
    ('{"batch": 2.5}', "batch must be a positive integer"),
    ('{"pretrained": 2}', "pretrained must be 0 or 1"),
    ('{"epoch_max": 3}', "set the number of epochs with -e"),
    ('[0.1, 0.2]', "must be a JSON object"),
    ('{"lr": NaN}', "lr must be a finite number"),
])
def test_bad_fixed_hyperparameters(root, utk_dir, capsys, prm, expected):
    with pytest.raises(SystemExit) as stopped:
        run(root, utk_dir, "-c", CONFIG, "-p", prm)
    assert stopped.value.code == 2 and expected in capsys.readouterr().err


@pytest.mark.parametrize("pattern", ["age-regression__mae_MobileAgeNet", "_utkface", "age regression",
                                     "age-regression_utkface_mae_Mobile;rm -rf", "a_b_c_d_e_f"])
def test_malformed_config_strings(root, utk_dir, capsys, pattern):
    with pytest.raises(SystemExit) as stopped:
        run(root, utk_dir, "-c", pattern)
    assert stopped.value.code == 2 and "config" in capsys.readouterr().err


@pytest.mark.parametrize("kind, name", [(registry.MODEL, "../../x"), (registry.LOADER, "../utkface"),
                                        (registry.TRANSFORM, "../transform/norm_64"),
                                        (registry.MODEL, "ab.nn.api"), (registry.METRIC, "/etc/passwd")])
def test_names_outside_the_registry_are_refused_before_import(kind, name):
    with pytest.raises(registry.RegistryError, match="unknown"):
        registry.load(kind, name)


BROKEN = {
    "SyntaxBroken": ("def supported_hyperparameters(:\n", "SyntaxError"),
    "WrongShape": (helpers.TINY_MODEL.replace("return self.linear(x.mean(dim=(2, 3)))",
                                              "return self.linear(x.mean(dim=(2, 3))).repeat(1, 5)"),
                   "OutputShapeError: forward returned"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_model_files_are_recorded_as_failed_trials(root, utk_dir, name):
    code, message = BROKEN[name]
    helpers.write_model(root, name, code)
    assert run(root, utk_dir, "-c", f"age-regression_utkface_mae_{name}", "-t", "1", "-a", "2") == 1
    trials = api.trials(db=root / "db" / "ab.nn.db")
    assert len(trials) >= 1 and set(trials.status) == {"failed"}
    assert message in trials.error.iloc[0]


def test_a_loss_that_goes_nan_stops_the_trial_as_diverged(root, utk_dir):
    nan_model = helpers.TINY_MODEL.replace(
        "            loss.backward()\n            self.optimizer.step()\n",
        "            loss.backward()\n            self.optimizer.step()\n"
        "        with torch.no_grad():\n            self.linear.weight.fill_(float('nan'))\n"
        "        return float('nan')\n")
    helpers.write_model(root, "GoesNan", nan_model)
    assert run(root, utk_dir, "-c", "age-regression_utkface_mae_GoesNan", "-t", "1", "-e", "4") == 0
    trial = api.trials(db=root / "db" / "ab.nn.db").iloc[0]
    assert trial.status == "diverged" and trial.epochs_done == 1
    assert len(api.data(db=root / "db" / "ab.nn.db")) == 1


def _one_trial(root, utk_dir):
    assert run(root, utk_dir, "-c", CONFIG, "-t", "1") == 0
    return root / "db" / "ab.nn.db"


def test_a_read_only_database_is_a_clear_error(root, utk_dir):
    db = _one_trial(root, utk_dir)
    done = subprocess.run([sys.executable, "-m", "ab.nn.train", "--root", str(root), "--data-dir", str(utk_dir),
                           *FAST, "-c", CONFIG, "-t", "2", "--db", f"sqlite:///file:{db}?mode=ro&uri=true"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert "cannot use the statistics database" in last
    assert api.trials(db=db).status.tolist() == ["complete"]


def _limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (48 * 1024, 48 * 1024))


def test_a_full_disk_is_a_clear_error_and_loses_nothing(root, utk_dir):
    db = _one_trial(root, utk_dir)
    before = api.data(db=db)
    done = subprocess.run([sys.executable, "-m", "ab.nn.train", "--root", str(root), "--data-dir", str(utk_dir),
                           *FAST, "-c", CONFIG, "-t", "5", "-e", "3"], capture_output=True, text=True, timeout=300,
                          preexec_fn=_limit_file_size)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "error:" in done.stderr.strip().splitlines()[-1]
    with sqlite3.connect(db) as con:
        assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
    after = api.data(db=db)
    assert set(before.id) <= set(after.id)
    first = api.trials(db=db).set_index("id").loc[int(before.trial_id[0])]
    assert first.status == "complete"
