"""A trial in a child process, as ``ab.nn.sweep.isolation`` starts it through the sandbox launcher: it is
told its ``TrialSpec`` as JSON, runs ``run_trial`` with stand-ins for the statistics store and Optuna's
reporter that send every write and question to the runner (``ab.nn.sweep.trial_protocol``), and ends
with its outcome. It never opens the database: in a sandbox there is none to open."""
from __future__ import annotations

import math
import os
import secrets
import time
from dataclasses import fields

import numpy as np

from ab.nn import registry, workspace
from ab.nn.dataset import cache
from ab.nn.dataset.utkface.attributes import Attributes
from ab.nn.sandbox import child
from ab.nn.sandbox.protocol import Channel
from ab.nn.stat.states import LeaseLost
from ab.nn.sweep.trial import run_trial
from ab.nn.sweep.trial_spec import TrialOutcome, TrialSpec, describe_error
from ab.nn.sweep.trial_protocol import MAX_ERROR

LABELS = [f.name for f in fields(Attributes)]


def plain(value):
    """``value`` as JSON can carry it: arrays and numpy numbers as lists and numbers, tuples as lists, and
    numbers that are not finite as None (as the store would record them)."""
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return plain(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


class Runner:
    """The runner at the other end of the channel, asked one call at a time."""

    def __init__(self, channel: Channel, trial_id: int):
        self.channel, self.trial_id = channel, trial_id

    def call(self, method: str, **args):
        ident = secrets.token_hex(8)
        self.channel.send({"type": "call", "id": ident, "method": method, "args": plain(args)})
        answer = self.channel.receive()
        if answer is None:
            os._exit(1)  # the runner is gone: nothing can be recorded any more
        if answer.get("id") != ident:
            raise RuntimeError(f"the runner answered another call than {method}")
        if answer["type"] == "refused":
            raise LeaseLost(self.trial_id, answer.get("status"))
        return answer.get("value")


class RunnerStore:
    """The ``StatStore`` writes a trial makes, sent to the runner (the trial id and the lease are the
    runner's to fill in); ``seconds`` is the time spent waiting for it."""

    def __init__(self, runner: Runner):
        self.runner, self.seconds = runner, 0.0

    def _call(self, method: str, **args):
        began = time.perf_counter()
        try:
            return self.runner.call(method, **args)
        finally:
            self.seconds += time.perf_counter() - began

    def update_trial(self, trial_id, *, fence=None, **fields) -> None:
        self._call("update_trial", **fields)

    def record_epoch(self, trial_id, epoch, *, accuracy, duration, metrics, train_stat, fence=None) -> str:
        return self._call("record_epoch", epoch=epoch, accuracy=accuracy, duration=duration, metrics=metrics,
                          train_stat=train_stat)

    def record_test(self, trial_id, stat_id, accuracy, metrics, interval=None, *, fence=None) -> None:
        self._call("record_test", stat_id=stat_id, accuracy=accuracy, metrics=metrics, interval=interval)

    def record_predictions(self, trial_id, split, ages, predicted, image_ids=None, *, fence=None) -> None:
        self._call("record_predictions", split=split, ages=ages, predicted=predicted,
                   image_ids=None if image_ids is None else list(image_ids))

    def record_attributes(self, dataset, images) -> None:
        self._call("record_attributes", images=[{"image_id": image_id, **{k: getattr(found, k) for k in LABELS}}
                                                for image_id, found in images if image_id is not None])

    def finish_trial(self, trial_id, status, error=None, *, fence=None, **fields) -> bool:
        return self._call("finish_trial", status=status, error=None if error is None else error[:MAX_ERROR],
                          bookkeeping_seconds=fields.get("bookkeeping_seconds"))

    def trial_status(self, trial_id) -> str | None:
        return self._call("trial_status")

    def recorded_predictions(self, trial_id) -> dict:
        return self._call("recorded_predictions")

    def add_export(self, trial_id, *, fence=None, **fields) -> int:
        return self._call("add_export", **fields)

    def update_export(self, export_id, **fields) -> None:
        self._call("update_export", export_id=export_id, **fields)

    def add_latency(self, export_id, trial_id, *, fence=None, **fields) -> int:
        return self._call("add_latency", export_id=export_id, **fields)


class RunnerReporter:
    """``EpochReporter``'s question (should the trial be pruned?), asked of the runner, which talks to Optuna."""

    def __init__(self, runner: Runner):
        self.runner, self._reason = runner, None

    def report(self, epoch: int, mae: float | None) -> bool:
        answer = self.runner.call("report_epoch", epoch=epoch, mae=mae)
        self._reason = answer["reason"]
        return bool(answer["prune"])

    def reason(self, epoch: int) -> str:
        return self._reason or f"pruned after epoch {epoch}"


def main() -> None:
    channel = child.channel()
    request = channel.receive()
    spec = TrialSpec.from_json(request["spec"])
    runner = Runner(channel, spec.trial_id)
    staged = {spec.config.nn: spec.model_file} if spec.model_file is not None else {}
    runner.call("phase", phase="setup", epoch=0)  # from here on the trial's own code may run
    try:
        with workspace.active.use(spec.workspace), registry.staged.use(staged), \
                cache.builder.use(lambda size: runner.call("prepare_images", size=size)):
            outcome = run_trial(spec, store=RunnerStore(runner), reporter=RunnerReporter(runner),
                                phase=lambda name, epoch=0: runner.call("phase", phase=name, epoch=epoch))
    except Exception as error:  # what run_trial itself lets through (a storage error it could not record)
        outcome = TrialOutcome("failed", error=describe_error(error))
    channel.send({"type": "end", "id": request["id"], "status": outcome.status,
                  "error": None if outcome.error is None else outcome.error[:MAX_ERROR], "fatal": outcome.fatal})
    os._exit(0)  # nothing the model code left behind (threads, atexit hooks) runs after the end


if __name__ == "__main__":
    main()
