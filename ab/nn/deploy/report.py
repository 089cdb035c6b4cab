"""``python -m ab.nn.deploy.report -c CONFIG``: the deployment table of a config's best trial.

One row per artifact: format, precision, size, MAE on eval and test, the largest difference from
PyTorch's ages, and median/p90 batch-1 latency for each thread count measured. A trial deployed
again (``python -m ab.nn.deploy``) keeps its earlier rows; the table shows the latest artifact of
each format, precision and converter unless ``--history`` asks for all of them.
"""
from __future__ import annotations

import argparse
import sys

import pandas as pd

from ab.nn.deploy.converters import CONVERTERS, family
from ab.nn.deploy.tflite_convert import PRECISIONS
from ab.nn.stat import frames, ranking
from ab.nn.util.markdown import table
from ab.nn import workspace
from ab.nn.util.arguments import Parser


def best_trial(config: str, db) -> pd.Series:
    trials = ranking.ranked_trials(config=config, db=db)
    if trials.empty:
        raise LookupError(f"no trained trial of {config} in {db} (ab.nn.api.trials(config=...) lists its trials)")
    return trials.iloc[0].to_dict()


_RANK = {name: rank for rank, name in enumerate(("pytorch", "onnx", "tflite", *CONVERTERS, *PRECISIONS))}


def deployment_table(trial_id: int, db, history: bool = False) -> pd.DataFrame:
    exports = frames.exports(trial_id=trial_id, db=db)
    if exports.empty:
        raise LookupError(f"trial {trial_id} has no exported artifacts (run with --export)")
    if not history:
        exports = exports.assign(_converter=exports.converter.map(family))
        exports = exports.sort_values("id").drop_duplicates(["format", "precision", "_converter"], keep="last")
        exports = exports.sort_values(["format", "_converter", "precision"], kind="stable",
                                      key=lambda column: column.map(lambda v: _RANK.get(v, len(_RANK))))
    timings = frames.latency(trial_id=trial_id, status="ok", db=db)
    rows = []
    for _, e in exports.iterrows():
        row = {"format": e.format, "precision": e.precision, "converter": family(e.converter), "status": e.status,
               "size MB": None if pd.isna(e.size_bytes) else e.size_bytes / 1e6,
               "eval MAE": e.eval_mae, "test MAE": e.test_mae,
               "max diff eval": e.eval_max_diff, "max diff test": e.test_max_diff,
               "images": _images(e.n_eval, e.n_test)}
        for _, t in timings[timings.export_id == e.id].iterrows():  # one runtime per artifact
            row["runtime"] = t.runtime
            row[f"{t.threads}T median ms"] = t.median_ms
            row[f"{t.threads}T p90 ms"] = t.p90_ms
        if e.status != "ok" and isinstance(e.error, str):
            row["error"] = e.error.splitlines()[0][:80]
        rows.append(row)
    return pd.DataFrame(rows)


def _images(n_eval, n_test) -> str:
    """How many eval + test images an artifact was measured on (a fidelity sample: ``--fidelity-images``)."""
    counts = [f"{int(n)}" for n in (n_eval, n_test) if not pd.isna(n)]
    return " + ".join(counts)


def cli(argv=None) -> int:
    p = Parser(prog="python -m ab.nn.deploy.report", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", default=None, help="config string task_dataset_metric_nn: its best trial")
    p.add_argument("--trial", type=int, default=None, help="a trial id instead of the best trial")
    p.add_argument("--history", action="store_true",
                   help="every artifact ever made for the trial, not only the latest per format, precision and converter")
    workspace.add_arguments(p, data=False)
    args = p.parse_args(argv)
    db = workspace.from_arguments(args).db_url
    if (args.config is None) == (args.trial is None):
        p.error("give -c CONFIG (its best trial) or --trial ID")
    try:
        trial = best_trial(args.config, db) if args.trial is None else frames.trial(args.trial, db=db)
        trial_id = int(trial["id"])
        frame = deployment_table(trial_id, db, args.history)
    except (LookupError, FileNotFoundError) as error:
        p.exit(1, f"{p.prog}: error: {error}\n")
    latency = frames.latency(trial_id=trial_id, status="ok", db=db)
    machine = f"{latency.cpu.iloc[0]}, {latency.cpu_count.iloc[0]} cores" if not latency.empty else "-"
    print(f"{trial['config']}, trial {trial_id}, eval MAE {trial['eval_mae']:.3f} ({trial['split']}, data key "
          f"{trial['data_key']}), "
          f"input {latency.input_shape.iloc[0] if not latency.empty else '-'}, batch 1, "
          f"{latency.runs.iloc[0] if not latency.empty else '-'} timed runs; {machine}\n")
    print(table(frame))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
