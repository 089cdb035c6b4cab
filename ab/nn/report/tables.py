"""The comparison table: one row per config, numbers of its best trial (selected on validation)."""
from __future__ import annotations

import ast

import pandas as pd

from ab.nn import api, registry
from ab.nn.config import Config
from ab.nn.util.macs import count_macs


def best_trials(db, configs=None) -> pd.DataFrame:
    """The best trained trial of every config, chosen by validation accuracy (never by test)."""
    trials = api.ranked_trials(config=configs, db=db)
    if trials.empty:
        return trials
    return trials.drop_duplicates("config").sort_values("config").reset_index(drop=True)


def model_size(config: str, prm: dict, in_shape: str | None) -> tuple[int | None, int | None]:
    """(parameters, multiply-adds) of a trial's model, built without pretrained weights."""
    nn = Config.parse(config).nn
    try:
        module = registry.load(registry.MODEL, nn)
    except registry.RegistryError:
        return None, None
    shape = tuple(ast.literal_eval(in_shape)) if in_shape else (1, 3, 224, 224)
    model = module.Net(shape, (1,), {**prm, "pretrained": 0}, "cpu")
    return sum(p.numel() for p in model.parameters()), count_macs(model, shape)


def _latency_of(latency: pd.DataFrame, trial_id: int) -> tuple[str | None, float | None]:
    """Batch-1 latency at 1 thread: TFLite fp32 if measured, else onnxruntime, else PyTorch; the
    latest measurement when a trial was deployed again."""
    rows = latency[(latency.trial_id == trial_id) & (latency.threads == 1) & (latency.status == "ok")]
    rows = rows.sort_values("id", ascending=False)
    for fmt, precision in (("tflite", "fp32"), ("onnx", "fp32"), ("pytorch", "fp32")):
        match = rows[(rows.format == fmt) & (rows.precision == precision)]
        if not match.empty:
            return f"{match.runtime.iloc[0]} {precision}", float(match.median_ms.iloc[0])
    return None, None


def comparison(db, configs=None) -> pd.DataFrame:
    best = best_trials(db, configs)
    if best.empty:
        return pd.DataFrame()
    all_trials = api.trials(config=configs, db=db)
    exports = api.exports(db=db, status="ok")
    latency = api.latency(db=db)
    rows = []
    for trial in best.itertuples():
        params, macs = model_size(trial.config, trial.prm, trial.in_shape)
        runtime, ms = _latency_of(latency, trial.id) if not latency.empty else (None, None)
        mine = exports[exports.trial_id == trial.id] if not exports.empty else exports
        size = lambda fmt, precision: (mine[(mine.format == fmt) & (mine.precision == precision)].size_bytes.max() / 1e6
                                       if not mine.empty else None)
        of_config = all_trials[all_trials.config == trial.config]
        rows.append({
            "model": Config.parse(trial.config).nn, "trials": len(of_config),
            "failed": int((of_config.status == "failed").sum()),
            "best val MAE": trial.eval_mae, "its test MAE": trial.test_mae,
            "input": (trial.in_shape or "").replace("[1, ", "").replace("]", "").replace(", ", "x"),
            "epochs": trial.epochs_done, "params (M)": params / 1e6 if params else None,
            "MACs (M)": macs / 1e6 if macs else None, "ONNX MB": size("onnx", "fp32"),
            "TFLite fp32 MB": size("tflite", "fp32"), "TFLite fp16 MB": size("tflite", "fp16"),
            "latency ms (1 thread)": ms, "runtime": runtime, "trial": trial.id,
        })
    return pd.DataFrame(rows).sort_values("best val MAE").reset_index(drop=True)
