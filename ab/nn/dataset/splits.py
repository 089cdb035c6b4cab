"""Split protocols: which images train, which select models (eval), which are held out (test).

- ``paper``: age-stratified 70/10/20 (5-year age bins), the MobileAgeNet authors' protocol.
- ``lemur``: LEMUR's ``random_split(70/30)`` with a seeded ``torch.Generator`` over the source
  order; no test part. Identical to LEMUR's split when read from the same parquet files.
- ``kfold``: ``folds`` age-stratified parts; fold ``f`` tests on part ``f``, selects on part
  ``f+1`` and trains on the rest (60/20/20 for five folds), in the spirit of Paplham & Franc's
  unified benchmark (CVPR 2024).

Stratified protocols rank the images of each age bin by a seeded hash of their content ids
(``ab.nn.dataset.identity``), and give each bin its share of every part by cumulative rounding
over the bins (so the parts have the exact global proportions even when bins are tiny). The split
depends on (protocol, split seed, image contents) only, never on the layout or the order the images
were read in, and adding images moves at most a boundary image per bin.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np
import torch

from ab.nn.dataset.identity import PARTS
from ab.nn.dataset.settings import DataSettings

AGE_BIN_YEARS = 5


def _rank_key(seed: int, image: str) -> tuple[int, str]:
    digest = hashlib.blake2b(f"{seed}:{image}".encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big"), image


def _strata(ids: list[str], ages: list[int], seed: int) -> list[list[int]]:
    bins: dict[int, list[int]] = defaultdict(list)
    for i, age in enumerate(ages):
        bins[int(age) // AGE_BIN_YEARS].append(i)
    return [sorted(members, key=lambda i: _rank_key(seed, ids[i])) for _, members in sorted(bins.items())]


def _as_parts(train, eval_, test) -> dict[str, np.ndarray]:
    return {part: np.array(sorted(idx), dtype=np.int64) for part, idx in zip(PARTS, (train, eval_, test))}


def assign(ids: list[str], ages: list[int], settings: DataSettings) -> dict[str, np.ndarray]:
    """Indices into ``ids`` (image content ids) for each part (``train``, ``eval``, ``test``)."""
    if settings.split == "lemur":
        generator = torch.Generator().manual_seed(settings.split_seed)
        train, eval_ = torch.utils.data.random_split(range(len(ids)), [0.7, 0.3], generator=generator)
        return _as_parts(list(train), list(eval_), [])
    train, eval_, test = [], [], []
    before = 0
    for members in _strata(ids, ages, settings.split_seed):
        n, after = len(members), before + len(members)
        if settings.split == "paper":
            a = round(0.7 * after) - round(0.7 * before)
            b = min(n, max(a, round(0.8 * after) - round(0.8 * before)))
            train += members[:a]
            eval_ += members[a:b]
            test += members[b:]
        else:
            for rank, i in enumerate(members):
                part = (before + rank) % settings.folds
                if part == settings.fold:
                    test.append(i)
                elif part == (settings.fold + 1) % settings.folds:
                    eval_.append(i)
                else:
                    train.append(i)
        before = after
    return _as_parts(train, eval_, test)


def sample(indices: np.ndarray, ids: list[str], limit: int | None, seed: int) -> np.ndarray:
    """At most ``limit`` of ``indices``, chosen by the same seeded content hash (a uniform sample)."""
    if limit is None or len(indices) <= limit:
        return indices
    chosen = sorted(indices.tolist(), key=lambda i: _rank_key(seed + 1, ids[i]))[:limit]
    return np.array(sorted(chosen), dtype=np.int64)
