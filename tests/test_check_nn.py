"""check_nn: LEMUR's way of submitting generated model code, with LEMUR's signature, name and result;
broken or hostile code is a recorded failure, never a crash of the caller."""
import hashlib
import json
import re
import sqlite3

import pytest

from ab.nn import api, codequality, registry
from ab.nn.api import check_nn
from ab.nn.check_nn import AccuracyException, CheckNNError, model_name
from ab.nn.workspace import Workspace, active
from tests import helpers

PRM = {"lr": 0.01, "momentum": 0.9, "batch": 8, "transform": "norm_64", "epoch": 2}
TASK = ("age-regression", "utkface", "mae")


def lemur_name(code: str) -> str:
    """LEMUR's Train.train_new: uuid4(nn_code) = md5 of the code without any whitespace."""
    return hashlib.md5(re.sub("\\s", "", str(code)).encode()).hexdigest()


def options(root, utk_dir, **extra):
    return dict(root=root, data_dir=utk_dir, max_samples=24, progress=False, **extra)


def trials(root):
    return api.trials(db=root / "db" / "ab.nn.db")


def test_the_name_is_lemurs():
    code = helpers.TINY_MODEL
    assert model_name(code) == lemur_name(code) == model_name(code.replace("\n", "\n\n  \t"))
    assert model_name(code, "rag") == f"rag-{lemur_name(code)}"
    assert model_name("import torch\nclass Net: pass\n") == "f052fa11ad960742c592faf66c76d3d2"  # LEMUR's vector
    assert model_name(code, "my_prefix") == f"my_prefix-{lemur_name(code)}"  # LEMUR's; filed as my-prefix-<md5>


def test_code_is_trained_recorded_stored_and_filed(root, utk_dir, tmp_path):
    prm = dict(PRM)
    result = check_nn(helpers.TINY_MODEL, *TASK, prm, True, "rag", str(tmp_path / "epochs"), **options(root, utk_dir))
    name, accuracy, accuracy_to_time, quality = result
    assert name == f"rag-{lemur_name(helpers.TINY_MODEL)}"
    trial = trials(root).iloc[0]
    assert prm == dict(PRM, uid=trial.prm_id, duration=trial.duration, accuracy=accuracy)  # LEMUR fills the caller's
    assert trial.config == f"age-regression_utkface_mae_{name}" and trial.status == "complete"
    assert trial.epochs_done == 2 and trial.prm["lr"] == 0.01 and trial.prm["batch"] == 8
    assert accuracy == trial.eval_accuracy
    assert accuracy_to_time == pytest.approx(max(0.0, accuracy - 0.01) / (trial.duration / 1e11))
    assert quality == codequality.score(helpers.TINY_MODEL) and 0 <= quality <= 1
    assert (root / "nn" / f"{name}.py").read_text() == helpers.TINY_MODEL  # the workspace model folder
    with sqlite3.connect(root / "db" / "ab.nn.db") as con:
        assert con.execute("select code from nn where name=?", (name,)).fetchone()[0] == helpers.TINY_MODEL
    with active.use(Workspace.resolve(root)):
        assert registry.origin(registry.MODEL, name) == registry.WORKSPACE
    epochs = sorted(p.name for p in (tmp_path / "epochs").glob("*.json"))
    assert epochs == ["1.json", "2.json"]
    record = json.loads((tmp_path / "epochs" / "2.json").read_text())[0]
    assert (record["model"], record["epoch"], record["accuracy"]) == (name, 2, accuracy)
    check_nn(helpers.TINY_MODEL, *TASK, dict(PRM, epoch=1), prefix="rag", **options(root, utk_dir))
    assert len(trials(root)) == 2  # every call trains once more, as in LEMUR


BROKEN = {
    "syntax": ("import torch\ndef supported_hyperparameters(:\n", "SyntaxError"),
    "no Net": ("def supported_hyperparameters():\n    return {'lr'}\n", "no class Net"),
    "raises on import": ("raise RuntimeError('generated code exploded')\n", "generated code exploded"),
    "exits on import": ("import os\nos._exit(3)\n", "exited with code 3"),
    "segfaults on import": ("import ctypes\nctypes.string_at(0)\n", "killed by SIGSEGV"),
    "hangs on import": ("while True:\n    pass\n", "wall-clock limit of 20 s passed"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_or_hostile_code_is_a_recorded_failure(case, root, utk_dir):
    code, reason = BROKEN[case]
    with pytest.raises(CheckNNError, match=re.escape(reason)) as raised:
        check_nn(code, *TASK, dict(PRM), **options(root, utk_dir, validate_timeout=20))
    rows = trials(root)
    assert rows.status.tolist() == ["failed"] and reason in rows.error.iloc[0]
    assert raised.value.trial_id == rows.id.iloc[0]
    assert not (root / "nn").exists()  # bad code never joins the zoo
    with sqlite3.connect(root / "db" / "ab.nn.db") as con:
        assert con.execute("select code from nn").fetchone()[0] == code  # kept for inspection


def test_code_that_crashes_while_training_is_a_failed_trial(root, utk_dir):
    code = helpers.TINY_MODEL.replace("    def learn(self, train_data):\n",
                                      "    def learn(self, train_data):\n        import ctypes; ctypes.string_at(0)\n")
    with pytest.raises(CheckNNError, match="SIGSEGV"):
        check_nn(code, *TASK, dict(PRM), **options(root, utk_dir))
    assert trials(root).status.tolist() == ["failed"]


def test_a_hopeless_model_meets_lemurs_accuracy_gate(root, utk_dir):
    code = helpers.TINY_MODEL.replace("return self.linear(x.mean(dim=(2, 3)))",
                                      "return 500 + 0 * self.linear(x.mean(dim=(2, 3)))")
    with pytest.raises(AccuracyException, match="Accuracy is too low: 0.0"):
        check_nn(code, *TASK, dict(PRM), **options(root, utk_dir))
    assert trials(root).status.tolist() == ["stopped"]


def test_save_to_db_false_keeps_nothing(root, utk_dir):
    name, accuracy, _, _ = check_nn(helpers.TINY_MODEL, *TASK, dict(PRM), False, **options(root, utk_dir))
    assert name == lemur_name(helpers.TINY_MODEL) and 0 <= accuracy <= 1
    assert not (root / "db").exists() and not (root / "nn").exists() and not (root / "stat").exists()


def test_prm_without_what_lemur_needs_is_refused(root, utk_dir):
    with pytest.raises(ValueError, match="prm lacks epoch"):
        check_nn(helpers.TINY_MODEL, *TASK, {"lr": 0.01, "batch": 8, "transform": "norm_64"}, **options(root, utk_dir))


def test_code_quality():
    for name in registry.names(registry.MODEL):
        assert codequality.score(registry.source(registry.MODEL, name)) >= 0.9, name
    messy = ("import os, sys\nfrom math import *\ndef supported_hyperparameters(a=[]):\n    global X\n"
             "    try:\n        return {'lr'}\n    except:\n        pass\n    x = 1; y = 2;\n")
    found = {i.code for i in codequality.issues(messy)}
    assert {"W0611", "W0401", "W0102", "W0603", "W0702", "C0321", "W0301", "contract"} <= found
    penalty = sum(codequality.PENALTY[i.kind] for i in codequality.issues(messy))
    assert codequality.score(messy) == (100 - penalty) / 100 <= 0.8
    assert codequality.score("def broken(:\n") == 0.0
    deep = "def f(x):\n" + "".join(f"    if x == {i}:\n        return {i}\n" for i in range(12))
    assert codequality.cyclomatic_complexity(__import__("ast").parse(deep).body[0]) == 13
    assert "C901" in {i.code for i in codequality.issues(deep)}
