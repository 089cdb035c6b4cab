"""Where encoded images come from: a folder, a tar/zip archive, or parquet files.

A source lists its entries in a stable order (sorted names, or file-then-row order for parquet),
fingerprints its files cheaply (names, sizes, modification times) so caches know when to rebuild,
and yields encoded bytes in whatever order reads them fastest (an archive is read front to back).
"""
from __future__ import annotations

import hashlib
import tarfile
import zipfile
from collections import Counter
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Protocol

from ab.nn.dataset.decode import open_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Entry:
    """One image: ``name`` carries the label for file-name datasets, ``age`` where a column does."""

    name: str
    key: str
    age: int | None = None
    box: tuple[int, int, int, int] | None = None  # crop (left, top, right, bottom) before resizing
    columns: tuple[tuple[str, object], ...] | None = None  # a table row's label columns besides the age


def is_image_name(name: str) -> bool:
    return name.strip().lower().endswith(IMAGE_SUFFIXES) and not Path(name).name.startswith(".")


def _digest(parts: Iterable[str]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return h.hexdigest()


def _file_signature(path: Path) -> str:
    st = path.stat()
    return f"{path.name}:{st.st_size}:{st.st_mtime_ns}"


def _read_files(folder: Path, entries: list[Entry]) -> Iterator[tuple[int, bytes]]:
    """Entries whose keys are paths under ``folder``; an unreadable file yields no bytes."""
    for i, entry in enumerate(entries):
        try:
            yield i, (folder / entry.key).read_bytes()
        except OSError:
            yield i, b""


class ImageSource(ABC):
    kind: str
    skipped: Counter  # entries left out while listing, by reason (set by sources that skip any)

    @abstractmethod
    def entries(self) -> list[Entry]:
        ...

    @abstractmethod
    def fingerprint(self) -> str:
        ...

    @abstractmethod
    def read(self, entries: list[Entry]) -> Iterator[tuple[int, bytes]]:
        """``(position in entries, encoded bytes)`` for every entry that can be read."""

    def recipe(self) -> str | None:
        """What besides an entry's bytes and box decides its pixels (``None``: nothing); it enters the
        image's content id (``identity.image_id``), so the same photo made into other pixels never
        shares a data key with them."""
        return None

    def decode(self, data: bytes, size: int, entry: Entry):
        """The entry's pixels, uint8 (size, size, 3): cropped to its box if it has one, then PIL-
        bilinear resized. Called from several threads at once."""
        from ab.nn.dataset.cache import decode_resized

        return decode_resized(data, size, entry.box)

    def describe(self) -> str:
        return f"{self.kind} {self.location}"

    def skip_counts(self) -> Counter:
        return getattr(self, "skipped", None) or Counter()


@dataclass
class FolderSource(ImageSource):
    location: Path
    kind = "folder"

    def _files(self) -> list[Path]:
        return sorted((p for p in self.location.iterdir() if p.is_file() and is_image_name(p.name)),
                      key=lambda p: p.name)

    def entries(self) -> list[Entry]:
        return [Entry(name=p.name, key=p.name) for p in self._files()]

    def fingerprint(self) -> str:
        return _digest(["folder"] + [_file_signature(p) for p in self._files()])

    def read(self, entries):
        return _read_files(self.location, entries)


@dataclass
class ArchiveSource(ImageSource):
    """A ``.tar``, ``.tar.gz``/``.tgz`` or ``.zip`` of images, read in place."""

    location: Path
    kind = "archive"

    @property
    def is_zip(self) -> bool:
        return self.location.suffix.lower() == ".zip"

    def entries(self) -> list[Entry]:
        if self.is_zip:
            with zipfile.ZipFile(self.location) as archive:
                members = [m.filename for m in archive.infolist() if not m.is_dir()]
        else:
            with tarfile.open(self.location) as archive:
                members = [m.name for m in archive.getmembers() if m.isfile()]
        members = [m for m in members if is_image_name(Path(m).name) and "__MACOSX" not in m]
        return sorted((Entry(name=Path(m).name, key=m) for m in members), key=lambda e: (e.name, e.key))

    def fingerprint(self) -> str:
        return _digest(["archive", _file_signature(self.location)])

    def read(self, entries):
        position = {e.key: i for i, e in enumerate(entries)}
        if self.is_zip:
            with zipfile.ZipFile(self.location) as archive:
                for key, i in position.items():
                    yield i, archive.read(key)
            return
        with tarfile.open(self.location, mode="r|*") as archive:  # one front-to-back pass
            for member in archive:
                i = position.get(member.name)
                if i is not None and member.isfile():
                    yield i, archive.extractfile(member).read()


@dataclass
class ParquetSource(ImageSource):
    """Hugging Face's parquet layout (``nu-delta/utkface``): an image column of encoded bytes and
    an ``age`` column, in one or more ``*.parquet`` files read in sorted order. The label columns of
    ``LABEL_COLUMNS`` that a file has ride along on each entry (``Entry.columns``)."""

    files: tuple[Path, ...]
    kind = "parquet"
    LABEL_COLUMNS = ("gender", "sex", "race", "ethnicity")

    @property
    def location(self) -> Path:
        return self.files[0].parent

    @staticmethod
    def _image_bytes(cell) -> bytes:
        if isinstance(cell, dict):
            return cell.get("bytes") or b""
        return bytes(cell) if cell is not None else b""

    def _columns(self, path: Path) -> tuple[str, str]:
        import pyarrow.parquet as pq

        names = pq.ParquetFile(path).schema_arrow.names
        image = next((c for c in ("image", "face_image", "img") if c in names), None)
        age = next((c for c in ("age", "label") if c in names), None)
        if image is None or age is None:
            raise ValueError(f"{path}: parquet file needs an image column and an 'age' column, has {names}")
        return image, age

    def entries(self) -> list[Entry]:
        import pyarrow.parquet as pq

        out = []
        for path in self.files:
            _, age = self._columns(path)
            labels = [c for c in self.LABEL_COLUMNS if c in pq.ParquetFile(path).schema_arrow.names]
            table = pq.read_table(path, columns=[age, *labels])
            values = {c: table.column(c).to_pylist() for c in labels}
            for row, value in enumerate(table.column(age).to_pylist()):
                out.append(Entry(name=f"{path.stem}#{row}", key=f"{path.name}#{row}",
                                 age=None if value is None else int(value),
                                 columns=tuple((c, values[c][row]) for c in labels)))
        return out

    def fingerprint(self) -> str:
        return _digest(["parquet"] + [_file_signature(p) for p in self.files])

    def read(self, entries):
        import pyarrow.parquet as pq

        wanted: dict[str, dict[int, int]] = {}
        for i, entry in enumerate(entries):
            file, row = entry.key.rsplit("#", 1)
            wanted.setdefault(file, {})[int(row)] = i
        for path in self.files:
            rows = wanted.get(path.name)
            if not rows:
                continue
            image, _ = self._columns(path)
            parquet = pq.ParquetFile(path)
            offset = 0
            for batch in parquet.iter_batches(columns=[image], batch_size=512):
                cells = batch.column(0).to_pylist()
                for j, cell in enumerate(cells):
                    i = rows.get(offset + j)
                    if i is not None:
                        yield i, self._image_bytes(cell)
                offset += len(cells)


WILD_PARTS = ("part1", "part2", "part3")
WILD_MARGIN = 0.4


def landmark_box(points: list[float], margin: float = WILD_MARGIN) -> tuple[int, int, int, int]:
    """A square crop around landmarks ``x1 y1 x2 y2 ...``: their bounding box, its longer side grown
    by ``margin`` of itself on each side. Parts outside the image come out black when cropped."""
    xs, ys = points[0::2], points[1::2]
    left, right, top, bottom = min(xs), max(xs), min(ys), max(ys)
    side = max(right - left, bottom - top) * (1 + 2 * margin)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    return (round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2))


class NoFaceFound(ValueError):
    """The face detector found no face where an in-the-wild image's landmarks put one."""


class Alignment(Protocol):
    """How ``--align`` turns an in-the-wild photo into an aligned crop: built above this package, by
    whoever knows the template (``ab.nn.face.aligner.TemplateAlignment``), and handed in, so that
    datasets never import the face code. ``recipe()`` raises ``OSError`` (no template), ``ValueError``
    (not a template) or ``RuntimeError`` (no detector) when nothing can be aligned."""

    def recipe(self) -> str:
        """What decides the aligned pixels besides the photo (the template's and detector's digests)."""

    def aligner(self):
        """This thread's aligner: ``aligner.detector(image)`` lists faces (each with a ``box``),
        ``aligner.align(image, face).crop`` is the aligned crop (a PIL image)."""


@dataclass
class WildSource(ImageSource):
    """UTKFace's in-the-wild images (``part1/``, ``part2/``, ``part3/`` of ``*.jpg``) with their
    landmark lists (``*landmark*.txt``: a file name, then x y pairs): each image is cropped to
    ``landmark_box`` (40 % margin) before resizing. Images without landmarks are skipped.

    With an ``alignment`` (``Alignment``), each image is instead detected and aligned exactly as
    ``python -m ab.nn.predict`` does at inference: the detected face nearest the landmarks' box is
    warped onto the template into a 200x200 crop (UTKFace's aligned & cropped geometry), then
    resized; an image whose landmark box holds no detected face is skipped as undecodable."""

    location: Path
    margin: float = WILD_MARGIN
    alignment: Alignment | None = None
    kind = "in-the-wild"

    def parts(self) -> list[Path]:
        return [self.location / p for p in WILD_PARTS if (self.location / p).is_dir()]

    def landmark_files(self) -> list[Path]:
        files = set(self.location.glob("*landmark*.txt"))
        for part in self.parts():
            files |= set(part.glob("*landmark*.txt"))
        return sorted(files)

    def _boxes(self) -> dict[str, tuple[int, int, int, int]]:
        boxes = {}
        for path in self.landmark_files():
            for line in path.read_text(errors="replace").splitlines():
                fields = line.split()
                if len(fields) < 5 or (len(fields) - 1) % 2:
                    continue
                try:
                    points = [float(v) for v in fields[1:]]
                except ValueError:
                    continue
                boxes[Path(fields[0]).name] = landmark_box(points, self.margin)
        return boxes

    def entries(self) -> list[Entry]:
        boxes = self._boxes()
        self.skipped = Counter()
        out = []
        for part in self.parts():
            for path in sorted(part.iterdir()):
                if not (path.is_file() and is_image_name(path.name)):
                    continue
                box = boxes.get(path.name)
                if box is None:
                    self.skipped["in-the-wild image without landmarks"] += 1
                    continue
                out.append(Entry(name=path.name, key=f"{part.name}/{path.name}", box=box))
        return sorted(out, key=lambda e: (e.name, e.key))

    def recipe(self) -> str | None:
        """Aligned pixels depend on the template and on the detector's landmarks (``Alignment.recipe``)."""
        return None if self.alignment is None else self.alignment.recipe()

    def fingerprint(self) -> str:
        files = [p for part in self.parts() for p in sorted(part.iterdir()) if p.is_file()]
        aligned = [] if self.alignment is None else [self.recipe()]
        return _digest(["wild", str(self.margin)] + aligned + [f"{p.parent.name}/{_file_signature(p)}"
                                                               for p in files + self.landmark_files()])

    def read(self, entries):
        return _read_files(self.location, entries)

    def decode(self, data: bytes, size: int, entry: Entry):
        if self.alignment is None:
            return super().decode(data, size, entry)
        import numpy as np
        from PIL import Image

        aligner = self.alignment.aligner()
        image = open_image(data)
        left, top, right, bottom = entry.box
        inside = []
        for detection in aligner.detector(image):
            cx, cy = detection.box.reshape(2, 2).mean(axis=0)
            if left <= cx <= right and top <= cy <= bottom:
                inside.append((abs(cx - (left + right) / 2) + abs(cy - (top + bottom) / 2), detection))
        if not inside:
            raise NoFaceFound(f"{entry.key}: no face detected inside its landmarks' box")
        crop = aligner.align(image, min(inside, key=lambda pair: pair[0])[1]).crop
        return np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)

