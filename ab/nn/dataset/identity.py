"""Which images a result was judged on.

An image is identified by its content (SHA-256 of its encoded bytes; for an in-the-wild photo, of
the bytes and the crop box, and of the face template and detector when it is aligned), never by
where it was read from: a file name, an archive member or a parquet row of the same bytes is the
same image, so every layout gives the same split. A part of
a split (train, eval, test) is identified by the digest of its sorted image ids, and the data a
trial was judged on by its *data key*: dataset, split protocol, split seed, fold, sample cap and
the three part digests. Results are comparable only within one data key.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from tqdm.auto import tqdm

from ab.nn.dataset.settings import DataSettings
from ab.nn.util import atomic

PARTS = ("train", "eval", "test")
ID_LENGTH = 32  # hex digits (128 bits) of an image id
FORMAT_VERSION = 1


def image_id(data: bytes, box=None, recipe: str | None = None) -> str:
    """``recipe``: what else decides the pixels (``ImageSource.recipe``), so that the same photo made
    into other pixels is another image."""
    h = hashlib.sha256(data)
    if box is not None:
        h.update(f"|crop {tuple(box)}".encode())
    if recipe is not None:
        h.update(f"|{recipe}".encode())
    return h.hexdigest()[:ID_LENGTH]


def part_digest(ids: Iterable[str]) -> str:
    """Digest of a set of image ids (order-free): equal digests mean the same images."""
    h = hashlib.sha256()
    for value in sorted(ids):
        h.update(value.encode())
        h.update(b"\n")
    return h.hexdigest()


def data_key(dataset: str, settings: DataSettings, digests: Mapping[str, str | None] | None) -> str:
    """The comparability key of the data: 12 hex digits of the settings that choose the images and
    of the part digests (``None`` where they are unknown, e.g. trials recorded before digests)."""
    payload = {"dataset": dataset, "split": settings.label, "max_samples": settings.max_samples,
               "digests": [digests.get(p) for p in PARTS] if digests else None}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def image_ids(source, entries: list, cache_dir: Path, progress: bool = True) -> list[str | None]:
    """The content id of every entry (``None`` for an unreadable one), computed once per version of
    the source files and remembered under ``cache_dir``."""
    path = Path(cache_dir) / f"ids-{source.fingerprint()[:24]}.json"
    try:
        known = json.loads(path.read_text())
        if known.get("version") == FORMAT_VERSION and len(known.get("ids", ())) == len(entries):
            return [known["ids"].get(e.key) for e in entries]
    except (OSError, ValueError):
        pass
    ids: list[str | None] = [None] * len(entries)
    recipe = source.recipe()
    with tqdm(total=len(entries), desc="identifying images", unit="img", disable=not progress, leave=False) as bar:
        for i, blob in source.read(entries):
            ids[i] = image_id(blob, entries[i].box, recipe) if blob else None
            bar.update(1)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write(path, json.dumps({"version": FORMAT_VERSION, "ids": {e.key: i for e, i in zip(entries, ids)}}))
    except OSError:
        pass  # a read-only workspace: ids are computed again next time
    return ids


class DataMismatch(ValueError):
    """The data rebuilt now is not the data a trial was judged on; the message names both."""


@dataclass(frozen=True)
class DataIdentity:
    """The data a trial is judged on: what the comparability key is made of."""

    dataset: str
    settings: DataSettings
    digests: Mapping[str, str | None] | None = None
    counts: Mapping[str, int] | None = None
    skipped_log: str | None = field(default=None, compare=False)  # where the loader lists the files it skipped

    @property
    def key(self) -> str:
        return data_key(self.dataset, self.settings, self.digests)

    def to_json(self) -> dict:
        return {"dataset": self.dataset, "settings": asdict(self.settings),
                "digests": dict(self.digests) if self.digests is not None else None,
                "counts": dict(self.counts) if self.counts is not None else None}

    @classmethod
    def from_json(cls, value: dict) -> "DataIdentity":
        return cls(value["dataset"], DataSettings(**value["settings"]), value["digests"], value["counts"])

    def describe(self) -> str:
        parts = [self.dataset, f"split {self.settings.describe()}"]
        if self.counts:
            parts.append(f"{'/'.join(str(self.counts.get(p, 0)) for p in PARTS)} train/eval/test images")
        parts.append("image digests " + "/".join(self.digests[p][:8] for p in PARTS if self.digests.get(p))
                     if self.digests else "image lists unknown")
        return f"data key {self.key} ({', '.join(parts)})"

    def require_same(self, recorded: "DataIdentity", what: str) -> None:
        """Stop when the data rebuilt here differs from the data ``what`` was judged on. Trials recorded
        before digests existed are checked on the split settings alone."""
        same = (recorded.dataset, recorded.settings.label, recorded.settings.max_samples) == \
            (self.dataset, self.settings.label, self.settings.max_samples)
        if same and recorded.digests and self.digests:
            same = all(recorded.digests.get(p) == self.digests.get(p) for p in PARTS)
        if not same:
            raise DataMismatch(f"{what} was judged on {recorded.describe()}, but the data here is {self.describe()}; "
                               f"use the same data folder and split settings")
