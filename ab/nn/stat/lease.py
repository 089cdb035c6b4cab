"""Leases: how runners tell each other they are alive, and who may still write about a trial.

Each runner holds a row in ``lease`` (host, pid, machine boot, pid namespace, start) and renews its
heartbeat from a background thread. A trial records the lease of the runner that reserved it, and
another runner reclaims a ``running`` trial only when that lease has lapsed (no heartbeat for
``ttl`` seconds, by the database's clock), was released, or belongs to a process that is certainly
gone (same boot and pid namespace, no such process). A host name and a pid alone prove nothing:
containers with host networking share the name, not the pids. Once a trial is reclaimed, writes
fenced with its old lease are refused (``ab.nn.stat.states.LeaseLost``).
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select, update

from ab.nn.stat.schema import Lease
from ab.nn.util import processes, system

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 30.0
LAPSE_BEATS = 4  # a lease lapses after this many missed heartbeats


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value


@dataclass(frozen=True)
class LeaseState:
    id: int
    host: str | None
    pid: int | None
    alive: bool
    reason: str  # why it counts as gone, or "alive"


class RunnerLease:
    """This process's lease: acquired on start, renewed every ``heartbeat`` seconds, released on exit."""

    def __init__(self, store, heartbeat: float = HEARTBEAT_SECONDS):
        self.store, self.heartbeat = store, heartbeat
        self.id: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "RunnerLease":
        pid = os.getpid()
        with self.store.transaction() as session:
            row = Lease(host=system.host(), pid=pid, boot_id=processes.boot_id(),
                        pid_namespace=processes.pid_namespace(), process_started=processes.started_at(pid),
                        started_at=func.now(), beat_at=func.now(), ttl_seconds=self.heartbeat * LAPSE_BEATS)
            session.add(row)
            session.flush()
            self.id = row.id
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.id}", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                with self.store.transaction() as session:
                    session.execute(update(Lease).where(Lease.id == self.id, Lease.released_at.is_(None))
                                    .values(beat_at=func.now()))
            except Exception as error:  # the next beat tries again; a long outage lets the lease lapse
                log.warning("lease %s: heartbeat failed: %s", self.id, error)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            with self.store.transaction() as session:
                session.execute(update(Lease).where(Lease.id == self.id).values(released_at=func.now()))
        except Exception as error:
            log.warning("lease %s: could not be released (it will lapse): %s", self.id, error)


def states(session, lease_ids) -> dict[int, LeaseState]:
    """Whether each lease's runner is alive, judged by the database's clock (``session``'s)."""
    ids = sorted({int(i) for i in lease_ids if i is not None})
    if not ids:
        return {}
    now = _utc(session.scalar(select(func.now())))
    rows = {row.id: row for row in session.scalars(select(Lease).where(Lease.id.in_(ids)))}
    out = {}
    for lease_id in ids:
        row = rows.get(lease_id)
        if row is None:
            out[lease_id] = LeaseState(lease_id, None, None, False, f"its lease {lease_id} is missing")
            continue
        who = f"process {row.pid} on {row.host}"
        beat = _utc(row.beat_at)
        if row.released_at is not None:
            alive, reason = False, f"its runner ({who}) released its lease"
        elif processes.certainly_gone(row.boot_id, row.pid_namespace, row.pid, row.process_started):
            alive, reason = False, f"its runner ({who}) is gone"
        elif beat is None or now - beat > timedelta(seconds=row.ttl_seconds or HEARTBEAT_SECONDS * LAPSE_BEATS):
            alive, reason = False, f"its runner ({who}) stopped heartbeating at {beat} (database time {now})"
        else:
            alive, reason = True, "alive"
        out[lease_id] = LeaseState(lease_id, row.host, row.pid, alive, reason)
    return out
