"""Filters that name things (configs, models, tasks, datasets, metrics, metric names) checked against what
exists, so that ``trials(config="MobileAgeNet")`` or ``data(nn="MobileAgNet")`` is a one-line error with a
"did you mean" instead of an empty table that looks like a result.

A value exists when the database records it or the registry knows it (a model file with no trials yet is
a real answer: an empty table). LEMUR's own functions (``data()`` and its kin) are checked leniently: NN-GPT
asks ``data(nn=<new checksum name>)`` to learn that a model is new, so there an unknown value is refused
only when it is a near miss of a known one (a typo), and otherwise gives LEMUR's empty table.
"""
from __future__ import annotations

import difflib
from sqlalchemy import select, union

from ab.nn import registry
from ab.nn.config import MIXTURE_NN, SPLITTER
from ab.nn.stat import engine as engines
from ab.nn.stat.versions import shown
from ab.nn.stat.schema import Stat, StatMetric, Trial

_RECORDED = {
    "config": (Trial.config,),
    "nn": (Trial.nn, Stat.nn),
    "task": (Trial.task, Stat.task),
    "dataset": (Trial.dataset, Stat.dataset),
    "metric": (Trial.metric, Stat.metric),
    "name": (StatMetric.name,),
}
_FILES = {"nn": registry.MODEL, "dataset": registry.LOADER, "metric": registry.METRIC}
NEAR_MISS = 0.8
"""difflib's similarity above which an unknown value is taken for a typo of a known one."""


class UnknownValue(ValueError):
    """A filter value that names nothing recorded or known; the message is one line."""


def recorded(url: str, field: str) -> set[str]:
    columns = _RECORDED[field]
    query = union(*(select(c.label("value")).where(c.is_not(None)).distinct() for c in columns)) \
        if len(columns) > 1 else select(columns[0]).where(columns[0].is_not(None)).distinct()
    with engines.engine(url, writer=False).connect() as connection:
        return {row[0] for row in connection.execute(query)}


def _pipelines() -> set[tuple[str, str, str]]:
    """(task, dataset, metric) the package's own loaders serve (``PIPELINES``); workspace loaders are not
    imported here, as their code is not ours to run in the caller (their configs count once recorded)."""
    found = set()
    for name in registry.names(registry.LOADER):
        if registry.origin(registry.LOADER, name) == registry.PACKAGE:
            found |= {(task, name, metric) for task, metric in getattr(registry.load(registry.LOADER, name), "PIPELINES", ())}
    return found


def _registered(field: str) -> set[str]:
    if field == "task":
        return {task for task, _, _ in _pipelines()}
    if field == "nn":
        return set(registry.names(registry.MODEL)) | {MIXTURE_NN}
    if field in _FILES:
        return set(registry.names(_FILES[field]))
    if field == "config":
        models = set(registry.names(registry.MODEL)) | {MIXTURE_NN}
        return {SPLITTER.join((*pipeline, nn)) for pipeline in _pipelines() for nn in models}
    return set()


def known(url: str, field: str) -> list[str]:
    """Every value of ``field`` that names something: recorded in the database (first, sorted), then the
    registry's files with nothing recorded yet."""
    found = recorded(url, field)
    return sorted(found) + sorted(_registered(field) - found)


def _values(value) -> list:
    return list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]


def _hint(field: str, wrong: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(wrong, candidates, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    if field == "config":
        ends = [c for c in candidates if c.endswith(SPLITTER + wrong)]
        if ends:
            return f"configs are task_dataset_metric_nn, e.g. {ends[0]!r}"
    shown = ", ".join(map(repr, candidates[:8])) + (", ..." if len(candidates) > 8 else "")
    return f"known: {shown}" if candidates else "nothing is recorded yet"


def check(url: str, *, lenient: bool = False, **filters) -> None:
    """Raise ``UnknownValue`` for the first filter value that names nothing (``None``: no filter).

    ``lenient``: refuse only near misses of a known value (LEMUR's functions; see the module docstring)."""
    for field, value in filters.items():
        if value is None:
            continue
        candidates = known(url, field)
        for wrong in (v for v in _values(value) if v not in set(candidates)):
            if lenient and not difflib.get_close_matches(str(wrong), candidates, n=1, cutoff=NEAR_MISS):
                continue
            raise UnknownValue(f"{field}={wrong!r} names nothing in {shown(url)} or the registry; "
                               f"{_hint(field, str(wrong), candidates)}")
