"""What ``api.data()``'s code columns (``nn_code``, ``metric_code``, ``transform_code``) cost on a large
table: a database of --models generated models (each a real model file of this package with a
unique comment, so every one is its own code version) x --rows epoch rows each, then
``data(only_best_accuracy=True)`` and ``data()`` with and without the code columns, each in a fresh
process: wall time and the process's peak resident memory.

    python benchmarks/data_code_columns.py --work /tmp/data-code --models 2000 --rows 50
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CALLS = {"best": "only_best_accuracy=True", "all": ""}


def build(db: Path, models: int, rows: int) -> None:
    """``models`` x ``rows`` stat rows with their code versions and hyperparameter sets."""
    from sqlalchemy import insert

    from ab.nn import registry
    from ab.nn.stat import engine as engines
    from ab.nn.stat.schema import CodeVersion, Metric, Nn, Prm, Stat, Transform

    sources = [registry.source(registry.MODEL, n) for n in registry.names(registry.MODEL)]
    transform = registry.source(registry.TRANSFORM, "norm_64")
    metric = registry.source(registry.METRIC, "mae")
    made = engines.engine(f"sqlite:///{db}", writer=True)
    with made.begin() as connection:
        ids = {"transform": registry.checksum(transform), "metric": registry.checksum(metric)}
        connection.execute(insert(Transform), [{"name": "norm_64", "code": transform, "id": ids["transform"]}])
        connection.execute(insert(Metric), [{"name": "mae", "code": metric, "id": ids["metric"]}])
        connection.execute(insert(CodeVersion), [
            {"kind": "transform", "id": ids["transform"], "name": "norm_64", "code": transform},
            {"kind": "metric", "id": ids["metric"], "name": "mae", "code": metric}])
        for m in range(models):
            name = f"gen-{m:05d}"
            code = f"{sources[m % len(sources)]}\n# generated variant {m}\n"
            nn_id = registry.checksum(code)
            connection.execute(insert(Nn), [{"name": name, "code": code, "id": nn_id}])
            connection.execute(insert(CodeVersion), [{"kind": "nn", "id": nn_id, "name": name, "code": code}])
            prm_rows, stat_rows = [], []
            for r in range(rows):
                uid = hashlib.md5(f"{m}/{r}".encode()).hexdigest()
                prm_rows += [{"uid": uid, "name": k, "value": v}
                             for k, v in {"lr": 0.01, "momentum": 0.9, "batch": 64, "transform": "norm_64"}.items()]
                stat_rows.append({"id": hashlib.md5(f"stat {m}/{r}".encode()).hexdigest(), "accuracy": (r % 97) / 97,
                                  "epoch": 1 + r % 5, "duration": 10 ** 9 * (1 + r), "task": "age-regression",
                                  "dataset": "utkface", "nn": name, "transform": "norm_64", "metric": "mae",
                                  "prm": uid, "nn_code_id": nn_id, "transform_code_id": ids["transform"],
                                  "metric_code_id": ids["metric"]})
            connection.execute(insert(Prm), prm_rows)
            connection.execute(insert(Stat), stat_rows)


def measure(db: Path, call: str, with_code: bool) -> dict:
    """One ``data()`` call in a fresh process: rows, seconds, peak RSS (MiB), distinct code objects."""
    script = (f"import json, resource, time\nfrom ab.nn import api\nstart = time.perf_counter()\n"
              f"frame = api.data({CALLS[call]}{', ' if CALLS[call] else ''}with_code={with_code}, db={str(db)!r})\n"
              f"seconds = time.perf_counter() - start\n"
              f"codes = len({{id(c) for c in list(frame.nn_code)}}) if 'nn_code' in frame else 0\n"
              f"print(json.dumps({{'rows': len(frame), 'seconds': seconds, 'codes': codes,\n"
              f"                  'peak_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))\n")
    baseline = subprocess.run([sys.executable, "-c", "import resource; from ab.nn import api; "
                               "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"],
                              capture_output=True, text=True, check=True)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["import_mib"] = float(baseline.stdout.strip().splitlines()[-1])
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="a folder for the database")
    p.add_argument("--models", type=int, default=2000)
    p.add_argument("--rows", type=int, default=50, help="epoch rows per model")
    args = p.parse_args(argv)
    from ab.nn.util import system

    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    db = work / f"code-{args.models}x{args.rows}.db"
    print(f"machine: {system.cpu_model()}, {system.cpu_count()} cores")
    if not db.exists():
        start = time.perf_counter()
        build(db, args.models, args.rows)
        seconds = time.perf_counter() - start
        print(f"built {args.models * args.rows:,} rows of {args.models:,} models in {seconds:.0f} s "
              f"({db.stat().st_size / 2 ** 20:.0f} MiB)")
    print("| call | code columns | rows | seconds | peak RSS MiB (after import) | distinct nn_code objects |")
    print("|---|---|---|---|---|---|")
    for call in CALLS:
        for with_code in (False, True):
            r = measure(db, call, with_code)
            print(f"| data({CALLS[call]}) | {'yes' if with_code else 'no'} | {r['rows']:,} | {r['seconds']:.2f} | "
                  f"{r['peak_mib']:.0f} ({r['import_mib']:.0f}) | {r['codes']:,} |")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
