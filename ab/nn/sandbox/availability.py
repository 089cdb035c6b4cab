"""Whether a working sandbox can be had on this machine, and the refusal when it cannot.

``available()`` looks for bubblewrap (and, as root, ``setpriv``), then launches a trial sandbox that
reports what its code can see and do, and checks it: an unprivileged uid in its own pid namespace, no
capabilities, no network interface but loopback, no writable system or project folder, an empty home,
the process limit in force, a writable scratch folder. The answer is kept for the process's life.
``require(unsafe)`` is what callers of untrusted code use: it raises ``SandboxUnavailable`` unless the
caller passed ``unsafe=True``.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from ab.nn.sandbox import bwrap
from ab.nn.sandbox.errors import SandboxError, SandboxUnavailable
from ab.nn.sandbox.limits import MiB, Limits

TRIAL_LIMITS = Limits(wall_seconds=90, cpu_seconds=30, memory_bytes=512 * MiB, address_space_bytes=2048 * MiB,
                      total_memory_bytes=1024 * MiB, file_size_bytes=MiB, processes=16, open_files=64,
                      tmpfs_bytes=MiB)
_INT = {"type": "integer"}
_REPORT = {"type": "object", "additionalProperties": False,
           "required": ["type", "id", "uid", "pid", "capabilities", "interfaces", "writable", "scratch_writable",
                        "home_entries", "nproc"],
           "properties": {"type": {"enum": ["selftest"]}, "id": {"type": "string", "maxLength": 64}, "uid": _INT,
                          "pid": _INT, "capabilities": _INT, "home_entries": _INT, "nproc": _INT,
                          "scratch_writable": {"type": "boolean"},
                          "interfaces": {"type": "array", "maxItems": 64, "items": {"type": "string", "maxLength": 64}},
                          "writable": {"type": "array", "maxItems": 8, "items": {"type": "string", "maxLength": 4096}}}}


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str
    """Why not, or how the sandbox is made here."""

    def __bool__(self) -> bool:
        return self.ok


_known: Availability | None = None


def available(refresh: bool = False) -> Availability:
    """Whether a working sandbox can be had here (checked once per process unless ``refresh``)."""
    global _known
    if _known is None or refresh:
        _known = _check()
    return _known


def require(unsafe: bool = False) -> Availability:
    """The sandbox's availability; ``SandboxUnavailable`` when there is none and ``unsafe`` is False."""
    found = available()
    if not found.ok and not unsafe:
        raise SandboxUnavailable(f"no sandbox for untrusted code on this machine: {found.reason} (pass unsafe=True "
                                 f"to run it without one, with this process's rights)")
    return found


def _version(program: str) -> str:
    try:
        return subprocess.run([program, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return program


def _check() -> Availability:
    from ab.nn.sandbox.launch import start

    program = shutil.which("bwrap")
    if program is None:
        return Availability(False, "bubblewrap (bwrap) is not installed (Debian: apt-get install bubblewrap; "
                                   "scripts/setup.sh does it as root)")
    try:
        identity = bwrap.sandbox_identity()
    except LookupError as error:
        return Availability(False, str(error))
    if identity is not None and shutil.which("setpriv") is None:
        return Availability(False, "running as root needs setpriv (util-linux) to drop to the sandbox user")
    project = str(bwrap.project_root())
    try:
        with start("ab.nn.sandbox.selftest", limits=TRIAL_LIMITS) as box:
            report = box.request({"type": "selftest", "project": project}, _REPORT)
    except SandboxError as error:
        return Availability(False, f"a trial sandbox failed: {error}")
    problems = []
    if report["uid"] == 0 or report["capabilities"] != 0:
        problems.append(f"its code ran with uid {report['uid']} and capabilities {report['capabilities']:#x}")
    if report["pid"] > 16:
        problems.append(f"it had pid {report['pid']} (no pid namespace)")
    if report["interfaces"] != ["lo"]:
        problems.append(f"it saw network interfaces {', '.join(report['interfaces'])}")
    if report["writable"]:
        problems.append(f"it could write to {', '.join(report['writable'])}")
    if report["home_entries"]:
        problems.append("its home folder was not empty")
    if report["nproc"] != TRIAL_LIMITS.processes:
        problems.append(f"its process limit was {report['nproc']}, not {TRIAL_LIMITS.processes}")
    if not report["scratch_writable"]:
        problems.append("it could not write to its scratch folder")
    if problems:
        return Availability(False, "a trial sandbox did not hold: " + "; ".join(problems))
    who = (f"as root: an outer bubblewrap, then setpriv to user {identity.name} (uid {identity.uid}), then an "
           f"unprivileged one" if identity is not None else "unprivileged, in a user namespace of this user")
    return Availability(True, f"{_version(program)}, {who}")
