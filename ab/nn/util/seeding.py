"""Seeds for everything random in a trial, so that a fixed ``-p`` and ``--seed`` repeat a result."""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def seed_worker(_worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: derive numpy/random seeds from the worker's torch seed."""
    seed = torch.initial_seed() % (2 ** 32)
    random.seed(seed)
    np.random.seed(seed)


def worker_init(worker_id: int, parent: int | None = None) -> None:
    """DataLoader ``worker_init_fn`` (bind ``parent``, the trial process's pid): seeds, and the worker dies
    with its trial (never an orphan, even when the trial died while the worker was starting)."""
    from ab.nn.util import faults
    from ab.nn.util.processes import die_with_parent

    faults.point("workers")  # a fault test kills the trial here, before the worker could bind to it
    die_with_parent(parent)
    seed_worker(worker_id)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
