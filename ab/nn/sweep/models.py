"""What the runner needs to know about a model to sample its hyperparameters: the names it supports,
the search space its file declares, and whether ImageNet weights can be had for it here.

The runner learns this without training anything, once per model and run. A package model (shipped with
ab.nn, trusted) is imported to read it; code that the project did not write (workspace and generated
models) must be read in a sandboxed child instead (``ModelInfo`` is what such a child reports)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ab.nn import registry
from ab.nn.sweep import hyperparameters


@dataclass(frozen=True)
class ModelInfo:
    name: str
    supported: frozenset[str]
    own: dict = field(default_factory=dict)  # the file's search_space(), checked
    pretrained_available: bool | None = None  # None: the file does not say

    @classmethod
    def of_module(cls, name: str, module) -> "ModelInfo":
        available = getattr(module, "pretrained_available", None)
        return cls(name, frozenset(module.supported_hyperparameters()), hyperparameters.declared(module),
                   None if available is None else bool(available()))

    @property
    def choices(self) -> dict[str, list]:
        """Named options the file declares (``-p`` may give one of them by name)."""
        return {name: list(rule["choices"]) for name, rule in self.own.items() if "choices" in rule}


def describe(name: str) -> ModelInfo:
    """The model's ``ModelInfo``; a ``RegistryError`` naming it when its file cannot be read."""
    return ModelInfo.of_module(name, registry.load(registry.MODEL, name))
