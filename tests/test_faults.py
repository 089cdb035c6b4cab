"""Faults become recorded errors: a full disk while building the image cache, copies and imports into
databases that already hold trials, paths in the database that lead outside the workspace, database
errors that are bugs, a mixture whose fit fails."""
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from ab.nn import api
from ab.nn.deploy.keep_best import keep_best_only
from ab.nn.config import Config
from ab.nn.stat import __main__ as stat_cli, engine as engines
from ab.nn.stat.store import StatStore, retried
from ab.nn.util import processes
from tests import helpers
from tests.helpers import optuna_links
from tests.test_sweep_cli import run

BUILD = """
import sys
from pathlib import Path
from ab.nn.dataset import utkface
from ab.nn.dataset.settings import DataSettings
from ab.nn.transform import norm_64
norm = utkface.IMAGENET_NORM
utkface.load(Path(sys.argv[1]), Path(sys.argv[2]), norm_64.transform(norm), norm_64.eval_transform(norm), DataSettings(),
             progress=False)
print("built")
"""


def _build(utk_dir, cache, preexec=None):
    return subprocess.run([sys.executable, "-c", BUILD, str(utk_dir), str(cache)], capture_output=True, text=True,
                          timeout=900, preexec_fn=preexec)


def _limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))


def _check_refused(done, cache):
    assert done.returncode == 1, done.stderr[-2000:]  # an exception, not a signal (SIGBUS was 135)
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ab.nn.dataset.cache.CacheSpaceError: not enough space for the 64px image cache in")
    assert str(cache) in last and "bytes needed" in last
    assert not list(cache.glob("*.tmp*"))  # nothing left behind


def test_a_cache_that_does_not_fit_is_an_error_not_a_sigbus(utk_dir, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    _build(utk_dir, cache)  # ids are remembered (small); then the pixel cache cannot be written
    for path in cache.glob("*.u8"):
        path.unlink()
    _check_refused(_build(utk_dir, cache, _limit_file_size), cache)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None, reason="mounting a tmpfs needs root")
def test_a_cache_on_a_full_tmpfs(utk_dir, tmp_path):
    cache = tmp_path / "tiny"
    cache.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(cache)]).returncode != 0:
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        stale = processes.temp_path(cache / "abc.u8", pid=999999)  # left by a build that died here
        stale.write_bytes(b"x" * 1000)
        _check_refused(_build(utk_dir, cache), cache)
        assert not stale.exists()
    finally:
        subprocess.run(["umount", str(cache)])


def _sweep(root, utk_dir, config, *extra):
    assert run(root, utk_dir, "-c", config, "-t", "2", "--seeds", "1", *extra) == 0
    return root / "db" / "ab.nn.db"


def test_copy_into_a_database_with_trials_maps_ids_and_adds_nothing_twice(tmp_path, root, utk_dir, tiny_model):
    config = f"age-regression_utkface_mae_{tiny_model}"
    helpers.write_model(tmp_path / "b", tiny_model, helpers.TINY_MODEL)
    a = _sweep(root, utk_dir, config, "--split-seed", "1")
    b = _sweep(tmp_path / "b", utk_dir, config, "--split-seed", "2")
    before_a, before_b = api.trials(db=a), api.trials(db=b)
    epochs_a, epochs_b = len(api.data(db=a)), len(api.data(db=b))
    assert sorted(before_a.id) == sorted(before_b.id) == [1, 2]  # the same ids in both
    assert stat_cli.cli(["copy", "--from", f"sqlite:///{a}", "--to", f"sqlite:///{b}"]) == 0
    merged = api.trials(db=b).set_index("uid")
    assert len(merged) == 4 and merged.index.is_unique
    for _, trial in before_a.iterrows():
        copied = merged.loc[trial.uid]
        assert copied.eval_mae == trial.eval_mae and copied.split == "paper/1"
        epochs = api.data(db=b)
        assert set(epochs[epochs.trial_id == copied.id].mae) == set(api.data(db=a)[lambda d: d.trial_id == trial.id].mae)
        assert len(api.predictions(trial_id=int(copied.id), split="test", db=b)) == trial.n_test
        # the runner's study name travels; Optuna's ids are the reconciler's to give
        assert copied.study == trial.study and optuna_links(b).set_index("uid").loc[trial.uid][
            ["number", "optuna_trial_id"]].isna().all()
    assert (merged.loc[before_b.uid].id.tolist()) == before_b.id.tolist()  # the target's own rows untouched
    assert len(api.data(db=b)) == epochs_a + epochs_b
    assert stat_cli.cli(["copy", "--from", f"sqlite:///{a}", "--to", f"sqlite:///{b}"]) == 0
    assert len(api.trials(db=b)) == 4 and len(api.data(db=b)) == epochs_a + epochs_b  # nothing added twice


def test_import_json_into_a_database_with_trials_maps_ids(tmp_path, root, utk_dir, tiny_model):
    config = f"age-regression_utkface_mae_{tiny_model}"
    helpers.write_model(tmp_path / "b", tiny_model, helpers.TINY_MODEL)
    a = _sweep(root, utk_dir, config)
    b = _sweep(tmp_path / "b", utk_dir, config, "--split-seed", "3")
    tree = root / "stat" / "train"
    assert stat_cli.cli(["import-json", "--db", f"sqlite:///{b}", "--dir", str(tree)]) == 0
    merged = api.trials(db=b)
    assert len(merged) == 4 and merged.uid.is_unique
    for _, trial in api.trials(db=a).iterrows():
        mine = merged[merged.uid == trial.uid].iloc[0]
        rows = api.data(db=b)
        assert rows[rows.trial_id == mine.id].mae.tolist() == api.data(db=a)[lambda d: d.trial_id == trial.id].mae.tolist()
    assert stat_cli.cli(["import-json", "--db", f"sqlite:///{b}", "--dir", str(tree)]) == 0
    assert len(api.trials(db=b)) == 4  # idempotent


def test_keep_best_only_touches_only_this_workspaces_files(root, utk_dir, tiny_model, tmp_path):
    config = f"age-regression_utkface_mae_{tiny_model}"
    db = _sweep(root, utk_dir, config, "--export", "onnx", "--export-unlearned", "--latency-runs", "2",
                "--latency-warmup", "0")
    outside = tmp_path / "precious.txt"
    outside.write_text("not an artifact")
    trials = api.ranked_trials(config=config, db=db)
    worst = int(trials.id.iloc[-1])
    store = StatStore(f"sqlite:///{db}")
    planted = store.add_export(worst, format="onnx", precision="fp32", path=str(outside), status="ok")
    escape = root / "out" / "link"
    escape.symlink_to(outside)
    via_link = store.add_export(worst, format="onnx", precision="fp16", path=str(escape), status="ok")
    other_host = store.add_export(worst, format="onnx", precision="fp32", path=str(root / "out" / "x.onnx"),
                                  status="ok")
    store.update_export(other_host, host="another-machine")
    deleted = keep_best_only(store, Config.parse(config), trials.data_key.iloc[0], root / "out")
    assert outside.read_text() == "not an artifact" and escape.is_symlink()
    exports = api.exports(db=db).set_index("id")
    assert exports.loc[[planted, via_link, other_host]].status.tolist() == ["ok", "ok", "ok"]
    assert deleted and all(Path(p).is_relative_to((root / "out").resolve()) for p in deleted)


def test_database_errors_that_are_bugs_are_not_storage_errors():
    locked = OperationalError("INSERT INTO trial ...", {}, Exception("database is locked"))
    missing = OperationalError("SELECT nope FROM trial", {}, Exception("no such column: nope"))
    duplicate = IntegrityError("INSERT INTO prm ...", {}, Exception("UNIQUE constraint failed: prm.uid"))
    assert engines.is_storage_error(locked) and engines.is_transient(locked)
    assert not engines.is_storage_error(missing) and engines.is_database_bug(missing)
    assert not engines.is_storage_error(duplicate) and engines.is_database_bug(duplicate)
    assert engines.is_storage_error(OSError(28, "No space left on device"))


def test_transient_errors_are_retried_and_bugs_are_raised_at_once(monkeypatch):
    monkeypatch.setattr("ab.nn.stat.store.time.sleep", lambda s: None)
    calls = []

    class Flaky:
        @retried
        def write(self, error):
            calls.append(error)
            if len(calls) < 3:
                raise error
            return "done"

    locked = OperationalError("UPDATE trial ...", {}, Exception("database is locked"))
    assert Flaky().write(locked) == "done" and len(calls) == 3
    calls.clear()
    duplicate = IntegrityError("INSERT INTO trial (id) VALUES (?)", {}, Exception("UNIQUE constraint failed"))
    with pytest.raises(IntegrityError, match="INSERT INTO trial"):
        Flaky().write(duplicate)
    assert len(calls) == 1


def test_a_mixture_whose_fit_fails_is_recorded_failed(root, utk_dir, tiny_model, tmp_path):
    import torch

    from ab.nn.deploy.onnx_export import export_onnx
    from ab.nn.moe import __main__ as moe_cli

    config = f"age-regression_utkface_mae_{tiny_model}"
    _sweep(root, utk_dir, config)
    external = tmp_path / "bad.onnx"
    export_onnx(torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 5)).eval(),
                (1, 3, 48, 48), external)
    external.with_suffix(".json").write_text(json.dumps({"name": "bad", "input_size": 48, "output": "distribution",
                                                         "ages": [10, 20, 30]}))  # 5 scores, 3 ages
    with pytest.raises(SystemExit) as stopped:
        moe_cli.cli(["fit", "--experts", "trial:1", f"onnx:{external}", "--root", str(root), "--data-dir",
                     str(utk_dir)])
    assert stopped.value.code == 2
    mixtures = api.trials(config="age-regression_utkface_mae_AgeMoE", db=root / "db" / "ab.nn.db")
    assert list(mixtures.status) == ["failed"] and "ValueError" in mixtures.error[0]
