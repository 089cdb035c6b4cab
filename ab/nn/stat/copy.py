"""Copy a statistics database into another, typically a PostgreSQL sweep shared by many machines into
a local SQLite file for analysis, or several machines' SQLite files into one.

Rows never mix: a trial is recognised by its ``uid`` (a uuid4 given at reservation; sources from
before uids get one derived from their fields, the same every time), so copying into a non-empty
database gives copied trials new ids where needed and maps every reference to them (epochs,
artifacts, latencies, predictions, mixtures, replica groups), and copying the same source again
adds nothing. Code, hyperparameter sets, image labels and epoch rows are keyed by content and
inserted once.
Every Optuna study with new trials is copied with ``optuna.copy_study`` (under a new name when the
target already holds a study of that name) and the copied trials point at their copied Optuna trials.
"""
from __future__ import annotations

import hashlib

import optuna
from sqlalchemy import inspect, select, update

from ab.nn.stat import engine as engines
from ab.nn.stat.schema import (CodeVersion, Export, Fusion, ImageAttribute, Latency, Metric, Nn, NnStat, Prediction,
                               Prm, Stat, StatMetric, Study, TrainStat, Transform, Trial)
from ab.nn.stat.store import StatStore, insert_ignore

CHUNK = 200  # rows per INSERT: SQLite allows at most 32,766 bound values per statement


def derived_uid(row: dict) -> str:
    """The uid of a trial recorded before uids: a digest of what identifies it where it was recorded."""
    key = "|".join(str(row.get(c)) for c in ("config", "study", "number", "started_at", "id", "host", "pid"))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


class _Source:
    def __init__(self, url: str):
        self.engine = engines.engine(url, writer=False)
        self.inspector = inspect(self.engine)

    def rows(self, table, where=None):
        """Rows of ``table`` with the columns both schemas have (the source is read, never migrated)."""
        if not self.inspector.has_table(table.__tablename__):
            return
        present = {c["name"] for c in self.inspector.get_columns(table.__tablename__)}
        columns = [c for c in table.__table__.columns if c.name in present]
        query = select(*columns)
        if where is not None:
            query = query.where(where)
        with self.engine.connect() as connection:
            result = connection.execution_options(stream_results=True).execute(query)
            while batch := result.fetchmany(CHUNK):
                yield from (dict(row._mapping) for row in batch)


def _insert(store: StatStore, table, rows: list[dict], counts: dict) -> None:
    for start in range(0, len(rows), CHUNK):
        with store.transaction() as session:
            insert_ignore(session, table, rows[start:start + CHUNK])
    counts[table.__tablename__] = counts.get(table.__tablename__, 0) + len(rows)


def copy_database(source: str, target: str) -> dict[str, int]:
    """Rows read per table and trials added (``trials added``); ``optuna studies`` counts studies copied."""
    src, store = _Source(source), StatStore(target)
    counts: dict[str, int] = {}
    for table in (Nn, Transform, Metric, Prm, CodeVersion, NnStat, ImageAttribute):
        _insert(store, table, list(src.rows(table)), counts)

    trial_map: dict[int, int] = {}
    new_trials: list[dict] = []
    with store.transaction() as session:
        known = dict(session.execute(select(Trial.uid, Trial.id)).all())
    for row in src.rows(Trial):
        row["uid"] = row.get("uid") or derived_uid(row)
        if row["uid"] in known:
            trial_map[row["id"]] = known[row["uid"]]
        else:
            new_trials.append(row)
    copied = set()
    for row in new_trials:
        source_id = row.pop("id")
        row["lease_id"] = None  # leases belong to the database they were taken in
        with store.transaction() as session:
            trial = Trial(**row)
            session.add(trial)
            session.flush()
            trial_map[source_id] = trial.id
        copied.add(source_id)
    with store.transaction() as session:
        for row in new_trials:
            if row.get("replica_of") is not None:
                session.execute(update(Trial).where(Trial.uid == row["uid"])
                                .values(replica_of=trial_map.get(row["replica_of"])))
    counts["trials added"] = len(copied)

    def mapped(rows):
        """Rows of the trials copied now, their trial id mapped (those of trials already there are not
        copied again)."""
        for row in rows:
            if row["trial_id"] in copied:
                row["trial_id"] = trial_map[row["trial_id"]]
                yield row

    def stats(rows):
        """Epoch rows: keyed by content, so inserted once; those without a trial (imported from LEMUR's
        JSON) as they are."""
        for row in rows:
            if row.get("trial_id") is not None:
                if row["trial_id"] not in trial_map:
                    continue
                row["trial_id"] = trial_map[row["trial_id"]]
            yield row

    _insert(store, Stat, list(stats(src.rows(Stat))), counts)
    _insert(store, TrainStat, list(src.rows(TrainStat)), counts)
    _insert(store, StatMetric, list(src.rows(StatMetric)), counts)
    export_map: dict[int, int] = {}
    for row in mapped(src.rows(Export)):
        source_id = row.pop("id")
        with store.transaction() as session:
            export = Export(**row)
            session.add(export)
            session.flush()
            export_map[source_id] = export.id
    counts["export"] = len(export_map)
    latencies = []
    for row in mapped(src.rows(Latency)):
        row.pop("id")
        row["export_id"] = export_map[row["export_id"]]
        latencies.append(row)
    _insert(store, Latency, latencies, counts)
    _insert(store, Fusion, list(mapped(src.rows(Fusion))), counts)
    _insert(store, Prediction, list(mapped(src.rows(Prediction))), counts)
    store.advance_id_sequences()
    counts["optuna studies"] = _copy_studies(src, source, target, store, {trial_map[i] for i in copied})
    return counts


def _copy_studies(src: _Source, source: str, target: str, store: StatStore, copied_trials: set[int]) -> int:
    """Copy the Optuna studies of the copied trials, with our definition of each (what it optimises);
    re-point those trials at the copied Optuna trials."""
    if not copied_trials:
        return 0
    with store.transaction() as session:
        trials = session.execute(select(Trial.id, Trial.study, Trial.number).where(Trial.id.in_(copied_trials))).all()
    wanted = {study for _, study, number in trials if number is not None}
    existing = set(optuna.get_all_study_names(storage=target))
    available = set(optuna.get_all_study_names(storage=source))
    renamed = {}
    for name in sorted(wanted & available):
        new_name = name
        suffix = 1
        while new_name in existing:
            new_name = f"{name} (copy {suffix})"
            suffix += 1
        optuna.copy_study(from_study_name=name, from_storage=source, to_storage=target, to_study_name=new_name)
        existing.add(new_name)
        renamed[name] = new_name
    definitions = {row["name"]: row for row in src.rows(Study)}
    with store.transaction() as session:
        for name, new_name in renamed.items():
            if name in definitions and session.get(Study, new_name) is None:
                session.add(Study(**{**definitions[name], "name": new_name}))
    for name, new_name in renamed.items():
        numbers = {t.number: t._trial_id for t in optuna.load_study(study_name=new_name, storage=target).trials}
        with store.transaction() as session:
            for trial_id, study, number in trials:
                if study == name and number is not None:
                    session.execute(update(Trial).where(Trial.id == trial_id).values(
                        study=new_name, optuna_trial_id=numbers.get(number)))
    return len(renamed)
