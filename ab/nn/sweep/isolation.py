"""Trials in child processes, one code path for all: each trial runs ``ab.nn.sweep.trial_child`` through
the sandbox launcher (``ab.nn.sandbox``), is told its ``TrialSpec`` as JSON, and sends every write and
question as a message (``ab.nn.sweep.trial_protocol``) that this side checks and applies: writes to the
statistics database fenced with the runner's lease, the pruning question to Optuna. A segfault,
``os._exit``, a hang or a limit ends the child, never the sweep, and what happened is recorded.

* **Who runs where.** Code the project did not write (a workspace or staged model, transform, metric
  or loader file) runs in a bubblewrap sandbox that sees the data folders, the image cache, the
  trial's code files and the torch hub cache read-only, and writes only to a private scratch folder
  bound at the trial's ``out/<config>/<trial>``: afterwards its regular files (no links, at most
  ``FILE_BYTES`` each) are copied into the workspace and the artifact rows are checked against them.
  No network, no database. Without a sandbox on the machine it is refused unless ``unsafe``. The
  package's own models run in a plain child process with this process's environment (trusted: they
  may download weights and use every device).
* **Images** are decoded into the image cache here, before the launch (trusted package code); a child
  that lacks a cache (a workspace transform of another size) asks for it.
* **Time.** Every phase of the trial (its setup, each epoch's ``learn`` and its evaluation, the test)
  must end within the epoch limit plus ``GRACE_SECONDS``, the export within twice its own timeout,
  else the child is killed and the trial recorded failed with "time limit of N minutes"; phases only
  go forward, so their limits bound the whole trial (before its setup, the child only imports this
  project's code: ``START_PHASE_SECONDS``). ``Limits.minutes`` is a wall clock on all of it.
* **Memory**: the unique memory (PSS) of all the child's processes together (``Limits.memory_gb``,
  else 90 % of the machine's), and rlimits on each.
* A death after training (the child recorded its end) is an export failure, stored on the trial's
  export rows; the trained result stands and counts as trained.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from ab.nn import registry, sandbox, workspace
from ab.nn.dataset import trial_data
from ab.nn.dataset.utkface.attributes import Attributes
from ab.nn.model_probe import torch_hub
from ab.nn.sandbox import bwrap
from ab.nn.sandbox.launch import START_SECONDS, start
from ab.nn.sandbox.limits import GiB, MiB
from ab.nn.sandbox.protocol import validate
from ab.nn.stat.states import FAILED, PRUNED, TRAINED_STATES
from ab.nn.stat.states import LeaseLost
from ab.nn.stat.store import StatStore
from ab.nn.sweep import resume_file
from ab.nn.sweep.search import EpochReporter
from ab.nn.sweep.trial_spec import SETUP_ERRORS, TrialOutcome, TrialSpec, describe_error, validation_gap
from ab.nn.sweep.trial_protocol import FROM_CHILD, MAX_MESSAGE, METHODS
from ab.nn.util import atomic, faults, system, tempdirs
from ab.nn.util.digest import sha256_of
from ab.nn.util.paths import inside

CHILD = "ab.nn.sweep.trial_child"
GRACE_SECONDS = 30.0
"""A phase may run this long past the epoch limit (a batch in flight, a DataLoader's workers ending)."""
START_PHASE_SECONDS = 180.0
"""How long the child may take to import its (our) code and say it sets up: no code of the trial's own runs
before, and importing torch takes 20 s on a loaded 2-core machine."""
FILE_BYTES = 8 * GiB
"""The largest file a sandboxed trial may write, and have copied into the workspace."""
IMAGE_SIZES = 2
"""Image caches of other sizes a sandboxed trial may ask for (its transform's training and evaluation sizes)."""
_NAME = re.compile(r"^[\x21-\x7e]{1,100}$")


@dataclass(frozen=True)
class Limits:
    minutes: float | None = None    # wall-clock limit of a whole trial (export included)
    memory_gb: float | None = None  # unique memory (PSS) limit of the trial's processes together


class Refused(Exception):
    """A message the child had no right to send; the child is killed and the trial fails."""


def untrusted_parts(spec: TrialSpec) -> list[tuple[registry.Kind, str]]:
    """The trial's code that is not the package's own (workspace or staged files)."""
    config = spec.config
    parts = [(registry.MODEL, config.nn), (registry.LOADER, config.dataset),
             (registry.TRANSFORM, spec.prm["transform"]), *((registry.METRIC, m) for m in config.metrics)]
    with workspace.active.use(spec.workspace):
        return [(kind, name) for kind, name in parts if registry.origin(kind, name) != registry.PACKAGE]


def run_isolated(spec: TrialSpec, limits: Limits = Limits(), *, unsafe: bool = False) -> TrialOutcome:
    """Run the trial in a child (a sandbox for code the project did not write) and return its outcome as
    recorded."""
    store = StatStore(spec.db_url)
    try:
        untrusted = untrusted_parts(spec)
        found = sandbox.require(unsafe) if untrusted else None
        trial_data.prepare(spec.data_spec)
    except sandbox.SandboxUnavailable as error:
        return _failed(store, spec, f"SandboxUnavailable: {error}", fatal=True)
    except Exception as error:
        if not isinstance(error, (*SETUP_ERRORS, sandbox.SandboxError)):
            raise
        return _failed(store, spec, describe_error(error), fatal=True)
    sandboxed = found is not None and found.ok
    store.update_trial(spec.trial_id, fence=spec.lease_id, sandbox="bubblewrap" if sandboxed else
                       "none: package code" if found is None else f"none: unsafe=True ({found.reason})")
    folder = spec.workspace.trial_dir(spec.config.name, spec.trial_id)
    with tempdirs.folder("trial") as work:
        scratch = work / "out"
        scratch.mkdir()
        if sandboxed:
            folder.mkdir(parents=True, exist_ok=True)  # the bind's mount point
            if spec.resume and resume_file.path_of(folder).is_file():  # the sandbox sees scratch where its folder is
                _copy(resume_file.path_of(folder), resume_file.path_of(scratch))
        try:
            box = start(CHILD, limits=_limits(spec, limits), binds=_binds(spec, untrusted, scratch, folder),
                        env=None if found is None else _environment(), sandboxed=sandboxed, inherit_env=found is None,
                        max_message=MAX_MESSAGE, echo=getattr(sys.stderr, "buffer", None) if spec.progress else None)
        except sandbox.SandboxStartError as error:
            return _failed(store, spec, f"SandboxStartError: {error}", fatal=True)
        with box:
            served = _Served(spec, store, box, limits, scratch if sandboxed else None)
            served.run()
        if sandboxed:
            _collect(scratch, folder)
            _settle(store, spec, folder)
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    return served.outcome()


IN_PROCESS = "none: --in-process --unsafe"
"""``trial.sandbox`` of a trial of workspace code run in the runner's own process."""


def run_in_process(spec: TrialSpec) -> TrialOutcome:
    """``--in-process``: the trial in this process, with ``trial.sandbox`` saying how its code ran (the
    runner allows workspace code here only with ``--unsafe``). Only here does the runner import torch."""
    from ab.nn.sweep.trial import run_trial

    StatStore(spec.db_url).update_trial(spec.trial_id, fence=spec.lease_id,
                                        sandbox=IN_PROCESS if untrusted_parts(spec) else "none: package code")
    return run_trial(spec)


def _failed(store: StatStore, spec: TrialSpec, error: str, fatal: bool = False) -> TrialOutcome:
    store.finish_trial(spec.trial_id, FAILED, error=error, fence=spec.lease_id)
    return TrialOutcome(FAILED, error=error, fatal=fatal)


# -- what the child gets -----------------------------------------------------------------------------
def _phases(spec: TrialSpec) -> float:
    """The longest a trial can take when each phase keeps to its limit (``_Served.limit``)."""
    epochs = int(spec.prm.get("epoch_max", 1))
    per_phase = spec.epoch_limit_minutes * 60 + GRACE_SECONDS if spec.epoch_limit_minutes > 0 else 24 * 3600.0
    return START_PHASE_SECONDS + (2 * epochs + 2) * per_phase + (2 * spec.export.timeout if spec.export.enabled else 0)


def _limits(spec: TrialSpec, limits: Limits) -> sandbox.Limits:
    """The child's limits: the wall clock (``Limits.minutes``, else what its phases allow), the memory of
    all its processes (``Limits.memory_gb``, else 90 % of the machine's) and rlimits that only code run
    amok reaches: the machine's memory per process, 512 processes and threads, 8 GiB files."""
    ram = psutil.virtual_memory().total
    wall = limits.minutes * 60 if limits.minutes else _phases(spec) + START_SECONDS
    cuda = spec.device.startswith("cuda")
    return sandbox.Limits(wall_seconds=wall, cpu_seconds=int(wall * (os.cpu_count() or 1)) + 60, memory_bytes=ram,
                          address_space_bytes=None if cuda else max(32 * GiB, 4 * ram),
                          total_memory_bytes=int(limits.memory_gb * GiB) if limits.memory_gb else int(0.9 * ram),
                          file_size_bytes=FILE_BYTES, processes=512, open_files=4096,
                          tmpfs_bytes=max(256 * MiB, ram // 8))


def _binds(spec: TrialSpec, untrusted, scratch: Path, folder: Path) -> list[sandbox.Bind]:
    """What a sandboxed trial sees besides the system and the Python environment: its code files, the data
    folders with the image cache and the torch hub cache, read-only; its scratch folder at the trial's
    output folder; the GPUs when it trains on CUDA; a fault test's handshake folder, writable
    (``ab.nn.util.faults.passed``)."""
    ws, dataset = spec.workspace, spec.config.dataset
    with workspace.active.use(ws):
        files = [registry.path(kind, name) for kind, name in untrusted]
    binds = [sandbox.Bind(path) for path in files]
    seen: list[Path] = []
    for path in (ws.dataset_dir(dataset), ws.root / "data" / dataset):
        if path.exists() and not any(path == other or other in path.parents for other in seen):
            binds.append(sandbox.Bind(path.resolve(), target=path))
            seen.append(path)
    binds += torch_hub()[0]
    binds.append(sandbox.Bind(scratch, target=folder, writable=True))
    handshake = faults.passed()[1]
    if handshake is not None:
        binds.append(sandbox.Bind(handshake.resolve(), target=handshake, writable=True))
    if spec.device.startswith("cuda"):
        binds += bwrap.gpu_binds()
    return binds


def _environment() -> dict[str, str]:
    env = {**torch_hub()[1], **faults.passed()[0]}
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return env


# -- serving the child -------------------------------------------------------------------------------
class _Served:
    """One child's trial, served: its calls checked and applied, its phases timed, its end recorded."""

    def __init__(self, spec: TrialSpec, store: StatStore, box: sandbox.Sandbox, limits: Limits,
                 scratch: Path | None = None):
        """``scratch``: a sandboxed trial's output folder as this side sees it."""
        self.spec, self.store, self.box, self.limits, self.scratch = spec, store, box, limits, scratch
        self.reporter = EpochReporter(spec.link)
        self.epochs = int(spec.prm.get("epoch_max", 1))
        self.position, self.phase = -1, "start"
        self.deadline = time.monotonic() + START_PHASE_SECONDS
        self.stat_ids: set[str] = set()
        self.export_ids: set[int] = set()
        self.images = 0
        self.prune_reason: str | None = None
        self.finished: str | None = None  # the end the child recorded
        self.end: dict | None = None
        self.failure: str | None = None  # why the child was killed or died before its end

    def _deadline(self, phase: str) -> float | None:
        if phase == "export":
            return time.monotonic() + 2 * self.spec.export.timeout
        if self.spec.epoch_limit_minutes <= 0:
            return None
        return time.monotonic() + self.spec.epoch_limit_minutes * 60 + GRACE_SECONDS

    def run(self) -> None:
        ident = secrets.token_hex(16)
        try:
            self.box.send({"type": "trial", "id": ident, "spec": self.spec.to_json()})
            while self.end is None:
                timeout = None if self.deadline is None else max(0.0, self.deadline - time.monotonic())
                message = self.box.receive(FROM_CHILD, timeout)
                if message["type"] == "end":
                    if message["id"] != ident or "status" not in message:
                        raise Refused("an end of another trial")
                    self.end = message
                    return
                self.box.send(self._answer(message))
        except sandbox.SandboxTimeout:
            self.failure = self._timeout()
        except sandbox.ProtocolError as error:
            self.failure = f"the trial's process sent {str(error).removeprefix('the sandboxed process sent ')}"
        except Refused as error:
            self.box.kill("protocol")
            self.failure = f"the trial's process sent a forbidden message: {error}"
        except sandbox.SandboxError:
            self.failure = self._death()

    def _timeout(self) -> str:
        if self.box.killed == "wall":
            return f"wall-clock limit of {self.box.limits.wall_seconds / 60:g} minutes hit"
        if self.phase == "start":
            return f"the trial's process did not start within {START_PHASE_SECONDS:g} s (a loaded machine?)"
        if self.phase == "export":
            return f"time limit of {2 * self.spec.export.timeout / 60:g} minutes for the export passed; it was killed"
        return f"time limit of {self.spec.epoch_limit_minutes:g} minutes per epoch passed in {self.phase}; it was killed"

    def _death(self) -> str:
        if self.box.killed == "memory":
            return f"memory limit of {self.box.limits.total_memory_bytes / GiB:g} GB hit (the unique memory of the " \
                   f"trial's processes together)"
        code = self.box.process.wait()
        number = -code if code < 0 else code - 128 if code > 128 else None
        if number:
            try:
                return f"the trial's process died from signal {signal.Signals(number).name}"
            except ValueError:
                pass
        return f"the trial's process exited with code {code} before reporting"

    def _answer(self, message: dict) -> dict:
        method, args = message.get("method"), message.get("args")
        if method is None or args is None:
            raise Refused("a call without method or arguments")
        try:
            validate(args, METHODS[method], method)
        except sandbox.ProtocolError as error:
            raise Refused(str(error)) from None
        try:
            return {"type": "reply", "id": message["id"], "value": getattr(self, f"_{method}")(**args)}
        except LeaseLost as lost:
            return {"type": "refused", "id": message["id"], "error": str(lost), "status": lost.status}

    # -- each call: checked, then applied with the runner's lease --------------------------------------
    def _phase(self, phase: str, epoch: int) -> None:
        if phase == "saved":
            return self._saved(epoch)
        position = {"setup": 0, "learn": 2 * epoch - 1, "evaluate": 2 * epoch, "test": 2 * self.epochs + 1,
                    "export": 2 * self.epochs + 2}[phase]
        if position <= self.position or not 0 <= epoch <= self.epochs or phase in ("learn", "evaluate") and not epoch:
            raise Refused(f"phase {phase} of epoch {epoch} after {self.phase}")
        self.position, self.deadline = position, self._deadline(phase)
        self.phase = {"setup": "setup (loading the data, building the model)", "learn": f"learn() of epoch {epoch}",
                      "evaluate": f"the evaluation of epoch {epoch}", "test": "the test", "export": "export"}[phase]

    def _saved(self, epoch: int) -> None:
        """A sandboxed trial's resume file is copied out at once (the sandbox's folder goes with the runner), as
        ``_collect`` copies files: a regular file of at most ``FILE_BYTES``, else nothing."""
        if self.position != 2 * epoch or not 1 <= epoch < self.epochs:
            raise Refused(f"a resume file of epoch {epoch} after {self.phase}")
        if self.scratch is None:
            return
        folder = self.spec.workspace.trial_dir(self.spec.config.name, self.spec.trial_id)
        source = resume_file.path_of(self.scratch)
        try:
            info = os.lstat(source)
            if stat.S_ISREG(info.st_mode) and info.st_size <= FILE_BYTES:
                _copy(source, resume_file.path_of(folder))
        except OSError:
            pass  # not written, or not a file: the trial cannot be continued, and goes on

    def _update_trial(self, **fields) -> None:
        self.store.update_trial(self.spec.trial_id, fence=self.spec.lease_id, **fields)

    def _record_epoch(self, epoch: int, accuracy, duration: int, metrics: dict, train_stat: dict) -> str:
        if not 1 <= epoch <= self.epochs or duration is None:
            raise Refused(f"epoch {epoch} of a trial of {self.epochs}")
        stat_id = self.store.record_epoch(self.spec.trial_id, epoch, accuracy=accuracy, duration=duration,
                                          metrics=_metrics(metrics), train_stat=train_stat, fence=self.spec.lease_id)
        self.stat_ids.add(stat_id)
        return stat_id

    def _record_test(self, stat_id: str, accuracy, metrics: dict, interval) -> None:
        if stat_id not in self.stat_ids:
            raise Refused(f"test numbers for an epoch it did not record ({stat_id[:40]!r})")
        self.store.record_test(self.spec.trial_id, stat_id, accuracy, _metrics(metrics),
                               tuple(interval) if interval else None, fence=self.spec.lease_id)

    def _record_predictions(self, split: str, ages: list, predicted: list, image_ids) -> None:
        if len(predicted) != len(ages) or image_ids is not None and len(image_ids) != len(ages):
            raise Refused(f"{len(ages)} ages, {len(predicted)} predictions and "
                          f"{'no' if image_ids is None else len(image_ids)} image ids")
        self.store.record_predictions(self.spec.trial_id, split, ages, predicted, image_ids, fence=self.spec.lease_id)

    def _record_attributes(self, images: list) -> None:
        self.store.record_attributes(self.spec.config.dataset, [
            (image["image_id"], Attributes(**{k: v for k, v in image.items() if k != "image_id"})) for image in images])

    def _finish_trial(self, status: str, error, bookkeeping_seconds=None) -> bool:
        if status == PRUNED:
            if self.prune_reason is None:
                raise Refused("a trial recorded pruned that the study's pruner did not stop")
            error = self.prune_reason
        gap = {"eval_group_gap": validation_gap(self.spec)} if self.spec.group_gap_by and status != FAILED else {}
        done = self.store.finish_trial(self.spec.trial_id, status, error=error, bookkeeping_seconds=self.store.seconds,
                                       fence=self.spec.lease_id, **gap)
        if done:
            self.finished = status
        return done

    def _trial_status(self) -> str | None:
        return self.store.trial_status(self.spec.trial_id)

    def _recorded_predictions(self) -> dict:
        return self.store.recorded_predictions(self.spec.trial_id)

    def _artifact(self, fields: dict) -> dict:
        path = fields.get("path")
        folder = self.spec.workspace.trial_dir(self.spec.config.name, self.spec.trial_id)
        if path is not None and (not os.path.isabs(path) or inside(path, folder) is None):
            raise Refused(f"an artifact outside its trial's folder ({path[:200]!r})")
        return fields

    def _add_export(self, **fields) -> int:
        export_id = self.store.add_export(self.spec.trial_id, fence=self.spec.lease_id, **self._artifact(fields))
        self.export_ids.add(export_id)
        return export_id

    def _update_export(self, export_id: int, **fields) -> None:
        if export_id not in self.export_ids:
            raise Refused(f"an update of artifact row {export_id}, which it did not add")
        self.store.update_export(export_id, **self._artifact(fields))

    def _add_latency(self, export_id: int, **fields) -> int:
        if export_id not in self.export_ids:
            raise Refused(f"a latency of artifact row {export_id}, which it did not add")
        return self.store.add_latency(export_id, self.spec.trial_id, fence=self.spec.lease_id,
                                      **{**fields, "host": system.host()})

    def _report_epoch(self, epoch: int, mae) -> dict:
        prune = self.reporter.report(epoch, mae)
        if prune:
            self.prune_reason = self.reporter.reason(epoch)
        return {"prune": prune, "reason": self.prune_reason if prune else None}

    def _prepare_images(self, size) -> None:
        self.images += 1
        if self.images > IMAGE_SIZES:
            raise Refused(f"more than {IMAGE_SIZES} image caches of other sizes")
        began = time.monotonic()
        trial_data.prepare(self.spec.data_spec, size)
        if self.deadline is not None:  # decoding is this side's time, not the trial's
            self.deadline += time.monotonic() - began

    # -- the end -------------------------------------------------------------------------------------
    def outcome(self) -> TrialOutcome:
        """The trial's outcome as recorded: a child that died before recording its end has failed; one that
        died after training has an export failure."""
        spec, store = self.spec, self.store
        reason = self.failure or (None if self.finished else "the trial's process ended without recording its end")
        if reason and self.finished in TRAINED_STATES:
            store.add_export(spec.trial_id, fence=spec.lease_id, format="export", precision="-", status=FAILED,
                             error=f"ExportCrashed: {reason} after training; the trained result is kept")
        elif reason and not self.finished:
            store.finish_trial(spec.trial_id, FAILED, error=f"TrialCrashed: {reason}", fence=spec.lease_id)
        row = store.trial_row(spec.trial_id)
        fatal = bool(self.end and self.end.get("fatal")) and row["status"] == FAILED
        return TrialOutcome(row["status"], accuracy=row["eval_accuracy"], eval_mae=row["eval_mae"],
                            test_mae=row["test_mae"], epochs=row["epochs_done"] or 0, error=row["error"], fatal=fatal)


def _metrics(metrics: dict) -> dict:
    bad = [name for name in metrics if not _NAME.match(name)]
    if bad:
        raise Refused(f"a metric named {bad[0][:60]!r}")
    return metrics


# -- after the child -----------------------------------------------------------------------------------
def _collect(scratch: Path, folder: Path) -> list[str]:
    """Copy the regular files a sandboxed trial left in its scratch folder into its trial folder (sub-folders
    kept); links, devices, sockets and files over ``FILE_BYTES`` are left behind. Returns what was left
    behind. The child is dead by now: nothing changes under the copy."""
    left = []
    for dirpath, dirnames, filenames in os.walk(scratch):
        for name in dirnames + filenames:
            source = Path(dirpath) / name
            relative = source.relative_to(scratch)
            info = os.lstat(source)
            if stat.S_ISDIR(info.st_mode):
                continue
            if not stat.S_ISREG(info.st_mode) or info.st_size > FILE_BYTES:
                left.append(str(relative))
                continue
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            _copy(source, target)
    return left


def _copy(source: Path, target: Path) -> None:
    descriptor = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(descriptor, "rb") as reader:
        atomic.write(target, lambda writer: shutil.copyfileobj(reader, writer, 1 << 22))


def _settle(store: StatStore, spec: TrialSpec, folder: Path) -> None:
    """The artifact rows of a sandboxed trial describe the files as they came out: each file's size and
    SHA-256 are taken here, and a row whose file did not come out is failed."""
    for row in store.exports_of([spec.trial_id]):
        if row.status != "ok" or not row.path:
            continue
        path = Path(row.path)
        if path.is_file() and not path.is_symlink() and path.parent.resolve().is_relative_to(folder.resolve()):
            digest = sha256_of(path)
            if (row.sha256, row.size_bytes) != (digest, path.stat().st_size):
                store.update_export(row.id, sha256=digest, size_bytes=path.stat().st_size)
        else:
            store.update_export(row.id, status=FAILED, error=f"the sandboxed trial did not leave {path.name} as a "
                                                             f"regular file of at most {FILE_BYTES / GiB:g} GiB")
