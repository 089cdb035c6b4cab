"""Copy a statistics database into another, typically a PostgreSQL sweep shared by many machines into
a local SQLite file for analysis, or several machines' SQLite files into one.

Rows never mix: trials are added as ``ab.nn.stat.trial_merge`` says (recognised by their ``uid``, a
uuid4 given at reservation, or one derived from their fields for sources from before uids; new ids
where the target already holds trials; Optuna's ids left to the reconciler; replica groups kept
within the copy; running trials reclaimable), and every reference to them is mapped (epochs,
artifacts, latencies, predictions, mixtures). Code, hyperparameter sets, image labels, constant-predictor
baselines (by data key) and epoch rows are keyed by content and inserted once, so copying the same source
again adds nothing.

Optuna's tables are not copied: our ``trial`` and ``study`` tables are the authority, and the
reconciler (``python -m ab.nn.stat check --repair``, and every runner start) adds the copied trials to
the Optuna studies they name. A study's definition (what it optimises) is copied where the target
has none of that name; one the target has already is kept. The outbox (pending mirror writes of the
source's machines) is not copied.

Every table is streamed in batches of ``BATCH`` rows (one transaction and one executemany each), so
memory stays flat however large the source; names and code ids are checked (``untrusted``) before
they are written, since they become paths later.
"""
from __future__ import annotations

from typing import Iterable, Iterator

from sqlalchemy import inspect, insert, select
from sqlalchemy.engine import make_url

from ab.nn import registry
from ab.nn.stat import bulk, engine as engines, untrusted
from ab.nn.stat.schema import (CodeVersion, ConstantBaseline, Export, Fusion, ImageAttribute, Latency, Metric, Nn, NnStat,
                               Prediction, Prm, Stat, StatMetric, Study, TrainStat, Transform, Trial)
from ab.nn.stat.store import StatStore
from ab.nn.stat.trial_merge import TrialMerger, derived_uid

BATCH = 5000
"""Rows per transaction (and per fetch from the source)."""


class _Source:
    def __init__(self, url: str):
        self.name = make_url(url).render_as_string(hide_password=True)
        self.engine = engines.engine(url, writer=False)
        self.inspector = inspect(self.engine)

    def rows(self, table) -> Iterator[dict]:
        """Rows of ``table`` with the columns both schemas have (the source is read, never migrated),
        fetched ``BATCH`` at a time."""
        if not self.inspector.has_table(table.__tablename__):
            return
        present = {c["name"] for c in self.inspector.get_columns(table.__tablename__)}
        columns = [c for c in table.__table__.columns if c.name in present]
        with self.engine.connect() as connection:
            result = connection.execution_options(stream_results=True, yield_per=BATCH).execute(select(*columns))
            for batch in result.partitions(BATCH):
                yield from (dict(row._mapping) for row in batch)

    def where(self, table, row: dict) -> "_Where":
        return _Where(self.name, table, row)


class _Where:
    """A source row as an error names it (made into text only when there is an error)."""

    def __init__(self, source: str, table, row: dict):
        self.source, self.table, self.row = source, table, row

    def __str__(self) -> str:
        key = ", ".join(f"{c.name}={self.row.get(c.name)!r}" for c in self.table.__table__.primary_key.columns)
        return f"{self.source} {self.table.__tablename__} ({key})"


class _Copy:
    def __init__(self, source: str, target: str):
        self.src, self.store = _Source(source), StatStore(target)
        self.counts: dict[str, int] = {}

    def insert(self, table, rows: Iterable[dict], *, ignore: bool = True) -> None:
        """Stream ``rows`` into ``table``, ``BATCH`` per transaction; counts the rows read."""
        name = table.__tablename__
        self.counts.setdefault(name, 0)
        for chunk in bulk.chunks(rows, BATCH):
            with self.store.transaction() as session:
                bulk.insert(session, table, chunk, ignore=ignore)
            self.counts[name] += len(chunk)

    def checked(self, table, rows: Iterable[dict], check) -> Iterator[dict]:
        for row in rows:
            check(row, self.src.where(table, row))
            yield row


def _check_code(table: str):
    def check(row: dict, where) -> None:
        untrusted.code_name(table, row["name"], where)
        if row.get("id") != "":  # a name whose code is unknown (imported from LEMUR's JSON)
            untrusted.code_id(row.get("id"), where)
    return check


def _check_version(row: dict, where) -> None:
    _check_code(row.get("kind"))(row, where)


class _Names:
    """Names and code ids of epoch rows, checked; the last ``REMEMBERED`` distinct ones are not checked again
    (rows come grouped by config, and memory stays bounded however many configs there are)."""

    REMEMBERED = 4096

    def __init__(self):
        self.seen: dict[tuple, None] = {}

    def __call__(self, row: dict, where: str) -> None:
        key = (row.get("task"), row.get("dataset"), row.get("metric"), row.get("nn"), row.get("transform"),
               row.get("nn_code_id"), row.get("transform_code_id"), row.get("metric_code_id"))
        if key in self.seen:
            return
        untrusted.config("_".join(str(part) for part in key[:4]), where)
        untrusted.optional_name(registry.TRANSFORM, key[4], where)
        for code_id in key[5:]:
            untrusted.code_id(code_id, where)
        if len(self.seen) >= self.REMEMBERED:
            del self.seen[next(iter(self.seen))]
        self.seen[key] = None


def copy_database(source: str, target: str) -> dict[str, int]:
    """Rows read per table, trials added (``trials added``), trials that were running at the source and can
    be reclaimed (``running trials released``) and replica links to trials outside the source set to NULL
    (``replica links dropped``)."""
    copy = _Copy(source, target)
    src, store = copy.src, copy.store
    for table, kind in ((Nn, "nn"), (Transform, "transform"), (Metric, "metric")):
        copy.insert(table, copy.checked(table, src.rows(table), _check_code(kind)))
    copy.insert(Prm, src.rows(Prm))
    copy.insert(ImageAttribute, src.rows(ImageAttribute))
    copy.insert(ConstantBaseline, src.rows(ConstantBaseline))
    copy.insert(CodeVersion, copy.checked(CodeVersion, src.rows(CodeVersion), _check_version))
    copy.insert(NnStat, copy.checked(NnStat, src.rows(NnStat),
                                     lambda row, where: untrusted.code_id(row.get("code_id"), where)))
    copy.insert(Study, copy.checked(Study, src.rows(Study), lambda row, where: untrusted.config(row["config"], where)))

    merger = TrialMerger(store)
    read = 0
    for chunk in bulk.chunks(src.rows(Trial), BATCH):
        for row in chunk:
            row["uid"] = row.get("uid") or derived_uid(row)
        with store.transaction() as session:
            merger.add(session, chunk, lambda row: src.where(Trial, row))
        read += len(chunk)
    merger.link_replicas()
    copy.counts.update({"trial": read, "trials added": len(merger.added),
                        "running trials released": merger.released, "replica links dropped": merger.dropped})

    def stats(rows):
        """Epoch rows, their trial id mapped; those without a trial (imported from LEMUR's JSON) as they are."""
        for row in rows:
            if row.get("trial_id") is not None:
                if row["trial_id"] not in merger.ids:
                    raise untrusted.BadRecord(src.where(Stat, row), f"trial {row['trial_id']} is not in the source")
                row["trial_id"] = merger.ids[row["trial_id"]]
            yield row

    def mapped(rows):
        """Rows of the trials this copy added, their trial id mapped (those of trials already there are
        not copied again)."""
        for row in rows:
            if row["trial_id"] in merger.added:
                row["trial_id"] = merger.ids[row["trial_id"]]
                yield row

    copy.insert(Stat, stats(copy.checked(Stat, src.rows(Stat), _Names())))
    copy.insert(TrainStat, src.rows(TrainStat))
    copy.insert(StatMetric, src.rows(StatMetric))
    exports = _copy_exports(copy, mapped(src.rows(Export)))

    def latencies(rows):
        for row in mapped(rows):
            row.pop("id")
            row["export_id"] = exports[row["export_id"]]
            yield row

    copy.insert(Latency, latencies(src.rows(Latency)))
    copy.insert(Fusion, mapped(src.rows(Fusion)))
    copy.insert(Prediction, mapped(src.rows(Prediction)))
    store.advance_id_sequences()
    return copy.counts


def _copy_exports(copy: _Copy, rows: Iterable[dict]) -> dict[int, int]:
    """Artifacts of the added trials under new ids; source export id -> export id here."""
    ids: dict[int, int] = {}
    table = Export.__table__
    copy.counts["export"] = 0
    for chunk in bulk.chunks(rows, BATCH):
        sources = [row.pop("id") for row in chunk]
        with copy.store.transaction() as session:
            here = session.connection().execute(insert(table).returning(table.c.id, sort_by_parameter_order=True),
                                                chunk).scalars()
            ids.update(zip(sources, here))
        copy.counts["export"] += len(chunk)
    return ids
