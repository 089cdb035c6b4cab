"""The sweep: for every selected config, its study, and trials until the requested number have trained
(failures recorded, and tolerated up to ``-a`` in a row).

Our ``trial`` table is the authority on every trial; the runner writes it first (reserve, assign, and,
through the trial process, every epoch and the end), then tells Optuna what our record says
(``ab.nn.sweep.study``), then mirrors it to JSON (``ab.nn.stat.mirror.flush``). A crash between any two
of these steps leaves copies behind the record, never ahead of it, and the next runner start (or
``python -m ab.nn.stat check --repair``) brings them up to date.

Model code that the project did not write (workspace and staged files) never runs in the runner's
process: the runner learns about it from the sandboxed probe (``ab.nn.sweep.models``) and trains it only
in a sandboxed trial child (``ab.nn.sweep.isolation``); ``--in-process`` is for the package's models, and
for workspace ones only with ``--unsafe`` (each trial records it).
"""
from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Callable

from tqdm.auto import tqdm

from ab.nn import registry
from ab.nn.config import Config
from ab.nn.dataset import DataError, skipped as skip_log, trial_data
from ab.nn.dataset.identity import PARTS, DataIdentity
from ab.nn.dataset.settings import DataSettings
from ab.nn.deploy.keep_best import keep_best_only
from ab.nn.deploy.options import PIPELINE, SKIPPED, ExportOptions
from ab.nn.stat import constant_predictor, engine as engines, mirror, studies, versions
from ab.nn.stat.lease import HEARTBEAT_SECONDS, RunnerLease
from ab.nn.stat.states import FAILED, INTERRUPTED, RESULT_STATES, RUNNING, TRAINED_STATES
from ab.nn.stat.store import StatStore
from ab.nn.sweep import groups, hyperparameters, input_sizes, resume_file, search
from ab.nn.sweep.configs import resolve_configs
from ab.nn.sweep.hyperparameters import SearchSpace
from ab.nn.sweep.isolation import Limits, run_in_process, run_isolated
from ab.nn.sweep.models import ModelInfo, describe
from ab.nn.sweep.study import SweepStudy, sampler
from ab.nn.sweep.trial_spec import TrialOutcome, TrialSpec, describe_error
from ab.nn.util import faults, system, tempdirs
from ab.nn.util.wording import count
from ab.nn.workspace import Workspace

log = logging.getLogger(__name__)

HELD_POLL_SECONDS = 5.0
"""How often a runner with no slot left looks again while other runners hold the remaining ones."""


@dataclass(frozen=True)
class SweepOptions:
    configs: tuple[str, ...] = ("",)
    fixed: dict = field(default_factory=dict)
    epochs: int = 1
    trials: int = -1
    space: SearchSpace = field(default_factory=SearchSpace)
    transform: str | None = None
    balance: str | None = None  # --balance: how the training images are drawn (ab.nn.dataset.balance)
    fail_attempts: int = 30
    random_config_order: bool = False
    workers: int = 2
    threads: int | None = None  # torch threads per trial; None: system.training_threads(workers)
    epoch_limit_minutes: float = 30
    train_missing_pipelines: bool = False
    save_pth: bool = True  # model.pth in out/<config>/<trial>/, what load_model and predict open
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
    unsafe: bool = False  # run workspace model code without a sandbox where none can be had
    resume: bool = True  # continue an interrupted trial from its resume file (--no-resume: a fresh trial instead)


@dataclass
class ConfigResult:
    config: Config
    trained: int = 0
    failed: int = 0
    lost: int = 0                    # trials another runner reclaimed while this one ran them (not counted)
    gave_up: str | None = None
    best_mae: float | None = None    # the best validation MAE this run trained
    data: str | None = None          # the data key and what it stands for
    statuses: dict = field(default_factory=dict)  # every trial of this config and data key, by status
    best: dict | None = None         # the best trained trial's row on this data (by validation)
    baseline: dict | None = None     # the constant predictor's row on this data (ab.nn.stat.constant_predictor)
    beating: tuple[int, int] = (0, 0)  # trained trials on this data better than it, of those judged
    folder: str | None = None        # its artifact folder
    note: str | None = None          # why nothing (more) ran
    repaired: list = field(default_factory=list)  # disagreements with Optuna's copy found and repaired
    mirror: str | None = None        # the JSON mirror's state when it could not be written
    skipped: str | None = None       # how many data files no trial uses, and the log that names them
    seconds: float = 0.0             # this run's wall time on the config's trials
    export_seconds: float = 0.0      # of which exporting (each trial's ``pipeline`` export row)
    not_exported: int = 0            # trials not exported: no better than the constant predictor
    continued: list = field(default_factory=list)  # "trial 7 continued from epoch 12", each one this run continued
    not_continued: list = field(default_factory=list)  # interrupted trials whose resume file could not be used, and why

    def export_share(self) -> str | None:
        """One line: how much of this run's time went to export, and which trials were not exported."""
        if not self.seconds or not (self.export_seconds or self.not_exported):
            return None
        line = (f"export: {self.export_seconds:.0f} s of this run's {self.seconds:.0f} s "
                f"({100 * self.export_seconds / self.seconds:.0f} %)")
        if self.not_exported:
            line += (f"; {self.not_exported} trial{'s' if self.not_exported > 1 else ''} no better than the constant "
                     f"predictor not exported (--export-unlearned exports them)")
        return line


@dataclass
class SweepSummary:
    results: list[ConfigResult]

    @property
    def ok(self) -> bool:
        return all(r.gave_up is None for r in self.results)


def resolve_device(name: str) -> str:
    """``--device`` as the trials get it. ``auto`` is ``cpu`` without asking torch where the kernel shows no
    GPU device at all (``system.gpu_device_nodes``), so that a runner on a machine without one never
    imports torch: its trials do."""
    if name != "cpu" and name != "auto" and not name.startswith("cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda[:N], got {name!r}")
    if name == "cpu" or (name == "auto" and not system.gpu_device_nodes()):
        return "cpu"
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available on this machine")
    return name


class Sweep:
    def __init__(self, options: SweepOptions, execute: Callable[[TrialSpec], TrialOutcome] | None = None):
        self.options = options
        self.execute = execute or (partial(run_isolated, limits=options.limits, unsafe=options.unsafe)
                                   if options.isolate else run_in_process)
        self.workspace = options.workspace
        self.url = self.workspace.db_url
        self.device = resolve_device(options.device)
        versions.upgrade(self.url)  # once per open, before any trial process starts
        self.store = StatStore(self.url)
        transforms = [name for name in registry.names(registry.TRANSFORM) if input_sizes.searched(name)]
        if options.transform is not None:
            registry.path(registry.TRANSFORM, options.transform)
            transforms = [options.transform]
        self.space = SearchSpace(**{**options.space.__dict__, "transforms": tuple(transforms)})
        # a latency objective or constraint needs every trial's latency, whatever it learned
        self.export = replace(options.export, export_unlearned=True) if options.search.needs_latency \
            else options.export
        self.configs = resolve_configs(options.configs, self.store.configs())
        if execute is None and not options.isolate:
            outside = sorted({c.nn for c in self.configs if registry.origin(registry.MODEL, c.nn) != registry.PACKAGE})
            if outside and not options.unsafe:
                raise ValueError(f"--in-process runs the package's own models only: {', '.join(outside)} "
                                 f"{'is' if len(outside) == 1 else 'are'} workspace code, which runs only in a "
                                 f"sandboxed trial child (leave out --in-process, or add --unsafe to run it "
                                 f"unconfined in this process)")
            if outside:
                log.warning("--in-process --unsafe: workspace model code (%s) runs in this process with its rights",
                            ", ".join(outside))
        if options.train_missing_pipelines:
            self.configs = [c for c in self.configs if self.store.count_results(c, options.epochs) == 0]
        if options.seeds < 1:
            raise ValueError(f"--seeds must be at least 1, got {options.seeds}")
        options.search.check(exporting=options.export.enabled, epochs=options.epochs)
        self._identities: dict[tuple[str, str], DataIdentity | Exception] = {}
        self._baselines: dict[str, dict | None] = {}
        if options.random_config_order:
            random.Random(options.seed).shuffle(self.configs)
        self.fixed = hyperparameters.parse_fixed(options.fixed)
        if options.transform is not None:
            self.fixed.setdefault("transform", options.transform)
        if options.balance is not None:  # spelled one way in prm, so that replicas group; a bad value is refused below
            self.fixed["balance"] = _canonical_balance(options.balance)
        self.models: dict[str, ModelInfo] = {}
        if set(self.fixed) - set(hyperparameters.FRAMEWORK):  # -p names a model's own: check it against them all
            supported, choices = set(), {}
            for nn in sorted({config.nn for config in self.configs}):
                try:
                    model = self.model(nn)
                except registry.RegistryError:
                    continue  # recorded as a failed trial when its turn comes
                supported |= model.supported
                for name, values in model.choices.items():
                    choices.setdefault(name, []).extend(values)
            hyperparameters.check_fixed(self.fixed, supported, registry.names(registry.TRANSFORM), choices)
        else:
            hyperparameters.check_fixed(self.fixed, (), registry.names(registry.TRANSFORM))
        if "transform" in self.fixed:  # -f or -p: that one, whether or not a search would draw it
            self.space = replace(self.space, transforms=(self.fixed["transform"],))
            self._check_fixed_transform()

    def _check_fixed_transform(self) -> None:
        """A fixed transform that no selected model takes is a bad command line, said before anything runs;
        one that only some take leaves the others to give up, each with its reason."""
        reasons = []
        for nn in sorted({config.nn for config in self.configs}):
            try:
                reason = self.cannot_take(self.model(nn))
            except registry.RegistryError:
                return  # recorded as a failed trial when its turn comes
            if reason is None:
                return
            reasons.append(reason)
        if reasons:
            raise hyperparameters.HyperparameterError("; ".join(reasons))

    def transforms_for(self, model: ModelInfo) -> tuple[str, ...]:
        """The transforms a model's trials sample from: those of its declared input sizes (all when it
        declares none)."""
        return tuple(input_sizes.allowed(self.space.transforms, model.input_sizes))

    def space_for(self, model: ModelInfo) -> SearchSpace:
        return replace(self.space, transforms=self.transforms_for(model))

    def cannot_take(self, model: ModelInfo) -> str | None:
        """Why none of this sweep's transforms (the fixed one, where one is) fits the model's declared input
        sizes, in one line; None when one does."""
        fixed = self.fixed.get("transform")
        offered = [fixed] if fixed is not None else list(self.space.transforms)
        if input_sizes.allowed(offered, model.input_sizes):
            return None
        sizes = sorted({input_sizes.transform_size(name) for name in offered})
        what = f"transform {fixed} is" if fixed is not None else "the transforms offered are"
        return (f"{model.name} takes {input_sizes.describe(model.input_sizes)} inputs only (its "
                f"supported_input_sizes()), and {what} {input_sizes.describe(sizes)}")

    def _without_weights(self, model: ModelInfo) -> bool:
        """``pretrained`` is not sampled where the model says no ImageNet weights can be had here (a trial
        with pretrained=1 could only fail); it is fixed to 0."""
        return ("pretrained" in model.supported and "pretrained" not in self.fixed and self.space.pretrained is None
                and model.pretrained_available is False)

    def model(self, nn: str) -> ModelInfo:
        """What the runner knows about a model (read once, when first needed: workspace models by the
        sandboxed probe); a ``RegistryError`` when its file cannot be used."""
        if nn not in self.models:
            model = self.models[nn] = describe(nn, unsafe=self.options.unsafe)
            if self._without_weights(model):
                tqdm.write(f"{nn}: no pretrained weights on this machine, so pretrained is fixed to 0 "
                           f"(--pretrained 1 or -p '{{\"pretrained\": 1}}' to insist)")
        return self.models[nn]

    def fixed_for(self, nn: str) -> dict:
        """Values fixed for this model's trials: ``-p``, and pretrained 0 where no weights can be had."""
        model = self.models.get(nn)
        return {**({"pretrained": 0} if model is not None and self._without_weights(model) else {}), **self.fixed}

    def run(self) -> SweepSummary:
        self.require_data()
        tempdirs.clean_abandoned()  # what trials of runners killed on this host left behind
        storage = studies.storage(self.url)
        with studies.quiet(), RunnerLease(self.store, self.options.heartbeat_seconds) as self.lease:
            return SweepSummary([self.run_config(config, storage) for config in self.configs])

    def require_data(self) -> None:
        """Raise the first ``DataError`` (no folder, no images, none decodable) of any selected config
        before anything is reserved: a data problem stops the run, once, not each config's trials. A
        config whose loader cannot be imported is left to its turn (a recorded failed trial)."""
        for config in self.configs:
            try:
                self.identity(config)
            except registry.RegistryError:
                continue

    # -- one config ------------------------------------------------------------------------------
    def identity(self, config: Config) -> DataIdentity:
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

    def baseline(self, config: Config, identity: DataIdentity) -> dict | None:
        """The constant-predictor baseline of a data key: computed from the labels of its parts and recorded
        once, before the key's first trial (a key that has one keeps it); None where the loader cannot say
        its labels without running a trial."""
        if identity.key not in self._baselines:
            recorded = self.store.baseline(identity.key)
            ages = trial_data.part_ages(config, self.workspace, self.options.data) if recorded is None else None
            if ages is not None:
                try:
                    self.store.record_baseline(constant_predictor.Baseline.of_ages(identity.key, config.dataset, ages))
                except ValueError as error:  # no training images: the trial says so, as its error
                    log.warning("no constant-predictor baseline: %s", error)
                recorded = self.store.baseline(identity.key)
            self._baselines[identity.key] = recorded
        return self._baselines[identity.key]

    def total(self, config: Config, data_key: str) -> tuple[int | None, int]:
        """LEMUR's ``-t``: n >= 0 is the total wanted for this config, data and epoch count; n < 0 means
        |n| more. With ``--seeds N`` it counts hyperparameter sets, each N trials. Returns (total for
        reservations, trials this call should run at most)."""
        n, replicas = self.options.trials, self.options.seeds
        if n < 0:
            return None, -n * replicas
        total = n * replicas
        return total, max(0, total - self.store.count_results(config, self.options.epochs, data_key))

    def study_name(self, config: Config, identity: DataIdentity) -> str:
        """One study per config, data key and epoch count: only its trials' values compare."""
        return f"{config.name}@{identity.key}/e{self.options.epochs}"

    def _open_study(self, config: Config, identity: DataIdentity, storage) -> SweepStudy:
        wanted = studies.StudyDef(self.study_name(config, identity), config.name, identity.key, self.options.epochs,
                                  self.options.search.objectives, self.options.search.max_latency_ms,
                                  *self.options.search.gap_constraint)
        return SweepStudy.open(self.store, storage, wanted, self.options.search, self.options.epochs,
                               sampler(self.options.seed, self.lease.id))

    def _code(self, config: Config) -> str:
        checksum = self.store.save_code(registry.MODEL, config.nn)
        code = "\n".join(registry.source(registry.METRIC, m) for m in config.metrics)
        self.store.save_code(registry.METRIC, config.metric, code)
        for transform in self.space.transforms:
            self.store.save_code(registry.TRANSFORM, transform)
        return checksum

    def _flush_mirror(self, result: ConfigResult) -> None:
        """Write what the outbox queued for this machine's JSON mirror; a failure stays queued (and is
        said in the summary), the trials stay as recorded."""
        try:
            flushed = mirror.flush(self.url, self.workspace.stat_train_dir)
        except Exception as error:
            if engines.is_storage_error(error) and not isinstance(error, OSError):
                raise
            result.mirror = f"not written ({type(error).__name__}: {error}); `python -m ab.nn.stat check --repair` " \
                            f"writes it"
            return
        result.mirror = str(flushed) if flushed.errors else None

    def run_config(self, config: Config, storage) -> ConfigResult:
        result = ConfigResult(config)
        try:
            identity = self.identity(config)  # its DataError was raised by require_data, before any trial
        except registry.RegistryError as error:
            identity = DataIdentity(config.dataset, self.options.data)
            module_error: Exception | None = error
        else:
            module_error = None
        if module_error is None:
            result.baseline = self.baseline(config, identity)
        study = self._open_study(config, identity, storage)
        result.repaired = [str(f) for f in study.findings]
        self._flush_mirror(result)
        try:
            if module_error is not None:
                raise module_error
            model = self.model(config.nn)
            nn_code_id = self._code(config)
        except registry.RegistryError as error:
            self._record_unrunnable(config, study, identity, error)
            result.failed, result.gave_up = 1, str(error)
            tqdm.write(f"{config}: {error}")
            return result
        space = self.space_for(model)
        result.gave_up = self.cannot_take(model) or self._choices_changed(study, space)
        if result.gave_up is not None:
            tqdm.write(f"{config}: {result.gave_up}")
            return result
        total, wanted = self.total(config, identity.key)
        failures_in_row, waiting = 0, False
        reservation = dict(split=self.options.data.label, split_seed=self.options.data.split_seed,
                           max_samples=self.options.data.max_samples, nn_code_id=nn_code_id,
                           **{f"{part}_digest": (identity.digests or {}).get(part) for part in PARTS})
        with tqdm(total=wanted, desc=config.name, unit="trial", disable=not self.options.progress,
                  position=0) as bar:
            while result.trained < wanted and result.gave_up is None:
                study.reclaim()  # slots of runners that died during this run are freed now, not at the next start
                continued = self._claim_interrupted(config, identity, space, total, nn_code_id, result) \
                    if self.options.resume else None
                # one slot at a time: the replicas of a --seeds group spread over every worker on the study
                group = groups.unfinished(self.store, config, self.options.epochs, identity.key, self.options.seeds,
                                          self.fixed_for(config.nn), space.transforms) if continued is None else None
                owner = dict(host=system.host(), pid=os.getpid(), lease_id=self.lease.id, **reservation)
                if continued is not None:
                    slot = (continued, None)
                elif group:
                    claimed = self.store.reserve_replicas(
                        config, self.options.epochs, total, data_key=identity.key, group=group.id,
                        seeds=[group.seed + r for r in group.missing][:1], study=study.name, **owner)
                    slot = (claimed[0][0], claimed[0][1] - group.seed) if claimed else None
                else:
                    ids = self.store.reserve_trials(config, self.options.epochs, total, data_key=identity.key,
                                                    study=study.name, count=1, **owner)
                    slot = (ids[0], 0) if ids else None
                if slot is None:
                    held = self.store.held_by_live_runners(config, self.options.epochs, identity.key)
                    if held:  # another runner's (this one runs none now): it may fail, or its runner die and
                        # study.reclaim() above free its slot; so wait for each to end, rather than end short of -t
                        if not waiting:
                            tqdm.write(f"{config}: waiting for {held} trial(s) other runners hold (the rest of the "
                                       f"{total} wanted on this data are trained)")
                        waiting = True
                        time.sleep(min(self.options.heartbeat_seconds, HELD_POLL_SECONDS))
                        continue
                    result.note = (f"other workers hold or finished the remaining slots of the {count(total, 'trial')} "
                                   f"wanted on this data")
                    break
                trial_id, replica = slot
                faults.point("reserve")
                began = time.monotonic()
                outcome = self._run_continued(config, study, trial_id, identity, result) if continued is not None \
                    else self._run_one(config, study, model, space, trial_id, identity, replica, group)
                result.seconds += time.monotonic() - began
                self._count_export(result, trial_id)
                recorded = self.store.trial_status(trial_id)
                faults.point("mirror")
                self._flush_mirror(result)
                if recorded == FAILED:
                    result.failed += 1
                    failures_in_row += 1
                    tqdm.write(f"{config}: trial {trial_id} failed: {(outcome.error or 'failed').splitlines()[0]}")
                    if outcome.fatal:
                        result.gave_up = outcome.error.split("\n\n")[0]
                        tqdm.write(f"{config}: giving up: the data or the registry cannot serve any trial")
                    elif failures_in_row >= self.options.fail_attempts:
                        result.gave_up = f"{failures_in_row} failed trials in a row (-a {self.options.fail_attempts})"
                        tqdm.write(f"{config}: giving up after {result.gave_up}")
                    continue
                if recorded not in RESULT_STATES:
                    result.lost += 1
                    tqdm.write(f"{config}: trial {trial_id} was recorded {recorded} by another runner while this one "
                               f"ran it (its lease had lapsed); not counted")
                    continue
                failures_in_row = 0
                result.trained += 1
                if outcome.eval_mae is not None:
                    result.best_mae = min(result.best_mae if result.best_mae is not None else float("inf"),
                                          outcome.eval_mae)
                bar.update(1)
                bar.set_postfix(best_val_mae=_fmt(result.best_mae), last=f"trial {trial_id}: {_fmt(outcome.eval_mae)}")
        if wanted == 0:
            result.note = (f"nothing to do: {count(total, 'trial')} wanted at {count(self.options.epochs, 'epoch')} on this data, and "
                           f"they are trained (-t -N asks for N more)")
        self._summarise(result, config, identity)
        return result

    def _choices_changed(self, study: SweepStudy, space: SearchSpace) -> str | None:
        """Optuna keeps a categorical's choices for the life of a study: where its trials sampled the transform
        from other choices (before the model declared its input sizes, or before a workspace transform was
        added), every new trial would fail, so the config stops here and says what still runs."""
        if "transform" in self.fixed:
            return None
        for trial in study.optuna.get_trials(deepcopy=False):
            recorded = trial.distributions.get("transform")
            if recorded is not None:
                if list(recorded.choices) == list(space.transforms):
                    return None
                return (f"study {study.name!r} sampled the transform from {len(recorded.choices)} choices, and its "
                        f"trials may now use {', '.join(space.transforms)} only (Optuna cannot change a study's "
                        f"choices): fix one with -f, or sweep into a new database")
        return None

    def _summarise(self, result: ConfigResult, config: Config, identity: DataIdentity) -> None:
        result.data = identity.describe()
        if identity.skipped_log:
            skipped = len(skip_log.read(identity.skipped_log))
            result.skipped = f"{count(skipped, 'file')}, listed in {identity.skipped_log}" if skipped else None
        rows = [self.store.trial_row(i) for i in self.store.trial_ids(config, identity.key)]
        judged = [constant_predictor.beats(row, result.baseline) for row in rows if row["status"] in TRAINED_STATES]
        result.beating = (sum(j is True for j in judged), sum(j is not None for j in judged))
        for row in rows:
            result.statuses[row["status"]] = result.statuses.get(row["status"], 0) + 1
        best = self.store.best_trial(config, identity.key)
        if best is not None:
            result.best = self.store.trial_row(best)
            folder = self.workspace.trial_dir(config.name, best)
            result.folder = str(folder) if folder.exists() else None

    def _run_one(self, config: Config, study: SweepStudy, model: ModelInfo, space: SearchSpace, trial_id: int,
                 identity: DataIdentity, replica: int, group: groups.Group | None) -> TrialOutcome:
        """Ask Optuna for a point (or, for a replica, repeat its group's), record it, run the trial, and tell
        Optuna what our record then says."""
        fence = self.lease.id
        try:
            if group is None:
                asked = study.ask(trial_id)
                prm = hyperparameters.sample(asked, model.supported, space, self.fixed_for(config.nn),
                                             self.options.epochs, model.own)
                number, optuna_id = asked.number, asked._trial_id
                params = studies.search_params(asked)
                seed = self.options.seed + (0 if self.options.seeds > 1 else number)
                replica_of = trial_id if self.options.seeds > 1 else None
            else:
                prm, params, number, optuna_id = dict(group.prm), group.search_params, None, None
                seed, replica_of = group.seed + replica, group.id
            self.store.assign_trial(trial_id, number=number, optuna_trial_id=optuna_id, prm=prm, seed=seed,
                                    replica_of=replica_of, search_params=params, fence=fence)
        except BaseException as error:
            return self._told(study, trial_id, self._ended(config, study, trial_id, error))
        return self._execute(config, study, trial_id, prm, seed, optuna_id, identity)

    def _execute(self, config: Config, study: SweepStudy, trial_id: int, prm: dict, seed: int, optuna_id: int | None,
                 identity: DataIdentity, resumed: bool = False) -> TrialOutcome:
        """Run a trial that is recorded running with its hyperparameters (``resumed``: from the resume file
        in its folder), then tell Optuna what our record says. A trial that ended leaves no resume file."""
        fence = self.lease.id
        try:
            link = search.Link(self.url, study.name, optuna_id, self.options.search, self.options.epochs) \
                if optuna_id is not None else None
            spec = TrialSpec(config=config, prm=prm, trial_id=trial_id, db_url=self.url, link=link,
                             workspace=self.workspace, data=self.options.data, seed=seed, device=self.device,
                             workers=self.options.workers,
                             threads=self.options.threads or system.training_threads(self.options.workers),
                             epoch_limit_minutes=self.options.epoch_limit_minutes,
                             save_pth=self.options.save_pth, export=self.export,
                             baseline=self.store.baseline(identity.key),
                             progress=self.options.progress, identity=identity, lease_id=fence,
                             group_gap_by=study.definition.group_gap_by,
                             model_file=registry.path(registry.MODEL, config.nn), resume=resumed)
            outcome = self.execute(spec)
            if self.export.enabled and self.export.keep_best_only:
                keep_best_only(self.store, config, identity.key, self.workspace.out_dir)
        except BaseException as error:
            outcome = self._ended(config, study, trial_id, error)
        if self.store.trial_status(trial_id) not in (INTERRUPTED, RUNNING):
            resume_file.remove(self.workspace.trial_dir(config.name, trial_id))
        return self._told(study, trial_id, outcome)

    @staticmethod
    def _told(study: SweepStudy, trial_id: int, outcome: TrialOutcome) -> TrialOutcome:
        faults.point("tell")
        study.tell(trial_id)
        return outcome

    def _ended(self, config: Config, study: SweepStudy, trial_id: int, error: BaseException) -> TrialOutcome:
        """A trial that raised: recorded failed (and its outcome returned), or, for an interruption or a
        database that is gone, recorded interrupted as far as possible and raised again."""
        fence = self.lease.id
        if isinstance(error, Exception):
            if engines.is_storage_error(error) or engines.is_database_bug(error):
                self._interrupted(trial_id, study, error)  # as far as the database still lets us
                raise error  # the database is gone (the CLI says why) or our own bug (raised with its statement)
            outcome = TrialOutcome(FAILED, error=describe_error(error))
            self.store.finish_trial(trial_id, FAILED, error=outcome.error, fence=fence)
            return outcome
        self._interrupted(trial_id, study, error)  # interrupted: keep the record true, then stop
        raise error

    # -- continuing interrupted trials (ab.nn.sweep.resume) -----------------------------------------
    def _claim_interrupted(self, config: Config, identity: DataIdentity, space: SearchSpace, total: int | None,
                           nn_code_id: str, result: ConfigResult) -> int | None:
        """An interrupted trial this runner could have drawn itself (same epochs, data, model code, fixed values
        and transforms, and the seed this run's ``--seed`` and ``--seeds`` give it) whose resume file is sound,
        claimed for this runner; None when there is none. A resume file that cannot be used is removed, and
        why is recorded on its trial, which stays interrupted (a fresh trial is drawn instead)."""
        for row in self.store.interrupted_trials(config, self.options.epochs, identity.key, nn_code_id):
            if not self._could_have_drawn(row, config, space):
                continue
            folder = self.workspace.trial_dir(config.name, row["id"])
            if not resume_file.path_of(folder).exists():
                continue
            from ab.nn.sweep import resume  # torch reads the file: only where there is one to continue

            try:
                saved = resume.read(folder, trial_id=row["id"], epoch_max=self.options.epochs, seed=row["seed"])
                if saved["epoch"] > (row["epochs_done"] or 0):
                    raise resume.ResumeError(f"it is saved after epoch {saved['epoch']}, and the trial recorded "
                                             f"{row['epochs_done'] or 0}")
            except resume.ResumeError as error:
                resume_file.remove(folder)
                self.store.not_continued(row["id"], str(error))
                result.not_continued.append(f"trial {row['id']} not continued: {error}")
                tqdm.write(f"{config}: trial {row['id']} not continued: {error}")
                continue
            if self.store.continue_trial(config, row["id"], self.options.epochs, total, data_key=identity.key,
                                         lease_id=self.lease.id, host=system.host(), pid=os.getpid()):
                result.continued.append(f"trial {row['id']} continued from epoch {saved['epoch'] + 1}")
                tqdm.write(f"{config}: {result.continued[-1]}")
                return row["id"]
        return None

    def _could_have_drawn(self, row: dict, config: Config, space: SearchSpace) -> bool:
        if not groups.agrees(self.store.trial_prm(row["id"]), self.fixed_for(config.nn), space.transforms):
            return False
        if self.options.seeds == 1:
            return row["replica_of"] is None and row["number"] is not None and \
                row["seed"] == self.options.seed + row["number"]
        if row["replica_of"] is None:
            return False
        first = self.options.seed if row["replica_of"] == row["id"] else self.store.trial_row(row["replica_of"])["seed"]
        return first == self.options.seed and 0 <= row["seed"] - first < self.options.seeds

    def _run_continued(self, config: Config, study: SweepStudy, trial_id: int, identity: DataIdentity,
                       result: ConfigResult) -> TrialOutcome:
        """Run a claimed interrupted trial on from its resume file, told to Optuna's running copy of it
        (``studies.running_copy``: the interrupted copy stays failed there)."""
        try:
            row = self.store.trial_row(trial_id)
            seed, replica = row["seed"], row["replica_of"] is not None and row["replica_of"] != trial_id
            optuna_id = studies.running_copy(self.url, study.optuna, trial_id, study.definition)
            prm = self.store.trial_prm(trial_id)
        except BaseException as error:
            return self._told(study, trial_id, self._ended(config, study, trial_id, error))
        return self._execute(config, study, trial_id, prm, seed, None if replica else optuna_id, identity,
                             resumed=True)

    def _count_export(self, result: ConfigResult, trial_id: int) -> None:
        for row in self.store.exports_of([trial_id]):
            if row.format == PIPELINE:
                result.export_seconds += row.seconds or 0.0
                result.not_exported += row.status == SKIPPED

    def _interrupted(self, trial_id: int, study: SweepStudy, error: BaseException) -> None:
        """Ctrl-C, SIGTERM (pre-emption) or a broken database in the middle of a trial: record it
        ``interrupted`` if it still runs (the trial process may have recorded its end already), then tell
        Optuna whatever our record says."""
        what = f"{type(error).__name__}: {error}".strip(": ") if str(error) else type(error).__name__
        try:
            self.store.finish_trial(trial_id, INTERRUPTED, error=f"interrupted: {what}", fence=self.lease.id)
            study.tell(trial_id)
        except Exception:
            pass  # the database itself is what broke; the next start repairs what is left

    def _record_unrunnable(self, config: Config, study: SweepStudy, identity: DataIdentity,
                           error: Exception) -> None:
        """A model file that cannot even be imported is still one recorded (failed) trial."""
        trial_id = self.store.reserve_trial(config, self.options.epochs, None, data_key=identity.key,
                                            study=study.name, split=self.options.data.label,
                                            host=system.host(), pid=os.getpid(), lease_id=self.lease.id)
        self.store.finish_trial(trial_id, FAILED, error=describe_error(error), fence=self.lease.id)
        study.tell(trial_id)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def plan(options: SweepOptions) -> str:
    """``--dry-run``: what ``run(options)`` would do (``ab.nn.sweep.plan``)."""
    from ab.nn.sweep.plan import plan as describe_plan
    from ab.nn.workspace import active

    with active.use(options.workspace):
        return describe_plan(Sweep(options))


def run(options: SweepOptions, execute: Callable[[TrialSpec], TrialOutcome] | None = None) -> SweepSummary:
    from ab.nn.workspace import active

    with active.use(options.workspace):  # the registry finds the workspace's own model files
        return Sweep(options, execute).run()


def _canonical_balance(value: str) -> str:
    from ab.nn.dataset import balance

    try:
        return balance.parse(value)
    except ValueError:
        return value
