"""Load figures: N short trials of a tiny model (SSR-Net, --max-samples 64) run by W worker
processes on one study, on SQLite and on PostgreSQL.

    python benchmarks/many_workers.py --data ../shared/data/utkface --trials 100 --workers 4
    source scripts/postgres.sh && python benchmarks/many_workers.py --data ../shared/data/utkface \\
        --db "$LEMUR_TEST_PG_URL"

Reports trials recorded / requested (must be 100 %), duplicates, lock errors (0), and the
per-trial bookkeeping time (database writes and JSON mirror) as a share of trial time.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

import pandas as pd

from ab.nn import api
from ab.nn.stat import query
from ab.nn.stat.engine import new_postgres_database
from ab.nn.util import system

CONFIG = "age-regression_utkface_mae_SSRNet"


def run(data: str, trials: int, workers: int, db: str | None) -> dict:
    with tempfile.TemporaryDirectory() as root:
        url = new_postgres_database(db, prefix="load") if db else f"sqlite:///{root}/db/ab.nn.db"
        command = [sys.executable, "-m", "ab.nn.train", "--root", root, "--data-dir", data, "--db", url,
                   "-c", CONFIG, "-t", str(trials), "-e", "1", "--max-samples", "64", "-f", "norm_64",
                   "--min_batch_binary_power", "4", "-b", "5", "--min_learning_rate", "1e-4", "-l", "1e-2",
                   "-w", "0", "--export", "none", "--quiet"]
        started = time.perf_counter()
        procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(workers)]
        outputs = [p.communicate() for p in procs]
        wall = time.perf_counter() - started
        errors = "\n".join(err for _, err in outputs)
        frame = api.trials(config=CONFIG, db=url)
        done = frame[frame.status == "complete"]
        spent = (pd.to_datetime(done.finished_at) - pd.to_datetime(done.started_at)).dt.total_seconds()
        return {"database": "PostgreSQL" if db else "SQLite", "requested": trials, "recorded": len(done),
                "rows": len(frame), "duplicates": _numbered_twice(url),
                "lock errors": errors.lower().count("locked") + errors.count("OperationalError"),
                "worker exit codes": ",".join(str(p.returncode) for p in procs),
                "bookkeeping share": float(done.bookkeeping_seconds.sum() / spent.sum()),
                "median trial s": float(spent.median()), "wall s": wall}


def _numbered_twice(url: str) -> int:
    """Trials that Optuna numbered as another trial of the same study (read from the ``trial`` table: no
    frame of ``ab.nn.api`` shows Optuna's numbering)."""
    links = pd.DataFrame(list(query.trial_rows(url, config=CONFIG)), columns=["study", "number"])
    return int(links.duplicated().sum())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--db", action="append", default=[], help="a PostgreSQL server URL (repeatable); SQLite always")
    args = p.parse_args()
    rows = [run(args.data, args.trials, args.workers, None)] + [run(args.data, args.trials, args.workers, u)
                                                               for u in args.db]
    print(f"{args.trials} trials of SSR-Net (--max-samples 64, 1 epoch) by {args.workers} workers; "
          f"{system.cpu_model()}, {system.cpu_count()} cores\n")
    print("| database | recorded / requested | duplicates | lock errors | bookkeeping share of trial time | "
          "median trial (s) | wall (s) |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['database']} | {r['recorded']} / {r['requested']} ({r['recorded'] / r['requested']:.0%}) | "
              f"{r['duplicates']} | {r['lock errors']} | {r['bookkeeping share']:.1%} | {r['median trial s']:.1f} | "
              f"{r['wall s']:.0f} |")


if __name__ == "__main__":
    main()
