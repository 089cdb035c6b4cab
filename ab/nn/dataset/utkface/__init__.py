"""UTKFace: find the images, label them from their names, split them, serve them from the cache."""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ab.nn.dataset import DataError, identity, splits
from ab.nn.dataset.cache import open_or_build
from ab.nn.dataset.images import CachedImages
from ab.nn.dataset.settings import DataSettings
from ab.nn.dataset.sources import (Alignment, ArchiveSource, Entry, FolderSource, ImageSource, ParquetSource,
                                   WildSource, is_image_name)
from ab.nn.dataset.utkface import attributes
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


def available(folder: Path, settings: DataSettings, alignment: Alignment | None = None) -> ImageSource:
    """The images in ``folder``; when there are none and ``settings.download``, LEMUR's parquet files of
    UTKFace are downloaded there first (``ab.nn.dataset.download``). Offline, or with ``--no-download``,
    the error is ``find_source``'s, which says where to put which files. With ``settings.align`` the
    in-the-wild photos are aligned by ``alignment`` (``aligned``)."""
    source = _located(folder, settings)
    return aligned(source, alignment) if settings.align else source


def aligned(source: ImageSource, alignment: Alignment | None) -> WildSource:
    """``--align``: the in-the-wild photos detected and aligned onto the face template as
    ``python -m ab.nn.predict`` does, instead of cropped around their landmark lists."""
    if not isinstance(source, WildSource):
        raise DataError(f"--align aligns UTKFace's in-the-wild photos (part1/ part2/ part3/ with their landmark "
                        f"lists); {source.describe()} holds {source.kind} images, which are aligned already: "
                        f"train without --align")
    if alignment is None:
        raise DataError("--align needs a face alignment template, and none was given")
    source = replace(source, alignment=alignment)
    try:
        source.recipe()
    except ValueError as error:
        raise DataError(f"--align: {error}; measure it again with python -m ab.nn.face.template") from None
    except (OSError, RuntimeError) as error:  # no template, no detector (Alignment.recipe)
        raise DataError(f"--align: {error}") from None
    return source


def _located(folder: Path, settings: DataSettings) -> ImageSource:
    try:
        return find_source(folder)
    except DataNotFound as missing:
        if not settings.download:
            raise
        from ab.nn.dataset import download

        try:
            download.fetch(download.UTKFACE, folder, progress=settings.progress)
        except (download.DownloadError, OSError) as error:
            raise DataNotFound(f"{missing}\nThe automatic download failed too ({error}); --no-download skips "
                               f"it") from None
        return find_source(folder)


@dataclass
class Catalog:
    """The labelled, readable entries of a source, their content ids, their gender and race labels
    (``attributes``), and what was skipped."""

    source: ImageSource
    entries: list[Entry]
    ages: np.ndarray
    ids: list[str]
    skipped: Counter = field(default_factory=Counter)
    total: int = 0
    attributes: list[attributes.Attributes] = field(default_factory=list)


_catalogs: dict[str, Catalog] = {}
_reported: set[str] = set()


def catalog(source: ImageSource, cache_dir: Path, progress: bool = True) -> Catalog:
    fingerprint = source.fingerprint()
    if fingerprint in _catalogs:
        return _catalogs[fingerprint]
    labelled, ages, skipped = [], [], Counter()
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
        labelled.append(entry)
        ages.append(age)
    ids = identity.image_ids(source, labelled, cache_dir, progress)
    readable = [i for i, image in enumerate(ids) if image is not None]
    if len(readable) < len(labelled):
        skipped["unreadable file"] += len(labelled) - len(readable)
    skipped += source.skip_counts()
    result = Catalog(source, [labelled[i] for i in readable], np.asarray([ages[i] for i in readable], np.float32),
                     [ids[i] for i in readable], skipped, len(all_entries) + sum(source.skip_counts().values()),
                     [attributes.of_entry(labelled[i], ages[i]) for i in readable])
    _catalogs[fingerprint] = result
    return result


def labels(folder: Path, cache_dir: Path, settings: DataSettings, template: Path | None = None) -> dict:
    """Gender and race labels (``attributes.Attributes``) of every labelled, readable image in ``folder``,
    by content id, as ``settings`` read them (``--align`` changes the ids); nothing is decoded or
    downloaded."""
    source = available(folder, replace(settings, download=False), template)
    cat = catalog(source, cache_dir, settings.progress)
    return dict(zip(cat.ids, cat.attributes))


@dataclass
class SplitPlan:
    """Which catalog entries each part holds (after ``--max-samples``), before any decoding; the part
    digests identify the data (undecodable images are a function of the bytes, so the digests of the
    planned parts also fix what a trial actually uses)."""

    catalog: Catalog
    parts: dict[str, np.ndarray]
    digests: dict[str, str]

    @property
    def counts(self) -> dict[str, int]:
        return {part: len(indices) for part, indices in self.parts.items()}


def plan(folder: Path, cache_dir: Path, settings: DataSettings, progress: bool = True,
         alignment: Alignment | None = None) -> SplitPlan:
    cat = catalog(available(folder, settings, alignment), cache_dir, progress)
    parts = splits.assign(cat.ids, cat.ages.tolist(), settings)
    parts = {k: splits.sample(v, cat.ids, settings.max_samples, settings.split_seed) for k, v in parts.items()}
    digests = {k: identity.part_digest(cat.ids[i] for i in v) for k, v in parts.items()}
    return SplitPlan(cat, parts, digests)


@dataclass
class Parts:
    """The three parts of a split as datasets; ``test`` is empty for protocols without one."""

    train: CachedImages
    eval: CachedImages
    test: CachedImages
    fingerprint: str
    digests: dict[str, str]
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
         progress: bool | None = None, alignment: Alignment | None = None) -> Parts:
    """The split's three parts, decoded once into the cache; ``alignment``: how ``settings.align``
    aligns in-the-wild photos (onto the workspace's face template)."""
    progress = settings.progress if progress is None else progress
    split = plan(folder, cache_dir, settings, progress, alignment)
    cat, parts = split.catalog, split.parts
    selected = np.unique(np.concatenate(list(parts.values())))
    chosen = [cat.entries[i] for i in selected]
    position = {int(i): row for row, i in enumerate(selected)}

    caches = {}
    for transform in (train_transform, eval_transform):
        size = getattr(transform, "image_size", None) or NATIVE_SIZE
        if size not in caches:
            caches[size] = open_or_build(cat.source, chosen, size, cache_dir, settings.decode_threads, progress)
    failures = Counter(next(iter(caches.values())).failures.values())
    bad = {i for cache in caches.values() for i in cache.failures}

    def dataset(part: str, transform) -> CachedImages:
        rows = [position[int(i)] for i in parts[part] if position[int(i)] not in bad]
        cache = caches[getattr(transform, "image_size", None) or NATIVE_SIZE]
        return CachedImages(cache, np.asarray(rows, dtype=np.int64), cat.ages[selected[rows]] if rows else np.zeros(0),
                            transform, [chosen[r].name for r in rows], [cat.ids[selected[r]] for r in rows],
                            [cat.attributes[selected[r]] for r in rows])

    fingerprint = cat.source.fingerprint()
    _report(cat, failures, f"{fingerprint}:{len(chosen)}")
    return Parts(train=dataset("train", train_transform), eval=dataset("eval", eval_transform),
                 test=dataset("test", eval_transform), fingerprint=fingerprint, digests=split.digests,
                 skipped=cat.skipped + failures)
