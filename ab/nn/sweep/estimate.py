"""``--dry-run``'s time estimate: seconds per image measured by earlier trials of the same config on
the same kind of device, times the images the planned trials would see (training and validation
parts, every epoch). Export and the test pass are not included."""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from sqlalchemy import func, select

from ab.nn.config import Config
from ab.nn.stat.schema import Stat, Trial
from ab.nn.stat.store import StatStore


@dataclass(frozen=True)
class Rate:
    seconds_per_image: float  # median over the trials measured
    trials: int               # how many trials it is measured on


def measured_rate(store: StatStore, config: Config, device: str) -> Rate | None:
    """The median seconds per image (training + validation) of this config's recorded trials on
    ``device``'s kind (cpu, cuda); ``None`` when none has finished an epoch there. A stat row's
    ``duration`` is LEMUR's time since training began, so a trial's last row covers all its epochs."""
    kind = device.split(":")[0]
    query = (select(Trial.n_train, Trial.n_eval, Trial.device, func.max(Stat.epoch), func.max(Stat.duration))
             .join(Stat, Stat.trial_id == Trial.id)
             .where(Trial.config == config.name, Stat.duration.is_not(None), Trial.n_train.is_not(None))
             .group_by(Trial.id, Trial.n_train, Trial.n_eval, Trial.device))
    with store.transaction() as session:
        rows = session.execute(query).all()
    rates = [duration / 1e9 / (epochs * (n_train + (n_eval or 0)))
             for n_train, n_eval, on, epochs, duration in rows
             if (on or "").split(":")[0] == kind and epochs and n_train + (n_eval or 0) > 0 and duration > 0]
    return Rate(statistics.median(rates), len(rates)) if rates else None


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def describe(rate: Rate | None, images_per_epoch: int | None, epochs: int, trials: int | None, device: str) -> str:
    """One line: the estimate per trial and for ``trials``, with what it rests on, or why there is none."""
    kind = device.split(":")[0]
    if rate is None:
        return f"time: no measurement yet (no trial of this config has finished an epoch on {kind})"
    if not images_per_epoch:
        return "time: unknown (the loader does not say how many images a trial sees)"
    per_trial = rate.seconds_per_image * images_per_epoch * epochs
    total = f", ~{duration(per_trial * trials)} for {trials}" if trials else ""
    return (f"time: ~{duration(per_trial)} per trial{total} ({rate.seconds_per_image * 1e3:.2f} ms per image, the "
            f"median of {rate.trials} earlier trial{'' if rate.trials == 1 else 's'} on {kind}; "
            f"training and validation, export not included)")
