"""How a sweep searches: its Optuna pruner, its objectives (validation MAE, or MAE and speed) and
latency constraint. Optuna sees validation MAE in years, minimised (LEMUR's accuracy stays in our tables
and LEMUR's API); what Optuna is told about a trial is derived from our record (``ab.nn.stat.studies``).

* ``--pruner``: ``none`` (LEMUR: every trial runs all its epochs), ``median`` (stops a trial below the
  median of earlier trials at the same epoch), ``percentile`` (stops all but the best quarter: Optuna's
  ``PercentilePruner(25.0)`` keeps the top 25 %), ``hyperband`` or ``successive-halving``, on the
  validation accuracy reported after every epoch. A pruned trial is recorded ``pruned`` with the
  epochs it ran. ``--pruner-warmup W``: no trial is judged before its epoch W (median/percentile:
  Optuna's ``n_warmup_steps``; hyperband and successive halving: their first rung,
  ``min_resource``), for learning curves that only separate after a warm-up, as from-scratch
  training does. Every epoch's validation MAE is reported to Optuna, whose pruners compare them.
* ``--pruner-floor A``: from epoch 2 on, a trial whose validation accuracy is below ``A`` (its MAE above
  ``(1 - A) x 20`` years, the scale of the ``mae`` metric) stops (Optuna's ``ThresholdPruner`` on the
  MAE), beside whatever ``--pruner`` decides (also with ``--pruner none``).
  It stops the trials that have not started to learn (from scratch, those that still predict about
  one age for every face) without ranking anyone, so a rank-based pruner can be given a long warm-up
  while the dead trials still cost two epochs. The first epoch is exempt: trials that go on to learn
  often end it at the constant predictor's level. Not with hyperband (its brackets, which Optuna's
  samplers read, need it to be the study's only pruner).
* ``--objectives mae,latency`` (``accuracy`` is accepted for ``mae``): a two-objective study (minimise
  validation MAE and the trial's batch-1 latency at 1 thread in its deployment runtime: TFLite fp32, else onnxruntime, else
  PyTorch). With ``--export none`` there is nothing to time, and ``macs`` (multiply-adds of one
  forward pass, in millions) is the cheaper proxy. ``--max-latency-ms X`` instead keeps one objective
  and makes latency a constraint (Optuna's ``set_constraint``: feasible at <= X ms).
* ``--max-group-gap YEARS`` (with ``--group-gap-by race``, ``gender``, ``age_group`` or a combination such
  as ``race,gender``): a constraint on the gap between the best and the worst group of a trial's
  **validation** part (never its test part): of the age-standardised MAE for gender and race, of the
  MAE for age groups (``ab.nn.stat.groups.validation_gaps``, computed by each trial when it ends and
  kept as ``trial.eval_group_gap``); feasible at a gap <= YEARS, infeasible where the gap is unknown
  (a diverged trial, or fewer than two groups of ``groups.MIN_GROUP`` validation images). Optuna's
  constraint is named ``group_gap_years`` (``ab.nn.stat.studies.GAP_CONSTRAINT``).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import optuna

from ab.nn.stat import engine as engines
from ab.nn.stat import groups
from ab.nn.stat.studies import DIRECTIONS, METRIC_NAMES, OBJECTIVES, storage

log = logging.getLogger(__name__)

PRUNERS = ("none", "median", "percentile", "hyperband", "successive-halving")
FLOOR_EPOCH = 2  # the first epoch at which --pruner-floor judges
MAE_SCALE = 20.0  # the ``mae`` metric's accuracy = 1 - MAE/20: how --pruner-floor's accuracy becomes an MAE
ALIASES = {"accuracy": "mae"}


class SearchError(ValueError):
    """A search setting that cannot work; the message is one line."""


@dataclass(frozen=True)
class Search:
    pruner: str = "none"
    objectives: tuple[str, ...] = ("mae",)
    max_latency_ms: float | None = None
    warmup: int = 1  # epochs every trial trains before the pruner may stop it
    floor: float | None = None  # validation accuracy below which a trial stops from FLOOR_EPOCH on
    max_group_gap: float | None = None  # years: largest validation gap between groups of group_gap_by
    group_gap_by: tuple[str, ...] = ("race",)

    def __post_init__(self):
        object.__setattr__(self, "objectives", tuple(ALIASES.get(o, o) for o in self.objectives))
        if self.pruner not in PRUNERS:
            raise SearchError(f"--pruner must be one of {', '.join(PRUNERS)}, got {self.pruner!r}")
        if self.warmup < 1:
            raise SearchError(f"--pruner-warmup must be at least 1 epoch, got {self.warmup}")
        unknown = [o for o in self.objectives if o not in OBJECTIVES]
        if unknown or not self.objectives or self.objectives[0] != "mae" or len(set(self.objectives)) != \
                len(self.objectives):
            raise SearchError(f"--objectives: mae (validation MAE; 'accuracy' means the same) first, then optionally "
                              f"latency or macs (e.g. mae,latency); got {','.join(self.objectives)}")
        if self.multi and self.pruner != "none":
            raise SearchError("Optuna's pruners do not work with several objectives: use --pruner none with "
                              "--objectives, or --max-latency-ms with one objective")
        if self.floor is not None and not 0 < self.floor < 1:
            raise SearchError(f"--pruner-floor is a validation accuracy between 0 and 1 (for MAE: 1 - MAE/20), "
                              f"got {self.floor}")
        if self.floor is not None and self.pruner == "hyperband":
            raise SearchError("--pruner-floor cannot go with hyperband: Optuna's samplers keep to hyperband's "
                              "brackets only when it is the study's pruner itself; use successive-halving, median "
                              "or percentile with the floor")
        if self.multi and self.floor is not None:
            raise SearchError("--pruner-floor stops trials, which Optuna does not do with several objectives")
        if self.max_latency_ms is not None and (self.max_latency_ms <= 0 or self.multi):
            raise SearchError("--max-latency-ms must be positive and goes with the single mae objective")
        if self.max_group_gap is not None and not self.max_group_gap > 0:
            raise SearchError(f"--max-group-gap is a gap in years and must be positive, got {self.max_group_gap}")
        try:
            groups.parse_by(self.group_gap_by)
        except ValueError:
            raise SearchError(f"--group-gap-by takes {', '.join(groups.DIMENSIONS)} or a combination joined by commas "
                              f"(race,gender); got {','.join(self.group_gap_by)}") from None

    @classmethod
    def parse(cls, pruner: str = "none", objectives: str = "mae", max_latency_ms: float | None = None,
              warmup: int = 1, floor: float | None = None, max_group_gap: float | None = None,
              group_gap_by: str = "race") -> "Search":
        return cls(pruner, tuple(o.strip() for o in objectives.split(",") if o.strip()), max_latency_ms, warmup,
                   floor, max_group_gap, tuple(p.strip() for p in group_gap_by.split(",") if p.strip()))

    @property
    def prunes(self) -> bool:
        """Whether any trial may be stopped by the search (a pruner, a floor or both)."""
        return self.pruner != "none" or self.floor is not None

    def describe(self) -> str:
        """The stopping rule as the CLI spells it, for reasons and tables."""
        parts = [f"--pruner {self.pruner}"] if self.pruner != "none" else []
        if self.pruner != "none" and self.warmup != 1:
            parts.append(f"--pruner-warmup {self.warmup}")
        if self.floor is not None:
            parts.append(f"--pruner-floor {self.floor:g}")
        return " ".join(parts) or "--pruner none"

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    @property
    def gap_constraint(self) -> tuple[float | None, tuple[str, ...] | None]:
        """``(max_group_gap, group_gap_by)`` as a study records them: ``(None, None)`` without the constraint."""
        return (self.max_group_gap, self.group_gap_by) if self.max_group_gap is not None else (None, None)

    @property
    def needs_latency(self) -> bool:
        return "latency" in self.objectives or self.max_latency_ms is not None

    def check(self, exporting: bool, epochs: int | None = None) -> None:
        if self.pruner != "none" and epochs is not None and self.warmup >= epochs:
            raise SearchError(f"--pruner-warmup {self.warmup} leaves no epoch of {epochs} at which to prune: "
                              f"use a warm-up below -e, or --pruner none")
        if self.floor is not None and epochs is not None and epochs <= FLOOR_EPOCH:
            raise SearchError(f"--pruner-floor judges from epoch {FLOOR_EPOCH} and never at the last, so it needs "
                              f"-e of at least {FLOOR_EPOCH + 1}; got {epochs}")
        if self.needs_latency and not exporting:
            raise SearchError("latency needs an exported model to time: keep --export (e.g. onnx), or use "
                              "--objectives accuracy,macs as the cheaper proxy")

    def directions(self) -> list[str]:
        return [DIRECTIONS[o] for o in self.objectives]

    def metric_names(self) -> list[str]:
        return [METRIC_NAMES[o] for o in self.objectives]

    @property
    def mae_ceiling(self) -> float | None:
        """``--pruner-floor``'s accuracy as the validation MAE above which a trial stops."""
        return None if self.floor is None else (1.0 - self.floor) * MAE_SCALE

    def make_pruner(self, epochs: int) -> optuna.pruners.BasePruner:
        ranked = self._ranking_pruner(epochs)
        if self.floor is None:
            return ranked
        floor = optuna.pruners.ThresholdPruner(upper=self.mae_ceiling, n_warmup_steps=FLOOR_EPOCH)
        return floor if self.pruner == "none" else EitherPruner(floor, ranked)

    def _ranking_pruner(self, epochs: int) -> optuna.pruners.BasePruner:
        if self.pruner == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=self.warmup)
        if self.pruner == "percentile":
            return optuna.pruners.PercentilePruner(25.0, n_startup_trials=4, n_warmup_steps=self.warmup)
        if self.pruner == "hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=self.warmup, max_resource=max(epochs, self.warmup),
                                                  reduction_factor=3)
        if self.pruner == "successive-halving":
            return optuna.pruners.SuccessiveHalvingPruner(min_resource=self.warmup, reduction_factor=3)
        return optuna.pruners.NopPruner()


class EitherPruner(optuna.pruners.BasePruner):
    """Stops a trial when any of its pruners would. Every pruner is asked, so that successive halving
    records the trial's rung values even when the floor is what stops it."""

    def __init__(self, *pruners: optuna.pruners.BasePruner):
        self.pruners = pruners

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return any([pruner.prune(study, trial) for pruner in self.pruners])


@dataclass(frozen=True)
class Link:
    """What a trial process needs to report its epochs to its Optuna trial and ask about pruning."""

    db_url: str
    study: str
    optuna_trial_id: int
    search: Search
    epochs: int


class EpochReporter:
    """Reports each epoch's validation MAE to Optuna (learning curves in the dashboard) and asks the
    study's pruner whether to stop."""

    def __init__(self, link: Link | None):
        self.link = link
        self._trial = None

    def report(self, epoch: int, mae: float | None) -> bool:
        """True when the trial should be pruned. Optuna keeps no per-epoch values in a study of several
        objectives; a report that fails is logged and never stops the training."""
        if self.link is None or self.link.search.multi or mae is None or not math.isfinite(mae):
            return False
        try:
            if self._trial is None:
                study = optuna.load_study(study_name=self.link.study, storage=storage(self.link.db_url),
                                          pruner=self.link.search.make_pruner(self.link.epochs))
                self._trial = optuna.trial.Trial(study, self.link.optuna_trial_id)
            self._trial.report(float(mae), epoch)
            return self.link.search.prunes and bool(self._trial.should_prune())  # numpy's bool is no JSON
        except Exception as error:
            if engines.is_storage_error(error):
                raise
            log.warning("epoch %d could not be reported to Optuna: %s", epoch, error)
            return False

    def reason(self, epoch: int) -> str:
        """Why a trial that ``report`` stopped is recorded ``pruned``."""
        return f"pruned by {self.link.search.describe()} after epoch {epoch}"
