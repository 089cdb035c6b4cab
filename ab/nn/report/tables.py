"""The comparison table of one data key: one row per config, numbers of its best trial (selected on
validation), its test MAE with the 95 % bootstrap interval, mean +- std over training-seed
replicas, and paired comparisons on the same test images with the best config and with the constant
predictor (the training mean age for every image; ``ab.nn.stat.constant_predictor``)."""
from __future__ import annotations

import ast

import pandas as pd

from ab.nn import registry
from ab.nn.config import Config
from ab.nn.stat import frames, ranking
from ab.nn.stat.comparison import compare, versus_constant
from ab.nn.util.macs import count_macs


def best_trials(db, configs=None, data_key=None) -> pd.DataFrame:
    """The best trained trial of every config on its data key (default keys unless ``data_key``),
    chosen by validation accuracy (never by test)."""
    trials = ranking.ranked_trials(config=configs, data_key=data_key, db=db)
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


def replicas_of(trial, trials: pd.DataFrame) -> list[int]:
    """The trials that repeat ``trial``'s hyperparameters on its data and budget and trained every epoch
    (itself included; a replica stopped early is another budget)."""
    same = trials[(trials.config == trial.config) & (trials.data_key == trial.data_key)
                  & (trials.epoch_max == trial.epoch_max) & (trials.prm_id == trial.prm_id)
                  & ((trials.status == "complete") | (trials.id == trial.id))]
    return sorted(int(i) for i in same.id)


def _interval(low, high) -> str:
    return "" if pd.isna(low) else f"[{low:.2f}, {high:.2f}]"


def comparison(db, data_key: str, configs=None) -> pd.DataFrame:
    best = best_trials(db, configs, data_key)
    best = best[~best.config.str.endswith("_AgeMoE")] if not best.empty else best
    if best.empty:
        return pd.DataFrame()
    all_trials = frames.trials(config=list(best.config), data_key=data_key, db=db)
    exports = frames.exports(db=db, status="ok")
    latency = frames.latency(db=db)
    best = best.sort_values(["eval_mae", "id"]).reset_index(drop=True)
    reference = best.iloc[0]
    reference_ids = replicas_of(reference, all_trials)
    baseline = constant_baseline(db, data_key)
    rows = []
    for trial in best.itertuples():
        params, macs = model_size(trial.config, trial.prm, trial.in_shape)
        runtime, ms = _latency_of(latency, trial.id) if not latency.empty else (None, None)
        mine = exports[exports.trial_id == trial.id] if not exports.empty else exports
        size = lambda fmt, precision: (mine[(mine.format == fmt) & (mine.precision == precision)].size_bytes.max() / 1e6
                                       if not mine.empty else None)
        of_config = all_trials[all_trials.config == trial.config]
        ids = replicas_of(trial, all_trials)
        repeated = of_config[of_config.id.isin(ids)].test_mae.dropna()
        row = {
            "model": Config.parse(trial.config).nn, "trials": len(of_config),
            "failed": int((of_config.status == "failed").sum()),
            "best val MAE": trial.eval_mae, "its test MAE": trial.test_mae,
            "95% CI": _interval(trial.test_mae_low, trial.test_mae_high),
            "test MAE over seeds": (f"{repeated.mean():.2f} ± {repeated.std(ddof=1):.2f} (n={len(repeated)})"
                                    if len(repeated) > 1 else ""),
            "vs best": "", "verdict": "", "vs constant": "", "verdict vs constant": "",
            "input": (trial.in_shape or "").replace("[1, ", "").replace("]", "").replace(", ", "x"),
            "epochs": trial.epochs_done, "params (M)": params / 1e6 if params else None,
            "MACs (M)": macs / 1e6 if macs else None, "ONNX MB": size("onnx", "fp32"),
            "TFLite fp32 MB": size("tflite", "fp32"), "TFLite fp16 MB": size("tflite", "fp16"),
            "latency ms (1 thread)": ms, "runtime": runtime, "trial": trial.id,
        }
        if trial.id != reference.id:
            row["vs best"], row["verdict"] = _judged(lambda: compare(ids, reference_ids, split="test", db=db))
        if baseline is not None:
            row["vs constant"], verdict = _judged(lambda: versus_constant(ids, baseline["train_mean"], split="test",
                                                                          db=db))
            row["verdict vs constant"] = f"not better ({verdict})" if verdict in ("tie", "worse") else verdict
        rows.append(row)
    return pd.DataFrame(rows)


def _judged(comparison) -> tuple[str, str]:
    """A paired comparison as the table prints it: the difference with its interval and p, and the
    verdict (``tie`` when the interval holds 0 or is within ``uncertainty.RESOLUTION`` of it)."""
    try:
        c = comparison()
    except (LookupError, ValueError) as error:
        return "", f"not compared: {str(error).split(';')[0][:60]}"
    verdict = "tie" if c.verdict == "tie" else ("worse" if c.difference > 0 else "better")
    return f"{c.difference:+.2f} [{c.low:+.2f}, {c.high:+.2f}] p={c.p_value:.2g}", verdict


def constant_baseline(db, data_key: str) -> dict | None:
    """The constant-predictor baseline of a data key (``frames.baselines()``), or None."""
    found = frames.baselines(data_key=data_key, db=db)
    return None if found.empty else found.iloc[0].to_dict()
