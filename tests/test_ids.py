"""One trial number people see: the trial id in every frame, summary and dashboard label, never Optuna's
numbering; and ``root=`` finds a workspace's database, trial files and face template from it alone,
whatever the current directory."""
import contextlib
import inspect
import io
import re

import optuna
import pytest
import torch

from ab.nn import api, train
from ab.nn.face.template import default_path
from ab.nn.predict import AgeEstimator
from ab.nn.stat import __main__ as stat_cli, studies
from ab.nn.workspace import Workspace
from tests import helpers, photo
from tests.helpers import optuna_links
from tests.test_sweep_cli import FAST

OTHER, TINY = "age-regression_utkface_mae_OtherAge", "age-regression_utkface_mae_TinyAge"
OPTUNA_COLUMNS = {"number", "optuna_trial_id"}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A workspace whose database holds trial 1 of another config before the two trials of ``TINY`` (ids
    2 and 3, Optuna's numbers 0 and 1 in their study), with checkpoints and a face template; and what
    the sweep of ``TINY`` printed. About 10 s."""
    root, data = tmp_path_factory.mktemp("ws"), tmp_path_factory.mktemp("utk")
    helpers.make_utkface(data / "UTKFace", count=60)
    for name in ("OtherAge", "TinyAge"):
        helpers.write_model(root, name, helpers.TINY_MODEL)
    base = ["--root", str(root), "--data-dir", str(data), *FAST, "-e", "1", "--save_pth_weights"]
    assert train.cli([*base, "-c", OTHER, "-t", "1"]) == 0
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        assert train.cli([*[a for a in base if a != "--quiet"], "-c", TINY, "-t", "2"]) == 0
    photo.generated_template().save(default_path(Workspace.resolve(root)))
    return root, printed.getvalue()


def test_frames_summaries_and_dashboard_labels_show_our_trial_ids_only(swept, capsys):
    root, printed = swept
    db = root / "db" / "ab.nn.db"
    links = optuna_links(db).set_index("id")
    assert links.loc[[2, 3], "number"].tolist() == [0, 1]  # Optuna's numbers differ from our ids

    shown = {int(i) for i in re.findall(r"\btrial (\d+)", printed)}
    assert shown == {2, 3}, printed  # progress bar and summary
    assert f"{TINY}/2" in printed  # the best trial's folder, named by its id

    frames = {"data": api.data(db=db), "data_withnonnullvalue": api.data_withnonnullvalue(db=db),
              "trials": api.trials(db=db), "ranked_trials": api.ranked_trials(db=db), "metrics": api.metrics(db=db),
              "age_groups": api.age_groups(db=db), "predictions": api.predictions(db=db),
              "attributes": api.attributes(db=db), "exports": api.exports(db=db), "latency": api.latency(db=db),
              "run_data": api.run_data(db=db), "replicas": api.replicas(db=db),
              "replay_pruner": api.replay_pruner(config=TINY, db=db)}
    for name, frame in frames.items():
        assert not OPTUNA_COLUMNS & set(frame.columns), name
        if "trial_id" in frame and not frame.empty:
            assert set(frame.trial_id) <= {1, 2, 3}, name
    assert sorted(frames["trials"].id) == [1, 2, 3] and sorted(frames["replay_pruner"].id) == [2, 3]
    assert sorted(frames["data"][frames["data"].nn == "TinyAge"].trial_id) == [2, 3]
    assert frames["data"].id.str.fullmatch("[0-9a-f]{32}").all()  # LEMUR's stat id, one per epoch row

    assert stat_cli.cli(["trials", "--root", str(root), "-c", TINY]) == 0
    table = capsys.readouterr().out
    assert "number" not in table and [int(i) for i in re.findall(r"^\|\s*(\d+)\s*\|", table, re.M)] == [2, 3]

    study = optuna.load_study(study_name=frames["trials"].set_index("id").study[2], storage=f"sqlite:///{db}")
    assert [t.user_attrs[studies.TRIAL_ATTR] for t in study.trials] == [2, 3]
    assert studies.note_text(study.trials[0].user_attrs).startswith("**ab.nn trial 2**")


def test_every_api_function_that_reads_the_database_takes_root():
    for name in api.__all__:
        function = getattr(api, name)
        # calibrated() only names trials for groups()/compare(), which read the database and take root
        if callable(function) and not inspect.isclass(function) and name not in ("default_data_keys", "calibrated"):
            assert "root" in inspect.signature(function).parameters, name


def test_load_model_and_from_model_find_everything_from_root_alone(swept, tmp_path, monkeypatch):
    root, _ = swept
    monkeypatch.chdir(tmp_path)  # an empty current directory: nothing may be looked for here
    for variable in ("LEMUR_ROOT", "LEMUR_DB", "LEMUR_DATA"):
        monkeypatch.delenv(variable, raising=False)
    db = root / "db" / "ab.nn.db"
    loaded = [api.load_model(2, root=root), api.load_model(2, root=str(root)),
              api.load_model(2, root=Workspace.resolve(root)), api.load_model(2, db=db),
              api.load_model(2, db=f"sqlite:///{db}")]  # the database alone: the files are beside it
    weights = [m.state_dict()["linear.weight"] for m in loaded]
    assert all(torch.equal(w, weights[0]) for w in weights)
    assert not torch.equal(api.load_model(3, root=root).state_dict()["linear.weight"], weights[0])
    assert loaded[0].preprocessing["input_size"] == 64

    assert sorted(api.trials(root=root).id) == [1, 2, 3] and len(api.data(root=str(root))) == 3
    assert api.trial(2, root=Workspace.resolve(root))["config"] == TINY
    assert api.db_url(root=root) == f"sqlite:///{db}"
    for call in (lambda: api.load_model(2), lambda: api.trials(root=tmp_path)):
        with pytest.raises(FileNotFoundError, match="no statistics database"):
            call()

    for given in ({"root": str(root)}, {"root": Workspace.resolve(root)}, {"workspace": str(root)}):
        estimator = AgeEstimator.from_model("trial:2", runtime="torch", threads=1, **given)
        assert estimator.info.provenance["trial_id"] == 2 and estimator.predict(photo.background()) == []
    with pytest.raises(ValueError, match="not both"):
        AgeEstimator.from_model("trial:2", root=root, workspace=root)


def test_a_folder_named_by_optuna_s_number_is_found_by_the_trial_id_in_its_meta_json(tmp_path):
    """Trials recorded before ids named folders live in ``out/<config>/<Optuna's number>/``."""
    import json

    from ab.nn import checkpoint

    ws = Workspace.resolve(tmp_path)
    legacy = ws.trial_dir(TINY, 0)
    legacy.mkdir(parents=True)
    (legacy / checkpoint.META).write_text(json.dumps({"trial_id": 5}))
    (ws.trial_dir(TINY, 1)).mkdir()  # another trial's folder, without meta.json
    assert checkpoint.folder_of(ws, {"id": 5, "config": TINY}) == legacy
    assert checkpoint.folder_of(ws, {"id": 6, "config": TINY}) == ws.trial_dir(TINY, 6)
    assert checkpoint.folder_of(ws, {"id": 0, "config": OTHER}) == ws.trial_dir(OTHER, 0)
