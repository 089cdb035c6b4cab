"""Training-step time of MobileAgeNet's backbone (torchvision MobileNetV3-Large, random init) with
NCHW (contiguous) and channels_last tensors on this CPU, alternating in one process, median of
several rounds, per input size: why MobileAgeNet trains channels_last.

    python benchmarks/memory_format.py --sizes 64 96 128 --batch 64 --steps 5 --rounds 3
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision

from ab.nn.util import system


def step_ms(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, steps: int) -> float:
    def step():
        optimizer.zero_grad(set_to_none=True)
        model(x).float().mean().backward()
        optimizer.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    torch.manual_seed(0)
    formats = {"NCHW": torch.contiguous_format, "channels_last": torch.channels_last}
    print(f"MobileNetV3-Large training step (AdamW), batch {args.batch}, {args.steps} steps x {args.rounds} rounds, "
          f"median; {system.cpu_model()}, {system.cpu_count()} cores, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}\n")
    print("| input | NCHW ms/step | channels_last ms/step | speed-up |\n|---|---|---|---|")
    for size in args.sizes:
        times = {name: [] for name in formats}
        x = torch.randn(args.batch, 3, size, size)
        models = {}
        for name, fmt in formats.items():
            model = torchvision.models.mobilenet_v3_large(num_classes=1).to(memory_format=fmt).train()
            models[name] = (model, torch.optim.AdamW(model.parameters(), 1e-3), x.contiguous(memory_format=fmt))
        for _ in range(args.rounds):
            for name, (model, optimizer, data) in models.items():
                times[name].append(step_ms(model, optimizer, data, args.steps))
        nchw, last = (statistics.median(times[name]) for name in formats)
        print(f"| {size}x{size} | {nchw:.0f} | {last:.0f} | {nchw / last:.2f}x |")


if __name__ == "__main__":
    main()
