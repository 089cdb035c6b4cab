"""Run in a sandbox by ``available``: report, as one JSON reply, what the sandboxed code can see and do,
so that the parent checks the boundary itself rather than trusting bubblewrap's exit code."""
from __future__ import annotations

import os
import resource
import socket

from ab.nn.sandbox import child


def _writable(folder: str) -> bool:
    try:
        with open(os.path.join(folder, f".ab-nn-sandbox-selftest-{os.getpid()}"), "x") as file:
            file.write("x")
    except OSError:
        return False
    os.remove(file.name)
    return True


def _capabilities() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return -1


def facts(project: str) -> dict:
    home = os.environ.get("HOME", "")
    return {"uid": os.getuid(), "pid": os.getpid(), "capabilities": _capabilities(),
            "interfaces": sorted(name for _, name in socket.if_nameindex()),
            "writable": sorted(f for f in ("/", "/etc", "/usr", project, home) if f and _writable(f)),
            "scratch_writable": _writable(os.getcwd()),
            "home_entries": len(os.listdir(home)) if os.path.isdir(home) else 0,
            "nproc": resource.getrlimit(resource.RLIMIT_NPROC)[0]}


if __name__ == "__main__":
    channel = child.channel()
    request = channel.receive()
    channel.send({"type": "selftest", "id": request["id"], **facts(request["project"])})
