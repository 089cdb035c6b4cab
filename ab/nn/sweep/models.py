"""What the runner needs to know about a model to sample its hyperparameters: the names it supports,
the search space its file declares, whether ImageNet weights can be had for it here, and the input
sizes it takes.

The runner learns this without training anything, once per model file and process. A package model
(shipped with ab.nn, trusted) is imported to read it; a workspace or staged model (code the project
did not write) is read by the sandboxed probe (``ab.nn.model_probe``), never imported here. Both are
read by the same functions (``model_probe.read``), so they answer alike."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from ab.nn import model_probe, registry, sandbox
from ab.nn.model_probe import ModelFacts


@dataclass(frozen=True)
class ModelInfo:
    name: str
    supported: frozenset[str]
    own: dict = field(default_factory=dict)  # the file's search_space(), checked
    pretrained_available: bool | None = None  # None: the file does not say
    input_sizes: tuple[tuple[int, int], ...] | None = None  # None: the file does not say

    @classmethod
    def of_facts(cls, name: str, facts: ModelFacts) -> "ModelInfo":
        """The runner's view of a model's facts; a ``RegistryError`` naming it when they say it is unusable."""
        if not facts.ok:
            raise registry.RegistryError(f"model {name!r} cannot be used: {facts.error}")
        return cls(name, facts.supported_hyperparameters, dict(facts.search_space or {}), facts.pretrained_available,
                   facts.input_sizes)

    @property
    def choices(self) -> dict[str, list]:
        """Named options the file declares (``-p`` may give one of them by name)."""
        return {name: list(rule["choices"]) for name, rule in self.own.items() if "choices" in rule}


_known: dict[tuple[str, str, bool], ModelFacts] = {}


def facts(path: str | Path, *, unsafe: bool = False, limits: sandbox.Limits = model_probe.PROBE_LIMITS) -> ModelFacts:
    """The sandboxed probe's facts of a model file (``unsafe`` as in ``ab.nn.sandbox.launch``). A file that
    passed is probed once per content and process (a changed file is probed again); a failure is not
    kept, since it may pass another time (a time limit on a loaded machine)."""
    file = Path(path).absolute()
    key = (str(file), hashlib.sha256(file.read_bytes()).hexdigest(), unsafe)
    if key in _known:
        return _known[key]
    found = model_probe.probe(file, limits=limits, unsafe=unsafe)
    if found.ok:
        _known[key] = found
    return found


def describe(name: str, unsafe: bool = False) -> ModelInfo:
    """The model's ``ModelInfo``. A ``RegistryError`` naming it when its file cannot be used, and when it is
    workspace code and this machine has no sandbox (unless ``unsafe``)."""
    if registry.origin(registry.MODEL, name) == registry.PACKAGE:
        path = registry.path(registry.MODEL, name)
        module = registry.load(registry.MODEL, name)
        try:
            found = ModelFacts.of_module(path, module)
        except Exception as error:  # the package's own file is broken
            raise registry.RegistryError(f"model {name!r} cannot be used: {type(error).__name__}: {error}") from error
        return ModelInfo.of_facts(name, found)
    try:
        found = facts(registry.path(registry.MODEL, name), unsafe=unsafe)
    except sandbox.SandboxError as error:  # no sandbox here (and no unsafe=True), or it did not start
        raise registry.RegistryError(f"model {name!r} is workspace code and is not run here: {error}") from None
    return ModelInfo.of_facts(name, found)
