"""What a trial child's start costs in imports: the CPU seconds of a fresh Python importing
``ab.nn.sweep.trial_child`` as it is (the database layer left to the runner), and with what it loaded
before (``ab.nn.stat.store``: SQLAlchemy and pandas; ``ab.nn.sweep.search``: Optuna). Every sandboxed trial
and every ``check_nn`` call pays it once.

    python benchmarks/trial_start.py --runs 5

Prints the median CPU seconds of each (user + system of the child process, ``--runs`` fresh processes
each, alternated) and their ratio within this run. Measured on 7 December 2026 on the 2-core development
machine: 4.27 against 5.92 CPU s, ratio 1.39.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPORTS = {"trial child": "import ab.nn.sweep.trial_child",
           "with the database layer": "import ab.nn.sweep.trial_child, ab.nn.stat.store, ab.nn.sweep.search"}


def cpu_of(code: str) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def alternated(commands: dict, runs: int) -> dict:
    """The CPU seconds of each of ``commands`` (key -> Python code), ``runs`` times each, alternated so that
    the machine's drift falls on all alike, after one run each to warm bytecode and the page cache."""
    for code in commands.values():
        cpu_of(code)
    seconds = {key: [] for key in commands}
    for _ in range(runs):
        for key, code in commands.items():
            seconds[key].append(cpu_of(code))
    return seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    seconds = alternated(IMPORTS, args.runs)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    for name, median in medians.items():
        print(f"{name}: {median:.2f} CPU s (median of {args.runs}; {', '.join(f'{v:.2f}' for v in seconds[name])})")
    lean, full = medians.values()
    print(f"the database layer adds {full - lean:.2f} CPU s, ratio {full / lean:.2f}")


if __name__ == "__main__":
    main()
