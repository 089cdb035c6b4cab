"""Which configs a sweep runs: every model file with what each loader serves, plus the configs already in
the database, filtered by the user's patterns (LEMUR's prefixes, with ``*`` wildcards)."""
from __future__ import annotations

from ab.nn import registry
from ab.nn.config import Config, Pattern, select


def known_configs() -> set[Config]:
    """Every (task, metric) a loader serves, with every model file: what a prefix can select."""
    found = set()
    models = registry.names(registry.MODEL)
    for dataset in registry.names(registry.LOADER):
        try:
            pipelines = getattr(registry.load(registry.LOADER, dataset), "PIPELINES", ())
        except registry.RegistryError:
            continue
        found |= {Config(task, dataset, metric, nn) for task, metric in pipelines for nn in models}
    return found


def runnable(config: Config) -> None:
    """Raise a one-line error naming the first part of ``config`` that has no registry file."""
    registry.path(registry.MODEL, config.nn)
    registry.path(registry.LOADER, config.dataset)
    for metric in config.metrics:
        registry.path(registry.METRIC, metric)


def resolve_configs(patterns, recorded) -> list[Config]:
    """The configs ``patterns`` select among the known ones and ``recorded`` (configs with statistics)
    that can still run; an exact config that cannot run is an error naming what is missing."""
    candidates = known_configs()
    for config in recorded:
        try:
            runnable(config)
            candidates.add(config)
        except registry.RegistryError:
            continue
    chosen = select(patterns, candidates)
    for pattern in patterns:
        if Pattern.parse(pattern).is_exact:
            runnable(Config.parse(pattern))
    return chosen
