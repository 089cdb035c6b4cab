"""Which files ``predict`` reads, and where under ``--out`` it writes each annotated image.

An output is named after what the input was called: a file's name, or a folder's name and the path
below it. A folder given as ``.``, ``..`` or ``photos/..`` is named by its real name, never by
``..``, so no name climbs out of ``--out``. Two inputs that would get one name (``a/x.jpg`` and
``b/x.jpg``, or ``x.gif`` and ``x.png``, both written as PNG) get ``x.jpg`` and ``x-1.jpg``; an
input that lies inside ``--out`` is never written over.

Writing goes down from ``--out`` one folder at a time through directory descriptors opened with
``O_NOFOLLOW``, so a symlink inside ``--out`` (there before the run or planted during it) is refused,
never followed; the image is written under a temporary name and renamed into place, which replaces
a symlink at the final name instead of writing through it.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path, PurePosixPath

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
WRITTEN = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}
"""Suffixes an annotated image keeps, with their format; any other input is written as PNG."""
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class OutputRefused(OSError):
    """An annotated image that cannot be written inside ``--out``; the message says which and why."""


def _folder_name(path: Path) -> str:
    """The name a folder input gives its outputs: its own, or for ``.``/``..`` forms its real one."""
    return path.name if path.name not in ("", ".", "..") else path.resolve().name


def walk(inputs: list[str]) -> list[tuple[Path, PurePosixPath]]:
    """``(file, name under --out)`` for every input file and every image file under input folders
    (sorted, hidden files skipped); a path that does not exist is kept, to be reported."""
    found = []
    for text in inputs:
        path = Path(text).expanduser()
        if path.is_dir():
            prefix = PurePosixPath(_folder_name(path))
            for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                               and not any(part.startswith(".") for part in p.relative_to(path).parts)):
                found.append((file, prefix.joinpath(*file.relative_to(path).parts)))
        else:
            found.append((path, PurePosixPath(path.name if path.name not in ("", ".", "..") else "image")))
    return found


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


class OutputFolder:
    """``--out``: ``save(image, name)`` writes an image there and nowhere else."""

    def __init__(self, out: str | Path, inputs: list[Path] = ()):
        self.root = Path(out).expanduser()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputRefused(f"--out {self.root}: cannot create the folder ({error.strerror})") from None
        if not self.root.is_dir():
            raise OutputRefused(f"--out {self.root}: not a folder")
        self.real = self.root.resolve()  # --out itself may be a symlink: the folder chosen
        self.inputs = {identity for identity in map(_identity, inputs) if identity is not None}
        self.used: set[tuple[str, ...]] = set()

    def save(self, image, relative: PurePosixPath) -> Path:
        """Write ``image`` at ``relative`` under ``--out`` (renamed ``x-1`` ... where the name is taken
        in this run or by an input) and return the path written."""
        parts = [part for part in PurePosixPath(relative).parts if part not in ("", ".", "..", "/")]
        if not parts:
            raise OutputRefused(f"{relative}: no name to write under {self.root}")
        suffix = Path(parts[-1]).suffix
        stem = parts[-1][: -len(suffix)] if suffix and parts[-1] != suffix else parts[-1]
        suffix = suffix if suffix.lower() in WRITTEN else ".png"
        fd = os.open(self.real, _DIRECTORY)
        temporary = None
        try:
            for part in parts[:-1]:
                try:
                    os.mkdir(part, dir_fd=fd)
                except FileExistsError:
                    pass
                below = os.open(part, _DIRECTORY, dir_fd=fd)  # ELOOP for a symlink, ENOTDIR for a file
                os.close(fd)
                fd = below
            name = self._free_name(fd, parts[:-1], stem, suffix)
            temporary = f".{name}.{os.getpid()}.part"
            out = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=fd)
            with os.fdopen(out, "wb") as stream:
                image.save(stream, format=WRITTEN[suffix.lower()])
            os.replace(temporary, name, src_dir_fd=fd, dst_dir_fd=fd)
            temporary = None
        except OSError as error:
            in_the_way = error.errno in (errno.ELOOP, errno.ENOTDIR)
            reason = "a symlink or a file is in the way" if in_the_way else error.strerror or str(error)
            raise OutputRefused(f"cannot write {'/'.join(parts)} under {self.root}: {reason}") from None
        finally:
            if temporary is not None:
                try:
                    os.unlink(temporary, dir_fd=fd)
                except OSError:
                    pass
            os.close(fd)
        return self.root.joinpath(*parts[:-1], name)

    def _free_name(self, fd: int, folders: list[str], stem: str, suffix: str) -> str:
        n = 0
        while True:
            name = f"{stem}{suffix}" if n == 0 else f"{stem}-{n}{suffix}"
            key = tuple(part.casefold() for part in (*folders, name))
            if key not in self.used and not self._is_input(fd, name):
                self.used.add(key)
                return name
            n += 1

    def _is_input(self, fd: int, name: str) -> bool:
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) in self.inputs
