"""Split protocols: which images train, which select models (eval), which are held out (test).

- ``paper``: age-stratified 70/10/20 (5-year age bins), the MobileAgeNet authors' protocol.
- ``lemur``: LEMUR 2.2.11's UTKFace split (``ab/nn/loader/utkface.py`` of nn-dataset 2.2.11),
  exactly: 5-year age bins in order of first appearance, each shuffled in place by one
  ``random.Random(seed)``, 70/10/20 per bin with ``int(round(n * 0.7))`` and LEMUR's small-bin rules,
  then the three parts shuffled by the same generator. It is defined on the **source row order**
  (parquet: file then row; folder and archive: sorted names) of the images with an age in [0, 116],
  so it equals LEMUR's membership only on LEMUR's own rows in LEMUR's order (its Hugging Face
  parquet, ``nu-delta/utkface``).
- ``lemur-random``: LEMUR's older ``random_split(70/30)`` with a seeded ``torch.Generator`` over the
  source order; no test part (what ``lemur`` meant before LEMUR 2.2.11; trials recorded then are
  relabelled ``lemur-random`` by migration 4).
- ``kfold``: ``folds`` age-stratified parts; fold ``f`` tests on part ``f``, selects on part
  ``f+1`` and trains on the rest (60/20/20 for five folds), in the spirit of Paplham & Franc's
  unified benchmark (CVPR 2024).

``paper`` and ``kfold`` rank the images of each age bin by a seeded hash of their content ids
(``ab.nn.dataset.identity``), and give each bin its share of every part by cumulative rounding
over the bins (so the parts have the exact global proportions even when bins are tiny). Those splits
depend on (protocol, split seed, image contents) only, never on the layout or the order the images
were read in, and adding images moves at most a boundary image per bin.
"""
from __future__ import annotations

import hashlib
import random
from collections import defaultdict

import numpy as np

from ab.nn.dataset.identity import PARTS
from ab.nn.dataset.settings import DataSettings

AGE_BIN_YEARS = 5
LEMUR_MAX_AGE = 116.0


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


def lemur_stratified(ages: list[float], seed: int, train: float = 0.70,
                     val: float = 0.10) -> tuple[list[int], list[int], list[int]]:
    """LEMUR 2.2.11's ``_stratified_split_indices(ages, 0.70, 0.10, seed=42)``: positions into
    ``ages`` for train, val (LEMUR's evaluation part) and test (its ``held_out_test``)."""
    rng = random.Random(seed)
    bins: dict[int, list[int]] = {}
    for index, age in enumerate(ages):
        bins.setdefault(int(age // AGE_BIN_YEARS), []).append(index)
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    for members in bins.values():
        rng.shuffle(members)
        n = len(members)
        n_train, n_val = int(round(n * train)), int(round(n * val))
        if n >= 3:
            n_train = min(max(1, n_train), n - 2)
            n_val = min(max(1, n_val), n - n_train - 1)
        else:
            n_train, n_val = 1, 0
        parts[0].extend(members[:n_train])
        parts[1].extend(members[n_train:n_train + n_val])
        parts[2].extend(members[n_train + n_val:])
    for part in parts:
        rng.shuffle(part)
    return parts


def assign(ids: list[str], ages: list[int], settings: DataSettings) -> dict[str, np.ndarray]:
    """Indices into ``ids`` (image content ids) for each part (``train``, ``eval``, ``test``)."""
    if settings.split == "lemur":  # LEMUR keeps the rows with an age in [0, 116], in source order
        kept = [i for i, age in enumerate(ages) if 0.0 <= float(age) <= LEMUR_MAX_AGE]
        parts = lemur_stratified([float(ages[i]) for i in kept], settings.split_seed)
        return _as_parts(*([kept[j] for j in part] for part in parts))
    if settings.split == "lemur-random":
        import torch  # only for LEMUR's older split: reading labels and splits needs no torch

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
