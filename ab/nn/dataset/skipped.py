"""The files of a data folder that no trial uses, each named with the reason, in one log per version
of the source files (``<cache>/skipped-<fingerprint>.tsv``), so that a summary can say "N skipped,
listed in <path>" instead of only counting them.

Which files are skipped is a function of the source files' bytes, so every process that finds some
(the runner listing the images, a trial decoding them) adds to the same log and nothing is lost
when one finds fewer than another.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ab.nn.util import atomic


def log_path(cache_dir: Path, fingerprint: str) -> Path:
    return Path(cache_dir) / f"skipped-{fingerprint[:24]}.tsv"


def read(path: Path) -> dict[str, str]:
    """File name -> reason, as logged so far (empty when there is no log)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    found = {}
    for line in lines:
        name, _, reason = line.partition("\t")
        if name and reason:
            found[name] = reason
    return found


def record(path: Path, skipped: Iterable[tuple[str, str]]) -> None:
    """Add ``(name, reason)`` pairs to the log; it is rewritten only when something is new. A
    workspace that cannot be written keeps the counts in the summary and loses only the list."""
    known = read(path)
    new = {name: reason for name, reason in skipped if name not in known}
    if not new:
        return
    merged = {**known, **new}
    text = "".join(f"{_clean(name)}\t{_clean(reason)}\n" for name, reason in sorted(merged.items()))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write(path, text)
    except OSError:
        pass


def _clean(text: str) -> str:
    return " ".join(str(text).split())
