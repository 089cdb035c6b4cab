"""Where a trial's resume file lies, and its removal: what a runner needs of it without reading it
(``ab.nn.sweep.resume`` writes, reads and checks it, with torch)."""
from __future__ import annotations

from pathlib import Path

FILE = "resume.pt"


def path_of(folder: Path) -> Path:
    return Path(folder) / FILE


def remove(folder: Path) -> None:
    """The trial ended: nothing is left to continue."""
    path_of(folder).unlink(missing_ok=True)
