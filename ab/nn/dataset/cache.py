"""Decode-once image cache: every image decoded and resized once into a memory-mapped uint8 array.

Keyed by (source fingerprint, image size, the entries selected), so later epochs and trials read
arrays instead of JPEGs. The array file and a JSON sidecar are written under temporary names and
renamed into place (the sidecar last); a sidecar records the data's size and BLAKE2 digest, so a
truncated or altered cache is detected on open and rebuilt, never used. Images that cannot be
decoded are recorded in the sidecar and skipped by the datasets built on the cache.

The build claims its disk space before writing a pixel (``posix_fallocate``): a full disk is a
one-line error naming the folder and the bytes needed, never a SIGBUS from a memory-mapped page
that has no block behind it. Temporary files go on every exit path; those of builds that died on
this machine are removed by the next build here (the temporary names say which machine and
process wrote them, so a build on another host sharing the folder is never taken for a dead one).

A sandboxed trial sees the cache folder read-only: a cache it lacks is built by its runner, whom it
asks through ``builder`` (``ab.nn.sweep.trial_child``), never by the trial itself.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ab.nn.dataset import DataError
from ab.nn.util import atomic, processes
from ab.nn.util.filelock import locked
from ab.nn.util.scoped import Scoped
from ab.nn.dataset.sources import Entry, ImageSource, open_image

FORMAT_VERSION = 1
_verified: set[tuple[str, int, int]] = set()
builder = Scoped[object]("image cache builder", lambda: None)
"""Who builds a missing cache: None, this process; else a function of the image size that has it built
elsewhere (a sandboxed trial's runner)."""


@dataclass
class ImageCache:
    path: Path
    size: int
    count: int
    failures: dict[int, str]

    def array(self) -> np.ndarray:
        """Read-only view of the images, shape (count, size, size, 3), opened lazily per process."""
        if self.count == 0:
            return np.zeros((0, self.size, self.size, 3), dtype=np.uint8)
        return np.memmap(self.path, dtype=np.uint8, mode="r", shape=(self.count, self.size, self.size, 3))

    @property
    def valid(self) -> np.ndarray:
        mask = np.ones(self.count, dtype=bool)
        mask[list(self.failures)] = False
        return mask


def cache_key(source: ImageSource, entries: list[Entry], size: int) -> str:
    h = hashlib.sha256(f"v{FORMAT_VERSION}|{source.fingerprint()}|{size}|".encode())
    for entry in entries:
        h.update(f"{entry.key}|{entry.box}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:24]


def decode_resized(data: bytes, size: int, box=None) -> np.ndarray:
    from PIL import Image

    image = open_image(data, box).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def _digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _open_existing(data: Path, meta_path: Path, size: int, count: int) -> ImageCache | None:
    if not (data.exists() and meta_path.exists()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    expected = count * size * size * 3
    st = data.stat()
    if meta.get("version") != FORMAT_VERSION or meta.get("bytes") != expected or st.st_size != expected:
        return None
    stamp = (str(data), st.st_size, st.st_mtime_ns)
    if stamp not in _verified:
        if _digest(data) != meta.get("blake2b"):
            return None
        _verified.add(stamp)
    failures = {int(k): v for k, v in meta.get("failures", {}).items()}
    return ImageCache(path=data, size=size, count=count, failures=failures)


def open_or_build(source: ImageSource, entries: list[Entry], size: int, cache_dir: Path,
                  threads: int = 0, progress: bool = True) -> ImageCache:
    """The cache of ``entries`` at ``size``; built (once, under a file lock) when missing or damaged."""
    key = cache_key(source, entries, size)
    data, meta_path = cache_dir / f"{key}.u8", cache_dir / f"{key}.json"
    found = _open_existing(data, meta_path, size, len(entries))
    if found is not None:
        return found
    elsewhere = builder.current()
    if elsewhere is not None:
        elsewhere(size)
        found = _open_existing(data, meta_path, size, len(entries))
        if found is None:
            raise DataError(f"the {size}px image cache in {cache_dir} was asked for but not built")
        return found
    cache_dir.mkdir(parents=True, exist_ok=True)
    with locked(cache_dir / f"{key}.lock"):
        found = _open_existing(data, meta_path, size, len(entries))  # another process may have built it
        if found is not None:
            return found
        return _build(source, entries, size, data, meta_path, threads, progress)


class CacheSpaceError(DataError):
    """The disk cannot hold the image cache; the message names the folder and the bytes needed."""


def _remove_stale(folder: Path) -> None:
    """Temporary files of builds on this machine whose process is gone (killed, out of memory)."""
    for tmp in folder.glob(f"*{processes.TEMP}*"):
        if processes.abandoned(tmp):
            tmp.unlink(missing_ok=True)


def _reserve(path: Path, nbytes: int, size: int) -> None:
    """Create ``path`` with ``nbytes`` of disk space already allocated."""
    try:
        with open(path, "wb") as f:
            if nbytes:
                os.posix_fallocate(f.fileno(), 0, nbytes)
    except OSError as error:
        path.unlink(missing_ok=True)
        if error.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        free = shutil.disk_usage(path.parent).free
        raise CacheSpaceError(f"not enough space for the {size}px image cache in {path.parent}: "
                                           f"{nbytes:,} bytes needed, {free:,} free ({os.strerror(error.errno)}); "
                                           f"free some space or use another --root") from None


def _build(source, entries, size, data: Path, meta_path: Path, threads: int, progress: bool) -> ImageCache:
    tmp = processes.temp_path(data)
    _remove_stale(data.parent)
    try:
        return _fill(source, entries, size, data, meta_path, tmp, threads, progress)
    finally:
        tmp.unlink(missing_ok=True)


def _fill(source, entries, size, data: Path, meta_path: Path, tmp: Path, threads: int,
          progress: bool) -> ImageCache:
    count = len(entries)
    nbytes = count * size * size * 3
    _reserve(tmp, nbytes, size)
    array = np.memmap(tmp, dtype=np.uint8, mode="r+", shape=(max(count, 1), size, size, 3)) if count else None
    failures: dict[int, str] = {}
    seen = np.zeros(count, dtype=bool)
    workers = threads or os.cpu_count() or 1

    def store(i: int, future) -> None:
        try:
            array[i] = future.result()
        except Exception as error:  # a broken image is data, not a crash: record and go on
            failures[i] = f"undecodable image: {type(error).__name__}"
            array[i] = 0
        seen[i] = True

    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=count, desc=f"decoding {size}px cache", unit="img", disable=not progress, leave=False) as bar:
        pending: deque = deque()
        for i, blob in source.read(entries):
            if not blob:
                failures[i] = "unreadable file"
                seen[i] = True
                bar.update(1)
                continue
            pending.append((i, pool.submit(source.decode, blob, size, entries[i])))
            while len(pending) > 4 * workers:
                store(*pending.popleft())
                bar.update(1)
        while pending:
            store(*pending.popleft())
            bar.update(1)
    for i in np.flatnonzero(~seen):
        failures[int(i)] = "missing from source"
    if array is not None:
        array.flush()
        del array
    os.replace(tmp, data)
    meta = {"version": FORMAT_VERSION, "source": source.describe(), "size": size, "count": count,
            "bytes": count * size * size * 3, "blake2b": _digest(data),
            "failures": {str(k): v for k, v in sorted(failures.items())}}
    atomic.write(meta_path, json.dumps(meta, indent=1))
    st = data.stat()
    _verified.add((str(data), st.st_size, st.st_mtime_ns))
    return ImageCache(path=data, size=size, count=count, failures=failures)
