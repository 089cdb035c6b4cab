"""Resource limits of a sandboxed run: the rlimits its processes get (each process on its own), the
parent's wall clock and its watch of the memory of all of them together, and the size of the private
``/tmp`` and ``/dev/shm``. A limit that is hit ends the run with a message that names it."""
from __future__ import annotations

import dataclasses
import resource
import signal
from dataclasses import dataclass

GiB = 1 << 30
MiB = 1 << 20
CPU_GRACE_SECONDS = 5
"""RLIMIT_CPU's hard limit is this far above the soft one: SIGXCPU first, SIGKILL if it is ignored."""


@dataclass(frozen=True)
class Limits:
    wall_seconds: float = 600.0
    """The parent kills the whole sandbox this long after the launch."""
    cpu_seconds: int = 600
    """CPU time of each process (RLIMIT_CPU)."""
    memory_bytes: int = 8 * GiB
    """Heap and private mappings of each process (RLIMIT_DATA)."""
    address_space_bytes: int | None = 32 * GiB
    """Address space of each process (RLIMIT_AS): also bounds shared mappings, which RLIMIT_DATA does not
    count. None for CUDA, which reserves far more address space than it uses."""
    total_memory_bytes: int | None = 12 * GiB
    """Unique memory (PSS) of all the sandbox's processes together, watched by the parent."""
    file_size_bytes: int = 2 * GiB
    """Largest file a process may write (RLIMIT_FSIZE)."""
    processes: int | None = 256
    """Processes and threads of the sandbox's user (RLIMIT_NPROC); None only where no sandbox is used."""
    open_files: int = 1024
    """Open file descriptors of each process (RLIMIT_NOFILE)."""
    tmpfs_bytes: int = 512 * MiB
    """Size of each of the private ``/tmp`` and ``/dev/shm`` (memory-backed)."""

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None and (isinstance(value, bool) or not value > 0):
                raise ValueError(f"sandbox limit {field.name} must be positive, got {value!r}")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, value: dict) -> "Limits":
        return cls(**value)

    def replace(self, **changes) -> "Limits":
        return dataclasses.replace(self, **changes)


def apply(limits: Limits) -> None:
    """Set the rlimits of this process (and so of everything it starts); called in the sandbox before
    any code of the caller's module runs. Core dumps are off."""
    wanted = [(resource.RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + CPU_GRACE_SECONDS),
              (resource.RLIMIT_DATA, limits.memory_bytes, limits.memory_bytes),
              (resource.RLIMIT_FSIZE, limits.file_size_bytes, limits.file_size_bytes),
              (resource.RLIMIT_NOFILE, limits.open_files, limits.open_files),
              (resource.RLIMIT_CORE, 0, 0)]
    if limits.address_space_bytes is not None:
        wanted.append((resource.RLIMIT_AS, limits.address_space_bytes, limits.address_space_bytes))
    if limits.processes is not None:
        wanted.append((resource.RLIMIT_NPROC, limits.processes, limits.processes))
    for which, soft, hard in wanted:
        resource.setrlimit(which, (int(soft), int(hard)))


def signal_reason(number: int, limits: Limits) -> str:
    """What a death by signal ``number`` means under ``limits``."""
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"killed by signal {number}"
    if number == signal.SIGXCPU:
        return f"killed by {name}: CPU time limit of {limits.cpu_seconds} s hit"
    if number == signal.SIGXFSZ:
        return f"killed by {name}: file size limit of {limits.file_size_bytes / MiB:g} MiB hit"
    if number == signal.SIGKILL:
        return f"killed by {name} (the kernel, or the CPU time limit of {limits.cpu_seconds} s after SIGXCPU was ignored)"
    return f"killed by {name}"
