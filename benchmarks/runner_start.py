"""What a sweep's runner costs before its first trial: the CPU seconds of ``python -m ab.nn.train ...
--dry-run`` (the CLI, the database and its migrations, Optuna's study, the model's facts, the data key of
the split, the plan) as it is, torch left to the trials, and with torch imported first, as every runner did
before. For a workspace model (whose facts the sandboxed probe reads, in a process of its own) and for a package
model (MobileAgeNet: the runner imports its file, and the file imports torch and torchvision, so both
readings import them). A sweep starts one runner per worker and host; the test suite one in each test of a
real runner process, most of them of workspace models.

    python benchmarks/runner_start.py --runs 5

Makes 60 generated images and a workspace in a temporary folder, runs each command once to warm the page
cache, then ``--runs`` times each, alternated; prints the median CPU seconds (user + system of the runner
and of the processes it reaps; the workspace model's sandboxed probe is reaped inside its sandbox and not
counted, the same in both readings) and the ratio of each pair within this run.
Measured on 7 December 2026 on the 2-core development machine, otherwise idle: the workspace model's runner
3.01 against 7.13 CPU s (ratio 2.37), MobileAgeNet's 10.38 against 10.79 (1.04).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.trial_start import alternated  # noqa: E402
from tests import helpers  # noqa: E402

RUNNER = "import runpy, sys; sys.argv = ['ab.nn.train', *{argv!r}]; runpy.run_module('ab.nn.train', run_name='__main__')"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        images, root = Path(folder) / "utk" / "UTKFace", Path(folder) / "ws"
        helpers.make_utkface(images, count=60)
        images.parent.chmod(0o755)  # the sandbox's user reads it too
        helpers.write_model(root, "BenchTiny", helpers.TINY_MODEL)
        commands = {}
        for model in ("BenchTiny", "MobileAgeNet"):
            dry_run = ["--root", str(root), "--data-dir", str(images.parent), "-c",
                       f"age-regression_utkface_mae_{model}", "-e", "1", "-t", "1", "--dry-run", "--quiet"]
            commands[model, "torch left to its trials"] = RUNNER.format(argv=dry_run)
            commands[model, "torch imported first"] = "import torch; " + RUNNER.format(argv=dry_run)
        seconds = alternated(commands, args.runs)  # its warm-up run also makes the workspace's database
    medians = {key: statistics.median(values) for key, values in seconds.items()}
    for (model, how), median in medians.items():
        print(f"{model}, {how}: {median:.2f} CPU s (median of {args.runs}; "
              f"{', '.join(f'{v:.2f}' for v in seconds[model, how])})")
    for model in ("BenchTiny", "MobileAgeNet"):
        lean, full = medians[model, "torch left to its trials"], medians[model, "torch imported first"]
        print(f"{model}: torch adds {full - lean:.2f} CPU s to a runner's start, ratio {full / lean:.2f}")


if __name__ == "__main__":
    main()
