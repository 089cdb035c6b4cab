"""The sweep: for every selected config, an Optuna study in the statistics database, and trials
until the requested number have trained (failures recorded, and tolerated up to ``-a`` in a row)."""
from __future__ import annotations

import logging
import os
import random
import time
import warnings
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import optuna
import psutil
import torch
from sqlalchemy.exc import IntegrityError, OperationalError
from tqdm.auto import tqdm

from ab.nn import registry
from ab.nn.config import Config, Pattern, select
from ab.nn.dataset.settings import DataSettings
from ab.nn.deploy.pipeline import ExportOptions
from ab.nn.stat import engine as engines
from ab.nn.stat.schema import FAILED
from ab.nn.stat.store import StatStore
from ab.nn.sweep import hyperparameters
from ab.nn.sweep.hyperparameters import SearchSpace
from ab.nn.sweep.isolation import Limits, run_isolated
from ab.nn.sweep.trial import TrialOutcome, TrialSpec, describe_error, run_trial
from ab.nn.util import system
from ab.nn.workspace import Workspace

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 120
STORAGE_ATTEMPTS = 5


@dataclass(frozen=True)
class SweepOptions:
    configs: tuple[str, ...] = ("",)
    fixed: dict = field(default_factory=dict)
    epochs: int = 1
    trials: int = -1
    space: SearchSpace = field(default_factory=SearchSpace)
    transform: str | None = None
    fail_attempts: int = 30
    random_config_order: bool = False
    workers: int = 2
    epoch_limit_minutes: float = 30
    train_missing_pipelines: bool = False
    save_pth: bool = False
    export: ExportOptions = field(default_factory=ExportOptions)
    isolate: bool = True
    limits: Limits = field(default_factory=Limits)
    seed: int = 42
    device: str = "auto"
    data: DataSettings = field(default_factory=DataSettings)
    workspace: Workspace = field(default_factory=Workspace.resolve)
    progress: bool = True


@dataclass
class ConfigResult:
    config: Config
    trained: int = 0
    failed: int = 0
    gave_up: str | None = None
    best_accuracy: float | None = None


@dataclass
class SweepSummary:
    results: list[ConfigResult]

    @property
    def ok(self) -> bool:
        return all(r.gave_up is None for r in self.results)


class TrialFailed(RuntimeError):
    """Raised to Optuna so it records the trial as FAIL; our own row already holds the details."""


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available on this machine")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda[:N], got {name!r}")
    return name


def known_configs() -> set[Config]:
    """Every (task, metric) a loader serves, with every model file: what a prefix can select."""
    found = set()
    models = registry.names(registry.MODEL)
    for dataset in registry.names(registry.LOADER):
        try:
            pipelines = getattr(registry.load(registry.LOADER, dataset), "PIPELINES", ())
        except registry.RegistryError:
            continue
        found |= {Config(task, dataset, metric, nn) for task, metric in pipelines for nn in models}
    return found


def _runnable(config: Config) -> None:
    """Raise a one-line error naming the first part of ``config`` that has no registry file."""
    registry.path(registry.MODEL, config.nn)
    registry.path(registry.LOADER, config.dataset)
    for metric in config.metrics:
        registry.path(registry.METRIC, metric)


def resolve_configs(patterns, store: StatStore) -> list[Config]:
    candidates = known_configs()
    for config in store.configs():
        try:
            _runnable(config)
            candidates.add(config)
        except registry.RegistryError:
            continue
    chosen = select(patterns, candidates)
    for pattern in patterns:
        if Pattern.parse(pattern).is_exact:
            _runnable(Config.parse(pattern))
    return chosen


class Sweep:
    def __init__(self, options: SweepOptions, execute: Callable[[TrialSpec], TrialOutcome] | None = None):
        self.options = options
        self.execute = execute or (partial(run_isolated, limits=options.limits) if options.isolate else run_trial)
        self.workspace = options.workspace
        self.url = self.workspace.db_url
        self.device = resolve_device(options.device)
        self.store = StatStore(self.url, self.workspace.stat_train_dir)
        transforms = registry.names(registry.TRANSFORM)
        if options.transform is not None:
            registry.path(registry.TRANSFORM, options.transform)
            transforms = [options.transform]
        self.space = SearchSpace(**{**options.space.__dict__, "transforms": tuple(transforms)})
        self.configs = resolve_configs(options.configs, self.store)
        if options.train_missing_pipelines:
            self.configs = [c for c in self.configs if self.store.count_results(c, options.epochs) == 0]
        if options.random_config_order:
            random.Random(options.seed).shuffle(self.configs)
        self.fixed = hyperparameters.parse_fixed(options.fixed)
        if options.transform is not None:
            self.fixed.setdefault("transform", options.transform)
        supported = set()
        for config in self.configs:
            try:
                supported |= set(registry.load(registry.MODEL, config.nn).supported_hyperparameters())
            except registry.RegistryError:
                continue  # recorded as a failed trial when its turn comes
        hyperparameters.check_fixed(self.fixed, supported, registry.names(registry.TRANSFORM))

    def storage(self) -> optuna.storages.RDBStorage:
        """Optuna's tables in the same database; heartbeats let a later run fail a killed trial."""
        engine_kwargs = {"connect_args": {"timeout": 120}} if self.url.startswith("sqlite") else {"pool_pre_ping": True}
        for attempt in range(STORAGE_ATTEMPTS):  # workers starting together race to create Optuna's tables
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    storage = optuna.storages.RDBStorage(self.url, engine_kwargs=engine_kwargs,
                                                         heartbeat_interval=HEARTBEAT_SECONDS,
                                                         grace_period=GRACE_SECONDS)
                break
            except (IntegrityError, OperationalError):
                if attempt == STORAGE_ATTEMPTS - 1:
                    raise
                time.sleep(0.5 * (attempt + 1))
        if self.url.startswith("sqlite"):
            # several workers on one file: Optuna's read-then-write transactions must take the
            # write lock up front, or SQLite answers "database is locked" instead of waiting
            engines.configure_sqlite(storage.engine, immediate=True)
            storage.engine.dispose()
        return storage

    def run(self) -> SweepSummary:
        storage = self.storage()
        previous = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        try:
            return SweepSummary([self.run_config(config, storage) for config in self.configs])
        finally:
            optuna.logging.set_verbosity(previous)

    # -- one config ------------------------------------------------------------------------------
    def _total(self, config: Config) -> tuple[int | None, int]:
        """LEMUR's ``-t``: n >= 0 is the total wanted for this config and epoch count; n < 0 means
        |n| more. Returns (total for reservations, trials this call should run at most)."""
        n = self.options.trials
        if n < 0:
            return None, -n
        return n, max(0, n - self.store.count_results(config, self.options.epochs))

    def _reconcile(self, config: Config, study: optuna.Study, storage) -> None:
        """Mark trials left ``running`` by a dead process as failed, so they stop holding slots."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        here = system.host()
        for trial in self.store.running_trials(config):
            reason = None
            if trial.optuna_trial_id is not None:
                state = storage.get_trial(trial.optuna_trial_id).state
                if state != optuna.trial.TrialState.RUNNING:
                    reason = f"interrupted: the process running it stopped (Optuna state {state.name})"
            if reason is None and trial.host == here and trial.pid and not psutil.pid_exists(trial.pid):
                reason = f"interrupted: the runner (process {trial.pid} on {here}) is gone"
                if trial.optuna_trial_id is not None:
                    storage.set_trial_state_values(trial.optuna_trial_id, optuna.trial.TrialState.FAIL)
            if reason:
                self.store.finish_trial(trial.id, FAILED, error=reason)

    def _code(self, config: Config) -> str:
        checksum = self.store.save_code(registry.MODEL, config.nn)
        code = "\n".join(registry.source(registry.METRIC, m) for m in config.metrics)
        self.store.save_code(registry.METRIC, config.metric, code)
        for transform in self.space.transforms:
            self.store.save_code(registry.TRANSFORM, transform)
        return checksum

    def run_config(self, config: Config, storage) -> ConfigResult:
        result = ConfigResult(config)
        total, wanted = self._total(config)
        study = optuna.create_study(study_name=config.name, storage=storage, direction="maximize",
                                    load_if_exists=True,
                                    sampler=optuna.samplers.TPESampler(seed=self.options.seed))
        self._reconcile(config, study, storage)
        study.sampler = optuna.samplers.TPESampler(seed=self.options.seed + len(study.trials))
        try:
            module = registry.load(registry.MODEL, config.nn)
            nn_code_id = self._code(config)
        except registry.RegistryError as error:
            self._record_unrunnable(config, study, error)
            result.failed, result.gave_up = 1, str(error)
            tqdm.write(f"{config}: {error}")
            return result
        failures_in_row = 0
        with tqdm(total=wanted, desc=config.name, unit="trial", disable=not self.options.progress,
                  position=0) as bar:
            while result.trained < wanted:
                trial_id = self.store.reserve_trial(config, self.options.epochs, total, seed=None,
                                                    split=self.options.data.label, host=system.host(),
                                                    pid=os.getpid(), max_samples=self.options.data.max_samples,
                                                    nn_code_id=nn_code_id)
                if trial_id is None:
                    break  # other workers hold or finished the remaining slots
                outcome = self._optimize_one(config, study, module, trial_id)
                if outcome.status == FAILED:
                    result.failed += 1
                    failures_in_row += 1
                    tqdm.write(f"{config}: trial failed: {outcome.error.splitlines()[0]}")
                    if outcome.fatal:
                        result.gave_up = outcome.error.split("\n\n")[0]
                        tqdm.write(f"{config}: giving up: the data or the registry cannot serve any trial")
                        break
                    if failures_in_row >= self.options.fail_attempts:
                        result.gave_up = f"{failures_in_row} failed trials in a row (-a {self.options.fail_attempts})"
                        tqdm.write(f"{config}: giving up after {result.gave_up}")
                        break
                    continue
                failures_in_row = 0
                result.trained += 1
                if outcome.accuracy is not None:
                    result.best_accuracy = max(result.best_accuracy or 0.0, outcome.accuracy)
                bar.update(1)
                bar.set_postfix(best=f"{result.best_accuracy:.4f}", last_mae=_fmt(outcome.eval_mae))
        return result

    def _optimize_one(self, config: Config, study: optuna.Study, module, trial_id: int) -> TrialOutcome:
        box: dict[str, TrialOutcome] = {}

        def objective(trial: optuna.Trial) -> float:
            try:
                prm = hyperparameters.sample(trial, module.supported_hyperparameters(), self.space,
                                             self.fixed, self.options.epochs)
                seed = self.options.seed + trial.number
                self.store.assign_trial(trial_id, number=trial.number, optuna_trial_id=trial._trial_id, prm=prm,
                                        seed=seed)
                fixed = {k: v for k, v in self.fixed.items() if k in prm}
                if fixed:
                    trial.set_user_attr("fixed", fixed)
                trial.set_user_attr("trial_id", trial_id)
                spec = TrialSpec(config=config, prm=prm, trial_id=trial_id, number=trial.number, db_url=self.url,
                                 workspace=self.workspace, data=self.options.data, seed=seed, device=self.device,
                                 workers=self.options.workers, epoch_limit_minutes=self.options.epoch_limit_minutes,
                                 save_pth=self.options.save_pth, export=self.options.export,
                                 progress=self.options.progress)
                outcome = self.execute(spec)
            except Exception as error:
                if engines.is_storage_error(error):
                    raise  # nothing more can be recorded: stop the sweep (the CLI says why)
                outcome = TrialOutcome(FAILED, error=describe_error(error))
                self.store.finish_trial(trial_id, FAILED, error=outcome.error)
            box["outcome"] = outcome
            if outcome.status == FAILED:
                raise TrialFailed(outcome.error.splitlines()[0])
            return outcome.accuracy if outcome.accuracy is not None else 0.0

        try:
            study.optimize(objective, n_trials=1, catch=(TrialFailed,), gc_after_trial=True)
        except BaseException as error:  # interrupted (Ctrl-C) or broken beyond the trial: keep the record true
            try:
                if self.store.trial_status(trial_id) == "running":
                    self.store.finish_trial(trial_id, FAILED, error=f"interrupted: {type(error).__name__}: {error}")
            except Exception:
                pass  # the database itself is what broke; the CLI reports the original error
            raise
        return box["outcome"]

    def _record_unrunnable(self, config: Config, study: optuna.Study, error: Exception) -> None:
        """A model file that cannot even be imported is still one recorded (failed) trial."""
        trial_id = self.store.reserve_trial(config, self.options.epochs, None, split=self.options.data.label,
                                            host=system.host(), pid=os.getpid())
        trial = study.ask()
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        self.store.update_trial(trial_id, number=trial.number, optuna_trial_id=trial._trial_id)
        self.store.finish_trial(trial_id, FAILED, error=describe_error(error))


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def run(options: SweepOptions, execute: Callable[[TrialSpec], TrialOutcome] | None = None) -> SweepSummary:
    return Sweep(options, execute).run()

