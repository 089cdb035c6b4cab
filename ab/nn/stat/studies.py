"""Optuna's studies, as a copy derived from our tables.

Our ``trial`` table is the one authority on what happened to a trial, and our ``study`` table on what a
study optimises. Optuna's tables hold a copy because its sampler, its pruners and optuna-dashboard read
them. Every value written to Optuna is derived from our record at the moment of writing, by whichever
process writes it, so two processes telling the same trial tell the same thing; a copy that is missing
or wrong is repaired from our tables (``reconcile``), and a whole study can be rebuilt from them
(``rebuild``: after an import, a copy, or a study created by an older version).

One state map, in one place:

=============  ===========  =======================================================================
ours           Optuna       values
=============  ===========  =======================================================================
running        RUNNING      -
complete       COMPLETE     validation MAE in years, then latency (ms) or MACs (millions) if asked
stopped        PRUNED       the last epoch's validation MAE (LEMUR's accuracy gate stopped it)
pruned         PRUNED       the last epoch's validation MAE (the study's pruner stopped it)
diverged       FAIL         -
failed         FAIL         -
interrupted    FAIL         -
=============  ===========  =======================================================================

A complete trial whose study has a second objective it lacks (no latency measured: its export failed)
is FAIL, with the reason. A study's limits become Optuna's named constraints of every finished trial
whose value is known (feasible at <= 0): ``latency_ms`` (its latency minus ``--max-latency-ms``) and
``group_gap_years`` (its validation group gap minus ``--max-group-gap``). Every Optuna trial carries our
trial id as the user attribute ``ab_nn_trial`` (and our outcome, MAE and reason, also as
optuna-dashboard's note): that is the number people read.
"""
from __future__ import annotations

import json
import logging
import math
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

import optuna
from optuna.distributions import distribution_to_json, json_to_distribution
from optuna.trial import TrialState
from sqlalchemy import select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from ab.nn.stat import engine as engines, ranking
from ab.nn.stat.store import reclaim_lapsed
from ab.nn.stat.schema import Prm, Stat, Study, Trial
from ab.nn.stat.states import COMPLETE, DIVERGED, FAILED, INTERRUPTED, PRUNED, RUNNING, STOPPED

log = logging.getLogger(__name__)

TRIAL_ATTR = "ab_nn_trial"
"""The Optuna user attribute holding our trial id."""
OBJECTIVES = ("mae", "latency", "macs")
METRIC_NAMES = {"mae": "val MAE (years)", "latency": "latency ms (batch 1, 1 thread)", "macs": "MMACs (batch 1)"}
DIRECTIONS = {"mae": "minimize", "latency": "minimize", "macs": "minimize"}
STATES = {RUNNING: TrialState.RUNNING, COMPLETE: TrialState.COMPLETE, STOPPED: TrialState.PRUNED,
          PRUNED: TrialState.PRUNED, DIVERGED: TrialState.FAIL, FAILED: TrialState.FAIL, INTERRUPTED: TrialState.FAIL}
ATTRIBUTES = ("status", "eval_mae", "test_mae", "test_mae_low", "test_mae_high", "epochs_done", "epoch_max", "seed",
              "split", "data_key", "max_samples", "n_train", "n_eval", "n_test", "params", "macs", "eval_group_gap")
LATENCY_CONSTRAINT = "latency_ms"
GAP_CONSTRAINT = "group_gap_years"
"""Optuna's names of the constraints (``FrozenTrial.constraints``; stored as ``constraints:<name>``)."""


class StudyMismatch(ValueError):
    """A study exists with other objectives or another constraint than asked; one line."""


STORAGE_ATTEMPTS = 5


@contextmanager
def quiet():
    """Optuna's own INFO lines (each trial told, each study made) would drown the progress bars."""
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)


@contextmanager
def _one_creator_at_a_time(url: str):
    """On PostgreSQL, Optuna's table creation is check-then-create: two workers starting together
    both find no ``studies`` table and the second fails with ``relation "studies" already exists``
    (DuplicateTable, not retried as a storage error). An advisory lock held by a transaction around
    the creation makes them take turns, as reservations and migrations do. SQLite serialises writers
    itself; its collisions are the OperationalErrors retried below."""
    if make_url(url).get_backend_name() != "postgresql":
        yield
        return
    with engines.engine(url, writer=False).begin() as connection:
        engines.hold_transaction_lock(connection, "ab_nn_optuna_tables")
        yield


_servers: dict[str, optuna.storages.RDBStorage] = {}
_servers_lock = threading.Lock()


def storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's tables in the statistics database (where optuna-dashboard finds them). On a database
    server, one storage per URL per process: its pool is one of the two a process holds (pre-ping and
    bounds of ``engine.PoolSettings``), however many trials the process runs. An SQLite file gets a new one
    each call (no server connections to count; a test's file may be replaced at the same path)."""
    if url.startswith("sqlite"):
        return _made(url)
    with _servers_lock:
        if url not in _servers:
            _servers[url] = _made(url)
        return _servers[url]


def _made(url: str) -> optuna.storages.RDBStorage:
    for attempt in range(STORAGE_ATTEMPTS):  # workers starting together race to create Optuna's tables
        try:
            with warnings.catch_warnings(), _one_creator_at_a_time(url):
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                made = optuna.storages.RDBStorage(url, engine_kwargs=engines.engine_kwargs(url))
            break
        except (IntegrityError, OperationalError):
            if attempt == STORAGE_ATTEMPTS - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    if url.startswith("sqlite"):
        # several workers on one file: Optuna's read-then-write transactions must take the write lock
        # up front, or SQLite answers "database is locked" instead of waiting
        engines.configure_sqlite(made.engine, immediate=True)
        made.engine.dispose()
    return made


# -- what a study optimises (ours) -----------------------------------------------------------------
@dataclass(frozen=True)
class StudyDef:
    name: str
    config: str
    data_key: str | None
    epoch_max: int | None
    objectives: tuple[str, ...] = ("mae",)
    max_latency_ms: float | None = None
    max_group_gap: float | None = None  # years, between the groups of group_gap_by on the validation part
    group_gap_by: tuple[str, ...] | None = None  # set with max_group_gap only

    @property
    def directions(self) -> list[str]:
        return [DIRECTIONS[o] for o in self.objectives]

    @property
    def metric_names(self) -> list[str]:
        return [METRIC_NAMES[o] for o in self.objectives]

    @classmethod
    def of(cls, row: Study) -> "StudyDef":
        return cls(row.name, row.config, row.data_key, row.epoch_max, tuple(json.loads(row.objectives)),
                   row.max_latency_ms, row.max_group_gap, tuple(row.group_gap_by.split(",")) if row.group_gap_by
                   else None)


def define(session: Session, wanted: StudyDef) -> StudyDef:
    """Record a study's definition the first time; later runs must ask for the same objectives and
    constraint (their values would not compare otherwise)."""
    row = session.get(Study, wanted.name, with_for_update=True)
    if row is None:
        session.add(Study(name=wanted.name, config=wanted.config, data_key=wanted.data_key,
                          epoch_max=wanted.epoch_max, objectives=json.dumps(list(wanted.objectives)),
                          max_latency_ms=wanted.max_latency_ms, max_group_gap=wanted.max_group_gap,
                          group_gap_by=",".join(wanted.group_gap_by) if wanted.group_gap_by else None,
                          created_at=datetime.now(timezone.utc)))
        return wanted
    known = StudyDef.of(row)
    if known.objectives != wanted.objectives:
        raise StudyMismatch(f"study {wanted.name!r} optimises {','.join(known.objectives)}; this run asks for "
                            f"{','.join(wanted.objectives)} (use those objectives, or another -e)")
    if known.max_latency_ms != wanted.max_latency_ms:
        raise StudyMismatch(f"study {wanted.name!r} was created with --max-latency-ms {known.max_latency_ms}; this run "
                            f"asks for {wanted.max_latency_ms} (use the same, or another -e)")
    if (known.max_group_gap, known.group_gap_by) != (wanted.max_group_gap, wanted.group_gap_by):
        raise StudyMismatch(f"study {wanted.name!r} was created with {_gap_flags(known)}; this run asks for "
                            f"{_gap_flags(wanted)} (use the same, or another -e)")
    return known


def _gap_flags(study: StudyDef) -> str:
    if study.max_group_gap is None:
        return "no --max-group-gap"
    return f"--max-group-gap {study.max_group_gap:g} --group-gap-by {','.join(study.group_gap_by or ())}"


def definition(session: Session, name: str) -> StudyDef | None:
    row = session.get(Study, name)
    return StudyDef.of(row) if row is not None else None


LEGACY_METRICS = {"accuracy = 1 - MAE/20 (validation)": "mae", "latency ms (batch 1, 1 thread)": "latency",
                  "MMACs (batch 1)": "macs"}
"""Metric names of studies made before our ``study`` table existed (they maximised accuracy)."""


def infer(session: Session, storage: optuna.storages.BaseStorage, name: str) -> StudyDef | None:
    """The definition of a study made by an older version (no row in our ``study`` table), read from its
    Optuna copy and our trials; ``None`` where it cannot be told (no metric names, no trials)."""
    try:
        made = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None
    names = made.metric_names or (["accuracy = 1 - MAE/20 (validation)"] if len(made.directions) == 1 else None)
    if names is None or any(n not in LEGACY_METRICS for n in names):
        return None
    row = session.execute(select(Trial.config, Trial.data_key, Trial.epoch_max).where(Trial.study == name)
                          .limit(1)).first()
    if row is None:
        return None
    limit = None
    for frozen in made.get_trials(deepcopy=False):
        constraint, latency = frozen.constraints.get(LATENCY_CONSTRAINT), frozen.user_attrs.get("latency_ms")
        if constraint is not None and latency is not None:
            limit = round(float(latency) - float(constraint), 9)
            break
    return StudyDef(name, row.config, row.data_key, row.epoch_max, tuple(LEGACY_METRICS[n] for n in names), limit)


# -- a trial as Optuna must see it -----------------------------------------------------------------
@dataclass
class Derived:
    """What Optuna's copy of one of our trials must hold."""
    state: TrialState
    values: list[float] | None
    intermediate: dict[int, float]
    user_attrs: dict
    constraints: dict[str, float] = field(default_factory=dict)  # value minus the study's limit, by name
    params: dict = field(default_factory=dict)
    distributions: dict = field(default_factory=dict)

    @property
    def reason(self) -> str:
        return self.user_attrs.get("reason", "")


def _finite(value) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


def search_params(trial: optuna.trial.FrozenTrial | optuna.Trial) -> str:
    """The JSON our ``trial.search_params`` keeps of an Optuna trial's sampled values, so that its study
    can be rebuilt without it."""
    frozen = trial if isinstance(trial, optuna.trial.FrozenTrial) else trial.study._storage.get_trial(trial._trial_id)
    return json.dumps({name: {"value": value, "distribution": distribution_to_json(frozen.distributions[name])}
                       for name, value in frozen.params.items()})


def _params(text: str | None) -> tuple[dict, dict]:
    if not text:
        return {}, {}
    stored = json.loads(text)
    return ({name: entry["value"] for name, entry in stored.items()},
            {name: json_to_distribution(entry["distribution"]) for name, entry in stored.items()})


def derive(session: Session, trial: Trial, study: StudyDef) -> Derived:
    """Our record of ``trial`` as Optuna's copy of it (the table in this module's docstring)."""
    state = STATES[trial.status]
    epochs = {epoch: _finite(mae) for epoch, mae in session.execute(
        select(Stat.epoch, Stat.mae).where(Stat.trial_id == trial.id).order_by(Stat.epoch)).all()}
    intermediate = {epoch: mae for epoch, mae in epochs.items() if mae is not None}
    attrs = {TRIAL_ATTR: trial.id, **{k: getattr(trial, k) for k in ATTRIBUTES if getattr(trial, k) is not None}}
    prm = {p.name: p.value for p in session.scalars(select(Prm).where(Prm.uid == trial.prm))} if trial.prm else {}
    if prm:
        attrs["prm"] = prm
    if trial.replica_of is not None and trial.replica_of != trial.id:
        attrs["replica_of"] = trial.replica_of
    latency = ranking.latencies(session, [trial.id]).get(trial.id)
    if latency is not None:
        attrs["latency_ms"], attrs["latency_runtime"] = latency
    values, reason = None, ""
    if trial.status in (FAILED, INTERRUPTED):
        reason = (trial.error or trial.status).splitlines()[0][:500]
    elif trial.status == DIVERGED:
        reason = "diverged: the loss or the outputs became NaN or infinite"
    elif trial.status == STOPPED:
        reason = "stopped by LEMUR's early stop: validation accuracy not above 1.2 x the dataset's MINIMUM_ACCURACY"
    elif trial.status == PRUNED:
        reason = (trial.error or f"pruned after epoch {trial.epochs_done}").splitlines()[0][:500]
    if state == TrialState.PRUNED and intermediate and len(study.objectives) == 1:
        values = [intermediate[max(intermediate)]]  # as Optuna's own tell does for a pruned trial
    if state == TrialState.COMPLETE:
        values, missing = [_finite(trial.eval_mae)], []
        for objective in study.objectives[1:]:
            extra = latency[0] if objective == "latency" and latency else (
                trial.macs / 1e6 if objective == "macs" and trial.macs else None)
            values.append(extra)
        missing = [name for name, value in zip(study.objectives, values) if value is None]
        if missing:
            state, values = TrialState.FAIL, None
            reason = f"no {', '.join(missing)} for the study's objectives" + (
                " (its export failed; see its export rows)" if "latency" in missing else "")
    if reason:
        attrs["reason"] = reason
    constraints = {}
    if study.max_latency_ms is not None and latency is not None and state.is_finished():
        constraints[LATENCY_CONSTRAINT] = latency[0] - study.max_latency_ms
    if study.max_group_gap is not None and trial.eval_group_gap is not None and state.is_finished():
        constraints[GAP_CONSTRAINT] = trial.eval_group_gap - study.max_group_gap
    params, distributions = _params(trial.search_params)
    return Derived(state, values, intermediate, attrs, constraints, params, distributions)


def _frozen(derived: Derived) -> optuna.trial.FrozenTrial:
    """A finished trial as Optuna's ``create_trial`` makes it (Optuna numbers it when it is added)."""
    system = {f"constraints:{name}": value for name, value in derived.constraints.items()}
    return optuna.trial.create_trial(
        state=derived.state, values=derived.values, params=derived.params, distributions=derived.distributions,
        user_attrs=derived.user_attrs, system_attrs=system, intermediate_values=derived.intermediate)


def note_text(attrs: dict) -> str:
    """The few lines a person looks for first: our trial id, outcome, MAE in years, why it ended."""
    head = f"**ab.nn trial {attrs[TRIAL_ATTR]}**: {attrs.get('status', '?')}"
    if attrs.get("epochs_done") is not None:
        epochs = attrs.get("epoch_max", "?")
        head += f" after {attrs['epochs_done']} of {epochs} epoch{'' if epochs == 1 else 's'}"
    lines = [head]
    if attrs.get("eval_mae") is not None:
        mae = f"validation MAE {attrs['eval_mae']:.2f} years"
        if attrs.get("test_mae") is not None:
            mae += f", test MAE {attrs['test_mae']:.2f}"
            if attrs.get("test_mae_low") is not None:
                mae += f" [95% CI {attrs['test_mae_low']:.2f}, {attrs['test_mae_high']:.2f}]"
        lines.append(mae)
    if attrs.get("reason"):
        lines.append(f"reason: {attrs['reason']}")
    if attrs.get("data_key"):
        lines.append(f"data {attrs['data_key']} ({attrs.get('split', '?')})")
    return "\n\n".join(lines)


def _note(study: optuna.Study, optuna_trial_id: int, attrs: dict) -> None:
    """optuna-dashboard shows a trial's note at the top of its page (written where it is installed)."""
    try:
        from optuna_dashboard import save_note
    except ImportError:
        return
    save_note(optuna.trial.Trial(study, optuna_trial_id), note_text(attrs))


# -- writing the copy ------------------------------------------------------------------------------
def open_study(storage: optuna.storages.BaseStorage, study: StudyDef, **kwargs) -> optuna.Study:
    """The Optuna copy of ``study`` (created if missing); ``kwargs`` are the sampler and pruner."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        made = optuna.create_study(study_name=study.name, storage=storage, directions=study.directions,
                                   load_if_exists=True, **kwargs)
        if made.metric_names != study.metric_names:
            made.set_metric_names(study.metric_names)
    return made


def _directions_match(made: optuna.Study, study: StudyDef) -> bool:
    return [d.name.lower() for d in made.directions] == study.directions


def push(session: Session, optuna_study: optuna.Study, trial: Trial, study: StudyDef,
         optuna_id: int | None = None) -> bool:
    """Bring Optuna's copy of one finished trial (``optuna_id``, else the one ours links to) up to our
    record where Optuna still calls it running (the only move Optuna allows). Returns False when Optuna's
    copy is finished and disagrees (a rebuild can repair that), True when it agrees or was brought up to
    date. Reads ours through ``session`` (a reader: never hold our write lock while Optuna writes)."""
    storage = optuna_study._storage
    optuna_id = trial.optuna_trial_id if optuna_id is None else optuna_id
    derived = derive(session, trial, study)
    frozen = storage.get_trial(optuna_id)
    if frozen.state == TrialState.RUNNING and derived.state.is_finished():
        try:
            for epoch, value in derived.intermediate.items():
                if epoch not in frozen.intermediate_values:
                    storage.set_trial_intermediate_value(optuna_id, epoch, value)
            for name, value in derived.user_attrs.items():
                storage.set_trial_user_attr(optuna_id, name, value)
            for name, value in derived.constraints.items():
                storage.set_trial_system_attr(optuna_id, f"constraints:{name}", value)
            _note(optuna_study, optuna_id, derived.user_attrs)
            storage.set_trial_state_values(optuna_id, derived.state, derived.values)
        except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            # another process finished it since it was read (its runner telling it, another runner repairing
            # it): any step of the update may be the one that finds it finished
            return agrees(storage.get_trial(optuna_id), derived)
        return True
    return agrees(frozen, derived)


def agrees(frozen: optuna.trial.FrozenTrial, derived: Derived) -> bool:
    """Whether Optuna's copy holds our state and, for a complete trial, our values."""
    if frozen.state != derived.state:
        return False
    if derived.state != TrialState.COMPLETE:
        return True
    return frozen.values is not None and len(frozen.values) == len(derived.values) and all(
        math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) for a, b in zip(frozen.values, derived.values))


def add(session: Session, optuna_study: optuna.Study, trial: Trial, study: StudyDef) -> tuple[int, int]:
    """Add a finished trial Optuna has no copy of (a replica, an imported trial, one whose runner died
    before asking). Returns Optuna's (trial id, number), which the caller links to ours (``link``)."""
    storage = optuna_study._storage
    derived = derive(session, trial, study)
    optuna_id = storage.create_new_trial(optuna_study._study_id, template_trial=_frozen(derived))
    _note(optuna_study, optuna_id, derived.user_attrs)
    return optuna_id, storage.get_trial_number_from_id(optuna_id)


def running_copy(url: str, optuna_study: optuna.Study, trial_id: int, study: StudyDef) -> int:
    """Optuna's running copy of our interrupted trial ``trial_id``, which a runner continues. Optuna cannot
    reopen a trial it was told failed: a copy it still runs (the interruption was never told) is kept, else
    a new one, derived from our record (its sampled values, its epochs so far), is added and linked, and
    the old copy stays failed."""
    with Session(engines.engine(url, writer=False)) as session:
        trial = session.get(Trial, trial_id)
        if trial.optuna_trial_id is not None:
            try:
                if not optuna_study._storage.get_trial(trial.optuna_trial_id).state.is_finished():
                    return trial.optuna_trial_id
            except KeyError:
                pass
        optuna_id, number = add(session, optuna_study, trial, study)
    link(url, {trial_id: (optuna_id, number)})
    return optuna_id


def link(url: str, links: dict[int, tuple[int | None, int | None]], params: dict[int, str] | None = None) -> None:
    """Write our side of the copy: each trial's Optuna (trial id, number), and sampled values read back
    from Optuna for trials recorded before our table kept them. One short transaction, after Optuna's
    writes (SQLite has one writer: ours must not be open while Optuna writes)."""
    if not links and not params:
        return
    with engines.engine(url, writer=True).begin() as connection:
        for trial_id, (optuna_id, number) in links.items():
            connection.execute(update(Trial).where(Trial.id == trial_id).values(optuna_trial_id=optuna_id,
                                                                                number=number))
        for trial_id, text in (params or {}).items():
            connection.execute(update(Trial).where(Trial.id == trial_id, Trial.search_params.is_(None))
                               .values(search_params=text))


# -- finding and repairing disagreements ------------------------------------------------------------
@dataclass
class Finding:
    study: str
    trial_id: int | None
    problem: str
    repaired: bool = False

    def __str__(self) -> str:
        who = f"trial {self.trial_id}" if self.trial_id is not None else "study"
        return f"{self.study}: {who}: {self.problem}" + (" (repaired)" if self.repaired else "")


def reconcile(url: str, storage: optuna.storages.BaseStorage, name: str, *, repair: bool = True,
              **study_kwargs) -> list[Finding]:
    """Compare study ``name``'s Optuna copy with our trials and (with ``repair``) bring it to our record:
    our running trials whose runner's lease lapsed become ``interrupted``; trials Optuna lacks are added;
    trials Optuna still runs are told their end; Optuna trials that no trial of ours links to and that
    still run are failed; a copy that is missing, optimises other directions, or is finished and
    disagrees is rebuilt, when no live runner holds a trial of the study. Returns what was found, each
    marked repaired or not. ``study_kwargs`` (sampler, pruner) are used where the copy is (re)made."""
    findings: list[Finding] = []
    with Session(engines.engine(url, writer=True)) as session, session.begin():
        for trial_id, reason in reclaim_lapsed(session, name, dry_run=not repair):
            findings.append(Finding(name, trial_id, f"running, but {reason.removeprefix('interrupted: ')}", repair))
    try:
        made = optuna.load_study(study_name=name, storage=storage, **study_kwargs)
    except KeyError:
        made = None
    # Optuna's trials are read before ours: a live runner reserves its trial here before it asks Optuna for
    # a point, so every point asked before this read has its trial (running, or linked) in ours, read after
    by_id = {t._trial_id: t for t in made.get_trials(deepcopy=False)} if made is not None else {}
    with Session(engines.engine(url, writer=False)) as session:
        study = definition(session, name)
        if study is None:
            return findings + [Finding(name, None, "no definition in our study table")]
        ours = list(session.scalars(select(Trial).where(Trial.study == name).order_by(Trial.id)))
        if made is None or not _directions_match(made, study):
            problem = "no Optuna copy" if made is None else "its Optuna copy optimises other directions"
            return findings + _rebuild_if_idle(url, session, storage, study, ours, made, problem, repair,
                                               study_kwargs, quiet=made is None and not ours)
        late = {t.optuna_trial_id for t in ours if t.optuna_trial_id is not None} - by_id.keys()
        if late:  # asked and linked after Optuna's trials were read above: there now, unless really lost
            by_id.update({t._trial_id: t for t in made.get_trials(deepcopy=False) if t._trial_id in late})
        links: dict[int, tuple] = {}
        linked_ids, divergent = set(), []
        for trial in ours:
            frozen = by_id.get(trial.optuna_trial_id) if trial.optuna_trial_id is not None else None
            if frozen is None:
                labelled = [f for f in by_id.values() if f.user_attrs.get(TRIAL_ATTR) == trial.id]
                if labelled:  # asked and labelled, but its runner died before linking it
                    frozen = labelled[0]
                    findings.append(Finding(name, trial.id, "its link to Optuna's copy is missing", repair))
                    links[trial.id] = (frozen._trial_id, frozen.number)
            if frozen is None:
                if trial.status == RUNNING:
                    continue  # not asked yet, by a live runner (lapsed ones were reclaimed above)
                findings.append(Finding(name, trial.id, f"{trial.status} here, missing in Optuna", repair))
                if repair:
                    links[trial.id] = add(session, made, trial, study)
                continue
            linked_ids.add(frozen._trial_id)
            derived = derive(session, trial, study)
            if agrees(frozen, derived):
                continue
            if frozen.state == TrialState.RUNNING and derived.state.is_finished():
                findings.append(Finding(name, trial.id, f"{trial.status} here, RUNNING in Optuna", repair))
                if repair:
                    push(session, made, trial, study, frozen._trial_id)
            else:
                divergent.append(Finding(name, trial.id, f"{trial.status} here, {frozen.state.name} in Optuna"
                                                         f"{_values_note(frozen, derived)}"))
        live = [t.id for t in ours if t.status == RUNNING]  # lapsed ones were reclaimed above
        for optuna_id, frozen in by_id.items():
            if optuna_id in linked_ids or any(optuna_id == pair[0] for pair in links.values()):
                continue
            if frozen.state == TrialState.RUNNING and live:
                continue  # maybe asked a moment ago by a live runner that has not labelled it yet
            if frozen.state == TrialState.RUNNING:
                findings.append(Finding(name, None, "a RUNNING Optuna trial has no trial of ours",
                                        repair))
                if repair:
                    made._storage.set_trial_user_attr(optuna_id, "reason", "no ab.nn trial: its runner died "
                                                                           "before recording it")
                    made._storage.set_trial_state_values(optuna_id, TrialState.FAIL)
            elif frozen.state != TrialState.FAIL:
                divergent.append(Finding(name, None, f"a {frozen.state.name} Optuna trial has no trial of "
                                                     f"ours"))
        if repair:
            link(url, links)
        if divergent:
            findings += _rebuild_if_idle(url, session, storage, study, ours, made, None, repair, study_kwargs,
                                         divergent=divergent)
    return findings


def _rebuild_if_idle(url, session, storage, study, ours, made, problem, repair, study_kwargs, quiet=False,
                     divergent=()) -> list[Finding]:
    """Rebuild the copy unless a live runner holds one of its trials (its handle would dangle)."""
    found = list(divergent) or ([] if quiet else [Finding(study.name, None, problem)])
    running = [t.id for t in ours if t.status == RUNNING]
    if not repair:
        return found
    if running and made is not None:
        return found + [Finding(study.name, None, f"rebuild deferred: trials {', '.join(map(str, running))} are "
                                                  f"running under live runners")]
    rebuild(url, session, storage, study, ours, made, **study_kwargs)
    for finding in found:
        finding.repaired = True
    return found


def _values_note(frozen, derived) -> str:
    if frozen.state == derived.state:
        return f", values {frozen.values} instead of {derived.values}"
    return ""


def rebuild(url: str, session: Session, storage: optuna.storages.BaseStorage, study: StudyDef, ours,
            old: optuna.Study | None = None, **study_kwargs) -> optuna.Study:
    """Replace the Optuna copy of ``study`` with one derived from ``ours`` (its trials, in their order)
    and relink them. Sampled values of trials recorded before our table kept them are read from the old
    copy first. Never while a live runner holds a trial of it (the caller checks)."""
    params = {}
    if old is not None:
        by_id = {t._trial_id: t for t in old.get_trials(deepcopy=False)}
        for trial in ours:
            frozen = by_id.get(trial.optuna_trial_id)
            if trial.search_params is None and frozen is not None and frozen.params:
                params[trial.id] = search_params(frozen)
                set_committed_value(trial, "search_params", params[trial.id])  # read, not a change to flush
        link(url, {}, params)  # kept before the old copy goes
        optuna.delete_study(study_name=study.name, storage=storage)
    made = open_study(storage, study, **study_kwargs)
    links = {t.id: add(session, made, t, study) if t.status != RUNNING else (None, None) for t in ours}
    link(url, links)
    return made


def studies(session: Session) -> list[str]:
    """Every study our table defines, and every study name our trials use."""
    names = set(session.scalars(select(Study.name))) | set(session.scalars(select(Trial.study).distinct()))
    return sorted(n for n in names if n)
