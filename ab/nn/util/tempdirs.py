"""Temporary folders that a later process can tell are abandoned.

A process killed with SIGKILL cannot remove its temporary folders. ``make(kind)`` names each folder
after its owner (pid namespace, pid and the process's start time, read from ``/proc``), and ``clean_abandoned()``, which
``check_nn`` and the sweep runner call when they start, removes the folders of owners that are
certainly gone from this host. A folder is removed without following its symbolic links and whatever
a sandboxed child did to the modes of its sub-folders (``remove_tree``). Only the standard library is
imported with this module: the sandbox launcher uses it, also from a system Python.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


PREFIX = "ab-nn-"
_NAME = re.compile(r"^ab-nn-([a-z][a-z0-9-]*)\.(\d+)\.(\d+)\.(\d+)\.[A-Za-z0-9_]+$")


def _namespace() -> int:
    try:
        found = re.search(r"\d+", os.readlink("/proc/self/ns/pid"))
    except OSError:
        return 0
    return int(found.group()) if found else 0


def _started(pid: int) -> int | None:
    """The process's start time (clock ticks after boot, ``/proc/<pid>/stat``), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def make(kind: str, parent: str | Path | None = None) -> Path:
    """A new private folder (mode 0700) in ``parent`` (the system's temporary folder by default) named
    ``ab-nn-<kind>.<pid namespace>.<pid>.<start>.<random>``."""
    if not re.fullmatch(r"[a-z][a-z0-9-]*", kind):
        raise ValueError(f"temporary folder kind {kind!r}: lowercase letters, digits and '-'")
    pid = os.getpid()
    prefix = f"{PREFIX}{kind}.{_namespace()}.{pid}.{_started(pid) or 0}."
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent)).absolute()


@contextmanager
def folder(kind: str, parent: str | Path | None = None) -> Iterator[Path]:
    """``make(kind)``, removed on leaving (also on an exception)."""
    made = make(kind, parent)
    try:
        yield made
    finally:
        remove_tree(made)


def abandoned(parent: str | Path | None = None) -> list[Path]:
    """Folders made by ``make`` in ``parent`` whose owner process is gone (same pid namespace, and no
    process with that pid and start time)."""
    parent = Path(parent or tempfile.gettempdir())
    namespace, found = _namespace(), []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return []
    for entry in entries:
        match = _NAME.match(entry.name)
        if match is None or not entry.is_dir(follow_symlinks=False) or int(match.group(2)) != namespace:
            continue
        pid, started = int(match.group(3)), int(match.group(4))
        now = _started(pid)
        if now is None or now != started:
            found.append(Path(entry.path))
    return found


def clean_abandoned(parent: str | Path | None = None) -> list[Path]:
    """Remove the abandoned folders (``abandoned``); returns them."""
    gone = abandoned(parent)
    for path in gone:
        remove_tree(path)
    return gone


def remove_tree(path: str | Path) -> None:
    """Remove a folder whatever the modes of its sub-folders; symbolic links are removed, never followed."""
    stack = [str(path)]
    while stack:
        current = stack.pop()
        try:
            if stat.S_ISDIR(os.lstat(current).st_mode):
                os.chmod(current, 0o700)
                stack += [entry.path for entry in os.scandir(current) if entry.is_dir(follow_symlinks=False)]
        except OSError:
            continue
    shutil.rmtree(path, ignore_errors=True)
