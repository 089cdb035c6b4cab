"""Confinement of paths that come from outside (workspace files, recorded rows): where one lies."""
from __future__ import annotations

from pathlib import Path


def inside(path: str | Path, folder: Path) -> Path | None:
    """``path`` resolved (symbolic links followed), if it lies under ``folder``; else ``None``."""
    try:
        resolved = Path(path).expanduser().resolve()
        return resolved if resolved.is_relative_to(folder.resolve()) else None
    except (OSError, RuntimeError, ValueError):
        return None
