"""Named points in the runner and the trial process where a fault test can hold a real process, so that
it can kill it exactly there (the fault matrix in ``tests/test_fault_matrix.py``).

Off unless ``$AB_NN_FAULT`` names the point (a comma list; ``$AB_NN_FAULT_DIR`` is the folder for the
handshake). A process that reaches a named point writes ``<dir>/<point>.<pid>`` and waits until
``<dir>/<point>.go`` exists, or its parent process is gone, or ``$AB_NN_FAULT_SECONDS`` (default 600)
pass; then it goes on as if nothing happened. Costs one environment lookup when off.

A sandboxed trial (``ab.nn.sweep.isolation``) is given every ``AB_NN_FAULT*`` variable and sees
``$AB_NN_FAULT_DIR`` writable (``passed``), so its points and a test's misbehaving model work there too; the
pid it writes is then its pid in the sandbox's pid namespace: on the host, the process whose
``/proc/<pid>/status`` line ``NSpid`` ends with it (the line's first field is the host's pid).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

POINTS = ("reserve", "workers", "train", "resume", "test", "export", "mirror", "tell", "measure")


PREFIX = "AB_NN_FAULT"


def passed() -> tuple[dict[str, str], Path | None]:
    """What a sandboxed trial is given of a fault test's setting: the ``AB_NN_FAULT*`` variables, and the
    handshake folder to bind writable (None when none is named). Both empty outside fault tests."""
    env = {name: value for name, value in os.environ.items() if name.startswith(PREFIX)}
    folder = env.get(f"{PREFIX}_DIR")
    return env, Path(os.path.abspath(folder)) if folder and os.path.isdir(folder) else None


def point(name: str) -> None:
    wanted = os.environ.get("AB_NN_FAULT")
    if not wanted or name not in wanted.split(","):
        return
    folder = Path(os.environ.get("AB_NN_FAULT_DIR", "."))
    parent = os.getppid()
    (folder / f"{name}.{os.getpid()}").write_text(str(parent))
    deadline = time.monotonic() + float(os.environ.get("AB_NN_FAULT_SECONDS", "600"))
    while not (folder / f"{name}.go").exists() and os.getppid() == parent and time.monotonic() < deadline:
        time.sleep(0.05)
