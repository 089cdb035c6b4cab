"""What schema revisions cost (docs/guide/schema-upgrades.md): upgrading a new database, the check the
runner and every store make on a current one, and a version-1 database with many trials to the baseline.

    python benchmarks/schema_upgrade.py [FOLDER] [--trials N]
"""
from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from ab.nn.stat import engine as engines, versions

V1 = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "schema_v1.sqlite.sql"
EPOCHS = 10


def median_seconds(call, repeats: int = 1) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def version_1_database(path: Path, trials: int) -> None:
    """The schema before versioned migrations, with ``trials`` trials of ``EPOCHS`` epochs, half of them on
    the old ``lemur`` split (renamed by the upgrade)."""
    with sqlite3.connect(path) as con:
        con.executescript(V1.read_text())
        con.execute("insert into nn values ('MobileAgeNet', 'code', 'abc')")
        con.execute("insert into metric values ('mae', 'code', 'def')")
        con.execute("insert into transform values ('norm_64', 'code', 'ghi')")
        con.executemany("insert into trial (id, config, task, dataset, metric, nn, transform, prm, study, number, "
                        "status, seed, split, epoch_max, epochs_done) values (?, 'c', 'age-regression', 'utkface', "
                        "'mae', 'MobileAgeNet', 'norm_64', 'u1', 's', ?, 'complete', 1, ?, 10, 10)",
                        [(i, i, "lemur/42" if i % 2 else "paper/42") for i in range(1, trials + 1)])
        con.executemany("insert into stat (id, accuracy, epoch, task, dataset, nn, transform, metric, prm, trial_id, "
                        "mae) values (?, 0.7, ?, 'age-regression', 'utkface', 'MobileAgeNet', 'norm_64', 'mae', 'u1', "
                        "?, 6.0)", [(f"s{i}-{e}", e, i) for i in range(1, trials + 1) for e in range(1, EPOCHS + 1)])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", nargs="?", default=None, help="where the databases go (default: a temporary folder)")
    p.add_argument("--trials", type=int, default=10_000, help="trials of the version-1 database")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="schema-upgrade-") as scratch:
        folder = Path(args.folder or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.db*"):
            old.unlink()
        new = f"sqlite:///{folder / 'new.db'}"
        print(f"new database, every table: {median_seconds(lambda: versions.upgrade(new)):.1f} s")
        print(f"upgrade at the current revision, median of 20: "
              f"{median_seconds(lambda: versions.upgrade(new), 20) * 1000:.1f} ms")
        check = median_seconds(lambda: versions.require_current(new), 200)
        print(f"require_current, median of 200: {check * 1000:.2f} ms")
        version_1_database(folder / "v1.db", args.trials)
        engines.dispose_all()
        start = time.perf_counter()
        before, after = versions.upgrade(f"sqlite:///{folder / 'v1.db'}")
        print(f"{before} -> {after}, {args.trials:,} trials and {args.trials * EPOCHS:,} epochs: "
              f"{time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
