"""LEMUR's ``ab.nn.util.Const`` paths that NN-GPT's scripts and LEMUR's loader files import
(``ab_root_path``, ``out_dir``, ``data_dir``, ``db_dir``, ``db_file``, ``stat_train_dir``), read
from this project's workspace: ``--root``/``$LEMUR_ROOT`` or the current directory, and the
workspace of the running sweep inside one.

LEMUR fixes them once, at import, from the first folder above the current directory that holds
``ab/`` and ``README.md``. Here each is looked up when it is read (``Const.out_dir``, or
``from ab.nn.util.Const import out_dir`` at that moment), so the import itself does no work. Reading
the workspace puts this module on the top floor, beside ``ab.nn.api`` (docs/guide/architecture.md):
an entry point for outside scripts that the library never imports. ``data_dir`` is ``<root>/data``
as in LEMUR (a separate ``--data-dir``/``$LEMUR_DATA`` is not reflected).
"""
from __future__ import annotations

from pathlib import Path

_PATHS = ("ab_root_path", "data_dir", "db_dir", "db_file", "out_dir", "stat_train_dir")
__all__ = list(_PATHS)


def _paths() -> dict[str, Path]:
    from ab.nn.workspace import active

    ws = active.current()
    return {"ab_root_path": ws.root, "out_dir": ws.out_dir, "data_dir": ws.root / "data",
            "db_dir": ws.db_path.parent, "db_file": ws.db_path, "stat_train_dir": ws.stat_train_dir}


def __getattr__(name: str) -> Path:
    if name in _PATHS:
        return _paths()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PATHS))
