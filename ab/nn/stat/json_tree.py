"""The files of a ``stat/`` tree (this project's JSON mirror, or LEMUR's own), read as input from
outside: folder names are validated as configs before a path is built below them, epoch files are
``<epoch>.json`` with an epoch in range, and a file that is not a JSON list of records, or holds a
character no database can store (NUL, half of a surrogate pair), is a ``BadRecord`` naming it."""
from __future__ import annotations

import json
import os
from pathlib import Path

from ab.nn.config import Config
from ab.nn.stat import untrusted
from ab.nn.stat.untrusted import BadRecord


def read_json(path: Path):
    """The JSON value in ``path``; a file that is not JSON, or holds a character no database text column
    can store (NUL, half of a UTF-16 surrogate pair), is a ``BadRecord``."""
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise BadRecord(path, f"not valid JSON ({untrusted.shown(str(error), 80)})") from None
    if untrusted.text_may_be_unstorable(text) and untrusted.unstorable(value):
        raise BadRecord(path, "holds a NUL character or half of a surrogate pair, which no database text column "
                              "can store")
    return value


def read_records(path: Path) -> list[dict]:
    """The JSON list of records in ``path`` (LEMUR wraps a single dict into a list when it reads one)."""
    records = read_json(path)
    if isinstance(records, dict):
        records = [records]
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise BadRecord(path, "not a JSON list of records")
    return records


def config_folders(stat_dir: Path) -> list[tuple[Config, Path]]:
    """The ``<config>`` folders under ``stat_dir``, their names validated (hidden entries are skipped)."""
    folders = []
    with os.scandir(stat_dir) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            folders.append((untrusted.config(entry.name, Path(entry.path)), Path(entry.path)))
    return sorted(folders, key=lambda item: item[0].name)


def epoch_files(folder: Path) -> list[tuple[int, Path]]:
    """``<epoch>.json`` files of a config folder, by epoch; other files are skipped, as LEMUR skips them."""
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            stem, dot, suffix = entry.name.rpartition(".")
            if not dot or suffix != "json" or not entry.is_file():
                continue
            epoch = untrusted.epoch(stem)
            if epoch is None:
                if stem.isascii() and stem.isdigit():
                    raise BadRecord(entry.path, f"epoch {untrusted.shown(stem)} is too large")
                continue
            found.append((epoch, Path(entry.path)))
    return sorted(found)
