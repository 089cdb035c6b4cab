"""UTKFace: find the images, label them from their names, split them, serve them from the cache."""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ab.nn.dataset import DataError, splits
from ab.nn.dataset.cache import open_or_build
from ab.nn.dataset.images import CachedImages
from ab.nn.dataset.settings import DataSettings
from ab.nn.dataset.sources import (ArchiveSource, Entry, FolderSource, ImageSource, ParquetSource, WildSource,
                                   is_image_name)
from ab.nn.dataset.utkface.names import Unparseable, parse

NAME = "utkface"
NATIVE_SIZE = 200
IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
FORMATS = ("the aligned & cropped images (UTKFace/*.jpg.chip.jpg), in the folder or in a UTKFace/ sub-folder",
           "the same packed as UTKFace.tar.gz, .tgz, .tar or .zip",
           "the Hugging Face parquet files of nu-delta/utkface (*.parquet or data/*.parquet)",
           "the in-the-wild images: part1/ part2/ part3/ folders of *.jpg and the landmark_list*.txt files")

log = logging.getLogger(__name__)


class DataNotFound(DataError, FileNotFoundError):
    """No UTKFace images where they were looked for; the message says where to put them."""


def _has_images(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_file() and is_image_name(p.name) for p in folder.iterdir())


def find_source(folder: Path) -> ImageSource:
    """The first UTKFace layout found in ``folder`` (see ``FORMATS``)."""
    try:
        return _find_source(folder)
    except PermissionError as error:
        raise DataError(f"cannot read the data folder {folder}: {error}") from None


def _find_source(folder: Path) -> ImageSource:
    if folder.is_dir():
        for candidate in (folder, folder / "UTKFace"):
            if _has_images(candidate):
                return FolderSource(candidate)
        archives = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(ARCHIVE_SUFFIXES))
        if archives:
            return ArchiveSource(archives[0])
        for candidate in (folder, folder / "data"):
            parquet = sorted(candidate.glob("*.parquet")) if candidate.is_dir() else []
            if parquet:
                return ParquetSource(tuple(parquet))
        wild = WildSource(folder)
        if any(_has_images(part) for part in wild.parts()) and wild.landmark_files():
            return wild
    accepted = "\n  - ".join(FORMATS)
    raise DataNotFound(
        f"no UTKFace images in {folder}. Put one of these there:\n  - {accepted}\n"
        f"or point --data-dir / $LEMUR_DATA at such a folder, or download where the network allows:\n"
        f"  python -m ab.nn.dataset.download utkface --to {folder}")


@dataclass
class Catalog:
    """The labelled entries of a source and what was skipped on the way."""

    source: ImageSource
    entries: list[Entry]
    ages: np.ndarray
    skipped: Counter = field(default_factory=Counter)
    total: int = 0


_catalogs: dict[str, Catalog] = {}
_reported: set[str] = set()


def catalog(source: ImageSource) -> Catalog:
    fingerprint = source.fingerprint()
    if fingerprint in _catalogs:
        return _catalogs[fingerprint]
    kept, ages, skipped = [], [], Counter()
    all_entries = source.entries()
    for entry in all_entries:
        if entry.age is not None:
            age = entry.age
        else:
            try:
                age = parse(entry.name).age
            except Unparseable as error:
                skipped[f"name without a readable age ({error.reason})"] += 1
                continue
        kept.append(entry)
        ages.append(age)
    skipped += source.skip_counts()
    result = Catalog(source, kept, np.asarray(ages, dtype=np.float32), skipped,
                     len(all_entries) + sum(source.skip_counts().values()))
    _catalogs[fingerprint] = result
    return result


@dataclass
class Parts:
    """The three parts of a split as datasets; ``test`` is empty for protocols without one."""

    train: CachedImages
    eval: CachedImages
    test: CachedImages
    fingerprint: str
    skipped: Counter


def _report(cat: Catalog, failures: Counter, key: str) -> None:
    total = cat.skipped + failures
    if not total or key in _reported:
        return
    _reported.add(key)
    detail = ", ".join(f"{n} {why}" for why, n in sorted(total.items()))
    log.warning("UTKFace: skipped %d of %d files in %s: %s", sum(total.values()), cat.total,
                cat.source.describe(), detail)


def load(folder: Path, cache_dir: Path, train_transform, eval_transform, settings: DataSettings,
         progress: bool | None = None) -> Parts:
    cat = catalog(find_source(folder))
    names = [e.name for e in cat.entries]
    parts = splits.assign(names, cat.ages.tolist(), settings)
    parts = {k: splits.sample(v, names, settings.max_samples, settings.seed) for k, v in parts.items()}
    selected = np.unique(np.concatenate(list(parts.values())))
    chosen = [cat.entries[i] for i in selected]
    position = {int(i): row for row, i in enumerate(selected)}

    caches = {}
    for transform in (train_transform, eval_transform):
        size = getattr(transform, "image_size", None) or NATIVE_SIZE
        if size not in caches:
            caches[size] = open_or_build(cat.source, chosen, size, cache_dir, settings.decode_threads,
                                         settings.progress if progress is None else progress)
    failures = Counter(next(iter(caches.values())).failures.values())
    bad = {i for cache in caches.values() for i in cache.failures}

    def dataset(part: str, transform) -> CachedImages:
        rows = [position[int(i)] for i in parts[part] if position[int(i)] not in bad]
        cache = caches[getattr(transform, "image_size", None) or NATIVE_SIZE]
        return CachedImages(cache, np.asarray(rows, dtype=np.int64), cat.ages[selected[rows]] if rows else np.zeros(0),
                            transform, [chosen[r].name for r in rows])

    fingerprint = cat.source.fingerprint()
    _report(cat, failures, f"{fingerprint}:{len(chosen)}")
    return Parts(train=dataset("train", train_transform), eval=dataset("eval", eval_transform),
                 test=dataset("test", eval_transform), fingerprint=fingerprint, skipped=cat.skipped + failures)
