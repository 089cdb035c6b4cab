"""What a trial's row can say, and the refusal a runner gets once the row is no longer its to write.

Kept apart from the tables (``schema``) so that a trial child, which writes through its runner and never
opens the database, does not load SQLAlchemy and pandas to know a status.
"""
from __future__ import annotations

RUNNING = "running"
COMPLETE = "complete"
STOPPED = "stopped"      # LEMUR's early stop: accuracy at or below 1.2 x MINIMUM_ACCURACY
DIVERGED = "diverged"    # the loss or the outputs became NaN/inf
FAILED = "failed"
INTERRUPTED = "interrupted"  # its runner was stopped (SIGTERM/SIGINT) or died (its lease lapsed)
PRUNED = "pruned"        # stopped by the sweep's pruner (--pruner), its epochs recorded
FINAL_STATES = (COMPLETE, STOPPED, DIVERGED, FAILED, INTERRUPTED, PRUNED)
"""A trial's status moves once, from ``running`` to one of these, never back or sideways."""
RESULT_STATES = (COMPLETE, STOPPED, DIVERGED, PRUNED)
"""Outcomes that count towards ``-t`` (a pruned trial took its slot, as every worker sees it)."""
TRAINED_STATES = (COMPLETE, STOPPED)
"""Outcomes whose accuracy is a result to compare (a diverged trial's last accuracy is not)."""


class LeaseLost(RuntimeError):
    """A fenced write about a trial that its runner no longer owns (another runner reclaimed it): the
    write is refused and the trial's work does not count."""

    def __init__(self, trial_id: int, status: str | None):
        super().__init__(f"trial {trial_id} is no longer this runner's (recorded {status or 'missing'} by another "
                         f"process, which found this runner's lease lapsed); its work here is not recorded")
        self.trial_id, self.status = trial_id, status
