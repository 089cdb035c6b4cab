"""How the running sweep wants its data: split protocol, split seed, fold, sample cap, cache use,
download on first use, alignment of in-the-wild photos."""
from __future__ import annotations

from dataclasses import dataclass

from ab.nn.util.scoped import Scoped

PROTOCOLS = ("paper", "lemur", "lemur-random", "kfold")
DEFAULT_SPLIT_SEED = 42
ALIGNED = "+aligned"
"""Suffix of the split label of data whose in-the-wild photos were aligned onto the face template."""


@dataclass(frozen=True)
class DataSettings:
    split: str = "paper"
    split_seed: int = DEFAULT_SPLIT_SEED  # fixes the split only; training seeds are the sweep's --seed
    fold: int = 0
    folds: int = 5
    max_samples: int | None = None  # at most this many images per part (smoke runs, tests)
    decode_threads: int = 0  # 0: one per CPU core
    progress: bool = True  # show the cache build's progress bar
    download: bool = True  # no images found: download the dataset where the network allows (--no-download)
    align: bool = False  # in-the-wild photos: detect and align onto the workspace's face template (--align)

    def __post_init__(self):
        if self.split not in PROTOCOLS:
            raise ValueError(f"unknown split protocol {self.split!r}; choose one of {', '.join(PROTOCOLS)}")
        if self.folds < 3:
            raise ValueError(f"--folds must be at least 3, got {self.folds}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"--max-samples must be positive, got {self.max_samples}")
        if not 0 <= self.fold < self.folds:
            raise ValueError(f"--fold must be in 0..{self.folds - 1}, got {self.fold}")

    @classmethod
    def from_label(cls, label: str | None, max_samples=None, progress: bool = False) -> "DataSettings":
        """The settings a trial recorded as ``split`` (``paper/42``, ``kfold/42/2of5``,
        ``paper/42+aligned``)."""
        label = label or f"paper/{DEFAULT_SPLIT_SEED}"
        align = label.endswith(ALIGNED)
        protocol, _, rest = label.removesuffix(ALIGNED).partition("/")
        seed, _, fold = rest.partition("/")
        limit = None if max_samples is None or max_samples != max_samples else int(max_samples)  # NaN from pandas
        extra = {}
        if protocol == "kfold" and fold:
            index, _, folds = fold.partition("of")
            extra = {"fold": int(index), "folds": int(folds)}
        return cls(split=protocol, split_seed=int(seed or DEFAULT_SPLIT_SEED), max_samples=limit, progress=progress,
                   align=align, **extra)

    @property
    def label(self) -> str:
        """The split as recorded with every trial, e.g. ``paper/42``, ``kfold/42/2of5`` or, with aligned
        in-the-wild photos, ``paper/42+aligned``."""
        if self.split == "kfold":
            label = f"kfold/{self.split_seed}/{self.fold}of{self.folds}"
        else:
            label = f"{self.split}/{self.split_seed}"
        return label + (ALIGNED if self.align else "")

    def describe(self) -> str:
        """The split and the sample cap, as reports print them."""
        return f"{self.label}, " + ("all images" if self.max_samples is None else f"at most {self.max_samples} per part")


active = Scoped[DataSettings]("data_settings", DataSettings)
