"""The sweep: for every selected config, an Optuna study in the statistics database, and trials
until the requested number have trained (failures recorded, and tolerated up to ``-a`` in a row)."""
from __future__ import annotations

import hashlib
import logging
import os
import random
import warnings
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
import psutil
import torch
from tqdm.auto import tqdm

from ab.nn import registry
from ab.nn.config import Config, Pattern, select
from ab.nn.dataset import DataError, trial_data
from ab.nn.dataset.identity import PARTS, DataIdentity
from ab.nn.dataset.settings import DataSettings
from ab.nn.deploy.pipeline import ExportOptions
from ab.nn.stat import engine as engines, versions
from ab.nn.stat.schema import DIVERGED, FAILED, INTERRUPTED, PRUNED, STOPPED
from ab.nn.stat.store import StatStore
from ab.nn.sweep import hyperparameters, search
from ab.nn.sweep.hyperparameters import SearchSpace
from ab.nn.sweep.isolation import Limits, run_isolated
from ab.nn.sweep.lease import HEARTBEAT_SECONDS, RunnerLease, states as lease_states
from ab.nn.sweep.trial import TrialOutcome, TrialSpec, describe_error, run_trial
from ab.nn.util import system
from ab.nn.workspace import Workspace

log = logging.getLogger(__name__)



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
    seed: int = 42      # training seeds and the sampler; the split has its own (data.split_seed)
    heartbeat_seconds: float = HEARTBEAT_SECONDS  # of this runner's lease
    search: search.Search = field(default_factory=search.Search)  # pruner, objectives, latency constraint
    seeds: int = 1      # training-seed replicas of every hyperparameter set
    device: str = "auto"
    data: DataSettings = field(default_factory=DataSettings)
    workspace: Workspace = field(default_factory=Workspace.resolve)
    progress: bool = True


@dataclass(frozen=True)
class Group:
    """A replica group to complete: its id (its first trial's), that trial's seed and Optuna trial, and the
    replica positions (seed offsets) it still lacks."""
    id: int
    seed: int
    first: optuna.trial.FrozenTrial
    missing: list[int]


@dataclass
class ConfigResult:
    config: Config
    trained: int = 0
    failed: int = 0
    gave_up: str | None = None
    best_accuracy: float | None = None
    data: str | None = None          # the data key and what it stands for
    statuses: dict = field(default_factory=dict)  # every trial of this config and data key, by status
    best: dict | None = None         # the best trained trial's row on this data (by validation)
    folder: str | None = None        # its artifact folder
    note: str | None = None          # why nothing (more) ran


@dataclass
class SweepSummary:
    results: list[ConfigResult]

    @property
    def ok(self) -> bool:
        return all(r.gave_up is None for r in self.results)


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
        versions.upgrade(self.url)  # once per open, before any trial process starts
        self.store = StatStore(self.url, self.workspace.stat_train_dir)
        transforms = registry.names(registry.TRANSFORM)
        if options.transform is not None:
            registry.path(registry.TRANSFORM, options.transform)
            transforms = [options.transform]
        self.space = SearchSpace(**{**options.space.__dict__, "transforms": tuple(transforms)})
        self.configs = resolve_configs(options.configs, self.store)
        if options.train_missing_pipelines:
            self.configs = [c for c in self.configs if self.store.count_results(c, options.epochs) == 0]
        if options.seeds < 1:
            raise ValueError(f"--seeds must be at least 1, got {options.seeds}")
        options.search.check(exporting=options.export.enabled, epochs=options.epochs)
        self._identities: dict[tuple[str, str], DataIdentity | Exception] = {}
        if options.random_config_order:
            random.Random(options.seed).shuffle(self.configs)
        self.fixed = hyperparameters.parse_fixed(options.fixed)
        if options.transform is not None:
            self.fixed.setdefault("transform", options.transform)
        supported, choices = set(), {}
        self.own: dict[str, dict] = {}        # each model's declared search space
        self.model_fixed: dict[str, dict] = {}  # values fixed for one model (pretrained without weights)
        for nn in sorted({config.nn for config in self.configs}):
            try:
                module = registry.load(registry.MODEL, nn)
            except registry.RegistryError:
                continue  # recorded as a failed trial when its turn comes
            names = set(module.supported_hyperparameters())
            supported |= names
            self.own[nn] = hyperparameters.declared(module)
            for name, rule in self.own[nn].items():
                if "choices" in rule:
                    choices.setdefault(name, []).extend(rule["choices"])
            self.model_fixed[nn] = self._without_weights(nn, module, names)
        hyperparameters.check_fixed(self.fixed, supported, registry.names(registry.TRANSFORM), choices)

    def _without_weights(self, nn: str, module, names: set) -> dict:
        """``pretrained`` is not sampled where the model says no ImageNet weights can be had here (a trial
        with pretrained=1 could only fail); it is fixed to 0, with one notice."""
        available = getattr(module, "pretrained_available", None)
        if "pretrained" not in names or "pretrained" in self.fixed or self.space.pretrained is not None \
                or available is None or available():
            return {}
        tqdm.write(f"{nn}: no pretrained weights on this machine, so pretrained is fixed to 0 "
                   f"(--pretrained 1 or -p '{{\"pretrained\": 1}}' to insist)")
        return {"pretrained": 0}

    def run(self) -> SweepSummary:
        storage = search.storage(self.url)
        with search.quiet(), RunnerLease(self.store, self.options.heartbeat_seconds) as self.lease:
            return SweepSummary([self.run_config(config, storage) for config in self.configs])

    # -- one config ------------------------------------------------------------------------------
    def _identity(self, config: Config) -> DataIdentity:
        """The data key of a config's trials, computed once per dataset before any trial starts (so a
        missing or unreadable data folder is reported once, not by every trial)."""
        key = (config.task, config.dataset)
        if key not in self._identities:
            try:
                self._identities[key] = trial_data.identify(config, self.workspace, self.options.data)
            except (DataError, registry.RegistryError) as error:
                self._identities[key] = error
        found = self._identities[key]
        if isinstance(found, Exception):
            raise found
        return found

    def _total(self, config: Config, data_key: str) -> tuple[int | None, int]:
        """LEMUR's ``-t``: n >= 0 is the total wanted for this config, data and epoch count; n < 0 means
        |n| more. With ``--seeds N`` it counts hyperparameter sets, each N trials. Returns (total for
        reservations, trials this call should run at most)."""
        n, replicas = self.options.trials, self.options.seeds
        if n < 0:
            return None, -n * replicas
        total = n * replicas
        return total, max(0, total - self.store.count_results(config, self.options.epochs, data_key))

    def _reconcile(self, config: Config, storage) -> None:
        """Trials (and reservations) left ``running`` by a runner whose lease has lapsed are recorded
        ``interrupted`` and their Optuna trials failed, so they stop holding slots. A live runner's
        trials are never touched, whatever host name or pid it shares with this one."""
        running = self.store.running_trials(config)
        leases = lease_states(self.store, [t.lease_id for t in running])
        for trial in running:
            if trial.lease_id is not None:
                state = leases[trial.lease_id]
                if state.alive:
                    continue
                reason = f"interrupted: {state.reason}"
            elif trial.host == system.host() and trial.pid and not psutil.pid_exists(trial.pid):
                reason = f"interrupted: its runner (process {trial.pid} on {trial.host}) is gone"  # before leases
            else:
                continue
            if self.store.finish_trial(trial.id, INTERRUPTED, error=reason) and trial.optuna_trial_id is not None:
                _fail_in_optuna(storage, trial.optuna_trial_id, reason)

    def _code(self, config: Config) -> str:
        checksum = self.store.save_code(registry.MODEL, config.nn)
        code = "\n".join(registry.source(registry.METRIC, m) for m in config.metrics)
        self.store.save_code(registry.METRIC, config.metric, code)
        for transform in self.space.transforms:
            self.store.save_code(registry.TRANSFORM, transform)
        return checksum

    def sampler(self) -> optuna.samplers.BaseSampler:
        """TPE seeded per runner (the run's seed and this runner's lease), with the constant liar: runners
        started together no longer sample the same points, and running trials count as taken."""
        seed = int.from_bytes(hashlib.blake2b(f"{self.options.seed}:{self.lease.id}".encode(), digest_size=4).digest(),
                              "big")
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)

    def _study(self, config: Config, identity: DataIdentity, storage) -> optuna.Study:
        """The config's study on this data and budget: our pruner and objectives; metric names that say
        what the values are (the dashboard shows them instead of "Objective 0")."""
        search_ = self.options.search
        name = self.study_name(config, identity)
        try:
            study = optuna.create_study(study_name=name, storage=storage, directions=search_.directions(),
                                        load_if_exists=True, sampler=self.sampler(),
                                        pruner=search_.make_pruner(self.options.epochs))
        except ValueError as error:  # an existing study with other directions
            raise search.SearchError(f"study {name!r} already exists with other objectives ({error}); use another "
                                     f"-e, or the objectives it was created with") from None
        if study.directions != [optuna.study.StudyDirection[d.upper()] for d in search_.directions()]:
            raise search.SearchError(f"study {name!r} already optimises {len(study.directions)} objective(s); "
                                     f"--objectives {','.join(search_.objectives)} does not match it")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if study.metric_names != search_.metric_names():
                study.set_metric_names(search_.metric_names())
        return study

    def study_name(self, config: Config, identity: DataIdentity) -> str:
        """One Optuna study per config, data key and epoch count: only its trials' values compare."""
        return f"{config.name}@{identity.key}/e{self.options.epochs}"

    def run_config(self, config: Config, storage) -> ConfigResult:
        result = ConfigResult(config)
        try:
            identity = self._identity(config)
        except DataError as error:
            result.gave_up = str(error)  # the summary prints it, once
            return result
        except registry.RegistryError as error:
            identity = DataIdentity(config.dataset, self.options.data)
            module_error: Exception | None = error
        else:
            module_error = None
        study = self._study(config, identity, storage)
        self._reconcile(config, storage)
        try:
            if module_error is not None:
                raise module_error
            module = registry.load(registry.MODEL, config.nn)
            nn_code_id = self._code(config)
        except registry.RegistryError as error:
            self._record_unrunnable(config, study, identity, error)
            result.failed, result.gave_up = 1, str(error)
            tqdm.write(f"{config}: {error}")
            return result
        total, wanted = self._total(config, identity.key)
        failures_in_row = 0
        reservation = dict(split=self.options.data.label, split_seed=self.options.data.split_seed,
                           max_samples=self.options.data.max_samples, nn_code_id=nn_code_id,
                           **{f"{part}_digest": (identity.digests or {}).get(part) for part in PARTS})
        with tqdm(total=wanted, desc=config.name, unit="trial", disable=not self.options.progress,
                  position=0) as bar:
            while result.trained < wanted and result.gave_up is None:
                # one slot at a time: the replicas of a --seeds group spread over every worker on the study
                unfinished = self._unfinished_group(config, identity, study)
                owner = dict(host=system.host(), pid=os.getpid(), lease_id=self.lease.id, **reservation)
                if unfinished:
                    claimed = self.store.reserve_replicas(
                        config, self.options.epochs, total, data_key=identity.key, group=unfinished.id,
                        seeds=[unfinished.seed + r for r in unfinished.missing][:1], study=study.study_name, **owner)
                    slot = (claimed[0][0], claimed[0][1] - unfinished.seed) if claimed else None
                else:
                    ids = self.store.reserve_trials(config, self.options.epochs, total, data_key=identity.key,
                                                    study=study.study_name, count=1, **owner)
                    slot = (ids[0], 0) if ids else None
                if slot is None:
                    result.note = (f"other workers hold or finished the remaining slots of the {total} trials "
                                   f"wanted on this data")
                    break
                trial_id, replica = slot
                group = unfinished.id if unfinished else (trial_id if self.options.seeds > 1 else None)
                outcome, _ = self._run_one(config, study, module, trial_id, identity, replica,
                                           unfinished.first if unfinished else None, group=group,
                                           base_seed=unfinished.seed if unfinished else self.options.seed)
                if outcome.status == FAILED:
                    result.failed += 1
                    failures_in_row += 1
                    tqdm.write(f"{config}: trial {trial_id} failed: {outcome.error.splitlines()[0]}")
                    if outcome.fatal:
                        result.gave_up = outcome.error.split("\n\n")[0]
                        tqdm.write(f"{config}: giving up: the data or the registry cannot serve any trial")
                    elif failures_in_row >= self.options.fail_attempts:
                        result.gave_up = f"{failures_in_row} failed trials in a row (-a {self.options.fail_attempts})"
                        tqdm.write(f"{config}: giving up after {result.gave_up}")
                    continue
                failures_in_row = 0
                result.trained += 1
                if outcome.accuracy is not None:
                    result.best_accuracy = max(result.best_accuracy or 0.0, outcome.accuracy)
                bar.update(1)
                bar.set_postfix(best=f"{result.best_accuracy:.4f}", last_mae=_fmt(outcome.eval_mae))
        if wanted == 0:
            result.note = (f"nothing to do: {total} trials wanted at {self.options.epochs} epochs on this data, and "
                           f"they are trained (-t -N asks for N more)")
        self._summarise(result, config, identity)
        return result

    def _summarise(self, result: ConfigResult, config: Config, identity: DataIdentity) -> None:
        result.data = identity.describe()
        rows = [self.store.trial_row(i) for i in self.store.trial_ids(config, identity.key)]
        for row in rows:
            result.statuses[row["status"]] = result.statuses.get(row["status"], 0) + 1
        best = self.store.best_trial(config, identity.key, self.options.search.max_latency_ms)
        if best is not None:
            result.best = self.store.trial_row(best)
            folder = self.workspace.trial_dir(config.name, best)
            result.folder = str(folder) if folder.exists() else None

    def _unfinished_group(self, config: Config, identity: DataIdentity, study: optuna.Study) -> Group | None:
        """A replica group of this data and budget whose first trial trained or is training and which
        lacks some of its ``--seeds`` replicas (not yet claimed, or interrupted, or failed): they are run
        first, with the group's own hyperparameters and its missing seeds, so several workers train one
        group's replicas side by side, and an interrupted ``--seeds`` run resumes instead of starting a
        new group that repeats seeds. Only groups this worker could have started itself are joined: a worker
        told ``-p '{"head": "dex"}'`` never trains another worker's regression replicas."""
        if self.options.seeds < 2:
            return None
        for group in self.store.replica_groups(config, self.options.epochs, identity.key):
            taken = {seed - group["seed"] for seed in group["seeds"]}
            missing = [r for r in range(self.options.seeds) if r not in taken]
            if missing and group["optuna_trial_id"] is not None:
                first = study._storage.get_trial(group["optuna_trial_id"])
                if "prm" in first.user_attrs and self._within_my_choices(config, first.user_attrs["prm"]):
                    return Group(group["id"], group["seed"], first, missing)
        return None

    def _within_my_choices(self, config: Config, prm: dict) -> bool:
        """Whether these hyperparameters agree with this worker's fixed values (``-p``) and transforms (``-f``)."""
        fixed = {**self.model_fixed.get(config.nn, {}), **self.fixed}
        if any(name in prm and prm[name] != value for name, value in fixed.items()):
            return False
        return not self.space.transforms or prm.get("transform") in self.space.transforms

    def _run_one(self, config: Config, study: optuna.Study, module, trial_id: int, identity: DataIdentity,
                 replica: int, first: optuna.trial.FrozenTrial | None, group: int | None,
                 base_seed: int) -> tuple[TrialOutcome, optuna.trial.FrozenTrial | None]:
        """Ask Optuna for a point (or, for a replica, repeat ``first``'s), run the trial, tell Optuna."""
        trial = None
        try:
            if first is None:
                trial = study.ask()
                prm = hyperparameters.sample(trial, module.supported_hyperparameters(), self.space,
                                             {**self.model_fixed.get(config.nn, {}), **self.fixed},
                                             self.options.epochs, self.own.get(config.nn))
                number, optuna_id = trial.number, trial._trial_id
            else:
                prm = dict(first.user_attrs["prm"])
                number, optuna_id = None, None
            seed = base_seed + (replica if group is not None else (number or 0))
            self.store.assign_trial(trial_id, number=number, optuna_trial_id=optuna_id, prm=prm, seed=seed,
                                    replica_of=group)
            link = search.Link(self.url, study.study_name, optuna_id, self.options.search, self.options.epochs) \
                if optuna_id is not None else None
            spec = TrialSpec(config=config, prm=prm, trial_id=trial_id, db_url=self.url, link=link,
                             workspace=self.workspace, data=self.options.data, seed=seed, device=self.device,
                             workers=self.options.workers, epoch_limit_minutes=self.options.epoch_limit_minutes,
                             save_pth=self.options.save_pth, export=self.options.export,
                             progress=self.options.progress, identity=identity)
            if trial is not None:
                attrs = {"trial_id": trial_id, "prm": prm, "seed": seed}
                fixed = {k: v for k, v in self.fixed.items() if k in prm}
                if fixed:
                    attrs["fixed"] = fixed
                for name, value in attrs.items():
                    trial.set_user_attr(name, value)
            outcome = self.execute(spec)
        except Exception as error:
            if engines.is_storage_error(error) or engines.is_database_bug(error):
                self._interrupted(trial_id, trial, study, error)  # as far as the database still lets us
                raise  # the database is gone (the CLI says why) or our own bug (raised with its statement)
            outcome = TrialOutcome(FAILED, error=describe_error(error))
            self.store.finish_trial(trial_id, FAILED, error=outcome.error)
        except BaseException as error:  # interrupted: keep the record true, then stop
            self._interrupted(trial_id, trial, study, error)
            raise
        return outcome, self._tell(study, trial, first, trial_id, outcome)

    def _interrupted(self, trial_id: int, trial, study: optuna.Study, error: BaseException) -> None:
        """Ctrl-C, SIGTERM (pre-emption) or a broken database in the middle of a trial: record it
        ``interrupted`` (the next run continues without it) and fail its Optuna trial."""
        what = f"{type(error).__name__}: {error}".strip(": ") if str(error) else type(error).__name__
        try:
            self.store.finish_trial(trial_id, INTERRUPTED, error=f"interrupted: {what}")
            if trial is not None:
                _fail_in_optuna(study._storage, trial._trial_id, f"interrupted: {what}")
        except Exception:
            pass  # the database itself is what broke; the CLI reports the original error

    def _optuna_outcome(self, row: dict, outcome: TrialOutcome) -> tuple[optuna.trial.TrialState, list | None, str]:
        """Our record as Optuna sees it: state, values (None unless COMPLETE) and the reason shown in
        the dashboard. A trial stopped early (LEMUR's gate, or the pruner) is PRUNED; diverged, failed
        and interrupted ones FAIL; an export that failed leaves a trained trial COMPLETE, except that a
        study on latency cannot be told a value it does not have."""
        State = optuna.trial.TrialState
        status = row["status"]
        if status in (FAILED, INTERRUPTED):
            return State.FAIL, None, (row.get("error") or outcome.error or status).splitlines()[0][:500]
        if status == DIVERGED:
            return State.FAIL, None, "diverged: the loss or the outputs became NaN or infinite"
        if status == STOPPED:
            return State.PRUNED, None, ("stopped by LEMUR's early stop: validation accuracy not above 1.2 x the "
                                        "dataset's MINIMUM_ACCURACY")
        if status == PRUNED:
            return State.PRUNED, None, f"pruned by {self.options.search.describe()} after epoch {row['epochs_done']}"
        values = [outcome.accuracy if outcome.accuracy is not None else 0.0]
        for objective in self.options.search.objectives[1:]:
            extra = self.store.latency_ms(row["id"]) if objective == "latency" else \
                (row["macs"] / 1e6 if row.get("macs") else None)
            if extra is None:
                return State.FAIL, None, (f"no {objective} for the study's second objective"
                                          + (" (its export failed; see its export rows)" if objective == "latency"
                                             else ""))
            values.append(extra)
        return State.COMPLETE, values, ""

    def _attributes(self, row: dict, reason: str) -> dict:
        """What the dashboard shows beside each trial: our id, MAE in years, outcome, data."""
        keys = ("status", "eval_mae", "test_mae", "test_mae_low", "test_mae_high", "epochs_done", "epoch_max",
                "seed", "split", "data_key", "max_samples", "n_train", "n_eval", "n_test", "params", "macs")
        attrs = {"trial_id": row["id"], **{k: row[k] for k in keys if row.get(k) is not None}}
        latency = self.store.latency(row["id"]) if self.options.search.needs_latency else None
        if latency is not None:
            attrs["latency_ms"], attrs["latency_runtime"] = latency
        if reason:
            attrs["reason"] = reason
        return attrs

    def _tell(self, study: optuna.Study, trial, first, trial_id: int,
              outcome: TrialOutcome) -> optuna.trial.FrozenTrial | None:
        """Record the outcome in Optuna: the asked trial, or a replica as a new trial with ``first``'s
        parameters (added only now, so that no other worker can take its point)."""
        row = self.store.trial_row(trial_id)
        state, values, reason = self._optuna_outcome(row, outcome)
        attrs = self._attributes(row, reason)
        latency = self.store.latency_ms(trial_id) if self.options.search.max_latency_ms is not None else None
        constraint = None if latency is None else latency - self.options.search.max_latency_ms
        if trial is not None:
            frozen = study._storage.get_trial(trial._trial_id)
            if frozen.state.is_finished():  # another runner reclaimed it (its record says so)
                return frozen
            for name, value in attrs.items():
                trial.set_user_attr(name, value)
            search.note(trial, attrs)
            if constraint is not None:
                trial.set_constraint("latency_ms", constraint)
            study.tell(trial, values, state=state)
            return study._storage.get_trial(trial._trial_id)
        if first is None:
            return None
        epochs = dict(enumerate((v for v in self.store.epoch_accuracies(trial_id)), start=1))
        system = {"constraints:latency_ms": constraint} if constraint is not None else {}
        study.add_trial(optuna.trial.create_trial(
            params=first.params, distributions=first.distributions, values=values, state=state,
            intermediate_values=epochs, system_attrs=system,
            user_attrs={**{k: v for k, v in first.user_attrs.items() if k in ("prm", "fixed")}, **attrs,
                        "replica_of": first.user_attrs["trial_id"]}))
        for frozen in reversed(study.get_trials(deepcopy=False)):
            if frozen.user_attrs.get("trial_id") == trial_id:
                self.store.update_trial(trial_id, number=frozen.number, optuna_trial_id=frozen._trial_id)
                break
        return None

    def _record_unrunnable(self, config: Config, study: optuna.Study, identity: DataIdentity,
                           error: Exception) -> None:
        """A model file that cannot even be imported is still one recorded (failed) trial."""
        trial_id = self.store.reserve_trial(config, self.options.epochs, None, data_key=identity.key,
                                            study=study.study_name, split=self.options.data.label,
                                            host=system.host(), pid=os.getpid(), lease_id=self.lease.id)
        trial = study.ask()
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        self.store.update_trial(trial_id, number=trial.number, optuna_trial_id=trial._trial_id)
        self.store.finish_trial(trial_id, FAILED, error=describe_error(error))


def _fail_in_optuna(storage, optuna_trial_id: int, reason: str) -> None:
    """Fail an Optuna trial that is still running (another process may have finished it already)."""
    try:
        if storage.get_trial(optuna_trial_id).state == optuna.trial.TrialState.RUNNING:
            storage.set_trial_user_attr(optuna_trial_id, "error", reason[:500])
            storage.set_trial_state_values(optuna_trial_id, optuna.trial.TrialState.FAIL)
    except (KeyError, RuntimeError, UpdateFinishedTrialError):
        pass


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def describe_space(module, space: SearchSpace, fixed: dict, own: dict) -> list[str]:
    """How each hyperparameter of a model will be chosen, one line each (``--dry-run``)."""
    lines = []
    own = {k: v for k, v in own.items() if k not in space.explicit}
    for name in sorted(set(module.supported_hyperparameters())) + ["batch", "transform"]:
        if name in fixed:
            how = f"fixed at {fixed[name]!r}"
        elif name == "pretrained" and space.pretrained is not None:
            how = f"fixed at {space.pretrained} (--pretrained)"
        elif name in own:
            rule = own[name]
            how = (f"one of {list(rule['choices'])} (the model's own)" if "choices" in rule else
                   f"{'log-' if rule.get('log') else ''}uniform in [{rule['low']:g}, {rule['high']:g}] (the model's own)")
        elif name == "lr":
            how = f"log-uniform in [{space.min_lr:g}, {space.max_lr:g}]"
        elif name in ("momentum", "dropout"):
            low, high = getattr(space, f"min_{name}"), getattr(space, f"max_{name}")
            how = f"uniform in [{low:g}, {high:g}]"
        elif name == "batch":
            how = f"one of {space.batches}"
        elif name == "transform":
            how = f"one of {list(space.transforms)}"
        elif name == "pretrained":
            how = "one of [0, 1]"
        else:
            how = "uniform in [0, 1] (LEMUR's default)"
        lines.append(f"    {name}: {how}")
    return lines


def plan(options: SweepOptions) -> str:
    """What ``run(options)`` would do, without reserving or training anything (``--dry-run``): the configs,
    the data each is judged on, how many trials would run, and how hyperparameters are chosen."""
    sweep = Sweep(options)
    lines = []
    for config in sweep.configs:
        lines.append(config.name)
        try:
            identity = sweep._identity(config)
            module = registry.load(registry.MODEL, config.nn)
        except (DataError, registry.RegistryError) as error:
            lines.append(f"  cannot run: {str(error).splitlines()[0]}")
            continue
        total, wanted = sweep._total(config, identity.key)
        lines.append(f"  data: {identity.describe()}")
        lines.append(f"  trials: {wanted} to run ({'no total' if total is None else f'{total} wanted in all'}, "
                     f"{options.epochs} epochs each), Optuna study {sweep.study_name(config, identity)!r}")
        lines.append("  hyperparameters:")
        lines += describe_space(module, sweep.space, {**sweep.model_fixed.get(config.nn, {}), **sweep.fixed},
                                sweep.own.get(config.nn, {}))
    return "\n".join(lines) if lines else "no config selected"


def run(options: SweepOptions, execute: Callable[[TrialSpec], TrialOutcome] | None = None) -> SweepSummary:
    from ab.nn.workspace import active

    with active.use(options.workspace):  # the registry finds the workspace's own model files
        return Sweep(options, execute).run()

