"""UTKFace: find the images, label them from their names, split them, serve them from the cache."""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ab.nn.dataset import DataError, identity, skipped as skip_log, splits
from ab.nn.dataset.cache import open_or_build
from ab.nn.dataset.settings import DataSettings
from ab.nn.dataset.sources import (Alignment, ArchiveSource, Entry, FolderSource, ImageSource, ParquetSource,
                                   WildSource, is_image_name)
from ab.nn.dataset.utkface import attributes
from ab.nn.dataset.utkface.names import Unparseable, parse

if TYPE_CHECKING:  # torch comes with the images, not with the labels (stat commands read labels only)
    from ab.nn.dataset.images import CachedImages

NAME = "utkface"
NATIVE_SIZE = 200
IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
FORMATS = ("the aligned & cropped images (UTKFace/*.jpg.chip.jpg), in the folder or in a UTKFace/ sub-folder",
           "the same packed as UTKFace.tar.gz, .tgz, .tar or .zip",
           "the Hugging Face parquet files of nu-delta/utkface (*.parquet or data/*.parquet)",
           "the in-the-wild images: part1/ part2/ part3/ folders of *.jpg and the landmark_list*.txt files")
BRIEF_FORMATS = ("UTKFace/*.jpg.chip.jpg, UTKFace.tar.gz (.tgz, .tar, .zip), nu-delta/utkface's *.parquet, or "
                 "part1/ part2/ part3/ with their landmark_list*.txt")
"""``FORMATS`` in one line, for one-line errors."""

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
    raise DataNotFound(f"no UTKFace images in {folder}: put {BRIEF_FORMATS} there (docs: guide/data.md), or "
                       f"download them: python -m ab.nn.dataset.download utkface --to {folder}")


def require_folder(folder: Path, flag: str = "--data-dir / $LEMUR_DATA") -> None:
    """An explicitly named data folder must exist: it is never created (nor downloaded into), as a
    typo would otherwise become a new, empty data folder."""
    if not folder.exists():
        raise DataNotFound(f"the data folder {folder} ({flag}) does not exist; name the folder that holds the "
                           f"UTKFace images, or leave {flag} unset to use the workspace's data/utkface")
    if not folder.is_dir():
        raise DataNotFound(f"the data folder {folder} ({flag}) is a file, not a folder")


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
            reason = " ".join(str(error).split())
            raise DataNotFound(f"{missing}; the automatic download failed too ({reason}); --no-download skips "
                               f"it") from None
        return find_source(folder)


@dataclass
class Catalog:
    """The labelled, readable entries of a source, their content ids, their gender and race labels
    (``attributes``), and what was skipped (each skipped file named in the ``skipped_log`` file)."""

    source: ImageSource
    entries: list[Entry]
    ages: np.ndarray
    ids: list[str]
    skipped: Counter = field(default_factory=Counter)
    total: int = 0
    attributes: list[attributes.Attributes] = field(default_factory=list)
    skipped_log: Path | None = None


_catalogs: dict[str, Catalog] = {}
_reported: set[str] = set()


def catalog(source: ImageSource, cache_dir: Path, progress: bool = True) -> Catalog:
    fingerprint = source.fingerprint()
    if fingerprint in _catalogs:
        return _catalogs[fingerprint]
    labelled, ages, skipped, named = [], [], Counter(), []
    all_entries = source.entries()
    for entry in all_entries:
        if entry.age is not None:
            age = entry.age
        else:
            try:
                age = parse(entry.name).age
            except Unparseable as error:
                skipped[f"name without a readable age ({error.reason})"] += 1
                named.append((entry.key, f"name without a readable age ({error.reason})"))
                continue
        labelled.append(entry)
        ages.append(age)
    ids = identity.image_ids(source, labelled, cache_dir, progress)
    readable = [i for i, image in enumerate(ids) if image is not None]
    if len(readable) < len(labelled):
        skipped["unreadable file"] += len(labelled) - len(readable)
        named += [(entry.key, "unreadable file") for entry, image in zip(labelled, ids) if image is None]
    skipped += source.skip_counts()
    log_file = skip_log.log_path(cache_dir, fingerprint)
    skip_log.record(log_file, named)
    result = Catalog(source, [labelled[i] for i in readable], np.asarray([ages[i] for i in readable], np.float32),
                     [ids[i] for i in readable], skipped, len(all_entries) + sum(source.skip_counts().values()),
                     [attributes.of_entry(labelled[i], ages[i]) for i in readable], log_file)
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


def require_readable(split: SplitPlan) -> None:
    """Stop before any trial when not one image of the split decodes (a folder of files named .jpg
    that are not images): decodes the planned images in order until the first that does, so a
    usable folder costs one decode. The failures are added to the skipped-files log."""
    cat = split.catalog
    planned = np.unique(np.concatenate(list(split.parts.values()))) if split.parts else np.zeros(0, np.int64)
    entries = [cat.entries[i] for i in planned]
    if not entries:
        raise DataError(f"no usable UTKFace images in {cat.source.describe()}: {_skip_summary(cat.skipped)} of "
                        f"{cat.total} files skipped, listed in {cat.skipped_log}")
    failed: list[tuple[str, str]] = []
    for i, blob in cat.source.read(entries):
        try:
            cat.source.decode(blob, 8, entries[i])
            return
        except Exception as error:  # any decoder failure: the file is not an image
            failed.append((entries[i].key, f"undecodable image: {type(error).__name__}"))
    skip_log.record(cat.skipped_log, failed)
    raise DataError(f"none of the {len(entries)} images of the split in {cat.source.describe()} can be decoded "
                    f"(e.g. {failed[0][0] if failed else entries[0].key}); each is listed in {cat.skipped_log}")


def _skip_summary(counts: Counter) -> str:
    return ", ".join(f"{n} {why}" for why, n in sorted(counts.items())) or "none"


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
    log.warning("UTKFace: skipped %d of %d files in %s: %s; listed in %s", sum(total.values()), cat.total,
                cat.source.describe(), _skip_summary(total), cat.skipped_log)


@dataclass
class Decoded:
    """A split's images decoded into the cache at each size asked: what its datasets are made of."""

    split: SplitPlan
    selected: np.ndarray  # catalog indices of the split's images, sorted
    chosen: list[Entry]  # their entries, in that order (a cache's rows)
    caches: dict  # image size -> ImageCache
    failures: Counter  # why images did not decode, counted
    fingerprint: str


def decode(folder: Path, cache_dir: Path, sizes, settings: DataSettings, progress: bool | None = None,
           alignment: Alignment | None = None) -> Decoded:
    """The split's images decoded once into the cache at each of ``sizes`` (``None``: the native size), the
    undecodable ones logged. No dataset is made, so no torch is needed: a runner prepares its sandboxed
    trials' images with this (``ab.nn.dataset.trial_data.prepare``)."""
    progress = settings.progress if progress is None else progress
    split = plan(folder, cache_dir, settings, progress, alignment)
    cat, parts = split.catalog, split.parts
    selected = np.unique(np.concatenate(list(parts.values())))
    chosen = [cat.entries[i] for i in selected]
    caches = {}
    for size in sizes:
        size = size or NATIVE_SIZE
        if size not in caches:
            caches[size] = open_or_build(cat.source, chosen, size, cache_dir, settings.decode_threads, progress)
    failures = Counter(next(iter(caches.values())).failures.values())
    skip_log.record(cat.skipped_log, [(chosen[i].key, why) for cache in caches.values()
                                         for i, why in cache.failures.items()])
    fingerprint = cat.source.fingerprint()
    _report(cat, failures, f"{fingerprint}:{len(chosen)}")
    return Decoded(split, selected, chosen, caches, failures, fingerprint)


def load(folder: Path, cache_dir: Path, train_transform, eval_transform, settings: DataSettings,
         progress: bool | None = None, alignment: Alignment | None = None) -> Parts:
    """The split's three parts, decoded once into the cache; ``alignment``: how ``settings.align``
    aligns in-the-wild photos (onto the workspace's face template)."""
    decoded = decode(folder, cache_dir, [getattr(t, "image_size", None) for t in (train_transform, eval_transform)],
                     settings, progress, alignment)
    cat, parts, selected, chosen = decoded.split.catalog, decoded.split.parts, decoded.selected, decoded.chosen
    position = {int(i): row for row, i in enumerate(selected)}
    bad = {i for cache in decoded.caches.values() for i in cache.failures}

    def dataset(part: str, transform) -> CachedImages:
        from ab.nn.dataset.images import CachedImages

        rows = [position[int(i)] for i in parts[part] if position[int(i)] not in bad]
        cache = decoded.caches[getattr(transform, "image_size", None) or NATIVE_SIZE]
        return CachedImages(cache, np.asarray(rows, dtype=np.int64), cat.ages[selected[rows]] if rows else np.zeros(0),
                            transform, [chosen[r].name for r in rows], [cat.ids[selected[r]] for r in rows],
                            [cat.attributes[selected[r]] for r in rows])

    return Parts(train=dataset("train", train_transform), eval=dataset("eval", eval_transform),
                 test=dataset("test", eval_transform), fingerprint=decoded.fingerprint, digests=decoded.split.digests,
                 skipped=cat.skipped + decoded.failures)