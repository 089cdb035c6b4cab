"""Trials in child processes: a segfault, ``os._exit``, a memory or a wall-clock limit ends the
child, never the sweep, and what happened is recorded where it happened.

The child is started with ``spawn`` (no inherited threads or locks), leads its own process group
(so that its DataLoader workers, export workers and anything else it starts end with it), dies
with its parent (Linux ``PR_SET_PDEATHSIG``), and reports its outcome through a file as soon as
training is recorded, before exporting. The parent watches the group's wall time and unique memory
(PSS: pages shared by DataLoader workers, such as the image cache, count once) and ends the whole
group at a limit. A death after training is an export failure, stored on the trial's export rows;
the trained result stands and counts as trained.
"""
from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from ab.nn import workspace
from ab.nn.stat.schema import FAILED
from ab.nn.stat.store import StatStore
from ab.nn.sweep.trial import TrialOutcome, TrialSpec, run_trial
from ab.nn.util import processes

POLL_SECONDS = 0.25


@dataclass(frozen=True)
class Limits:
    minutes: float | None = None    # wall-clock limit of a whole trial (export included)
    memory_gb: float | None = None  # unique memory (PSS) limit of the trial's process group


def _child(spec: TrialSpec, result: str, parent: int) -> None:
    os.setsid()  # the trial leads its own process group: ended as a whole
    processes.die_with_parent(parent)

    def report(outcome: TrialOutcome, exported: bool) -> None:
        tmp = Path(f"{result}.tmp")
        tmp.write_bytes(pickle.dumps((outcome, exported)))
        os.replace(tmp, result)

    with workspace.active.use(spec.workspace):  # the registry finds the workspace's own model files
        outcome = run_trial(spec, on_trained=lambda trained: report(trained, False))
    report(outcome, True)


def _group(pid: int) -> list[psutil.Process]:
    try:
        leader = psutil.Process(pid)
        return [leader, *leader.children(recursive=True)]
    except psutil.Error:
        return []


def unique_memory(pid: int) -> int:
    """Proportional set size of a process and its descendants, in bytes (resident size where PSS is
    not available): a page shared by N processes counts 1/N in each."""
    total = 0
    for process in _group(pid):
        try:
            info = process.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except psutil.Error:
            continue
    return total


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        return f"the trial's process died from signal {signal.Signals(-code).name}"
    return f"the trial's process exited with code {code} before reporting"


def _end(process) -> None:
    """End the trial's whole process group (and the child itself, if it had not yet made its group)."""
    processes.kill_group(process.pid)
    if process.is_alive():
        process.kill()
    process.join()


def run_isolated(spec: TrialSpec, limits: Limits = Limits()) -> TrialOutcome:
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="ab-nn-trial-") as folder:
        result = Path(folder) / "outcome.pkl"
        process = context.Process(target=_child, args=(spec, str(result), os.getpid()), name=f"trial-{spec.trial_id}")
        process.start()
        started = time.monotonic()
        reason = None
        try:
            while process.is_alive():
                process.join(POLL_SECONDS)
                if limits.minutes is not None and time.monotonic() - started > limits.minutes * 60:
                    reason = f"wall-clock limit of {limits.minutes:g} minutes hit"
                elif limits.memory_gb is not None and (used := unique_memory(process.pid)) > limits.memory_gb * 2 ** 30:
                    reason = f"memory limit of {limits.memory_gb:g} GB hit ({used / 2 ** 30:.2f} GB unique memory)"
                if reason:
                    break
        finally:  # a limit, Ctrl-C, SIGTERM or a normal end: nothing of the trial outlives it
            _end(process)
        reason = reason or (None if process.exitcode == 0 else _exit_reason(process.exitcode))
        reported = pickle.loads(result.read_bytes()) if result.exists() else None
    store = StatStore(spec.db_url)
    if reported is not None:
        outcome, exported = reported
        if reason and not exported:
            store.add_export(spec.trial_id, fence=spec.lease_id, format="export", precision="-", status=FAILED,
                             error=f"ExportCrashed: {reason} after training; the trained result is kept")
        return outcome
    reason = reason or _exit_reason(process.exitcode)
    store.finish_trial(spec.trial_id, FAILED, error=f"TrialCrashed: {reason}", fence=spec.lease_id)
    return TrialOutcome(FAILED, error=f"TrialCrashed: {reason}")
