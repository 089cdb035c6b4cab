"""What the sandbox's watch costs its parent: the CPU the parent spends per second while a sandboxed child
maps ``--gib`` GiB of a file it wrote and sleeps, with the memory reading paced by its cost
(``launch.MEMORY_SHARE``, the default) and read at every 0.25 s tick as before it was paced. Reading the
PSS of a process walks its page tables, so the cost grows with the memory the child maps (a trial that
maps UTKFace's image cache holds about 3 GiB).

    python benchmarks/sandbox_watch.py --gib 3 --seconds 20 --runs 3

Measured on 7 December 2026 on the 2-core development machine (another benchmark beside it): paced 0.022,
every tick 0.091 CPU s per s, ratio 4.2. Prints, per setting, the parent's CPU seconds per second of the child's sleep (median of ``--runs``) and
the ratio of the two within this run.
"""
from __future__ import annotations

import argparse
import importlib
import resource
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ab.nn import sandbox  # noqa: E402
launcher = importlib.import_module("ab.nn.sandbox.launch")  # the module (``ab.nn.sandbox.launch`` is its function)
from ab.nn.sandbox.limits import GiB  # noqa: E402

CHILD = """
import time
import numpy as np
held = np.memmap("held.u8", dtype=np.uint8, mode="w+", shape=(int(%(gib)s * 2 ** 30),))
held[:] = 1
time.sleep(%(seconds)s)
result = int(held[::4096].sum())
"""
"""A file mapped and read into memory, as a trial maps the image cache (anonymous memory may sit in huge
pages, whose page tables are quick to walk; a file's pages are not)."""
DONE = {"type": "object", "required": ["type", "id", "result", "error"],
        "properties": {"type": {"enum": ["done"]}, "id": {"type": "string"}, "error": {"type": ["string", "null"]}}}


def parent_cpu_per_second(gib: float, seconds: float, share: float) -> float:
    """The parent's CPU seconds (all its threads: the watch and the waiting main thread) per second of the
    child's sleep."""
    launcher.MEMORY_SHARE = share
    held = int((gib + 1) * GiB)
    limits = sandbox.Limits(wall_seconds=seconds + 600, cpu_seconds=int(seconds) + 600, memory_bytes=held,
                            address_space_bytes=held + 4 * GiB, total_memory_bytes=held, file_size_bytes=held)
    with sandbox.launch("tests.sandboxed_script", limits=limits, env={"OMP_NUM_THREADS": "1"}) as box:
        box.request({"type": "run", "code": "import numpy"}, DONE)
        before = resource.getrusage(resource.RUSAGE_SELF)
        reply = box.request({"type": "run", "code": CHILD % {"gib": gib, "seconds": seconds}}, DONE)
        after = resource.getrusage(resource.RUSAGE_SELF)
    if reply["error"]:
        raise RuntimeError(f"the child failed: {reply['error']}")
    return (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=3.0, help="memory the child holds (default 3)")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the child sleeps (default 20)")
    parser.add_argument("--runs", type=int, default=3, help="runs per setting (default 3)")
    args = parser.parse_args(argv)
    paced = launcher.MEMORY_SHARE
    settings = {f"paced (MEMORY_SHARE {paced})": paced, "every tick (before)": float("inf")}
    results = {}
    for name, share in settings.items():
        runs = [parent_cpu_per_second(args.gib, args.seconds, share) for _ in range(args.runs)]
        results[name] = statistics.median(runs)
        print(f"{name}: {results[name]:.4f} CPU s per s (runs: {', '.join(f'{r:.4f}' for r in runs)})")
    first, second = results.values()
    print(f"ratio every tick / paced: {second / max(first, 1e-9):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
