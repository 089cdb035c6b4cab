"""Trials from another database or a JSON mirror, added under ids that mean something here.

Our ``trial`` table is the authority on a trial; Optuna's tables are a copy of it that the
reconciler (``python -m ab.nn.stat check --repair``, and every runner start) rebuilds. So imports and
copies write our tables only, and an added trial:

* is recognised by its ``uid``: a trial already here is mapped to, never added twice;
* keeps its id when this database held no trials when the merge began (a database rebuilt from its
  own mirror, or a first copy of a shared one, keeps the ids people type), else gets the next free one;
* keeps its ``study`` (the runner's ``<config>@<data_key>/e<epochs>``, so two machines' trials of one
  config on one data key join one study) but not the source's Optuna ``number`` and
  ``optuna_trial_id``: both are NULL until the reconciler adds the trial to that study;
* keeps ``replica_of`` only where the group's first trial is part of the same import (then it points
  at that trial's id here); a link to a trial outside it becomes NULL and is counted;
* if it was ``running`` at the source, gets a lease that is already released, so the next runner
  reclaims it at once instead of it holding its slot forever;
* keeps every other column the record has (columns added later travel through the mirror as well).
"""
from __future__ import annotations

import hashlib
from typing import Callable

from sqlalchemy import bindparam, func, insert, select, update

from ab.nn import registry
from ab.nn.stat import bulk, untrusted
from ab.nn.stat.schema import Lease, Trial
from ab.nn.stat.states import FINAL_STATES, RUNNING
from ab.nn.stat.store import StatStore

TRIAL = Trial.__table__
NOT_CARRIED = ("id", "number", "optuna_trial_id", "replica_of", "lease_id")
"""Columns whose values mean something only in the source database."""
REQUIRED = tuple(c.name for c in TRIAL.columns if not c.nullable and not c.primary_key and c.default is None)
DEFAULTED = frozenset(c.name for c in TRIAL.columns if not c.nullable and c.default is not None)
"""Columns that take their default where a record has none (``epochs_done``)."""
STATUSES = (RUNNING, *FINAL_STATES)


def derived_uid(row: dict) -> str:
    """The uid of a trial recorded before uids: a digest of what identifies it where it was recorded."""
    key = "|".join(str(row.get(c)) for c in ("config", "study", "number", "started_at", "id", "host", "pid"))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def check(row: dict, where: str) -> dict:
    """A trial's columns, validated: names that become paths, a known status, ids that are integers."""
    for column in REQUIRED + ("id",):
        if row.get(column) is None:
            raise untrusted.BadRecord(where, f"trial without {column}")
    untrusted.integer(row["id"], where, "id")
    untrusted.integer(row.get("replica_of"), where, "replica_of")
    config = untrusted.config(row["config"], where)
    if (row["task"], row["dataset"], row["metric"], row["nn"]) != config.parts:
        raise untrusted.BadRecord(where, f"task, dataset, metric and nn {shown_parts(row)} disagree with config "
                                         f"{config.name}")
    untrusted.optional_name(registry.TRANSFORM, row.get("transform"), where)
    untrusted.code_id(row.get("nn_code_id"), where)
    if row["status"] not in STATUSES:
        raise untrusted.BadRecord(where, f"status {untrusted.shown(row['status'])} is not one of {', '.join(STATUSES)}")
    if not isinstance(row.get("uid"), str) or not row["uid"] or untrusted.unstorable(row["uid"]):
        raise untrusted.BadRecord(where, f"uid {untrusted.shown(row.get('uid'))} is not a string")
    return row


def shown_parts(row: dict) -> str:
    return untrusted.shown("_".join(str(row[c]) for c in ("task", "dataset", "metric", "nn")))


class TrialMerger:
    """Adds trials, batch by batch, and remembers source id -> id here for everything that refers to them."""

    def __init__(self, store: StatStore):
        self.store = store
        with store.transaction() as session:
            self.keep_ids = session.scalar(select(func.count()).select_from(Trial)) == 0
        self.ids: dict[int, int] = {}
        """Source trial id -> trial id here (added now, or already here with the same uid)."""
        self.added: set[int] = set()
        """Source ids of the trials this merge added."""
        self.released = 0
        """Trials that were running at the source, added with a released lease."""
        self.dropped = 0
        """``replica_of`` links to a trial outside the import, set to NULL."""
        self._links: list[tuple[int, int]] = []
        self._taken: set[int] = set()
        self._leases: dict[tuple, int] = {}

    def add(self, session, rows: list[dict], where: Callable[[dict], str]) -> None:
        """Add ``rows`` (column dicts, source ids in ``id`` and ``replica_of``) in ``session``, each first
        validated (``check``; ``where(row)`` names it in an error)."""
        batch: set[int] = set()
        for row in rows:
            check(row, where(row))
            if row["id"] in self.ids or row["id"] in batch:
                raise untrusted.BadRecord(where(row), f"trial id {row['id']} appears twice")
            batch.add(row["id"])
        known = dict(bulk.lookup(session, Trial.uid, [Trial.uid, Trial.id], (r["uid"] for r in rows)))
        new: dict[str, dict] = {}
        for row in rows:
            if row["uid"] in known:
                self.ids[row["id"]] = known[row["uid"]]
            elif row["uid"] not in new:
                new[row["uid"]] = row
        groups: dict[tuple, list[tuple[dict, dict]]] = {}
        for row in new.values():
            values = {k: v for k, v in row.items() if k not in NOT_CARRIED and not (v is None and k in DEFAULTED)}
            values["lease_id"] = self._released_lease(session, row) if row["status"] == RUNNING else None
            keep = self.keep_ids and row["id"] not in self._taken
            if keep:
                values["id"] = row["id"]
                self._taken.add(row["id"])
            groups.setdefault((keep, tuple(sorted(values))), []).append((row, values))
        connection = session.connection()
        for (keep, _), members in groups.items():
            params = bulk.as_utc(TRIAL, [values for _, values in members])
            if keep:
                connection.execute(insert(TRIAL), params)
                here = [values["id"] for values in params]
            else:
                here = list(connection.execute(insert(TRIAL).returning(TRIAL.c.id, sort_by_parameter_order=True),
                                               params).scalars())
                self._taken.update(here)
            for (row, _), trial_id in zip(members, here):
                self.ids[row["id"]] = trial_id
                self.added.add(row["id"])
                if row.get("replica_of") is not None:
                    self._links.append((trial_id, row["replica_of"]))
        for row in rows:
            if row["id"] not in self.ids:  # a second record of a uid added in this batch
                self.ids[row["id"]] = self.ids[new[row["uid"]]["id"]]

    def _released_lease(self, session, row: dict) -> int:
        """One lease per source runner (host, pid), released when it is made: its trials are reclaimable."""
        key = (row.get("host"), row.get("pid"))
        if key not in self._leases:
            self._leases[key] = session.execute(insert(Lease).values(
                host=key[0], pid=key[1], ttl_seconds=0.0, started_at=func.now(), beat_at=func.now(),
                released_at=func.now()).returning(Lease.id)).scalar_one()
        self.released += 1
        return self._leases[key]

    def link_replicas(self) -> None:
        """Point each added replica at its group's first trial here (after every trial was added)."""
        updates = []
        for trial_id, first in self._links:
            if first in self.ids:
                updates.append({"here": trial_id, "first": self.ids[first]})
            else:
                self.dropped += 1
        statement = update(TRIAL).where(TRIAL.c.id == bindparam("here")).values(replica_of=bindparam("first"))
        for chunk in bulk.chunks(updates, 5000):
            with self.store.transaction() as session:
                session.connection().execute(statement, chunk)
        self._links.clear()
