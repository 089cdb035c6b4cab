"""``check_nn``: train a model given as a code string, as LEMUR 2.2.11's ``ab.nn.api.check_nn`` does
for the NN-GPT generator, and record it like any other trial.

1. The name is LEMUR's: the md5 of the code with every whitespace character removed
   (``ab.nn.util.lemur_hash``), optionally ``<prefix>-<md5>``; ``check_nn`` returns it as LEMUR does.
   The model is filed and recorded under that name with each ``_`` made a ``-``
   (``registry_name``), because a config string splits on ``_``: NN-GPT's
   ``prefix=f"{nn}_eval_{name}"`` returns ``ResNet_eval_B0-<md5>`` and trains
   ``<task>_<dataset>_<metric>_ResNet-eval-B0-<md5>``.
2. The code is checked in a child process (it may hang, exit or crash there without harm): it must
   parse, import, and satisfy the model contract (``supported_hyperparameters()`` giving names,
   class ``Net`` with ``train_setup``, ``learn`` and ``forward``). Code that does not is recorded as
   a failed trial of its config (with its code in the ``nn`` table) and ``CheckNNError`` is raised
   (a ``SyntaxError`` too where the code does not parse).
3. Valid code is written to the workspace model folder (``<root>/nn/<name>.py``, where the registry
   finds it) and trained as one trial of ``<task>_<dataset>_<metric>_<name>`` by the sweep runner, in
   a child process: ``prm["epoch"]`` epochs, ``prm["transform"]``, ``prm["batch"]`` and the model's other
   hyperparameters fixed as given (a declared one missing from ``prm`` is sampled as in any sweep;
   keys the model does not declare are not passed to it).
4. It returns LEMUR's tuple ``(name, accuracy, accuracy_to_time, code_quality)``: the last epoch's
   accuracy on the evaluation part, LEMUR's ``max(0, accuracy - MINIMUM_ACCURACY) / (duration / 1e11)``
   with the trial's duration in ns, and ``ab.nn.codequality.score``. As in LEMUR, the caller's
   ``prm`` then holds ``uid`` (the hyperparameter set's id, ``data()``'s ``prm_id``), ``duration``
   (ns) and ``accuracy``; LEMUR also merges its per-epoch diagnostics into it, which here are in
   ``trials()`` and ``data()``. Failures raise LEMUR's classes (``ab.nn.util.Exception``, all
   ``CheckNNError`` with the recorded ``trial_id``): code that does not parse a ``SyntaxError``
   (``CodeSyntaxError``), a trial stopped by the accuracy gate ``AccuracyException`` (``.accuracy``,
   ``.duration``), one stopped by a time limit ``LearnTimeException``, any other failure
   ``CheckNNError``. The caller's process never crashes.

Differences from LEMUR, on purpose: the trial is recorded (status, error, seed, split, data key) even
when it fails; ``save_to_db=False`` trains in a throw-away workspace (sharing only the data and its
image cache) so nothing is kept; the model file stays in the workspace's ``nn/`` folder (LEMUR
deletes its temporary copy), which makes it part of later sweeps of its task; the split is this
project's default (``paper``) unless ``split="lemur"`` is passed.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import re
import tempfile
from pathlib import Path

from ab.nn import codequality, registry
from ab.nn.config import Config, ConfigError
from ab.nn.util.Exception import AccuracyException, CheckNNError, CodeSyntaxError, LearnTimeException
from ab.nn.util.lemur_hash import lemur_md5

__all__ = ["AccuracyException", "CheckNNError", "CodeSyntaxError", "LearnTimeException", "check_nn", "model_name",
           "registry_name", "validate"]

VALIDATE_SECONDS = 120.0
REQUIRED_PRM = ("epoch", "batch", "transform")
NOT_HYPERPARAMETERS = ("epoch", "num_workers")
TIME_LIMIT = re.compile(r"\b(?:time|wall-clock) limit of [\d.]+ minutes?\b")
"""How a trial's error says a time limit stopped it (``ab.nn.sweep.isolation``: "wall-clock limit of N
minutes hit"), which ``check_nn`` raises as ``LearnTimeException``."""


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


def _probe(path: str, result: str) -> None:
    """Child process: import the file and check the model contract; write what was found."""
    import importlib.util

    from ab.nn.util.processes import die_with_parent

    die_with_parent()
    try:
        spec = importlib.util.spec_from_file_location("_ab_nn_check_nn_probe", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        error = _contract_error(module)
    except BaseException as raised:  # the code's own failure is the answer
        error = f"{type(raised).__name__}: {raised}".strip()
    Path(result).write_text(json.dumps({"error": error}))


def _contract_error(module) -> str | None:
    supported = getattr(module, "supported_hyperparameters", None)
    if not callable(supported):
        return "the code defines no supported_hyperparameters() (LEMUR's model contract)"
    names = supported()
    if isinstance(names, (str, bytes)) or not all(isinstance(n, str) for n in names):
        return f"supported_hyperparameters() must give names (strings), got {names!r}"
    net = getattr(module, "Net", None)
    if not isinstance(net, type):
        return "the code defines no class Net (LEMUR's model contract)"
    missing = [m for m in ("train_setup", "learn", "forward") if not callable(getattr(net, m, None))]
    if missing:
        return f"Net has no {', '.join(missing)} (LEMUR's model contract)"
    return None


def validate(nn_code: str, timeout: float = VALIDATE_SECONDS) -> str | None:
    """``None`` when the code parses, imports and satisfies the model contract, else why not (one
    line). The import runs in a child process with a time limit."""
    try:
        compile(nn_code, "<nn_code>", "exec")
    except SyntaxError as error:
        return f"SyntaxError: {error.msg} (line {error.lineno})"
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="ab-nn-check-") as folder:
        path, result = Path(folder) / "model.py", Path(folder) / "result.json"
        path.write_text(nn_code, encoding="utf-8")
        process = context.Process(target=_probe, args=(str(path), str(result)), name="check_nn-probe")
        process.start()
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()
            return f"importing the code took longer than {timeout:g} s"
        if not result.exists():
            code = process.exitcode
            how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            return f"importing the code ended its process ({how})"
        return json.loads(result.read_text())["error"]


def check_nn(nn_code: str, task: str, dataset: str, metric: str, prm: dict, save_to_db: bool = True,
             prefix: str | None = None, save_path: str | None = None, export_onnx: bool = False,
             epoch_limit_minutes: float = 30, transform_dir: str | None = None, *, root=None, db=None,
             data_dir=None, max_samples: int | None = None, split: str = "paper", split_seed: int = 42,
             seed: int = 42, device: str = "auto", progress: bool = True,
             validate_timeout: float = VALIDATE_SECONDS) -> tuple[str, float, float, float]:
    """LEMUR's ``check_nn`` (same positional arguments and return tuple); the keyword-only extras pick
    the workspace (``root``, ``db``, ``data_dir``), the data (``max_samples``, ``split``, ``split_seed``),
    the training seed, the device and the validation time limit."""
    from ab.nn.workspace import Workspace

    missing = [k for k in REQUIRED_PRM if k not in prm]
    if missing:
        raise ValueError(f"check_nn: prm lacks {', '.join(missing)} (LEMUR's check_nn needs epoch, batch and "
                         f"transform)")
    name = model_name(nn_code, prefix)
    try:
        config = Config.parse(f"{task}_{dataset}_{metric}_{registry_name(name)}")
    except (ConfigError, ValueError) as error:
        raise ValueError(f"check_nn: {error}") from None
    quality = codequality.score(nn_code)
    home = Workspace.resolve(root, db, data_dir)
    if save_to_db:
        trial = _check(nn_code, config, dict(prm), home, save_path, export_onnx, epoch_limit_minutes, transform_dir,
                       max_samples, split, split_seed, seed, device, progress, validate_timeout)
    else:
        with tempfile.TemporaryDirectory(prefix="ab-nn-check_nn-") as folder:
            trial = _check(nn_code, config, dict(prm), _throwaway(home, Path(folder), dataset), save_path,
                           export_onnx, epoch_limit_minutes, transform_dir, max_samples, split, split_seed, seed,
                           device, progress, validate_timeout)
    result = _result(config, trial, name, quality, epoch_limit_minutes)
    prm.update(uid=trial["prm"], duration=trial["duration"], accuracy=result[1])  # LEMUR fills the caller's dict
    return result


def _throwaway(home, folder: Path, dataset: str):
    """A workspace in ``folder`` that reads ``home``'s data and shares its image cache."""
    from ab.nn.workspace import Workspace

    cache = home.cache_dir(dataset)
    cache.mkdir(parents=True, exist_ok=True)
    (folder / "data" / dataset).mkdir(parents=True)
    (folder / "data" / dataset / "cache").symlink_to(cache, target_is_directory=True)
    return Workspace(root=folder, db=None, data_dir=home.dataset_dir(dataset))


def _check(nn_code, config, prm, ws, save_path, export_onnx, epoch_limit_minutes, transform_dir, max_samples, split,
           split_seed, seed, device, progress, validate_timeout) -> dict:
    """Validate and train the code as one trial; its record (``Trial`` columns)."""
    from ab.nn.dataset.identity import DataIdentity
    from ab.nn.dataset.settings import DataSettings
    from ab.nn.deploy.pipeline import ExportOptions
    from ab.nn.stat import versions
    from ab.nn.stat.schema import FAILED
    from ab.nn.stat.store import StatStore
    from ab.nn.sweep.runner import SweepOptions, run
    from ab.nn.util import system
    from ab.nn.workspace import active

    settings = DataSettings(split=split, split_seed=split_seed, max_samples=max_samples, progress=progress)
    versions.upgrade(ws.db_url)  # a new throwaway database, as the runner would make it
    store = StatStore(ws.db_url)
    epochs = int(prm["epoch"])
    problem = validate(nn_code, validate_timeout)
    with active.use(ws):
        if transform_dir:
            _install_transform(Path(transform_dir), prm["transform"], ws)
        if problem is not None:
            identity = DataIdentity(config.dataset, settings)
            trial_id = store.reserve_trial(config, epochs, None, data_key=identity.key,
                                           study=f"{config.name}@{identity.key}/e{epochs}", split=settings.label,
                                           split_seed=split_seed, max_samples=max_samples, host=system.host(),
                                           pid=os.getpid(), nn_code_id=store.save_code(registry.MODEL, config.nn,
                                                                                         nn_code))
            store.finish_trial(trial_id, FAILED, error=f"InvalidModelCode: {problem}")
            raise _invalid(nn_code, f"check_nn: {config.nn}: {problem} (recorded as failed trial {trial_id})", trial_id)
        _write_model(ws.code_dir(registry.MODEL.folder), config.nn, nn_code)
        supported = set(registry.load(registry.MODEL, config.nn).supported_hyperparameters())
    fixed = {k: v for k, v in prm.items() if k in supported or k == "batch"}
    before = _last_trial(store, config)
    options = SweepOptions(configs=(config.name,), fixed=fixed, epochs=epochs, trials=-1, transform=prm["transform"],
                           fail_attempts=1, workers=int(prm.get("num_workers", 1)),
                           epoch_limit_minutes=epoch_limit_minutes,
                           export=ExportOptions(formats=("onnx",) if export_onnx else ()), isolate=True, seed=seed,
                           device=device, data=settings, workspace=ws, progress=progress)
    summary = run(options)
    trial = _last_trial(store, config)
    if trial is None or trial["id"] == (before or {}).get("id"):
        reason = (summary.results[0].gave_up if summary.results else None) or "no trial ran"
        raise CheckNNError(f"check_nn: {config.nn}: {reason.splitlines()[0]}")
    if save_path:
        _save_epochs(ws, trial["id"], config, Path(save_path))
    return trial


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
    _write_model(ws.code_dir(registry.TRANSFORM.folder), name, code)


def _write_model(folder: Path, name: str, code: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.py"
    if target.exists() and target.read_text(encoding="utf-8") == code:
        return target
    tmp = folder / f".{name}.py.tmp{os.getpid()}"
    tmp.write_text(code, encoding="utf-8")
    os.replace(tmp, target)
    return target


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
    from ab.nn.stat.schema import COMPLETE, DIVERGED, STOPPED

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
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(existing, indent=4, default=str))
        os.replace(tmp, path)
