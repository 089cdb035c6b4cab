"""Process facts and process control the runner needs: whether a recorded process is certainly gone,
children that die with their parent, ending a whole process group, and the memory of a process tree."""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import signal
from pathlib import Path

import psutil

from ab.nn.util import system

PR_SET_PDEATHSIG = 1
TEMP = ".tmp-"
"""What ``temp_path`` puts between a file's name and its writer's machine and pid."""


def die_with_parent(parent: int | None = None, sig: int = signal.SIGKILL) -> None:
    """Linux: this process gets ``sig`` when its parent dies (a worker never outlives its trial). The
    parent may already have died before this call (it is made after the process started), in which case
    this process was handed to another and no signal would ever come: given the ``parent`` pid it was
    started by, it then exits at once."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
    except (OSError, AttributeError):
        pass  # not Linux: the process group is still ended by whoever owns it
    if parent is not None and os.getppid() != parent:
        os._exit(1)


@functools.lru_cache(maxsize=1)
def boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


@functools.lru_cache(maxsize=1)
def pid_namespace() -> str | None:
    """The pid namespace of this process: pids mean the same process only inside one namespace (two
    containers with host networking share a host name, not their pids)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


@functools.lru_cache(maxsize=1)
def machine() -> str | None:
    """12 hex digits for where a pid names one process: this host, its current boot and this pid
    namespace (``None`` where the boot or the namespace cannot be read)."""
    boot, namespace = boot_id(), pid_namespace()
    if boot is None or namespace is None:
        return None
    return hashlib.sha256(f"{system.host()}|{boot}|{namespace}".encode()).hexdigest()[:12]


def temp_path(path: Path, pid: int | None = None) -> Path:
    """The temporary name a writer of ``path`` writes to before renaming it into place, naming the
    writing process (``pid``, default this one) and its machine: a cleaner on another host that shares
    the folder can tell that the file is not its own."""
    return path.with_name(f"{path.name}{TEMP}{machine() or 'unknown'}-{pid or os.getpid()}")


def abandoned(tmp: Path) -> bool:
    """A ``temp_path`` file whose writer is certainly gone: written on this machine (same host, boot and
    pid namespace) by a process that no longer exists. Other machines' files are theirs to judge; files
    from before this machine's last boot are left too (their writer cannot be told from another
    machine's of the same host name)."""
    found = re.fullmatch(rf".+{re.escape(TEMP)}([0-9a-f]{{12}})-(\d+)", tmp.name)
    if found is None or found[1] != machine():
        return False
    pid = int(found[2])
    return pid != os.getpid() and not psutil.pid_exists(pid)


def started_at(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def certainly_gone(boot: str | None, namespace: str | None, pid: int | None, created: float | None) -> bool:
    """True only when the process is known to have ended: same machine boot and pid namespace as us,
    and no process with that pid and start time. Anything else (another machine, container or boot)
    is unknown here, and only a lapsed heartbeat can tell."""
    if not pid or boot is None or boot != boot_id() or namespace is None or namespace != pid_namespace():
        return False
    now = started_at(pid)
    return now is None or (created is not None and abs(now - created) > 1.0)


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    """Signal every process of a group (the trial's process and whatever it started)."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def unique_memory(pid: int) -> int:
    """Proportional set size of a process and all its descendants, in bytes (resident size where PSS
    cannot be read): a page shared by N processes counts 1/N in each, so the image cache that DataLoader
    workers share counts once."""
    try:
        leader = psutil.Process(pid)
        group = [leader, *leader.children(recursive=True)]
    except psutil.Error:
        return 0
    used = 0
    for process in group:
        try:
            info = process.memory_full_info()
            used += getattr(info, "pss", info.rss)
        except psutil.Error:
            continue
    return used
