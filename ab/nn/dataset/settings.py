"""How the running sweep wants its data: split protocol, seed, fold, cache use."""
from __future__ import annotations

from dataclasses import dataclass

from ab.nn.util.scoped import Scoped

PROTOCOLS = ("paper", "lemur", "kfold")


@dataclass(frozen=True)
class DataSettings:
    split: str = "paper"
    seed: int = 42
    fold: int = 0
    folds: int = 5
    max_samples: int | None = None  # at most this many images per part (smoke runs, tests)
    decode_threads: int = 0  # 0: one per CPU core

    def __post_init__(self):
        if self.split not in PROTOCOLS:
            raise ValueError(f"unknown split protocol {self.split!r}; choose one of {', '.join(PROTOCOLS)}")
        if self.folds < 3:
            raise ValueError(f"--folds must be at least 3, got {self.folds}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"--max-samples must be positive, got {self.max_samples}")
        if not 0 <= self.fold < self.folds:
            raise ValueError(f"--fold must be in 0..{self.folds - 1}, got {self.fold}")

    @property
    def label(self) -> str:
        """The split as recorded with every trial, e.g. ``paper/42`` or ``kfold/42/2of5``."""
        if self.split == "kfold":
            return f"kfold/{self.seed}/{self.fold}of{self.folds}"
        return f"{self.split}/{self.seed}"


active = Scoped[DataSettings]("data_settings", DataSettings)
