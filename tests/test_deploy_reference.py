"""An export compares its artifacts with the trial's own recorded predictions only where they are what a
PyTorch pass over the same images on the CPU would give (``ab.nn.deploy.reference``); otherwise it runs
PyTorch again. The decision, on recorded rows as ``StatStore.recorded_predictions`` returns them."""
import numpy as np
import pytest

from ab.nn.deploy.inputs import sample
from ab.nn.deploy.reference import from_recorded


class Images:
    """A part as a loader gives it: its length and its images' content ids, where it states them."""

    def __init__(self, ids, count):
        self.image_ids, self.count = ids, count

    def __len__(self):
        return self.count


SPLITS = {"eval": Images(["a", "b", "c"], 3), "test": Images(["d", "e"], 2)}
LABELS = {"eval": np.array([21.0, 34.5, 60.0], np.float32), "test": np.array([5.0, 80.0], np.float32)}


def recorded(device="cpu", data_key="k1", **changes):
    splits = {"eval": {"ages": [21.0, 34.5, 60.0], "predicted": [25.25, 30.5, 41.125], "image_ids": ["a", "b", "c"]},
              "test": {"ages": [5.0, 80.0], "predicted": [10.0, 50.0], "image_ids": ["d", "e"]}}
    for split, fields in changes.items():
        splits[split] = None if fields is None else {**splits[split], **fields}
    return {"device": device, "data_key": data_key, "splits": {k: v for k, v in splits.items() if v is not None}}


def test_a_cpu_trial_s_predictions_of_the_same_images_are_the_reference():
    reference, _ = from_recorded(recorded(), SPLITS, LABELS, "k1")
    assert reference.ages["eval"].dtype == np.float32 and reference.labels["test"].dtype == np.float32
    assert reference.ages["eval"].tolist() == [25.25, 30.5, 41.125] and reference.labels["test"].tolist() == [5, 80]


def test_a_loader_without_image_ids_is_matched_by_count_and_labels():
    plain, labels = {"eval": Images(None, 3)}, {"eval": LABELS["eval"]}
    stored = recorded(test=None, eval={"image_ids": [None] * 3})
    assert from_recorded(stored, plain, labels, "k1")[0] is not None
    assert from_recorded(recorded(test=None), plain, labels, "k1")[0] is None  # ids recorded for other images


def test_a_fidelity_sample_is_compared_with_the_recorded_rows_at_its_positions():
    whole = {"eval": Images(["a", "b", "c"], 3)}
    part = sample(whole["eval"], 2, seed=3)
    positions = part.positions
    assert list(positions) == sorted(positions) and len(set(positions)) == 2 and part.image_ids == [
        ["a", "b", "c"][i] for i in positions]
    reference, why = from_recorded(recorded(test=None), {"eval": part}, {"eval": LABELS["eval"][positions]}, "k1")
    assert reference is not None, why
    assert reference.ages["eval"].tolist() == [[25.25, 30.5, 41.125][i] for i in positions]
    wrong = {"eval": LABELS["eval"][positions][::-1]}  # another sample's labels
    assert from_recorded(recorded(test=None), {"eval": part}, wrong, "k1")[0] is None


def test_the_fidelity_sample_is_seeded_and_whole_parts_stay_whole():
    images = Images([str(i) for i in range(50)], 50)
    first, again = sample(images, 10), sample(images, 10)
    assert list(first.positions) == list(again.positions) and first.image_ids == again.image_ids  # every trial
    assert len(first) == 10 and len(set(first.positions)) == 10
    assert sample(images, 50) is images and sample(images, None) is images and sample(images, 60) is images


@pytest.mark.parametrize("stored, why", [
    (recorded(eval=None, test=None), "no split"),                              # the trial recorded none
    (recorded(test=None), "the export measures ['eval', 'test']"),             # a split is missing
    (recorded(device="cuda:0"), "ran on cuda:0"),                              # another device's kernels
    (recorded(device=None), "an unrecorded device"),
    (recorded(data_key="k2"), "data key k2"),
    (recorded(eval={"image_ids": ["a", "c", "b"]}), "not the images measured"),  # another order
    (recorded(test={"image_ids": ["d", "x"]}), "not the images measured"),       # another image
    (recorded(eval={"ages": [21.0, 34.5, 61.0]}), "labels"),
    (recorded(test={"predicted": [10.0], "ages": [5.0], "image_ids": ["d"]}), "1 recorded predictions for 2"),
    (recorded(eval={"predicted": [25.25, None, 41.125]}), "not finite"),
])
def test_predictions_that_are_not_this_computation_are_not_the_reference(stored, why):
    reference, reason = from_recorded(stored, SPLITS, LABELS, "k1")
    assert reference is None and why in reason


CONFIG = "age-regression_utkface_mae_MobileAgeNet"


@pytest.mark.slow
def test_an_export_reuses_the_trial_s_predictions_only_where_valid_with_the_same_fidelity(root, utk_dir, tmp_path):
    """A CPU trial's export takes its recorded predictions as PyTorch's ages (they are the same numbers as
    a PyTorch pass now, to float rounding); a trial on another device, with other images or without
    predictions is run through PyTorch again; the ONNX artifact's fidelity is the same either way (the
    sandboxed sweep's export, which reused them, against a deployment here that computed them)."""
    import sqlite3

    from dataclasses import replace

    from ab.nn import api, checkpoint
    from ab.nn.config import Config
    from ab.nn.dataset import trial_data
    from ab.nn.deploy import inputs as model_inputs
    from ab.nn.deploy.options import ExportOptions
    from ab.nn.deploy.pipeline import Deployment
    from ab.nn.deploy.runtimes import TorchRuntime
    from ab.nn.stat.store import StatStore
    from ab.nn.workspace import Workspace
    from ab.nn import train
    from tests.test_isolation import ISOLATED

    # a sandboxed trial, as by default: its export asks the runner for the recorded predictions
    assert train.cli(["--root", str(root), "--data-dir", str(utk_dir), *ISOLATED, "-c", CONFIG, "-t", "1", "-e", "1",
                      "--export", "onnx", "--export-unlearned", "--latency-runs", "2", "--latency-warmup", "0"]) == 0
    ws, db = Workspace.resolve(root, None, utk_dir), root / "db" / "ab.nn.db"
    trial = api.trials(root=root).iloc[0].to_dict()
    folder = checkpoint.folder_of(ws, trial)
    model, meta = checkpoint.load(folder)
    data = trial_data.load_judged(trial, ws, meta["prm"]["transform"])
    options = ExportOptions(formats=("onnx",), runs=2, warmup=0)
    deployment = Deployment(StatStore(ws.db_url), int(trial["id"]), Config.parse(CONFIG), folder, options,
                            tuple(meta["in_shape"]))
    splits = deployment._splits(data)
    assert set(splits) == {"eval", "test"}
    inputs, labels = model_inputs.write(splits, tmp_path, options.batch)
    pytorch = {split: model_inputs.predict(TorchRuntime(model), inputs[split], options.batch) for split in splits}

    def reference_offset() -> dict[str, float]:
        """How far the export's reference lies from a PyTorch pass now, per split."""
        reference = deployment._reference(model, data, splits, inputs, labels)
        assert all(np.array_equal(reference.labels[s], labels[s]) for s in splits)
        return {split: float(np.mean(reference.ages[split] - pytorch[split])) for split in splits}

    assert all(abs(offset) < 1e-4 for offset in reference_offset().values())
    with sqlite3.connect(db) as con:  # recorded predictions one year off: a reused reference shows it
        con.execute("update prediction set predicted = predicted + 1")
    assert reference_offset() == pytest.approx({"eval": 1.0, "test": 1.0}, abs=1e-4)
    sampled = Deployment(StatStore(ws.db_url), int(trial["id"]), Config.parse(CONFIG), folder,
                         replace(options, fidelity_images=3), tuple(meta["in_shape"]))
    few = sampled._splits(data)  # a fidelity sample: the recorded rows at its positions are its reference
    assert {split: len(part) for split, part in few.items()} == {"eval": 3, "test": 3}
    (tmp_path / "few").mkdir()
    few_inputs, few_labels = model_inputs.write(few, tmp_path / "few", options.batch)
    reused = sampled._reference(model, data, few, few_inputs, few_labels)
    for split, part in few.items():
        now = model_inputs.predict(TorchRuntime(model), few_inputs[split], options.batch)
        assert np.allclose(reused.ages[split] - now, 1.0, atol=1e-4), split  # the recorded rows, one year off
        assert np.allclose(now, pytorch[split][part.positions], atol=1e-4)

    for spoil, undo in [("update trial set device = 'cuda:0'", "update trial set device = 'cpu'"),
                        ("update prediction set image_id = 'another' where position = 0 and split = 'test'",
                         f"update prediction set image_id = '{data.test.image_ids[0]}' where position = 0 "
                         f"and split = 'test'"),
                        ("delete from prediction where split = 'test'", None)]:
        with sqlite3.connect(db) as con:
            con.execute(spoil)
        assert all(abs(offset) < 1e-4 for offset in reference_offset().values()), spoil  # PyTorch ran again
        if undo:
            with sqlite3.connect(db) as con:
                con.execute(undo)
            assert reference_offset()["test"] == pytest.approx(1.0, abs=1e-4), undo

    with sqlite3.connect(db) as con:
        con.execute("delete from prediction")
    deployment.run(model, data, {}, progress=False)  # its reference computed by PyTorch
    rows = api.exports(format="onnx", root=root)
    assert len(rows) == 2 and (rows.status == "ok").all()
    reused, computed = rows.iloc[0], rows.iloc[1]
    for field in ("eval_mae", "test_mae", "n_eval", "n_test"):
        assert reused[field] == pytest.approx(computed[field], abs=1e-6), field
    for field in ("eval_max_diff", "test_max_diff"):
        assert reused[field] < 1e-3 and reused[field] == pytest.approx(computed[field], abs=1e-4), field
