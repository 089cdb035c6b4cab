"""Bookkeeping at LEMUR's scale: a statistics tree the size of LEMUR's (about 20,000 configs, 105,000
epoch files, 750,000 trial records, written the way LEMUR 2.2.11 writes them), imported into a
database, then a sweep of short trials on top of it.

    python benchmarks/lemur_scale.py --data ../shared/data/utkface --work /tmp/lemur-scale
    python benchmarks/lemur_scale.py --work /tmp/lemur-scale-75k --records 75000 --configs 2000 \
        --files 10500 --history 120 --prediction-trials 20      # a tenth of it, no sweep

Reports, each with the machine:
  * import-json of the tree into an empty SQLite database: wall and CPU time, peak resident memory;
  * a sweep of --trials short SSR-Net trials (one epoch, --max-samples images) on that database, whose
    config already holds --history records at that epoch: each trial's bookkeeping (database writes and
    the JSON mirror) as a share of its time, first trials against last, which must stay flat (only with
    --data);
  * --prediction-trials trials with 7,000 per-image predictions each (what one trial on UTKFace's test
    part records), written through the store, so that the copy streams a prediction table of real size;
  * api.data() on that database (filtered, and the best rows of every model), and `stat copy` of it
    into a new SQLite file: wall and CPU time, peak resident memory.

Peak memory that stays the same at a tenth of the rows (run both sizes) is what "flat" means here.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import tempfile
import sys
import time
from pathlib import Path

import pandas as pd

from ab.nn import api
from ab.nn.util import system

TRAIN_STAT_KEYS = ("train_loss", "test_loss", "train_accuracy", "gradient_norm", "samples_per_second",
                   "best_accuracy", "best_epoch", "epoch_max", "cpu_count", "cpu_type", "cpu_usage_percent",
                   "total_ram_kb", "occupied_ram_kb", "ram_usage_percent", "gpu_type", "gpu_memory_kb",
                   "gpu_total_memory_kb", "occupied_gpu_memory_kb", "gpu_memory_usage_percent")
SWEPT = "age-regression_utkface_mae_SSRNet"


def lemur_record(rng: random.Random, config: str, epoch: int, epochs: int) -> dict:
    """One trial at one epoch as LEMUR 2.2.11's Train.py writes it: sorted keys, then the config's parts."""
    prm = {"batch": rng.choice([16, 32, 64, 128]), "dropout": round(rng.random() * 0.5, 4),
           "lr": round(10 ** rng.uniform(-4, -1), 6), "momentum": round(rng.random(), 4),
           "transform": rng.choice(["norm_64", "norm_128_flip", "norm_224"]), "epoch_max": epochs}
    uid = hashlib.md5(str(prm).replace(" ", "").encode()).hexdigest()
    accuracy = rng.random()
    duration = rng.randint(10 ** 9, 10 ** 12)
    train_stat = dict(zip(TRAIN_STAT_KEYS, (rng.random(), rng.random(), rng.random(), rng.random(), 500.0, accuracy,
                                            epoch, epochs, 8, "x86_64", 12.5, 16e6, 4e6, 25.0, "No GPU", None, None,
                                            None, None)))
    record = dict(sorted({**prm, "accuracy": accuracy, "duration": duration, "duration_seconds": round(duration / 1e9, 2),
                          "metric_" + config.split("_")[2]: accuracy, "train_stat": train_stat, "uid": uid}.items()))
    task, dataset, metric, nn = config.split("_")
    return record | {"task": task, "dataset": dataset, "metric": metric, "model": nn}


def write_tree(folder: Path, records: int, configs: int, files: int, history: int, seed: int = 0) -> tuple[int, int]:
    """LEMUR's stat/train tree with exactly ``files`` epoch files and ``records`` records over ``configs``
    configs (epochs and records spread as evenly as whole numbers allow); the swept config gets
    ``history`` of them at epoch 1. Returns (files, records) written."""
    rng = random.Random(seed)
    other_files, other_records = files - 1, records - history
    written = 0
    for c in range(configs):
        config = f"img-classification_cifar-10_acc_Net{c:05d}"
        epochs = other_files // configs + (c < other_files % configs)
        (folder / config).mkdir(parents=True, exist_ok=True)
        for epoch in range(1, epochs + 1):
            index = written
            count = other_records // other_files + (index < other_records % other_files)
            body = [lemur_record(rng, config, epoch, epochs) for _ in range(count)]
            (folder / config / f"{epoch}.json").write_text(json.dumps(body, indent=4))
            written += 1
    (folder / SWEPT).mkdir(parents=True, exist_ok=True)
    body = [lemur_record(rng, SWEPT, 1, 1) for _ in range(history)]
    (folder / SWEPT / "1.json").write_text(json.dumps(body, indent=4))
    return written + 1, other_records + history


def timed(command: list[str]) -> tuple[float, float, float, str]:
    """(wall seconds, CPU seconds (user + system), peak RSS of that process in MiB, stdout)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        out.seek(0), err.seek(0)
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:5])}... failed:\n{err.read()[-3000:]}")
        return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out.read()


PREDICTIONS = 7_000


def add_prediction_trials(db: Path, count: int) -> None:
    """``count`` finished trials of one config, each with PREDICTIONS test-set predictions, as the store records them."""
    from ab.nn.config import Config
    from ab.nn.stat.states import COMPLETE
    from ab.nn.stat.store import StatStore

    store = StatStore(f"sqlite:///{db}")
    config = Config.parse(SWEPT)
    ages = [float(18 + i % 60) for i in range(PREDICTIONS)]
    for trial_id in store.reserve_trials(config, 1, None, data_key="benchmark", count=count):
        store.record_predictions(trial_id, "test", ages, [age + 3.5 for age in ages],
                                 [f"{i}.jpg" for i in range(PREDICTIONS)])
        store.finish_trial(trial_id, COMPLETE)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="the UTKFace folder for the sweep (without it, no sweep)")
    p.add_argument("--work", required=True, help="an empty folder with room for a few GB")
    p.add_argument("--records", type=int, default=750_000)
    p.add_argument("--configs", type=int, default=20_000)
    p.add_argument("--files", type=int, default=105_000)
    p.add_argument("--history", type=int, default=1_200, help="records of the swept config at its epoch")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--max-samples", type=int, default=1024)
    p.add_argument("--prediction-trials", type=int, default=0,
                   help=f"trials with {PREDICTIONS:,} predictions each, added before the copy")
    args = p.parse_args(argv)
    work = Path(args.work).resolve()
    tree, db = work / "stat" / "train", work / "db" / "ab.nn.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    print(f"machine: {system.cpu_model()}, {system.cpu_count()} cores, {system.total_ram_kb() // 2 ** 20} GiB")

    start = time.perf_counter()
    files, records = write_tree(tree, args.records, args.configs, args.files, args.history)
    print(f"wrote {files:,} LEMUR epoch files with {records:,} records over {args.configs + 1:,} configs in "
          f"{time.perf_counter() - start:.0f} s")

    # the swept config's records are LEMUR 2.2.11's mae metric without a raw MAE: LEMUR's mae.py writes 1 - MAE/20
    seconds, cpu, peak, out = timed([python, "-m", "ab.nn.stat", "import-json", "--db", f"sqlite:///{db}", "--dir",
                                     str(tree), "--lemur-mae-scale", "20"])
    print(f"import-json: {out.strip()} in {seconds:.0f} s ({cpu:.0f} s CPU), peak RSS {peak:.0f} MiB "
          f"({db.stat().st_size / 2 ** 20:.0f} MiB database)")
    if args.data:
        sweep(args, work, db)
    if args.prediction_trials:
        start = time.perf_counter()
        add_prediction_trials(db, args.prediction_trials)
        print(f"added {args.prediction_trials} trials with {PREDICTIONS:,} predictions each in "
              f"{time.perf_counter() - start:.0f} s")

    for label, call in (("data(nn=Net00042)", lambda: api.data(nn="Net00042", db=db)),
                        ("data(task='age-regression')", lambda: api.data(task="age-regression", db=db)),
                        ("data(only_best_accuracy=True)", lambda: api.data(only_best_accuracy=True, db=db))):
        start = time.perf_counter()
        rows = len(call())
        print(f"api.{label}: {rows:,} rows in {time.perf_counter() - start:.2f} s")

    copy = work / "copy.db"
    seconds, cpu, peak, out = timed([python, "-m", "ab.nn.stat", "copy", "--from", f"sqlite:///{db}", "--to",
                                     f"sqlite:///{copy}"])
    print(f"stat copy to SQLite: {seconds:.0f} s ({cpu:.0f} s CPU), peak RSS {peak:.0f} MiB ({out.strip()})")
    return 0


def sweep(args, work: Path, db: Path) -> None:
    python = sys.executable
    seconds, _, _, _ = timed([python, "-m", "ab.nn.train", "--root", str(work), "--data-dir", args.data, "-c", SWEPT,
                              "-e", "1", "-t", str(args.trials), "-f", "norm_64", "--max-samples", str(args.max_samples),
                              "-w", "0", "--quiet", "--export", "none", "-p", '{"lr": 0.001, "batch": 64}'])
    trials = api.trials(config=SWEPT, db=db).sort_values("id")
    trials["trial_s"] = (pd.to_datetime(trials.finished_at) - pd.to_datetime(trials.started_at)).dt.total_seconds()
    trials["share"] = trials.bookkeeping_seconds / trials.trial_s
    k = max(1, args.trials // 4)
    first, last = trials.share.iloc[:k], trials.share.iloc[-k:]
    print(f"sweep of {len(trials)} trials in {seconds:.0f} s; bookkeeping per trial: median "
          f"{trials.bookkeeping_seconds.median():.3f} s, {100 * trials.share.median():.2f} % of trial time "
          f"(first {k}: {100 * first.mean():.2f} %, last {k}: {100 * last.mean():.2f} %; max "
          f"{100 * trials.share.max():.2f} %)")


if __name__ == "__main__":
    sys.exit(main())
