"""NN-GPT's call sites, run unchanged (issue 40, item 5): each test replays lines as NN-GPT's scripts
write them (copied, with the file they come from: ABrain-One/nn-gpt, or its fork u-shrestha/nn-gpt
where said) against a small real workspace
of UTKFace-named images, found the way NN-GPT finds LEMUR's: from the environment ($LEMUR_ROOT,
$LEMUR_DATA), no keyword of this project's. Trainings are one epoch of 60 tiny images."""
import json
import subprocess
import sys

import pytest

import ab.nn.api as api
import ab.nn.api as nn_dataset
from ab.nn import check_nn as check_nn_module, registry
from ab.nn.check_nn import model_name
from ab.nn.config import Config
from ab.nn.workspace import Workspace, active
from tests import helpers

TASK, DATASET, METRIC = "age-regression", "utkface", "mae"

# the idiom of NN-GPT's generated captioning models: LEMUR's epoch time limit caught inside learn()
LEARN_CATCHES_LEMURS_TIME_LIMIT = helpers.TINY_MODEL.replace('''    def learn(self, train_data):
        for x, y in train_data:
            self.optimizer.zero_grad()
            loss = self.criteria[0](self(x.to(self.device)), y.to(self.device))
            loss.backward()
            self.optimizer.step()
''', '''    def learn(self, train_data):
        try:
            for x, y in train_data:
                self.optimizer.zero_grad()
                loss = self.criteria[0](self(x.to(self.device)), y.to(self.device))
                loss.backward()
                self.optimizer.step()
        except Exception as error:
            from ab.nn.util.Exception import LearnTimeException
            if not isinstance(error, LearnTimeException):
                raise
''')


@pytest.fixture
def lemur_env(root, utk_dir, monkeypatch):
    """A workspace as NN-GPT meets LEMUR: chosen by the environment alone."""
    monkeypatch.setenv("LEMUR_ROOT", str(root))
    monkeypatch.setenv("LEMUR_DATA", str(utk_dir))
    return root


def eval_prm():
    """NN-GPT's ab/gpt/util/Eval.py default prm, with a transform of this zoo."""
    return {'lr': 0.01, 'batch': 10, 'dropout': 0.2, 'momentum': 0.9, 'transform': 'norm_64', 'epoch': 1}


def test_lemurs_util_modules_exist_as_nngpt_imports_them(lemur_env, tmp_path):
    from ab.nn.util.Util import release_memory, uuid4  # ab/gpt/NNEval.py
    from ab.nn.util.Util import release_memory, create_file  # noqa: F811  ab/gpt/util/Tune.py
    from ab.nn.util.Util import release_memory, uuid4, read_py_file_as_string  # noqa: F811  an NN-GPT eval script
    from ab.nn.util.Const import ab_root_path  # ab/gpt/util/Eval.py (_isolated_eval_tmp_modules)
    from ab.nn.util.Const import out_dir  # ab/gpt/iterative_pipeline (mobile deployment finetuner)
    from ab.nn.util.Exception import AccuracyException  # an NN-GPT GRPO reward script

    assert uuid4("import torch\nclass Net: pass\n") == "f052fa11ad960742c592faf66c76d3d2"  # LEMUR's own vector
    assert uuid4(helpers.TINY_MODEL) == model_name(helpers.TINY_MODEL)
    assert ab_root_path == lemur_env and out_dir == lemur_env / "out"
    star = {}
    exec("from ab.nn.util.Const import *\nfrom ab.nn.util.Exception import *", star)  # LEMUR's own Train.py
    assert star["db_file"] == lemur_env / "db" / "ab.nn.db" and star["AccuracyException"] is AccuracyException
    other = Workspace.resolve(tmp_path / "other")
    with active.use(other):  # inside a sweep: the sweep's workspace
        from ab.nn.util import Const
        assert Const.ab_root_path == other.root and Const.db_file == other.db_path
        assert Const.stat_train_dir == other.stat_train_dir and Const.data_dir == other.root / "data"
    with pytest.raises(AttributeError, match="no attribute 'nn_dir'"):
        Const.nn_dir
    assert release_memory() is None
    assert AccuracyException is check_nn_module.AccuracyException

    made = create_file(tmp_path / "gen" / "B0", "new_nn.py", "x = 1\n")
    assert made.read_text() == "x = 1\n" and create_file(made.parent, "new_nn.py").read_text() == ""
    marker = tmp_path / "executed"
    script = tmp_path / "model.py"
    script.write_text(f"open({str(marker)!r}, 'w').close()\n")
    assert read_py_file_as_string(script) == script.read_text() and not marker.exists()  # read, never run
    script.write_text("def broken(:\n")
    assert read_py_file_as_string(script) is None


def test_nnevals_evaluate_sequence(lemur_env):
    """ab/gpt/util/Eval.py, Eval.evaluate: clear LEMUR's cache, look the code up by its checksum, train
    it with the positional call when it is new, find it afterwards."""
    from ab.nn.util.Util import uuid4  # ab/gpt/util/Eval.py

    code, task, dataset, metric, prm = LEARN_CATCHES_LEMURS_TIME_LIMIT, TASK, DATASET, METRIC, eval_prm()
    assert "from ab.nn.util.Exception import LearnTimeException" in code  # imported in the trial child
    save_to_db, prefix, save_path = True, None, None
    kwargs = {'epoch_limit_minutes': 1}

    nn_dataset.data.cache_clear()
    new_checksum = uuid4(code)
    df = nn_dataset.data(nn=new_checksum)
    assert df.empty and "nn_code" in df.columns  # no database yet: nothing recorded, as in a fresh LEMUR
    eval_results = api.check_nn(code, task, dataset, metric, prm, save_to_db, prefix, save_path, **kwargs)

    assert isinstance(eval_results, tuple) and len(eval_results) == 4
    checksum, accuracy = eval_results[0], eval_results[1]  # ab/gpt/util/nneval_worker_pool.py, _extract_accuracy
    assert checksum == new_checksum and 0 <= accuracy <= 1
    df = nn_dataset.data(nn=new_checksum)  # no cache_clear(): nothing was cached, the new row is there
    assert len(df) == 1 and df["accuracy"].iloc[0] == accuracy
    nn_dataset.data.cache_clear()
    df = nn_dataset.data(nn=new_checksum)
    assert df["accuracy"].iloc[0] == accuracy and df["nn_code"].iloc[0] == code
    info = nn_dataset.data.cache_info()
    assert (info.maxsize, info.currsize, info.misses) == (0, 0, 1)  # one call since cache_clear(), none kept
    assert prm["uid"] == df["prm_id"].iloc[0] and prm["accuracy"] == accuracy and prm["duration"] > 0
    api.run_data.cache_clear(), api.nn_stat_data.cache_clear()  # LEMUR's other cached query functions


def test_best_model_then_a_transform_evaluated_under_a_prefixed_name(lemur_env, tmp_path):
    """ab/gpt/brute/trans/TransformEval.py (get_best_model_from_db, get_candidates, run_eval; in the
    u-shrestha/nn-gpt fork, whose run_eval ABrain-One/nn-gpt's ab/gpt/util/Tune.py imports): the best
    model's code from a keyword-only data() call, trained again with a candidate transform under
    prefix=f"{nn}_eval_{name}", then prm's uid, duration and accuracy written to a JSON."""
    trained, _, _, _ = api.check_nn(helpers.TINY_MODEL, TASK, DATASET, METRIC, eval_prm(), True, None, None)
    MODEL_FILTER = trained
    context_dir = tmp_path / "test"
    context_dir.mkdir()
    (context_dir / "tr9.py").write_text(registry.source(registry.TRANSFORM, "norm_64"))
    cand = {'name': 'tr9', 'transform_param': 'tr9', 'context_dir': context_dir, 'source_file': context_dir / "tr9.py"}
    DEFAULTS = {'lr': 0.01, 'batch': 64, 'dropout': 0.2, 'momentum': 0.9, 'epoch': 1}
    before = api.data()

    df = api.data(
        only_best_accuracy=True,
        task=TASK,
        dataset=DATASET,
        metric=METRIC,
        nn=MODEL_FILTER,
        max_rows=1
    )
    best_model = df.iloc[0].to_dict()
    assert best_model['nn_code'] == helpers.TINY_MODEL
    prm = DEFAULTS.copy()
    prm.update({
        'transform': cand['transform_param']
    })
    result = api.check_nn(
        nn_code=best_model['nn_code'],
        task=TASK,
        dataset=DATASET,
        metric=METRIC,
        prm=prm,
        save_to_db=False,
        prefix=f"{best_model['nn']}_eval_{cand['name']}",
        save_path=cand['context_dir'],
        transform_dir=cand['context_dir']
    )
    _, accuracy, time_metric, _ = result
    result_data = {
        "accuracy": float(accuracy),
        "batch": prm['batch'],
        "duration": prm['duration'],
        "lr": prm['lr'],
        "momentum": prm['momentum'],
        "transform": cand['name'],
        "uid": prm['uid']
    }
    json_path = cand['context_dir'] / f"{cand['name']}.json"
    with open(json_path, 'w') as f:
        json.dump(result_data, f, indent=2)

    lemur_name = f"{trained}_eval_tr9-{model_name(helpers.TINY_MODEL)}"
    assert result[0] == lemur_name  # the name LEMUR returns, its '_' kept
    assert json.loads(json_path.read_text())["uid"] == prm["uid"] and len(prm["uid"]) == 32
    assert isinstance(prm["duration"], int) and prm["duration"] > 0 and prm["accuracy"] == accuracy
    record = json.loads((context_dir / "1.json").read_text())[0]  # save_path: LEMUR's per-epoch file
    assert record["model"] == lemur_name.replace("_", "-") and record["transform"] == "tr9"
    assert len(api.data()) == len(before)  # save_to_db=False keeps nothing


def test_a_prefix_with_underscores_is_filed_under_a_config_safe_name(lemur_env):
    """The call shape of ab/gpt/util/Eval.py, check_nn(code, task, dataset, metric, prm, save_to_db,
    prefix, save_path, epoch_limit_minutes=...), with the prefix of ab/gpt/brute/trans/augment/AugEval.py
    (prefix="augment_data_collect")."""
    prm = eval_prm()
    name, accuracy, accuracy_to_time, quality = api.check_nn(helpers.TINY_MODEL, TASK, DATASET, METRIC, prm, True,
                                                             "augment_data_collect", None, epoch_limit_minutes=1)
    filed = f"augment-data-collect-{model_name(helpers.TINY_MODEL)}"
    assert name == f"augment_data_collect-{model_name(helpers.TINY_MODEL)}"
    assert api.trials().config.tolist() == [f"{TASK}_{DATASET}_{METRIC}_{filed}"]  # config strings still split
    row = api.data(nn=filed).iloc[0]
    assert row.accuracy == accuracy and row.prm_id == prm["uid"] and accuracy_to_time >= 0 and 0 <= quality <= 1
    assert (lemur_env / "nn" / f"{filed}.py").is_file()
    with pytest.raises(ValueError, match="unusable here"):
        api.check_nn(helpers.TINY_MODEL, TASK, DATASET, METRIC, eval_prm(), True, "../x", None)


def test_lemurs_exceptions_with_their_attributes(lemur_env):
    from ab.nn.util.Exception import AccuracyException, LearnTimeException  # NN-GPT's reward and model files

    with pytest.raises(SyntaxError) as raised:  # LEMUR: the import of code that does not parse
        api.check_nn("import torch\ndef supported_hyperparameters(:\n", TASK, DATASET, METRIC, eval_prm(), False)
    assert raised.value.lineno == 2 and raised.value.msg and "recorded as failed trial" in str(raised.value)
    assert isinstance(raised.value, check_nn_module.CheckNNError) and isinstance(raised.value.trial_id, int)

    hopeless = helpers.TINY_MODEL.replace("return self.linear(x.mean(dim=(2, 3)))",
                                          "return 500 + 0 * self.linear(x.mean(dim=(2, 3)))")
    prm = eval_prm()
    try:
        api.check_nn(hopeless, TASK, DATASET, METRIC, prm, True)
        pytest.fail("LEMUR's accuracy gate did not stop a model that answers 500 years")
    except AccuracyException as e:
        assert e.accuracy == 0.0 and e.duration > 0 and "Accuracy is too low" in e.message
        assert api.trial(e.trial_id)["status"] == "stopped"
    assert "uid" not in prm  # LEMUR fills prm only for a trained model

    # a trial a time limit stopped (the whole-trial limit's wording, ab.nn.sweep.isolation)
    trial = {"id": 7, "status": "failed", "error": "TrialCrashed: wall-clock limit of 1 minutes hit",
             "eval_accuracy": None, "duration": 61 * 10 ** 9}
    with pytest.raises(LearnTimeException) as stopped:
        check_nn_module._result(Config.parse(f"{TASK}_{DATASET}_{METRIC}_x"), trial, "x", 1.0, 1)
    assert (stopped.value.epoch_limit_minutes, stopped.value.duration, stopped.value.trial_id) == (1, 61 * 10 ** 9, 7)
    assert stopped.value.estimated_training_time is None


def test_lemurs_exceptions_cross_a_process_boundary_whole():
    """NN-GPT's worker pool (ab/gpt/util/nneval_worker_pool.py) runs check_nn in worker processes:
    what it raises is pickled back with every attribute."""
    import pickle

    from ab.nn.util.Exception import (AccuracyException, CheckNNError, CodeSyntaxError, CudaOutOfMemory,
                                      LearnTimeException)

    try:
        compile("x = (\n", "<nn_code>", "exec")
    except SyntaxError as error:
        parsed = error
    raised = [CheckNNError("m", 3), AccuracyException(0.1, 5, "low", 4), LearnTimeException(None, 1, 7, None, 5),
              CodeSyntaxError("bad", 6, parsed), CudaOutOfMemory(64)]
    for exception in raised:
        back = pickle.loads(pickle.dumps(exception))
        assert type(back) is type(exception) and str(back) == str(exception) and vars(back) == vars(exception)
    back = pickle.loads(pickle.dumps(raised[3]))
    assert (back.msg, back.lineno, back.offset, back.text) == (parsed.msg, 1, parsed.offset, parsed.text)
    assert raised[4].batch_size_power() == 6 and not isinstance(raised[4], CheckNNError)  # LEMUR's, as it is


SCRIPT = '''\
import json
import ab.nn.api as api

prm = {{'lr': 0.01, 'batch': 10, 'dropout': 0.2, 'momentum': 0.9, 'transform': 'norm_64', 'epoch': 1}}
result = api.check_nn(open({code!r}).read(), "age-regression", "utkface", "mae", prm, False, None, None,
                      epoch_limit_minutes=1)
print(json.dumps({{"name": result[0], "accuracy": result[1], "uid": prm["uid"]}}))
'''


def test_a_plain_script_calling_check_nn_at_top_level(lemur_env, tmp_path):
    """A script with no ``if __name__ == "__main__"`` guard, as NN-GPT's one-off scripts are written:
    check_nn's children are started as ``python -m`` modules by the sandbox launcher, never by
    multiprocessing's spawn, which would run the caller's __main__ again in each of them."""
    code = tmp_path / "generated.py"
    code.write_text(helpers.TINY_MODEL)
    script = tmp_path / "evaluate_one.py"
    script.write_text(SCRIPT.format(code=str(code)))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["name"] == model_name(helpers.TINY_MODEL) and 0 <= answer["accuracy"] <= 1
