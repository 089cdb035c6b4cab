"""Replica groups (``--seeds N``): one hyperparameter set trained with N training seeds. A group cut
short is completed first, with its own hyperparameters and exactly its missing seeds, by any worker
whose own fixed values agree with it."""
from __future__ import annotations

from dataclasses import dataclass

from ab.nn.config import Config
from ab.nn.stat.store import StatStore


@dataclass(frozen=True)
class Group:
    """A replica group to complete: its id (its first trial's), that trial's seed, hyperparameters and
    sampled values (our record of them), and the replica positions (seed offsets) it still lacks."""
    id: int
    seed: int
    prm: dict
    search_params: str | None
    missing: list[int]


def unfinished(store: StatStore, config: Config, epochs: int, data_key: str, seeds: int, fixed: dict,
               transforms) -> Group | None:
    """The first group of this config, budget and data whose first trial trained or is training and
    which lacks some of its ``seeds`` replicas, among those this worker could have started itself
    (its ``fixed`` values and ``transforms`` agree with the group's)."""
    if seeds < 2:
        return None
    for group in store.replica_groups(config, epochs, data_key):
        taken = {seed - group["seed"] for seed in group["seeds"]}
        missing = [r for r in range(seeds) if r not in taken]
        if not missing:
            continue
        prm = store.trial_prm(group["id"])
        if prm and agrees(prm, fixed, transforms):
            return Group(group["id"], group["seed"], prm, group["search_params"], missing)
    return None


def agrees(prm: dict, fixed: dict, transforms) -> bool:
    """Whether these hyperparameters agree with a worker's fixed values (``-p``) and transforms (``-f``).
    How the training images were drawn (``balance``) must match whether or not it was fixed: a plain
    trial is no replica of a balanced one."""
    if any(name in prm and prm[name] != value for name, value in fixed.items()):
        return False
    if prm.get("balance") != fixed.get("balance"):
        return False
    return not transforms or prm.get("transform") in transforms
