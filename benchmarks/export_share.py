"""What share of a sweep's time goes to export (issue 41, item 6; bars: 10 % for a default sweep, 25 % for a
``--max-samples 256`` smoke run). Each run is a real ``python -m ab.nn.train`` in a fresh workspace; per
trial it prints the training time (the trial's start to its recorded end), the export's seconds (its
``pipeline`` export row) and why a trial was not exported, and the seconds of each export step, from the
creation times of the trial's export and latency rows (``steps``); then the run's share (export seconds over
the command's wall time) and the median share over ``--runs``.

    python benchmarks/export_share.py --data /work/shared/data/utkface --runs 1 \
        -- -c age-regression_utkface_mae_MobileAgeNet -t 3 -e 1 --max-samples 256

Everything after ``--`` goes to ``ab.nn.train`` as it is; the default export is what it measures unless
those arguments say otherwise (the former default: ``--export onnx,tflite-fp32,tflite-fp16 --export-unlearned``).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from ab.nn import api


def _time(value) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_convert(None) if stamp.tzinfo is not None else stamp


def steps(finished, exports: pd.DataFrame, latency: pd.DataFrame) -> str:
    """Seconds of each step of one trial's export, each ending where its last row was written: PyTorch's
    ages (the ``pytorch`` row), PyTorch's latency, ONNX (export, fidelity, latency), TFLite (conversion,
    fidelity, latency: to the ``pipeline`` row; "the rest" without TFLite). Empty where the trial has no
    ``pytorch`` row."""
    def last(rows) -> pd.Timestamp | None:
        return max(map(_time, rows.created_at)) if len(rows) else None

    marks = [("reference", last(exports[exports.format == "pytorch"])),
             ("pytorch latency", last(latency[latency.runtime == "pytorch"])),
             ("onnx", last(latency[latency.runtime == "onnxruntime"]) or last(exports[exports.format == "onnx"])),
             ("tflite" if (exports.format == "tflite").any() else "the rest",
              last(exports[exports.format == "pipeline"]))]
    if marks[0][1] is None:
        return ""
    parts, previous = [], _time(finished)
    for name, mark in marks:
        if mark is not None:
            parts.append(f"{name} {(mark - previous).total_seconds():.1f} s")
            previous = mark
    return ", ".join(parts)


def one_run(data: Path, train_args: list[str]) -> float:
    with tempfile.TemporaryDirectory(prefix="export-share-") as root:
        start = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "ab.nn.train", "--root", root, "--data-dir", str(data), "--quiet",
                               *train_args], check=True, stdout=subprocess.PIPE, text=True)
        wall = time.monotonic() - start
        print("\n".join(line for line in done.stdout.splitlines() if line.strip().startswith("export:")))
        trials = api.trials(root=root)
        every_export, every_latency = api.exports(root=root), api.latency(root=root)
        pipeline = every_export[every_export.format == "pipeline"].set_index("trial_id")
        exported = 0.0
        for trial in trials.itertuples():
            trained = (trial.finished_at - trial.started_at).total_seconds()
            row = pipeline.loc[trial.id] if trial.id in pipeline.index else None
            seconds = float(row.seconds) if row is not None and pd.notna(row.seconds) else 0.0
            exported += seconds
            why = f" ({row.error.splitlines()[0][:90]}...)" if row is not None and row.status != "ok" else ""
            print(f"  trial {trial.id}: {trial.status}, val MAE {trial.eval_mae:.2f}, trained {trained:.0f} s, "
                  f"export {seconds:.0f} s, {row.status if row is not None else 'no export'}{why}")
            step_seconds = steps(trial.finished_at, every_export[every_export.trial_id == trial.id],
                                 every_latency[every_latency.trial_id == trial.id])
            if step_seconds:
                print(f"    steps: {step_seconds}")
        share = exported / wall
        print(f"  run: {wall:.0f} s, export {exported:.0f} s: {100 * share:.1f} %")
        return share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the UTKFace folder (--data-dir)")
    parser.add_argument("--runs", type=int, default=3, help="runs, each in a fresh workspace; the median is reported")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then ab.nn.train's arguments")
    args = parser.parse_args()
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    shares = []
    for run in range(args.runs):
        print(f"run {run + 1}: python -m ab.nn.train {' '.join(train_args)}")
        shares.append(one_run(args.data, train_args))
    print(f"export share, median of {len(shares)}: {100 * statistics.median(shares):.1f} %")


if __name__ == "__main__":
    main()
