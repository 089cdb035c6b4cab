"""Training-step time and page faults of MobileAgeNet with glibc's default malloc settings and with
``ab.nn.util.malloc.tune_for_tensors()``, alternating fresh processes (a setting cannot be undone
in a process), median over rounds.

    python benchmarks/allocator.py --size 96 --batch 64 --steps 12 --rounds 5
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time, torch
from ab.nn import registry
from ab.nn.util.malloc import tune_for_tensors
tuned, size, batch, steps = sys.argv[1] == "1", int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
if tuned:
    tune_for_tensors()
torch.manual_seed(0)
model = registry.load(registry.MODEL, "MobileAgeNet").Net((1, 3, size, size), (1,), {"dropout": 0.1}, "cpu")
model.train_setup({"lr": 1e-3, "momentum": 0.9, "epoch_max": 1})
x, y = torch.randn(batch, 3, size, size), torch.rand(batch, 1) * 80
model.learn([(x, y)] * 2)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
start = time.perf_counter()
model.learn([(x, y)] * steps)
seconds = (time.perf_counter() - start) / steps
print(json.dumps({"ms": seconds * 1e3, "faults": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    results = {"default": [], "tuned": []}
    for _ in range(args.rounds):
        for name, flag in (("default", "0"), ("tuned", "1")):
            out = subprocess.run([sys.executable, "-c", CHILD, flag, str(args.size), str(args.batch), str(args.steps)],
                                 capture_output=True, text=True, check=True).stdout
            results[name].append(json.loads(out.strip().splitlines()[-1]))
    print(f"MobileAgeNet training step, batch {args.batch} at {args.size}x{args.size}, {args.steps} steps x "
          f"{args.rounds} rounds, median\n\n| malloc | ms / step | page faults / step |\n|---|---|---|")
    median = {k: (statistics.median(r["ms"] for r in v), statistics.median(r["faults"] for r in v))
              for k, v in results.items()}
    for name, (ms, faults) in median.items():
        print(f"| {name} | {ms:.0f} | {faults:,.0f} |")
    print(f"\ntuned / default step time: {median['tuned'][0] / median['default'][0]:.2f}")


if __name__ == "__main__":
    main()
