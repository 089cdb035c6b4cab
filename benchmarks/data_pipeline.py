"""One epoch of MobileAgeNet training read three ways: through the decode-once cache, through a
plain PIL ``Dataset`` (decode + resize every image every epoch), and from tensors already in
memory. Times are medians of several runs in one process, reported as ratios.

    python benchmarks/data_pipeline.py --data ../shared/data/utkface --images 4096 --size 128 --runs 3

Bar (issue 3): cache / in-memory <= 1.15.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ab.nn import registry
from ab.nn.dataset import utkface
from ab.nn.dataset.settings import DataSettings
from ab.nn.transform._pipeline import ImagePipeline
from ab.nn.util import system


class PlainPIL(Dataset):
    """What a loader without a cache does: open, decode, resize, transform, every time."""

    def __init__(self, folder: Path, names: list[str], ages, transform):
        self.folder, self.names, self.ages, self.transform = folder, names, ages, transform

    def __len__(self):
        return len(self.names)

    def __getitem__(self, i):
        with Image.open(self.folder / self.names[i]) as image:
            image = image.convert("RGB")
        return self.transform(image), torch.tensor([self.ages[i]], dtype=torch.float32)


def epoch(dataset, batch: int, seed: int) -> float:
    torch.manual_seed(seed)
    model = registry.load(registry.MODEL, "MobileAgeNet").Net((1, 3, 128, 128), (1,), {"dropout": 0.1}, "cpu")
    model.train_setup({"lr": 1e-3, "momentum": 0.9})
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(seed))
    start = time.perf_counter()
    model.learn(loader)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--images", type=int, default=4096, help="training images per epoch")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(system.cpu_count())
    norm = utkface.IMAGENET_NORM
    train_tf = ImagePipeline(norm, args.size, "flip")
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        parts = utkface.load(args.data, Path(cache), train_tf, ImagePipeline(norm, args.size),
                             DataSettings(max_samples=args.images), progress=False)
        build = time.perf_counter() - start
        cached = parts.train
        folder = utkface.find_source(args.data).location
        plain = PlainPIL(folder, cached.names, cached.ages, train_tf)
        memory = TensorDataset(torch.stack([cached[i][0] for i in range(len(cached))]),
                               torch.tensor(cached.ages).reshape(-1, 1))
        times = {"in-memory tensors": [], "decode-once cache": [], "plain PIL": []}
        for run in range(args.runs):
            for name, dataset in (("in-memory tensors", memory), ("decode-once cache", cached), ("plain PIL", plain)):
                times[name].append(epoch(dataset, args.batch, run))
    median = {k: statistics.median(v) for k, v in times.items()}
    base = median["in-memory tensors"]
    print(f"MobileAgeNet, one epoch of {len(cached)} images at {args.size}x{args.size}, batch {args.batch}, "
          f"{args.runs} runs, median; {system.cpu_model()}, {system.cpu_count()} cores, torch {torch.__version__}, "
          f"Python {platform.python_version()}; cache build (once) {build:.1f} s")
    print(f"| reading | epoch (s) | vs in-memory |\n|---|---|---|")
    for name, value in median.items():
        print(f"| {name} | {value:.1f} | {value / base:.3f}x |")
    ratio = median["decode-once cache"] / base
    print(f"bar: cache/in-memory = {ratio:.3f} ({'meets' if ratio <= 1.15 else 'MISSES'} <= 1.15); "
          f"plain PIL / cache = {median['plain PIL'] / median['decode-once cache']:.3f}")


if __name__ == "__main__":
    main()
