"""Model, transform, metric and loader files in the workspace (``<root>/nn/`` ...) are found after the
package's, by the same name rules, imported from their path; the package's file wins a name clash."""
import pytest

from ab.nn import api, registry, train
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
