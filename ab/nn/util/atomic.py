"""Files written whole or not at all.

The content goes to a temporary file beside the target, named by ``processes.temp_path`` (its writer's
machine and pid, so that a cleaner can tell an abandoned one from a live writer's), and ``os.replace``
puts it in place: a reader sees the old file or the new one, never half of one, and a writer killed
midway leaves the old file and, at worst, its temporary one.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable

from ab.nn.util import processes

Content = str | bytes | Callable[[BinaryIO], None]
"""Text (written as UTF-8), bytes, or a function that writes into the open binary file."""


def write(path: str | Path, content: Content, *, durable: bool = False) -> Path:
    """Replace ``path`` with ``content``. ``durable``: the file and the rename are flushed to disk before
    this returns, so that a power cut keeps the new file (a record others rely on); without it a crash of
    the machine may lose the write, never leave half of it."""
    path = Path(path)
    tmp = processes.temp_path(path)
    try:
        with open(tmp, "wb") as out:
            if callable(content):
                content(out)
            else:
                out.write(content.encode("utf-8") if isinstance(content, str) else content)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        sync_folder(path.parent)
    return path


def sync_folder(folder: Path) -> None:
    """A rename survives a power cut only once its folder is flushed too; a folder that cannot be opened
    or flushed (some network file systems) is left as it is."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
