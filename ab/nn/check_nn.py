"""``check_nn``: train a model given as a code string, as LEMUR 2.2.11's ``ab.nn.api.check_nn`` does
for the NN-GPT generator, and record it like any other trial. The code never runs in the caller's
process: it is checked by the sandboxed probe and trained in a sandboxed trial child
(``ab.nn.sandbox``; ``docs/guide/sandbox.md``).

1. The name is LEMUR's: the md5 of the code with every whitespace character removed
   (``ab.nn.util.lemur_hash``), optionally ``<prefix>-<md5>``; ``check_nn`` returns it as LEMUR does.
   The model is filed and recorded under that name with each ``_`` made a ``-``
   (``registry_name``), because a config string splits on ``_``: NN-GPT's
   ``prefix=f"{nn}_eval_{name}"`` returns ``ResNet_eval_B0-<md5>`` and trains
   ``<task>_<dataset>_<metric>_ResNet-eval-B0-<md5>``.
2. The code is written to a private folder and *staged* there (``ab.nn.registry.staged``), not in the
   workspace's ``nn/``. It must parse, and the sandboxed probe (``ab.nn.model_probe``) must find it
   satisfies the model contract (``supported_hyperparameters()`` giving names, class ``Net`` with
   ``train_setup``, ``learn`` and ``forward``); it may hang, exit, fork or allocate there without harm.
   Code that does not pass is recorded as a failed trial of its config (its code in the ``nn`` table,
   the reason as the trial's error) and ``CheckNNError`` is raised (a ``SyntaxError`` too where the
   code does not parse). Where the machine has no sandbox, generated code is refused the same way unless
   ``unsafe=True``, which runs it without one (recorded on the trial, and warned).
3. Valid code is trained as one trial of ``<task>_<dataset>_<metric>_<name>`` by the sweep runner, in a
   sandboxed child: ``prm["epoch"]`` epochs, ``prm["transform"]``, ``prm["batch"]`` and the model's other
   hyperparameters fixed as given (a declared one missing from ``prm`` is sampled as in any sweep;
   keys the model does not declare are not passed to it). The runner enforces ``epoch_limit_minutes``
   on each phase of the trial (a ``learn()`` that does not return is killed); ``timeout_minutes``
   bounds the whole call (the check and the training together).
4. It returns LEMUR's tuple ``(name, accuracy, accuracy_to_time, code_quality)``: the last epoch's
   accuracy on the evaluation part, LEMUR's ``max(0, accuracy - MINIMUM_ACCURACY) / (duration / 1e11)``
   with the trial's duration in ns, and ``ab.nn.codequality.score``. As in LEMUR, the caller's
   ``prm`` then holds ``uid`` (the hyperparameter set's id, ``data()``'s ``prm_id``), ``duration``
   (ns) and ``accuracy``; LEMUR also merges its per-epoch diagnostics into it, which here are in
   ``trials()`` and ``data()``. Only then is the code *accepted*: with ``save_to_db`` it joins the
   workspace's ``nn/`` and later sweeps. Failures raise LEMUR's classes (``ab.nn.util.Exception``, all
   ``CheckNNError`` with the recorded ``trial_id``): code that does not parse a ``SyntaxError``
   (``CodeSyntaxError``), a trial stopped by the accuracy gate ``AccuracyException`` (``.accuracy``,
   ``.duration``), one stopped by a time limit ``LearnTimeException``, any other failure
   ``CheckNNError``; the code of a failure stays in the database only (*quarantined*: ``ab.nn.quarantine``
   lists and restores it). The caller's
   process never crashes.

Differences from LEMUR, on purpose: the trial is recorded (status, error, seed, split, data key) even
when it fails; ``save_to_db=False`` trains in a throw-away workspace (sharing only the data and its
image cache) so nothing is kept; accepted code stays in the workspace's ``nn/`` folder (LEMUR deletes
its temporary copy), which makes it part of later sweeps of its task; the split is this project's
default (``paper``) unless ``split="lemur"`` is passed. A call killed from outside leaves its trial to
be recorded ``interrupted`` by the next call or runner, and its temporary folder to be removed by it.
"""
from __future__ import annotations

import json
import os
import re
import time
import warnings
from pathlib import Path

from ab.nn import codequality, registry
from ab.nn.config import Config, ConfigError
from ab.nn.quarantine import write_code
from ab.nn.util import atomic, tempdirs
from ab.nn.util.Exception import AccuracyException, CheckNNError, CodeSyntaxError, LearnTimeException
from ab.nn.util.lemur_hash import lemur_md5

__all__ = ["AccuracyException", "CheckNNError", "CodeSyntaxError", "LearnTimeException", "check_nn", "model_name",
           "registry_name", "validate"]

VALIDATE_SECONDS = 120.0
REQUIRED_PRM = ("epoch", "batch", "transform")
NOT_HYPERPARAMETERS = ("epoch", "num_workers")
TIME_LIMIT = re.compile(r"\b(?:time|wall-clock) limit of [\d.]+ minutes?\b")
"""How a trial's error says a time limit stopped it (``ab.nn.sweep.isolation``: "time limit of N minutes
per epoch passed in ...", "wall-clock limit of N minutes hit"), which ``check_nn`` raises as
``LearnTimeException``."""


def model_name(nn_code: str, prefix: str | None = None) -> str:
    """LEMUR's name of generated code: ``uuid4(nn_code)``, optionally ``f"{prefix}-{name}"``."""
    name = lemur_md5(nn_code)
    return f"{prefix}-{name}" if prefix else name


def registry_name(name: str) -> str:
    """The name a model of LEMUR's name ``name`` is filed and recorded under: each ``_`` becomes ``-``,
    since config strings split on ``_`` (two prefixes that differ only there name the same code alike)."""
    safe = name.replace("_", "-")
    if not registry.MODEL.valid(safe):
        raise ValueError(f"model name {name!r} is unusable here even as {safe!r}: a model name starts with a letter "
                         f"or digit and holds letters, digits, '-' and '_' only")
    return safe


def validate(nn_code: str, timeout: float = VALIDATE_SECONDS, *, unsafe: bool = False) -> str | None:
    """``None`` when the code parses and the sandboxed probe finds it satisfies the model contract, else
    why not (one line). ``SandboxUnavailable`` where this machine has no sandbox, unless ``unsafe``."""
    with tempdirs.folder("check-nn") as folder:
        return _validate(nn_code, _stage(folder, "Checked", nn_code), timeout, unsafe)[0]


def _stage(folder: Path, name: str, code: str) -> Path:
    """The code as ``<folder>/staged/<name>.py``, readable by the sandbox user."""
    path = folder / "staged" / f"{name}.py"
    path.parent.mkdir(mode=0o755)
    path.write_text(code, encoding="utf-8")
    return path


def _validate(nn_code: str, path: Path, timeout: float, unsafe: bool):
    """``(why not or None, ModelFacts or None)`` of the staged code."""
    from ab.nn.model_probe import PROBE_LIMITS
    from ab.nn.sweep.models import facts

    try:
        compile(nn_code, "<nn_code>", "exec")
    except SyntaxError as error:
        return f"SyntaxError: {error.msg} (line {error.lineno})", None
    found = facts(path, unsafe=unsafe, limits=PROBE_LIMITS.replace(wall_seconds=max(1.0, timeout)))
    return found.error, found


def check_nn(nn_code: str, task: str, dataset: str, metric: str, prm: dict, save_to_db: bool = True,
             prefix: str | None = None, save_path: str | None = None, export_onnx: bool = False,
             epoch_limit_minutes: float = 30, transform_dir: str | None = None, *, root=None, db=None,
             data_dir=None, max_samples: int | None = None, split: str = "paper", split_seed: int = 42,
             seed: int = 42, device: str = "auto", progress: bool = True,
             validate_timeout: float = VALIDATE_SECONDS, timeout_minutes: float | None = None,
             unsafe: bool = False) -> tuple[str, float, float, float]:
    """LEMUR's ``check_nn`` (same positional arguments and return tuple); the keyword-only extras pick
    the workspace (``root``, ``db``, ``data_dir``), the data (``max_samples``, ``split``, ``split_seed``),
    the training seed and the device; ``validate_timeout`` bounds the check of the code (seconds),
    ``timeout_minutes`` the whole call (a trial still training then is killed: ``LearnTimeException``);
    ``unsafe=True`` runs the code without a sandbox where the machine has none."""
    from ab.nn.workspace import Workspace

    started = time.monotonic()
    missing = [k for k in REQUIRED_PRM if k not in prm]
    if missing:
        raise ValueError(f"check_nn: prm lacks {', '.join(missing)} (LEMUR's check_nn needs epoch, batch and "
                         f"transform)")
    if timeout_minutes is not None and not timeout_minutes > 0:
        raise ValueError(f"check_nn: timeout_minutes must be positive, got {timeout_minutes!r}")
    name = model_name(nn_code, prefix)
    try:
        config = Config.parse(f"{task}_{dataset}_{metric}_{registry_name(name)}")
    except (ConfigError, ValueError) as error:
        raise ValueError(f"check_nn: {error}") from None
    quality = codequality.score(nn_code)
    home = Workspace.resolve(root, db, data_dir)
    tempdirs.clean_abandoned()  # what calls killed on this host left behind
    if save_to_db:
        _reclaim(home)
    call = _Call(nn_code, config, dict(prm), save_path, export_onnx, epoch_limit_minutes, transform_dir,
                 max_samples, split, split_seed, seed, device, progress, validate_timeout,
                 None if timeout_minutes is None else started + timeout_minutes * 60, unsafe)
    with tempdirs.folder("check-nn") as folder:
        staged = _stage(folder, config.nn, nn_code)
        ws = home if save_to_db else _throwaway(home, folder / "workspace", dataset)
        trial = call.run(ws, staged)
    result = _result(config, trial, name, quality, epoch_limit_minutes)
    if save_to_db:  # accepted: the code joins the workspace's models
        write_code(home.code_dir(registry.MODEL.folder), config.nn, nn_code)
    prm.update(uid=trial["prm"], duration=trial["duration"], accuracy=result[1])  # LEMUR fills the caller's dict
    return result


def _reclaim(home) -> None:
    """Trials of runners and calls that are gone (killed from outside) are recorded ``interrupted``."""
    from ab.nn.stat import versions
    from ab.nn.stat.store import StatStore, reclaim_lapsed

    versions.upgrade(home.db_url)  # once per call, as the runner does per open
    with StatStore(home.db_url).transaction() as session:
        reclaim_lapsed(session)


def _throwaway(home, folder: Path, dataset: str):
    """A workspace in ``folder`` that reads ``home``'s data and shares its image cache."""
    from ab.nn.workspace import Workspace

    shared = home.root / "data" / dataset
    shared.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(parents=True)
    (folder / "data" / dataset).symlink_to(shared, target_is_directory=True)
    return Workspace(root=folder, db=None, data_dir=home.dataset_dir(dataset))


class _Call:
    """One ``check_nn`` call's settings, and its check and training in a workspace."""

    def __init__(self, nn_code, config, prm, save_path, export_onnx, epoch_limit_minutes, transform_dir, max_samples,
                 split, split_seed, seed, device, progress, validate_timeout, deadline, unsafe):
        from ab.nn.dataset.settings import DataSettings

        self.nn_code, self.config, self.prm, self.save_path = nn_code, config, prm, save_path
        self.export_onnx, self.epoch_limit_minutes, self.transform_dir = export_onnx, epoch_limit_minutes, transform_dir
        self.settings = DataSettings(split=split, split_seed=split_seed, max_samples=max_samples, progress=progress)
        self.seed, self.device, self.progress, self.unsafe = seed, device, progress, unsafe
        self.validate_timeout, self.deadline = validate_timeout, deadline

    def _left(self) -> float | None:
        """Seconds left of the whole call's limit."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def run(self, ws, staged: Path) -> dict:
        """Check and train the staged code as one trial; its record (``Trial`` columns)."""
        from ab.nn.deploy.options import ExportOptions
        from ab.nn.sandbox import SandboxUnavailable
        from ab.nn.stat import versions
        from ab.nn.stat.store import StatStore
        from ab.nn.sweep.isolation import Limits
        from ab.nn.sweep.runner import SweepOptions, run
        from ab.nn.workspace import active

        versions.upgrade(ws.db_url)  # a new throwaway database, as the runner would make it
        config, store, epochs = self.config, StatStore(ws.db_url), int(self.prm["epoch"])
        with active.use(ws), registry.staged.use({config.nn: staged}):
            if self.transform_dir:
                _install_transform(Path(self.transform_dir), self.prm["transform"], ws)
            timeout = self.validate_timeout if self._left() is None else min(self.validate_timeout, self._left())
            try:
                problem, facts = _validate(self.nn_code, staged, timeout, self.unsafe)
            except SandboxUnavailable as error:
                self._refuse(store, epochs, f"SandboxUnavailable: {error}", "none: no sandbox")
            if problem is not None:  # (no facts: it does not parse, and nothing ran)
                self._refuse(store, epochs, f"InvalidModelCode: {problem}",
                             None if facts is None else "bubblewrap" if facts.sandboxed else "none: unsafe=True")
            if not facts.sandboxed:
                warnings.warn(f"check_nn: this machine has no sandbox, and unsafe=True runs {config.nn} with this "
                              f"process's rights", RuntimeWarning, stacklevel=3)
            supported = facts.supported_hyperparameters
            fixed = {k: v for k, v in self.prm.items() if k in supported or k == "batch"}
            before = _last_trial(store, config)
            left = self._left()
            options = SweepOptions(configs=(config.name,), fixed=fixed, epochs=epochs, trials=-1,
                                   transform=self.prm["transform"], fail_attempts=1,
                                   workers=int(self.prm.get("num_workers", 1)),
                                   epoch_limit_minutes=self.epoch_limit_minutes,
                                   export=ExportOptions(formats=("onnx",) if self.export_onnx else ()), isolate=True,
                                   limits=Limits(minutes=None if left is None else max(left, 1.0) / 60),
                                   seed=self.seed, device=self.device, data=self.settings, workspace=ws,
                                   progress=self.progress, unsafe=self.unsafe,
                                   resume=False)  # one call, one fresh trial: the one it returns
            summary = run(options)
        trial = _last_trial(store, config)
        if trial is None or trial["id"] == (before or {}).get("id"):
            reason = (summary.results[0].gave_up if summary.results else None) or "no trial ran"
            raise CheckNNError(f"check_nn: {config.nn}: {reason.splitlines()[0]}")
        if self.save_path:
            _save_epochs(ws, trial["id"], config, Path(self.save_path))
        return trial

    def _refuse(self, store, epochs: int, error: str, sandbox: str | None):
        """Record the code refused as a failed trial of its config (the code in the ``nn`` table) and raise."""
        from ab.nn.dataset.identity import DataIdentity
        from ab.nn.stat.states import FAILED
        from ab.nn.util import system

        config, identity = self.config, DataIdentity(self.config.dataset, self.settings)
        trial_id = store.reserve_trial(config, epochs, None, data_key=identity.key,
                                       study=f"{config.name}@{identity.key}/e{epochs}", split=self.settings.label,
                                       split_seed=self.settings.split_seed, max_samples=self.settings.max_samples,
                                       host=system.host(), pid=os.getpid(), sandbox=sandbox,
                                       nn_code_id=store.save_code(registry.MODEL, config.nn, self.nn_code))
        store.finish_trial(trial_id, FAILED, error=error)
        raise _invalid(self.nn_code, f"check_nn: {config.nn}: {error} (recorded as failed trial {trial_id})", trial_id)


def _install_transform(folder: Path, name: str, ws) -> None:
    """LEMUR's ``transform_dir``: ``<transform_dir>/<name>.py`` is used when it exists; here it is copied
    into the workspace's transform folder (a package transform of that name with other code is refused,
    since the package's file would win)."""
    source = folder / f"{name}.py"
    if not source.is_file():
        return
    code = source.read_text(encoding="utf-8")
    try:
        present = registry.source(registry.TRANSFORM, name)
    except registry.RegistryError:
        present = None
    if present is not None and registry.origin(registry.TRANSFORM, name) == registry.PACKAGE:
        if registry.checksum(present) != registry.checksum(code):
            raise ValueError(f"check_nn: transform {name!r} of {folder} differs from the package's transform of "
                             f"that name, which would be used; rename it")
        return
    write_code(ws.code_dir(registry.TRANSFORM.folder), name, code)


def _last_trial(store, config) -> dict | None:
    from sqlalchemy import select

    from ab.nn.stat.schema import Trial

    with store.transaction() as session:
        trial = session.scalars(select(Trial).where(Trial.config == config.name).order_by(Trial.id.desc())
                                .limit(1)).first()
        return None if trial is None else {c.name: getattr(trial, c.name) for c in Trial.__table__.c}


def _invalid(nn_code: str, message: str, trial_id: int) -> CheckNNError:
    """The exception for code that failed validation: LEMUR's ``SyntaxError`` when it does not parse."""
    try:
        compile(nn_code, "<nn_code>", "exec")
    except SyntaxError as error:
        return CodeSyntaxError(message, trial_id, error)
    return CheckNNError(message, trial_id)


def _result(config, trial: dict, name: str, quality: float,
            epoch_limit_minutes: float) -> tuple[str, float, float, float]:
    """LEMUR's result tuple of a trained trial (``name`` is LEMUR's name), or LEMUR's exception."""
    from ab.nn.stat.states import COMPLETE, DIVERGED, STOPPED

    minimum = float(getattr(registry.load(registry.LOADER, config.dataset), "MINIMUM_ACCURACY", 0.0) or 0.0)
    accuracy = trial["eval_accuracy"] if trial["eval_accuracy"] is not None else 0.0
    duration = trial["duration"]
    if trial["status"] in (STOPPED, DIVERGED):
        raise AccuracyException(accuracy, duration, f"Accuracy is too low: {accuracy}. The minimum accepted accuracy "
                                f"for the '{config.dataset}' dataset is {minimum} (trial {trial['id']}, "
                                f"{trial['status']})", trial["id"])
    if trial["status"] != COMPLETE:
        error = (trial["error"] or trial["status"]).splitlines()[0]
        message = f"check_nn: {config.nn}: trial {trial['id']} {trial['status']}: {error}"
        if TIME_LIMIT.search(error):
            raise LearnTimeException(None, epoch_limit_minutes, duration, message, trial["id"])
        raise CheckNNError(message, trial["id"])
    to_time = max(0.0, accuracy - minimum) / (duration / 1e11) if duration else 0.0
    return name, float(accuracy), float(to_time), float(quality)


def _save_epochs(ws, trial_id: int, config, folder: Path) -> None:
    """LEMUR's ``save_path``: each epoch's record appended to ``<save_path>/<epoch>.json``, the list kept
    best accuracy first (LEMUR's ``Calc.save_results``), with LEMUR's ``task, dataset, metric, model,
    epoch`` keys."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from ab.nn.stat import engine as engines
    from ab.nn.stat.mirror import epoch_record
    from ab.nn.stat.schema import Stat

    folder.mkdir(parents=True, exist_ok=True)
    with Session(engines.engine(ws.db_url, writer=False)) as session:
        stats = session.scalars(select(Stat).where(Stat.trial_id == trial_id).order_by(Stat.epoch)).all()
        records = [(s.epoch, epoch_record(session, s)) for s in stats]
    for epoch, record in records:
        record.update(task=config.task, dataset=config.dataset, metric=config.metric, model=config.nn, epoch=epoch)
        path = folder / f"{epoch}.json"
        existing = json.loads(path.read_text()) if path.exists() else []
        existing = [existing] if isinstance(existing, dict) else existing
        existing.append(record)
        existing.sort(key=lambda r: -(r.get("accuracy") or 0.0))
        atomic.write(path, json.dumps(existing, indent=4, default=str))
