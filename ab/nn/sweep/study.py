"""The runner's side of one Optuna study: our definition of it, its Optuna copy with this runner's
sampler and pruner, asking Optuna for points, and telling it each trial's end as our record says it
(``ab.nn.stat.studies`` derives every value; this module only decides when)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import optuna
from sqlalchemy.orm import Session

from ab.nn.stat import engine as engines, studies
from ab.nn.stat.schema import Trial
from ab.nn.stat.states import RUNNING
from ab.nn.stat.store import StatStore, reclaim_lapsed
from ab.nn.sweep.search import Search, SearchError


def sampler(seed: int, lease_id: int) -> optuna.samplers.BaseSampler:
    """TPE seeded per runner (the run's seed and this runner's lease), with the constant liar: runners
    started together no longer sample the same points, and running trials count as taken."""
    digest = hashlib.blake2b(f"{seed}:{lease_id}".encode(), digest_size=4).digest()
    return optuna.samplers.TPESampler(seed=int.from_bytes(digest, "big"), constant_liar=True)


@dataclass
class SweepStudy:
    store: StatStore
    definition: studies.StudyDef
    optuna: optuna.Study
    findings: list  # what the reconciliation on opening found and repaired

    @classmethod
    def open(cls, store: StatStore, storage, wanted: studies.StudyDef, search: Search, epochs: int,
             made_sampler: optuna.samplers.BaseSampler) -> "SweepStudy":
        """Record (or check) our definition, bring the Optuna copy to our record (trials of runners that
        died are reclaimed; a copy made by an older version is rebuilt), and load it with our sampler and
        pruner."""
        try:
            with store.transaction() as session:
                definition = studies.define(session, wanted)
        except studies.StudyMismatch as error:
            raise SearchError(str(error)) from None
        kwargs = dict(sampler=made_sampler, pruner=search.make_pruner(epochs))
        findings = studies.reconcile(store.url, storage, definition.name, **kwargs)
        return cls(store, definition, studies.open_study(storage, definition, **kwargs), findings)

    @property
    def name(self) -> str:
        return self.definition.name

    def ask(self, trial_id: int) -> optuna.Trial:
        """A new point, labelled with our trial id first, so that it can be linked back to our trial if
        this runner dies before recording the link."""
        trial = self.optuna.ask()
        trial.set_user_attr(studies.TRIAL_ATTR, trial_id)
        return trial

    def tell(self, trial_id: int) -> None:
        """Tell Optuna how trial ``trial_id`` ended, as our record says (nothing while it runs). A trial that
        is not linked yet gets the Optuna trial labelled with its id, if there is one (asked by a runner that
        lost the trial before it could link it: a stalled host whose lease lapsed), else a new one (a
        replica)."""
        with Session(engines.engine(self.store.url, writer=False)) as session:
            trial = session.get(Trial, trial_id)
            if trial is None or trial.status == RUNNING:
                return
            if trial.optuna_trial_id is None:
                asked = [t for t in self.optuna.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
                         if t.user_attrs.get(studies.TRIAL_ATTR) == trial_id]
                if asked:
                    studies.push(session, self.optuna, trial, self.definition, asked[0]._trial_id)
                    studies.link(self.store.url, {trial.id: (asked[0]._trial_id, asked[0].number)})
                else:
                    studies.link(self.store.url, {trial.id: studies.add(session, self.optuna, trial, self.definition)})
            else:
                studies.push(session, self.optuna, trial, self.definition)

    def reclaim(self) -> list[int]:
        """Record the trials of runners that died as interrupted (they stop holding slots) and tell Optuna."""
        with self.store.transaction() as session:
            reclaimed = [trial_id for trial_id, _ in reclaim_lapsed(session, self.name)]
        for trial_id in reclaimed:
            self.tell(trial_id)
        return reclaimed
