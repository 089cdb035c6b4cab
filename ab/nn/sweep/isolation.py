"""Trials in child processes: a segfault, ``os._exit``, a memory or a wall-clock limit ends the
child, never the sweep, and the trial is recorded as failed with the reason.

The child is started with ``spawn`` (no inherited threads or locks), dies with its parent
(Linux ``PR_SET_PDEATHSIG``), and reports its outcome through a file. The parent watches the
child's wall time and resident memory (with its own children) and kills it at a limit.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import pickle
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from ab.nn.stat.schema import FAILED, RUNNING
from ab.nn.stat.store import StatStore
from ab.nn.sweep.trial import TrialOutcome, TrialSpec, run_trial

POLL_SECONDS = 0.25


@dataclass(frozen=True)
class Limits:
    minutes: float | None = None    # wall-clock limit of a whole trial
    memory_gb: float | None = None  # resident memory limit of the trial's process tree


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: an orphaned child finishes its trial on its own


def _child(spec: TrialSpec, result: str) -> None:
    _die_with_parent()
    outcome = run_trial(spec)
    Path(result).write_bytes(pickle.dumps(outcome))


def _rss(process: psutil.Process) -> int:
    try:
        return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])
    except psutil.Error:
        return 0


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        return f"the trial's process died from signal {signal.Signals(-code).name}"
    return f"the trial's process exited with code {code} before reporting"


def run_isolated(spec: TrialSpec, limits: Limits = Limits()) -> TrialOutcome:
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="ab-nn-trial-") as folder:
        result = Path(folder) / "outcome.pkl"
        process = context.Process(target=_child, args=(spec, str(result)), name=f"trial-{spec.trial_id}")
        process.start()
        watched = psutil.Process(process.pid)
        started = time.monotonic()
        reason = None
        try:
            while process.is_alive():
                process.join(POLL_SECONDS)
                if limits.minutes is not None and time.monotonic() - started > limits.minutes * 60:
                    reason = f"wall-clock limit of {limits.minutes:g} minutes hit"
                elif limits.memory_gb is not None and (rss := _rss(watched)) > limits.memory_gb * 2 ** 30:
                    reason = f"memory limit of {limits.memory_gb:g} GB hit ({rss / 2 ** 30:.2f} GB resident)"
                if reason and process.is_alive():
                    process.kill()
                    process.join()
        except BaseException:  # Ctrl-C or a kill of the runner: take the child along
            if process.is_alive():
                process.kill()
                process.join()
            raise
        if reason is None and result.exists():
            return pickle.loads(result.read_bytes())
        reason = reason or _exit_reason(process.exitcode)
    store = StatStore(spec.db_url, spec.workspace.stat_train_dir)
    if store.trial_status(spec.trial_id) == RUNNING:
        store.finish_trial(spec.trial_id, FAILED, error=f"TrialCrashed: {reason}")
    return TrialOutcome(FAILED, error=f"TrialCrashed: {reason}")
