"""Config strings ``task_dataset_metric_nn`` and the patterns that select them.

A pattern has one to four ``_``-separated parts and matches every config whose leading parts are
equal to them; a part may use shell wildcards (``age-regression_utkface_mae_ResNet*``). Unlike
LEMUR, every matching config is selected, not only the first.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Iterable

SPLITTER = "_"
PARTS = ("task", "dataset", "metric", "nn")
MIXTURE_NN = "AgeMoE"
"""The ``nn`` part of the AgeMoE mixture's config (``ab.nn.moe``): a fitted mixture of trained trials, not a
registry file, so names that are checked against the registry accept it too."""
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.,+\-]*$")
_PATTERN_PART = re.compile(r"^[A-Za-z0-9.,+\-*?\[\]]+$")


class ConfigError(ValueError):
    """A config string or pattern that cannot be used; the message is one line."""


@dataclass(frozen=True, order=True)
class Config:
    task: str
    dataset: str
    metric: str
    nn: str

    @classmethod
    def parse(cls, text: str) -> "Config":
        parts = text.split(SPLITTER)
        if len(parts) != len(PARTS):
            raise ConfigError(f"config {text!r} must have 4 parts task_dataset_metric_nn, got {len(parts)}")
        for name, part in zip(PARTS, parts):
            if not _PART.match(part):
                raise ConfigError(f"config {text!r}: invalid {name} part {part!r}")
        return cls(*parts)

    @property
    def name(self) -> str:
        return SPLITTER.join(self.parts)

    @property
    def parts(self) -> tuple[str, str, str, str]:
        return (self.task, self.dataset, self.metric, self.nn)

    @property
    def metrics(self) -> tuple[str, ...]:
        """LEMUR allows a comma list of metrics; the first one is the primary metric."""
        return tuple(self.metric.split(","))

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Pattern:
    parts: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> "Pattern":
        text = text.strip()
        if text == "":
            return cls(())
        parts = tuple(text.split(SPLITTER))
        if len(parts) > len(PARTS):
            raise ConfigError(f"config pattern {text!r} has {len(parts)} parts; at most 4 (task_dataset_metric_nn)")
        for name, part in zip(PARTS, parts):
            if not _PATTERN_PART.match(part):
                raise ConfigError(f"config pattern {text!r}: invalid {name} part {part!r}")
        return cls(parts)

    def matches(self, config: Config) -> bool:
        return all(fnmatch.fnmatchcase(have, want) for have, want in zip(config.parts, self.parts))

    @property
    def is_exact(self) -> bool:
        """A full four-part pattern without wildcards names exactly one config."""
        return len(self.parts) == len(PARTS) and not any(c in "".join(self.parts) for c in "*?[")

    def __str__(self) -> str:
        return SPLITTER.join(self.parts)


def select(patterns: Iterable[str], candidates: Iterable[Config]) -> list[Config]:
    """Every candidate matching any pattern, sorted; an exact pattern is accepted as its own config."""
    candidates = set(candidates)
    chosen: set[Config] = set()
    for text in patterns:
        pattern = Pattern.parse(text)
        found = {c for c in candidates if pattern.matches(c)}
        if pattern.is_exact:
            found.add(Config.parse(str(pattern)))
        if not found:
            raise ConfigError(f"no config matches {str(pattern)!r}")
        chosen |= found
    return sorted(chosen)
