"""A trial's preprocessed eval/test inputs, made once per export and written as .npy files that every
runtime reads, the measuring worker processes too: before, each worker imported PyTorch and loaded and
transformed the trial's images again (3.4 s of a measuring worker's start on our busy machine was the
import of PyTorch alone). Reading needs NumPy only, so a worker that runs beside TensorFlow (whose LLVM
aborts a process that has loaded PyTorch's) can read them too."""
from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_SEED = 0
"""The seed of the images an artifact's fidelity is measured on: fixed, so that every trial of a data key
is measured on the same images."""


class Sample:
    """The images at ``positions`` (ascending) of ``dataset``, with their ``image_ids`` where the dataset
    states them (``ab.nn.deploy.reference.from_recorded`` compares them). Not torch's ``Subset``: this
    module is read by the measuring worker beside TensorFlow, where PyTorch must not be imported."""

    def __init__(self, dataset, positions: np.ndarray):
        self.dataset, self.positions = dataset, positions
        ids = getattr(dataset, "image_ids", None)
        self.image_ids = None if ids is None or len(ids) != len(dataset) else [ids[int(i)] for i in positions]

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: int):
        return self.dataset[int(self.positions[index])]


def sample(dataset, count: int | None, seed: int = SAMPLE_SEED):
    """``dataset`` itself where ``count`` is ``None`` or not smaller, else a seeded ``Sample`` of ``count`` of
    its images in their order."""
    size = len(dataset)
    if count is None or count >= size:
        return dataset
    return Sample(dataset, np.sort(np.random.default_rng(seed).choice(size, count, replace=False)))


def write(splits: dict[str, object], folder: Path, batch: int) -> tuple[dict[str, Path], dict[str, np.ndarray]]:
    """Each split's inputs as ``folder/<split>.npy`` (NCHW float32, in the dataset's order) and its labels."""
    from torch.utils.data import DataLoader

    paths, labels = {}, {}
    for split, dataset in splits.items():
        path, ys, array, done = folder / f"{split}.npy", [], None, 0
        for x, y in DataLoader(dataset, batch_size=batch):
            if array is None:  # written in place, batch by batch: a large split never sits in memory whole
                array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                                  shape=(len(dataset), *x.shape[1:]))
            array[done:done + len(x)] = x.numpy()
            done += len(x)
            ys.append(y.reshape(-1).numpy())
        if array is None:
            np.save(path, np.zeros((0,), np.float32))
        else:
            array.flush()
            del array
        paths[split], labels[split] = path, np.concatenate(ys) if ys else np.zeros(0, np.float32)
    return paths, labels


def batches(path: Path, size: int):
    """The inputs at ``path`` in batches of ``size``, each a plain contiguous array."""
    inputs = np.load(path, mmap_mode="r")
    for start in range(0, len(inputs), size):
        yield np.array(inputs[start:start + size])


def predict(runtime, path: Path, size: int) -> np.ndarray:
    """``runtime``'s ages for every input at ``path``."""
    ages = [runtime.predict(x) for x in batches(path, size)]
    return np.concatenate(ages) if ages else np.zeros(0, np.float32)
