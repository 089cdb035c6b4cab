"""Named points in the runner and the trial process where a fault test can hold a real process, so that
it can kill it exactly there (the fault matrix in ``tests/test_fault_matrix.py``).

Off unless ``$AB_NN_FAULT`` names the point (a comma list; ``$AB_NN_FAULT_DIR`` is the folder for the
handshake). A process that reaches a named point writes ``<dir>/<point>.<pid>`` and waits until
``<dir>/<point>.go`` exists, or its parent process is gone, or ``$AB_NN_FAULT_SECONDS`` (default 600)
pass; then it goes on as if nothing happened. Costs one environment lookup when off.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

POINTS = ("reserve", "workers", "train", "test", "export", "mirror", "tell")


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
