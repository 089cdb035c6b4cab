"""The constant-predictor baseline (ab.nn.stat.constant_predictor) through real tiny sweeps: recorded once per data
key from the labels, carried by copies, and said by the summary, ``api.trials()``, the report and predict.

Models (tests.helpers.TINY_MODEL, changed): two that say one age for every face, 95 and 95.00045 years (their
difference, 0.00045 years on every image, is the one the issue saw called "worse"), and one that reads the age
from the generated images' brightness (tests.helpers.make_face), which is better than any constant."""
import math
import re
from collections import Counter

import pytest

from ab.nn import api, workspace
from ab.nn.predict import __main__ as predict_cli
from ab.nn.predict import models
from ab.nn.report import __main__ as report
from ab.nn.stat import constant_predictor, versions
from ab.nn.stat.copy import copy_database
from ab.nn.workspace import Workspace
from tests import helpers, photo
from tests.test_sweep_cli import run

PREFIX = "age-regression_utkface_mae_"
CONSTANTS = {"BlConstA": "95.0", "BlConstB": "95.00045"}
ORACLE = "BlOracle"
NO_LEARNING = ("    def learn(self, train_data):\n", "    def learn(self, train_data):\n        return\n")


def _constant_model(age: str) -> str:
    return (helpers.TINY_MODEL
            .replace("nn.init.constant_(self.linear.bias, 40.0)",
                     f"nn.init.zeros_(self.linear.weight)\n        nn.init.constant_(self.linear.bias, {age})")
            .replace(*NO_LEARNING))


ORACLE_MODEL = helpers.TINY_MODEL.replace(*NO_LEARNING).replace(
    "        return self.linear(x.mean(dim=(2, 3)))",
    "        std = torch.tensor([0.229, 0.224, 0.225], device=x.device)\n"
    "        mean = torch.tensor([0.485, 0.456, 0.406], device=x.device)\n"
    "        level = ((x.mean(dim=(2, 3)) * std + mean) * 255).mean(dim=1, keepdim=True)\n"
    "        return (level - 30) / 2 + 0 * self.linear(x.mean(dim=(2, 3)))  # make_face: level = 30 + 2 * age")


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """Two data keys on the same 60 images: the constants on split seed 42, the oracle on split seed 7."""
    base = tmp_path_factory.mktemp("baseline")
    root, data = base / "ws", base / "utk"
    ages = helpers.make_utkface(data / "UTKFace", count=60)
    for name, age in CONSTANTS.items():
        helpers.write_model(root, name, _constant_model(age))
    helpers.write_model(root, ORACLE, ORACLE_MODEL)
    for args in (("-c", f"{PREFIX}BlConst*"), ("-c", PREFIX + ORACLE, "--split-seed", "7")):
        assert run(root, data, *args, "-e", "1", "-t", "1", "--save_pth_weights") == 0
    return root, ages


def _summary(root, data, capsys, *args) -> str:
    capsys.readouterr()
    assert run(root, data, *args, "-e", "1", "-t", "1", "--save_pth_weights") == 0
    return capsys.readouterr().out


def _by_hand(ages: list[int], trial_id: int, db) -> dict:
    """The baseline from the generated labels: the training part is every image the trial was not evaluated or
    tested on (all 60 are used), its mean is predicted for every eval and test image."""
    judged = api.predictions(trial_id=trial_id, db=db)
    parts = {split: judged[judged.split == split].age.tolist() for split in ("eval", "test")}
    train = list((Counter(ages) - Counter(parts["eval"]) - Counter(parts["test"])).elements())
    mean = sum(train) / len(train)
    return {"train_mean": mean, "n_train": len(train), "n_eval": len(parts["eval"]), "n_test": len(parts["test"]),
            **{f"{split}_mae": sum(abs(a - mean) for a in values) / len(values) for split, values in parts.items()}}


def test_each_data_key_records_the_training_mean_s_mae(sweeps):
    root, ages = sweeps
    db = Workspace.resolve(root).db_url
    trials = api.trials(db=db)
    baselines = api.baselines(db=db).set_index("data_key")
    assert sorted(baselines.index) == sorted(trials.data_key.unique())  # one per data key, before its trials
    for key, of_key in trials.groupby("data_key"):
        expected = _by_hand(ages, int(of_key.id.iloc[0]), db)
        recorded = baselines.loc[key]
        for name, value in expected.items():
            assert recorded[name] == pytest.approx(value, abs=1e-9), name
        assert (recorded.n_train, recorded.n_eval, recorded.n_test) == tuple(of_key[["n_train", "n_eval", "n_test"]]
                                                                             .iloc[0])
        assert (of_key.baseline_eval_mae == recorded.eval_mae).all() and (of_key.baseline_test_mae ==
                                                                           recorded.test_mae).all()
    assert baselines.train_mean.nunique() == 2  # two splits of the same images: two training means


def test_trials_say_whether_they_beat_the_constant(sweeps):
    root, _ = sweeps
    trials = api.trials(db=Workspace.resolve(root).db_url).set_index("nn")
    assert trials.beats_baseline.dtype == "boolean"
    assert not trials.beats_baseline["BlConstA"] and not trials.beats_baseline["BlConstB"]
    oracle = trials.loc[ORACLE]
    assert oracle.beats_baseline and oracle.test_mae_high < oracle.baseline_test_mae
    assert constant_predictor.beats({"test_mae": 9.0, "test_mae_low": 8.0, "test_mae_high": 10.5},
                                    {"test_mae": 10.0, "eval_mae": 10.0}) is False  # its interval holds it
    assert constant_predictor.beats({"eval_mae": 9.0}, {"test_mae": None, "eval_mae": 10.0}) is True  # no test part
    assert constant_predictor.beats({"eval_mae": 9.0}, None) is None


def test_a_second_run_and_a_copy_keep_one_baseline_per_key(sweeps, tmp_path, capsys):
    root, _ = sweeps
    db = Workspace.resolve(root).db_url
    before = api.baselines(db=db)
    out = _summary(root, root.parent / "utk", capsys, "-c", f"{PREFIX}BlConst*")  # -t 1: trained already
    assert "nothing to do" in out and api.baselines(db=db).equals(before)
    store = helpers.new_store(db)
    store.record_baseline(constant_predictor.Baseline(before.data_key[0], "utkface", 1.0, 1, 2.0, 1, 3.0, 1))
    assert api.baselines(db=db).equals(before)  # the first reading of a data key stays
    target = f"sqlite:///{tmp_path / 'copy.db'}"
    versions.upgrade(target)  # as `python -m ab.nn.stat copy` does
    assert copy_database(db, target)["constant_baseline"] == len(before)
    copy_database(db, target)
    assert api.baselines(db=target).equals(before)
    assert api.trials(db=target).beats_baseline.tolist() == api.trials(db=db).beats_baseline.tolist()


def test_the_summary_says_when_the_best_is_not_better(sweeps, capsys):
    root, _ = sweeps
    data = root.parent / "utk"
    db = Workspace.resolve(root).db_url
    baselines = api.baselines(db=db).set_index("data_key")
    trials = api.trials(db=db).set_index("nn")
    out = _summary(root, data, capsys, "-c", PREFIX + "BlConstA")  # -t 1: trained already, summarised all the same
    constant = baselines.loc[trials.data_key["BlConstA"]]
    assert (f"constant predictor (the training mean, {constant.train_mean:.2f} years, for every image; "
            f"{constant.n_train} training images): val MAE {constant.eval_mae:.2f}, test MAE "
            f"{constant.test_mae:.2f} years; 0 of 1 trained trials on this data are better") in out
    assert "best: not better than the constant predictor within its interval" in out
    out = _summary(root, data, capsys, "-c", PREFIX + ORACLE, "--split-seed", "7")
    assert "1 of 1 trained trials on this data are better" in out and "not better" not in out


def _row(text: str, model: str) -> dict:
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| model |"))
    row = next(line for line in lines if line.startswith(f"| {model} |"))
    return dict(zip([c.strip() for c in header.strip("|").split("|")], [c.strip() for c in row.strip("|").split("|")]))


def test_the_report_calls_a_difference_below_its_interval_a_tie(sweeps, tmp_path):
    root, _ = sweeps
    ws = Workspace.resolve(root)
    text = report.write(ws, tmp_path / "report").read_text()
    constant_b = _row(text, "BlConstB")  # 0.00045 years above BlConstA on every test image
    assert re.fullmatch(r"\+0\.00 \[\+0\.00, \+0\.00\] p=\S+", constant_b["vs best"]), constant_b["vs best"]
    assert constant_b["verdict"] == "tie"
    assert constant_b["verdict vs constant"] == _row(text, "BlConstA")["verdict vs constant"] == "not better (worse)"
    assert _row(text, ORACLE)["verdict vs constant"] == "better"
    for train_mean in api.baselines(db=ws.db_url).train_mean:
        assert f"Baseline: the constant predictor (the training mean, {train_mean:.2f} years, for every image" in text
    comparison = api.compare(*api.trials(db=ws.db_url).set_index("nn").id[["BlConstB", "BlConstA"]], db=ws.db_url)
    assert 0 < comparison.low <= comparison.high < 0.001 and comparison.p_value < 0.05  # resolved, yet below RESOLUTION


def test_predict_says_a_trial_is_not_better_than_the_constant(sweeps, tmp_path, capsys):
    root, _ = sweeps
    ws = Workspace.resolve(root)
    trials = api.trials(db=ws.db_url).set_index("nn")
    constant, oracle = (int(trials.id[name]) for name in ("BlConstA", ORACLE))
    found = models.resolve(f"trial:{constant}", ws).info.provenance
    assert found["beats_baseline"] is False and math.isclose(found["baseline_test_mae"],
                                                               trials.baseline_test_mae["BlConstA"])
    assert found["baseline_warning"].startswith(f"trial {constant} is not better than the constant predictor")
    assert models.resolve(f"trial:{oracle}", ws).info.provenance["baseline_warning"] is None
    photo.generated_template().save(ws.face_template_path)
    image = tmp_path / "empty.png"
    photo.background().save(image)
    capsys.readouterr()
    for trial_id, warned in ((constant, True), (oracle, False)):
        with workspace.active.use(ws):  # the torch runtime builds the model from the active workspace's nn/
            assert predict_cli.main([str(image), "--model", f"trial:{trial_id}", "--root", str(root), "--threads",
                                     "1", "--quiet"]) == 0
        err = capsys.readouterr().err
        assert (f"warning: trial {trial_id} is not better than the constant predictor" in err) is warned, err
