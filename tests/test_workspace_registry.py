"""Model, transform, metric and loader files in the workspace (``<root>/nn/`` ...) are found after the
package's, by the same name rules, imported from their path; the package's file wins a name clash."""
import os
import subprocess
import sys

import pytest

from ab.nn import api, registry, train
from ab.nn.util.digest import sha256_of
from ab.nn.workspace import Workspace, active
from tests import helpers

TRANSFORM = '''"""A workspace transform: the package's 64x64 pipeline."""
from ab.nn.transform._pipeline import named

transform, eval_transform = named(64, "none")
'''
METRIC = '''"""A workspace metric: the package's MAE."""
from ab.nn.metric.mae import MAE


def create_metric(out_shape=None):
    return MAE()
'''


@pytest.fixture
def ws(tmp_path):
    workspace = Workspace.resolve(tmp_path / "ws")
    for folder, name, code in (("nn", "WsTiny", helpers.TINY_MODEL), ("transform", "ws_norm_64", TRANSFORM),
                               ("metric", "ws-mae", METRIC), ("nn", "_helper", "x = 1\n"),
                               ("nn", "Bad_Name", helpers.TINY_MODEL),
                               ("nn", "MobileAgeNet", "raise RuntimeError('the workspace copy must not be used')\n")):
        (workspace.root / folder).mkdir(parents=True, exist_ok=True)
        (workspace.root / folder / f"{name}.py").write_text(code)
    return workspace


def test_workspace_files_are_entries_after_the_package(ws):
    assert "WsTiny" not in registry.names(registry.MODEL)  # another workspace
    with active.use(ws):
        models = registry.names(registry.MODEL)
        assert "WsTiny" in models and "MobileAgeNet" in models and "_helper" not in models and "Bad_Name" not in models
        assert registry.origin(registry.MODEL, "WsTiny") == registry.WORKSPACE
        assert registry.path(registry.MODEL, "WsTiny") == ws.root / "nn" / "WsTiny.py"
        module = registry.load(registry.MODEL, "WsTiny")
        assert module.__file__ == str(ws.root / "nn" / "WsTiny.py")
        assert module.supported_hyperparameters() == {"lr", "momentum"}
        assert registry.source(registry.MODEL, "WsTiny") == helpers.TINY_MODEL
        assert registry.checksum(registry.source(registry.MODEL, "WsTiny")) == registry.checksum(helpers.TINY_MODEL)
        assert registry.load(registry.TRANSFORM, "ws_norm_64").transform(((0.5,) * 3, (0.5,) * 3)).image_size == 64
        assert registry.load(registry.METRIC, "ws-mae").create_metric().max_mae == 20.0


def test_the_package_wins_a_name_clash(ws):
    with active.use(ws):
        assert registry.origin(registry.MODEL, "MobileAgeNet") == registry.PACKAGE
        assert registry.load(registry.MODEL, "MobileAgeNet").__name__ == "ab.nn.nn.MobileAgeNet"
        assert "workspace copy" not in registry.source(registry.MODEL, "MobileAgeNet")


@pytest.mark.parametrize("name", ["../nn/WsTiny", "nn/WsTiny", "WsTiny.py", "ab.nn.api", "_helper", "Bad_Name",
                                  "/etc/passwd"])
def test_names_with_path_tricks_are_refused_in_the_workspace_too(ws, name):
    with active.use(ws), pytest.raises(registry.RegistryError, match="unknown model"):
        registry.load(registry.MODEL, name)


def test_a_changed_workspace_file_is_imported_again(ws):
    with active.use(ws):
        first = registry.load(registry.MODEL, "WsTiny")
        assert registry.load(registry.MODEL, "WsTiny") is first
        (ws.root / "nn" / "WsTiny.py").write_text(helpers.TINY_MODEL + "\nVERSION = 2\n")
        assert registry.load(registry.MODEL, "WsTiny").VERSION == 2


def test_a_sweep_trains_a_workspace_model_in_its_child_process(ws, utk_dir):
    """The trial runs in a spawned child (the default): it finds the workspace's file through its TrialSpec."""
    summary = train.main("age-regression_utkface_ws-mae_WsTiny", {"lr": 0.001, "momentum": 0.9}, 1, 1, 3, 3,
                         root=ws.root, data_dir=utk_dir, max_samples=16, num_workers=0, transform="ws_norm_64",
                         progress=False)
    assert summary.ok
    trial = api.trials(db=ws.db_path).iloc[0]
    assert (trial.status, trial.nn, trial["transform"]) == ("complete", "WsTiny", "ws_norm_64")
    row = api.data(with_code=True, db=ws.db_path).iloc[0]
    assert row.nn_code == helpers.TINY_MODEL and row.transform_code == TRANSFORM and row.metric_code == METRIC


SWEEP = ["-f", "norm_64", "--min_batch_binary_power", "3", "-b", "3", "-w", "0", "--quiet", "--pretrained", "0",
         "--max-samples", "16"]


def _sweep(ws, utk_dir, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ab.nn.train", "--root", str(ws.root), "--data-dir", str(utk_dir),
                           *SWEEP, *args], capture_output=True, text=True, timeout=900)


def test_in_process_trials_are_for_the_package_models_only_unless_unsafe(ws, utk_dir, capsys):
    with pytest.raises(SystemExit) as refused:
        train.cli(["--root", str(ws.root), "--data-dir", str(utk_dir), "-c", "age-regression_utkface_mae_WsTiny",
                   "--in-process", *SWEEP])
    assert refused.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--in-process runs the package's own models only: WsTiny is workspace code" in err
    assert not ws.db_path.exists() or api.trials(db=ws.db_path).empty
    assert train.cli(["--root", str(ws.root), "--data-dir", str(utk_dir), "-c", "age-regression_utkface_mae_WsTiny",
                      "--in-process", "--unsafe", *SWEEP, "-t", "1", "--export", "none"]) == 0  # the caller's choice
    assert list(api.trials(db=ws.db_path).sandbox) == ["none: --in-process --unsafe"]


def test_a_workspace_model_that_exits_when_imported_fails_its_trial_not_the_runner(ws, utk_dir):
    """The runner never imports a workspace model: one that exits whenever it is imported fails the probe,
    one that exits only where it is not probed fails its trial child; the runner records both."""
    (ws.root / "nn" / "ExitsAlways.py").write_text("import os\nos._exit(7)\n" + helpers.TINY_MODEL)
    (ws.root / "nn" / "ExitsUnprobed.py").write_text(
        "import os\nif not __name__.startswith('_ab_nn_probed_'):\n    os._exit(7)\n" + helpers.TINY_MODEL)
    done = _sweep(ws, utk_dir, "-c", "age-regression_utkface_mae_ExitsAlways", "age-regression_utkface_mae_ExitsUnprobed",
                  "-t", "1", "-a", "1", "--export", "none")
    assert done.returncode == 1, done.stderr[-3000:]  # both configs given up, the runner alive to say so
    trials = api.trials(db=ws.db_path).set_index("nn")
    assert (trials.status == "failed").all()
    assert "model 'ExitsAlways' cannot be used: probing the code failed: the sandboxed process ended before " \
           "sending the expected message: exited with code 7" in trials.error["ExitsAlways"]
    assert "TrialCrashed: the trial's process exited with code 7 before reporting" in trials.error["ExitsUnprobed"]
    assert trials.sandbox["ExitsUnprobed"] == "bubblewrap"


def test_a_sandboxed_trial_exports_into_its_folder_and_the_runner_keeps_the_best(ws, utk_dir):
    """The sandboxed child writes its artifacts to a scratch folder seen at out/<config>/<trial>; the runner
    copies them into the workspace, checks each row against its file, and deletes all but the best trial's
    files itself (--keep-best-only)."""
    done = _sweep(ws, utk_dir, "-c", "age-regression_utkface_mae_WsTiny", "-t", "2", "--export", "onnx", "--export-unlearned",
                  "--latency-runs", "2", "--latency-warmup", "0", "--keep-best-only", "--save_pth_weights")
    assert done.returncode == 0, done.stderr[-3000:]
    trials = api.trials(db=ws.db_path).set_index("id")
    assert list(trials.status) == ["complete", "complete"] and (trials.sandbox == "bubblewrap").all()
    best = int(trials.eval_mae.idxmin())
    files = api.exports(format="onnx", db=ws.db_path).set_index("trial_id")
    kept = files.loc[best]
    assert kept.status == "ok" and kept.path == str(ws.trial_dir("age-regression_utkface_mae_WsTiny", best) /
                                                     "model.onnx")
    assert sha256_of(kept.path) == kept.sha256 and os.stat(kept.path).st_size == kept.size_bytes
    assert os.stat(kept.path).st_uid == os.getuid()  # the runner's file, not the sandbox user's
    other = files.loc[[i for i in files.index if i != best][0]]
    assert other.status == "deleted" and not os.path.exists(other.path)
    labels = api.attributes(trial_id=best, split="eval", db=ws.db_path)  # sent by the child, stored by the runner
    assert len(labels) and (labels.gender_from == "file name").all() and (labels.race != "unknown").all()
