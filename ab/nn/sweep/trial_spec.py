"""What a trial is told and what it answers: the spec a runner hands to a trial (in its own process or
a trial child), the outcome it gets back, and the validation gap the runner reckons from what the trial
recorded. No torch here: a runner that only plans, records and hands out trials starts without it."""
from __future__ import annotations

import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ab.nn import registry
from ab.nn.config import Config
from ab.nn.dataset import DataError
from ab.nn.dataset.identity import DataIdentity
from ab.nn.dataset.settings import DataSettings
from ab.nn.dataset.trial_data import DataSpec
from ab.nn.deploy.options import ExportOptions
from ab.nn.workspace import Workspace

if TYPE_CHECKING:
    from ab.nn.sweep.search import Link

SETUP_ERRORS = (DataError, registry.RegistryError)
"""Errors of the setup (data, registry): the next trial would fail alike, so the runner stops."""


@dataclass(frozen=True)
class TrialSpec:
    config: Config
    prm: dict
    trial_id: int
    db_url: str
    workspace: Workspace
    data: DataSettings
    seed: int
    device: str = "cpu"
    workers: int = 0
    threads: int | None = None  # torch threads for training; None: system.training_threads(workers)
    epoch_limit_minutes: float = 0
    save_pth: bool = False
    export: ExportOptions = field(default_factory=ExportOptions)
    progress: bool = True
    identity: DataIdentity | None = None  # the data the runner planned for this trial (its data key)
    link: Link | None = None  # its Optuna trial, for epoch reports and pruning (None: a replica, or no study)
    lease_id: int | None = None  # the runner's lease: every write about the trial is fenced with it
    group_gap_by: tuple[str, ...] | None = None  # its study's --group-gap-by: the trial records its validation gap
    model_file: Path | None = None  # the model's file as the runner found it (a staged file of check_nn's too)
    baseline: dict | None = None  # the constant predictor of its data key: a trial no better is not exported
    resume: bool = False  # continue from the resume file in its folder (an interrupted trial the runner claimed)

    @property
    def data_spec(self) -> DataSpec:
        return DataSpec(self.config.name, self.prm["transform"], self.workspace, self.data)

    def to_json(self) -> dict:
        """What a trial child is told, as JSON: never the database, the Optuna link or the lease (its
        writes and its pruning question go through the runner). The child downloads nothing."""
        return {"config": self.config.name, "prm": self.prm, "trial_id": self.trial_id,
                "workspace": {"root": str(self.workspace.root),
                              "data_dir": str(self.workspace.data_dir) if self.workspace.data_dir else None},
                "data": {**asdict(self.data), "download": False}, "seed": self.seed, "device": self.device,
                "workers": self.workers, "threads": self.threads, "epoch_limit_minutes": self.epoch_limit_minutes, "save_pth": self.save_pth,
                "export": self.export.to_json(), "progress": self.progress,
                "identity": self.identity.to_json() if self.identity is not None else None,
                "model_file": str(self.model_file) if self.model_file is not None else None,
                "baseline": self.baseline, "resume": self.resume}

    @classmethod
    def from_json(cls, value: dict) -> "TrialSpec":
        """The child's spec; its ``db_url`` names no database (``PARENT``)."""
        ws = value["workspace"]
        return cls(config=Config.parse(value["config"]), prm=dict(value["prm"]), trial_id=int(value["trial_id"]),
                   db_url=PARENT, workspace=Workspace(Path(ws["root"]), None,
                                                      Path(ws["data_dir"]) if ws["data_dir"] else None),
                   data=DataSettings(**value["data"]), seed=int(value["seed"]), device=value["device"],
                   workers=int(value["workers"]),
                   threads=int(value["threads"]) if value.get("threads") is not None else None,
                   epoch_limit_minutes=float(value["epoch_limit_minutes"]),
                   save_pth=bool(value["save_pth"]), export=ExportOptions.from_json(value["export"]),
                   progress=bool(value["progress"]),
                   identity=DataIdentity.from_json(value["identity"]) if value["identity"] else None,
                   model_file=Path(value["model_file"]) if value["model_file"] else None,
                   baseline=value.get("baseline"), resume=bool(value.get("resume", False)))


PARENT = "parent:"
"""The ``db_url`` of a trial child's spec: it has no database; the runner writes for it."""


@dataclass
class TrialOutcome:
    status: str
    accuracy: float | None = None
    eval_mae: float | None = None
    test_mae: float | None = None
    epochs: int = 0
    error: str | None = None
    fatal: bool = False  # the cause is the setup (data, registry), so further trials would fail alike
    test_interval: tuple[float, float] | None = None  # 95% interval of the test MAE

    def row(self) -> dict:
        """The MAEs as ``constant_predictor.beats`` reads a trial row."""
        low, high = self.test_interval or (None, None)
        return {"eval_mae": self.eval_mae, "test_mae": self.test_mae, "test_mae_low": low, "test_mae_high": high}


def describe_error(error: BaseException) -> str:
    """The exception's one-line message first, then the traceback for whoever needs it."""
    head = f"{type(error).__name__}: {error}".strip()
    trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return f"{head}\n\n{trace[-6000:]}"


def validation_gap(spec: TrialSpec) -> float | None:
    """The gap ``--max-group-gap`` constrains, from the validation predictions and labels just recorded
    (never the test part's). A trial child's spec has no ``group_gap_by``: its runner reckons the gap
    from what the child recorded (``ab.nn.sweep.isolation``)."""
    from ab.nn.stat.engine import engine
    from ab.nn.stat.groups import validation_gaps

    with engine(spec.db_url, writer=False).connect() as connection:
        return validation_gaps(connection, [spec.trial_id], spec.group_gap_by)[spec.trial_id]
