"""The messages of a trial child (ab.nn.sweep.trial_protocol) and the TrialSpec it is told as JSON: what
the runner accepts from code it did not write, checked without starting a child."""
import json
import math

import pytest

from ab.nn.config import Config
from ab.nn.dataset.identity import DataIdentity
from ab.nn.dataset.settings import DataSettings
from ab.nn.deploy.options import ExportOptions
from ab.nn.sandbox import ProtocolError, protocol
from ab.nn.sandbox.protocol import validate
from ab.nn.sweep.search import Link, Search
from ab.nn.sweep.trial_spec import PARENT, TrialSpec
from ab.nn.sweep.trial_child import plain
from ab.nn.sweep.trial_protocol import FROM_CHILD, MAX_IMAGES, METHODS
from ab.nn.workspace import Workspace

EPOCH = {"epoch": 1, "accuracy": 0.5, "duration": 10 ** 9, "metrics": {"metric_mae": 0.5, "mae@13-19": 4.2},
         "train_stat": {"train_loss": 3.0, "truncated": False, "cpu_type": "EPYC", "total_ram_kb": 24 * 2 ** 20}}


def test_a_trial_spec_crosses_as_json_without_the_database_or_the_lease(tmp_path):
    settings = DataSettings(split="kfold", fold=2, max_samples=8)
    spec = TrialSpec(config=Config.parse("age-regression_utkface_mae_TinyAge"), prm={"lr": 0.01, "batch": 8,
                     "transform": "norm_64", "epoch_max": 2}, trial_id=7, db_url="postgresql://secret@db/x",
                     workspace=Workspace.resolve(tmp_path / "ws", "postgresql://secret@db/x", tmp_path / "utk"),
                     data=settings, seed=3, device="cpu", workers=1, epoch_limit_minutes=0.5, save_pth=True,
                     export=ExportOptions(formats=("onnx",), threads=(1, 2), keep_best_only=True),
                     identity=DataIdentity("utkface", settings, {"train": "a", "eval": "b", "test": None},
                                           {"train": 8, "eval": 8, "test": 8}),
                     link=Link("sqlite:///x", "study", 4, Search(), 2), lease_id=11,
                     model_file=tmp_path / "staged" / "TinyAge.py")
    text = json.dumps(spec.to_json())
    assert "secret" not in text and "study" not in text  # no database, no Optuna link
    back = TrialSpec.from_json(json.loads(text))
    assert back.db_url == PARENT and back.link is None and back.lease_id is None
    assert back.workspace == Workspace(spec.workspace.root, None, spec.workspace.data_dir)
    assert back.data == DataSettings(split="kfold", fold=2, max_samples=8, download=False)  # the child downloads nothing
    assert back.identity.key == spec.identity.key and back.export == spec.export
    same = ("config", "prm", "trial_id", "seed", "device", "workers", "epoch_limit_minutes", "save_pth", "model_file")
    assert all(getattr(back, name) == getattr(spec, name) for name in same)


def test_what_a_child_computes_becomes_plain_json():
    np = pytest.importorskip("numpy")
    value = plain({"ages": np.array([1.5, np.nan]), "n": np.int64(3), "pair": (np.float32(0.5), math.inf)})
    assert value == {"ages": [1.5, None], "n": 3, "pair": [0.5, None]}
    protocol.encode(value)


def test_every_method_takes_what_the_trial_sends():
    validate(EPOCH, METHODS["record_epoch"])
    validate({"split": "test", "ages": [30.0, 41.0], "predicted": [29.5, None], "image_ids": ["a" * 32, None]},
             METHODS["record_predictions"])
    validate({"format": "onnx", "precision": "fp32", "status": "ok", "path": "/ws/out/c/1/model.onnx",
              "size_bytes": 5 * 2 ** 32, "eval_mae": 7.5}, METHODS["add_export"])
    validate({"export_id": 3, "runtime": "onnxruntime", "status": "ok", "threads": 1, "median_ms": 0.4},
             METHODS["add_latency"])
    validate({"type": "call", "id": "x", "method": "phase", "args": {"phase": "learn", "epoch": 1}}, FROM_CHILD)
    validate({"images": [LABELS]}, METHODS["record_attributes"])


LABELS = {"image_id": "ab" * 32, "age": 30.0, "gender": "female", "race": "unknown", "age_from": "file name",
          "gender_from": "file name", "race_from": "file name has no race"}


@pytest.mark.parametrize("method, args, why", [
    ("record_epoch", {**EPOCH, "trial_id": 3}, "unexpected key 'trial_id'"),
    ("record_epoch", {**EPOCH, "epoch": -1}, "outside"),
    ("record_epoch", {**EPOCH, "train_stat": {"stat_id": "x"}}, "unexpected key 'stat_id'"),
    ("record_epoch", {**EPOCH, "metrics": {"mae": "0.5"}}, "expected number or null"),
    ("update_trial", {"n_train": 2 ** 31}, "outside"),  # an INTEGER column of PostgreSQL
    ("update_trial", {"status": "complete"}, "unexpected key 'status'"),
    ("finish_trial", {"status": "interrupted", "error": None}, "is not one of"),
    ("finish_trial", {"status": "complete", "error": "x" * 20_001}, "at most 20000 allowed"),
    ("add_export", {"format": "x" * 17, "precision": "fp32", "status": "ok"}, "at most 16 allowed"),
    ("add_export", {"format": "onnx", "precision": "fp32", "status": "deleted"}, "is not one of"),
    ("add_latency", {"export_id": 1, "runtime": "onnxruntime", "status": "ok", "host": "h" * 301},
     "at most 300 allowed"),
    ("record_predictions", {"split": "test", "ages": [1.0] * (MAX_IMAGES + 1), "predicted": [], "image_ids": None},
     "items, allowed 0 to"),
    ("prepare_images", {"size": 4096}, "outside"),
    ("record_attributes", {"images": [{**LABELS, "gender": "robot"}]}, "is not one of"),
    ("record_attributes", {"images": [{**LABELS, "image_id": None}]}, "expected string"),
    ("phase", {"phase": "anything", "epoch": 1}, "is not one of"),
])
def test_what_the_runner_refuses(method, args, why):
    with pytest.raises(ProtocolError, match=why):
        validate(args, METHODS[method], method)


def test_a_call_names_a_known_method_and_nothing_else():
    with pytest.raises(ProtocolError, match="is not one of"):
        validate({"type": "call", "id": "x", "method": "transaction", "args": {}}, FROM_CHILD)
    with pytest.raises(ProtocolError, match="unexpected key 'db_url'"):
        validate({"type": "call", "id": "x", "method": "trial_status", "args": {}, "db_url": "sqlite://"}, FROM_CHILD)
    with pytest.raises(ProtocolError, match="not plain JSON"):
        protocol.encode({"type": "call", "args": {"accuracy": math.nan}})
