"""LEMUR 2.2.11's API, called with LEMUR's own argument lists: data (positional order, sql=JoinConf,
include_nn_stats), data_withnonnullvalue, run_data, nn_stat_data, ab.nn.train.main with 22 positional
arguments; and the query API's checks (issue 19, item 7): filter values, columns of empty results, code
columns however data() is called, one name for MAE, seconds beside nanoseconds."""

import pandas as pd
import pytest
import torch

from ab.nn import api, registry, train
from ab.nn.api import JoinConf
from ab.nn.stat import versions
from ab.nn.stat.store import StatStore
from ab.nn.workspace import Workspace, active
from tests.test_statistics import swept  # noqa: F401  (fixture: 2 models x 2 trials x 2 epochs)
from tests.test_sweep_cli import CONFIG

LEMUR_COLUMNS = ["id", "task", "dataset", "metric", "metric_code", "metric_id", "nn", "nn_code", "nn_id", "epoch",
                 "accuracy", "duration", "prm_id", "transform_code", "transform_id"]
LEMUR_NN_STATS = ["nn_total_params", "nn_trainable_params", "nn_frozen_params", "nn_total_layers", "nn_leaf_layers",
                  "nn_max_depth", "nn_flops", "nn_model_size_mb", "nn_buffer_size_mb", "nn_total_memory_mb",
                  "nn_dropout_count", "nn_has_attention", "nn_has_residual", "nn_is_resnet_like", "nn_is_vgg_like",
                  "nn_is_inception_like", "nn_is_densenet_like", "nn_is_unet_like", "nn_is_transformer_like",
                  "nn_is_mobilenet_like", "nn_is_efficientnet_like", "nn_code_length", "nn_num_classes",
                  "nn_num_functions", "nn_uses_sequential", "nn_uses_modulelist", "nn_uses_moduledict",
                  "nn_stats_meta", "nn_stats_error"]


@pytest.fixture
def db(swept):  # noqa: F811
    """The swept workspace's database, with that workspace active: its nn/ folder holds TinyAge."""
    with active.use(Workspace.resolve(swept)):
        yield swept / "db" / "ab.nn.db"


def test_data_takes_lemurs_positional_order_and_keeps_its_columns(db):
    #              only_best, task, dataset, metric, nn, epoch, max_rows, sql, nn_prefixes, unique_nn, include_nn_stats
    frame = api.data(False, "age-regression", "utkface", "mae", None, None, None, None, ("Tiny",), False, False, db=db)
    assert list(frame.columns[:16]) == LEMUR_COLUMNS + ["prm"]
    assert set(frame.nn) == {"TinyAge"} and len(frame) == 4
    assert frame.nn_code.eq(registry.source(registry.MODEL, "TinyAge")).all()  # positional: LEMUR-style, with code
    keywords = api.data(task="age-regression", db=db)  # LEMUR's data() has the code however it is called
    assert list(keywords.columns[:16]) == LEMUR_COLUMNS + ["prm"] and keywords.nn_code.notna().all()
    plain = api.data(task="age-regression", with_code=False, db=db)
    assert not {"nn_code", "metric_code", "transform_code"} & set(plain.columns)
    assert len(api.data(True, db=db)) == 4 and len(api.data(max_rows=0, db=db)) == 8  # LEMUR: max_rows 0 = no limit
    with pytest.raises(TypeError):
        api.data(nn_prefix=("Tiny",), db=db)


def test_mae_has_one_name_and_durations_have_seconds(db):
    frame = api.data(db=db)
    assert frame.eval_mae.equals(frame.mae) and frame.mae.notna().all()
    assert (frame.duration_s - frame.duration / 1e9).abs().max() < 1e-9
    trials = api.trials(db=db)
    assert trials.mae.equals(trials.eval_mae) and (trials.duration_s - trials.duration / 1e9).abs().max() < 1e-9
    assert frame.accuracy_scale.eq(20.0).all()


def test_join_conf_variable_number_of_models(db):
    frame = api.data(sql=JoinConf(num_joint_nns=2), db=db)
    assert len(frame) == 2 and set(frame.nn) == {"MobileAgeNet", "TinyAge"} and frame.rn.eq(1).all()
    assert frame.accuracy.is_monotonic_decreasing
    every = api.data(db=db)
    for _, row in frame.iterrows():
        assert row.accuracy == every[every.nn == row.nn].accuracy.max()
    assert "nn_code" in frame.columns  # sql=: a LEMUR-style call
    assert len(api.data(sql=JoinConf(num_joint_nns=5), db=db)) == 2


def test_join_conf_pairwise(db):
    frame = api.data(sql=JoinConf(num_joint_nns=2, same_columns=("nn",), diff_columns=("epoch",), seed=3), db=db)
    assert len(frame) == 8
    assert list(frame.columns[frame.columns.get_loc("matched_id"):][:10]) == [
        "matched_id", "nn_2", "nn_code_2", "metric_2", "metric_code_2", "transform_code_2", "prm_id_2", "accuracy_2",
        "duration_2", "epoch_2"]
    assert (frame.nn_2 == frame.nn).all() and (frame.epoch_2 != frame.epoch).all()
    assert (frame.matched_id != frame.id).all()
    assert frame.prm_2.map(bool).all()
    better = api.data(sql=JoinConf(num_joint_nns=2, same_columns=("task",), enhance_nn=True, seed=1), db=db)
    matched = better[better.matched_id.notna()]
    assert (matched.accuracy_2 > matched.accuracy).all() and better.matched_id.isna().sum() == 1  # the best has none
    three = api.data(sql=JoinConf(num_joint_nns=3, same_columns=("task",), seed=2), db=db)  # LEMUR: KeyError
    assert three[["matched_id", "matched_id_3"]].notna().all().all() and (three.matched_id != three.matched_id_3).all()
    assert {"nn_3", "prm_3"} <= set(three.columns)
    one = api.data(sql=JoinConf(num_joint_nns=1, same_columns=("nn",)), db=db)
    assert one.matched_id.isna().all() and "prm_2" not in one.columns  # as LEMUR: empty _2 columns, no prm_2
    again = api.data(sql=JoinConf(num_joint_nns=2, same_columns=("nn",), diff_columns=("epoch",), seed=3), db=db)
    pd.testing.assert_frame_equal(frame, again)  # a seed makes LEMUR's random order repeatable
    with pytest.raises(ValueError, match="Unsupported column name in same_columns: lr"):
        api.data(sql=JoinConf(num_joint_nns=2, same_columns=("lr",)), db=db)
    with pytest.raises(ValueError, match="num_joint_nns"):
        api.data(sql=JoinConf(num_joint_nns=0), db=db)
    with pytest.raises(ValueError, match="similarity_mode must be"):
        api.data(sql=JoinConf(num_joint_nns=2, similarity_mode="minhash"), db=db)


def test_nn_stats_are_computed_and_joined(db):
    frame = api.data(include_nn_stats=True, db=db)
    columns = list(frame.columns)
    assert columns[:15] == LEMUR_COLUMNS and columns[15:15 + len(LEMUR_NN_STATS)] == LEMUR_NN_STATS
    assert columns[15 + len(LEMUR_NN_STATS):17 + len(LEMUR_NN_STATS)] == ["nn_macs", "prm"]
    tiny = frame[frame.nn == "TinyAge"]
    assert tiny.nn_total_params.eq(4).all() and tiny.nn_macs.eq(3).all() and tiny.nn_flops.eq(6).all()
    assert tiny.nn_stats_error.isna().all() and tiny.nn_stats_meta.map(lambda m: m["layer_types"]["Linear"]).eq(1).all()
    mobile = frame[frame.nn == "MobileAgeNet"].iloc[0]
    module = registry.load(registry.MODEL, "MobileAgeNet")
    model = module.Net((1, 3, 64, 64), (1,), dict(mobile.prm, pretrained=0), torch.device("cpu"))
    assert mobile.nn_total_params == sum(p.numel() for p in model.parameters())
    assert mobile.nn_is_mobilenet_like == 1 and mobile.nn_code_length == len(registry.source(registry.MODEL,
                                                                                               "MobileAgeNet"))
    stats = api.nn_stat_data("TinyAge", db=db)  # LEMUR's positional nn_name
    assert list(stats.columns[:31]) == ["id", "nn_name", "prm_id", "total_layers", "leaf_layers", "max_depth",
                                        "total_params", "trainable_params", "frozen_params", "flops", "model_size_mb",
                                        "buffer_size_mb", "total_memory_mb", "dropout_count", "has_attention",
                                        "has_residual_connections", "is_resnet_like", "is_vgg_like",
                                        "is_inception_like", "is_densenet_like", "is_unet_like",
                                        "is_transformer_like", "is_mobilenet_like", "is_efficientnet_like",
                                        "code_length", "num_classes_defined", "num_functions_defined",
                                        "uses_sequential", "uses_modulelist", "uses_moduledict", "error"]
    assert len(stats) == 2 and set(stats.nn_name) == {"TinyAge"} and stats.total_params.eq(4).all()
    assert len(api.nn_stat_data(db=db)) == 4 and len(api.nn_stat_data(None, None, 1, db=db)) == 1


def test_nn_stats_only_from_the_code_the_rows_were_trained_with(db):
    path = registry.path(registry.MODEL, "TinyAge")
    path.write_text(path.read_text() + "\n# another version\n")
    stats = api.nn_stat_data(nn_name="TinyAge", db=db)  # computed now, from a file that is no longer that code
    assert stats.total_params.isna().all() and stats.error.str.contains("produced by code").all()


def test_data_withnonnullvalue_lemur_order_and_requirements(db):
    #                                   only_best, task, dataset, metric, nn, epoch, max_rows, nn_prefixes, sql
    frame = api.data_withnonnullvalue(False, None, None, None, None, None, None, ("Tiny",), None, False, True, True,
                                      ("accuracy", "prm"), ("nn_total_params",), ("lr",), True, db=db)
    assert len(frame) == 4 and {"lr", "momentum", "batch", "transform"} <= set(frame.columns) and "prm" not in frame
    assert "nn_total_params" in frame.columns and "nn_code" in frame.columns
    assert api.data_withnonnullvalue(require_prm_nonnull=("no_such",), db=db).empty
    assert api.data_withnonnullvalue(include_prm=False, db=db).prm.map(len).eq(0).all()
    with pytest.raises(ValueError, match="require_stat_nonnull: 'lr' is not one of"):
        api.data_withnonnullvalue(require_stat_nonnull=("lr",), db=db)
    with pytest.raises(ValueError, match="require_nn_stat_nonnull"):
        api.data_withnonnullvalue(require_nn_stat_nonnull=("speed",), db=db)
    with pytest.raises(ValueError, match="sql"):
        api.data_withnonnullvalue(sql=JoinConf(2), db=db)


def test_run_data_maps_latency_rows_to_lemurs_columns(db):
    """Rows written through the store's own API as the deployment writes them; run_data reads them back."""
    store = StatStore(f"sqlite:///{db}")
    trial = api.ranked_trials(config=CONFIG, db=db).iloc[0]
    export = store.add_export(int(trial.id), format="tflite", precision="fp16", status="ok", eval_mae=6.0,
                              test_mae=6.5, input_shape="[1, 64, 64, 3]")
    store.add_latency(export, int(trial.id), runtime="litert", threads=1, batch=1, input_shape="[1, 64, 64, 3]",
                      warmup=20, runs=100, median_ms=1.25, p90_ms=1.5, min_ms=1.1, mean_ms=1.3, cpu="AMD EPYC",
                      cpu_count=2, status="ok")
    frame = api.run_data("MobileAgeNet", "AMD EPYC", None, db=db)  # LEMUR's model_name, device_type, max_rows
    assert list(frame.columns[:39]) == list(api.RUN_COLUMNS)
    row = frame.iloc[0]
    assert (row.model_name, row.device_type, row.duration, row.cpu_min_duration, row.unit, row.iterations) == \
        ("MobileAgeNet", "AMD EPYC", 1_250_000, 1_100_000, "ns", 100)
    assert (row.in_dim_0, row.in_dim_3, row.precision_type, row.tflite_id, row.valid) == (1, 3, "fp16", export, True)
    assert row.tflite_accuracy == pytest.approx(1 - 6.0 / 20) and row.tflite_transform == "norm_64"
    assert pd.isna(row.gpu_duration) and pd.isna(row.os_version)
    assert api.run_data(device_type="Snapdragon", db=db).empty and len(api.run_data(db=db).columns) > 39


def test_query_filters_are_checked_and_empty_results_keep_their_columns(tmp_path):
    path = tmp_path / "empty.db"
    versions.upgrade(f"sqlite:///{path}")
    with pytest.raises(ValueError, match="status='completed' is not one of: running, complete, stopped, diverged, "
                                         "failed, interrupted"):
        api.trials(status="completed", db=path)
    with pytest.raises(ValueError, match="runtime='tflite' is not one of: pytorch, onnxruntime, litert"):
        api.latency(runtime="tflite", db=path)
    with pytest.raises(ValueError, match="format='tflite-fp32' is not one of"):
        api.exports(format="tflite-fp32", db=path)
    with pytest.raises(ValueError, match="split='val' is not one of: eval, test"):
        api.metrics(split="val", db=path)
    with pytest.raises(ValueError, match="status='done'"):
        api.data(status=["complete", "done"], db=path)
    for frame in (api.trials(db=path), api.exports(db=path), api.latency(db=path), api.data(db=path),
                  api.metrics(db=path), api.predictions(db=path), api.run_data(db=path), api.nn_stat_data(db=path),
                  api.data_withnonnullvalue(db=path), api.data(include_nn_stats=True, db=path)):
        assert frame.empty and len(frame.columns) > 5
    assert {"id", "status", "eval_mae", "mae", "duration_s"} <= set(api.trials(db=path).columns)


def test_train_main_takes_lemurs_22_positional_arguments(root, utk_dir, tiny_model):
    config = f"age-regression_utkface_mae_{tiny_model}"
    summary = train.main(config, {"lr": 0.001, "momentum": 0.9}, 1, 1, 4, 4, 1e-4, 1e-3, 0.0, 1.0, 0.0, 0.5,
                         "norm_64", 30, False, 0, None, 30, None, False, False, False,
                         root=root, data_dir=utk_dir, max_samples=16, progress=False)
    assert summary.ok and summary.results[0].trained == 1
    assert api.trials(db=root / "db" / "ab.nn.db").status.tolist() == ["complete"]
    with pytest.raises(TypeError):
        train.main(config, n_trials=1, root=root)
    with pytest.raises(TypeError):
        train.main(config, {}, 1, 1, 0, 12, 1e-5, 1.0, 0.0, 1.0, 0.0, 0.5, None, 30, False, 2, None, 30, None, False,
                   False, False, "23rd")
    with pytest.raises(ValueError, match="layer_analysis"):
        train.main(config, layer_analysis=True, root=root)


def test_the_allowed_filter_values_are_the_ones_the_code_writes():
    from ab.nn.deploy import options, runtimes, tflite_convert
    from ab.nn.stat import states, vocabulary

    assert set(tflite_convert.PRECISIONS) < set(vocabulary.PRECISIONS)
    names = {runtimes.TorchRuntime.name, runtimes.OnnxRuntime.name, runtimes.LiteRtRuntime.name}
    assert names == set(vocabulary.RUNTIMES)
    assert (options.OK, options.FAILED, options.DELETED, options.SKIPPED) == vocabulary.EXPORT_STATUS
    assert set(vocabulary.TRIAL_STATUS) == {states.RUNNING, *states.FINAL_STATES}
