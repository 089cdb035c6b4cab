"""``--dry-run``: what a sweep would do, without reserving or training anything."""
from __future__ import annotations

from ab.nn import registry
from ab.nn.dataset import DataError
from ab.nn.sweep import estimate, input_sizes
from ab.nn.sweep.hyperparameters import SearchSpace
from ab.nn.sweep.models import ModelInfo
from ab.nn.util import system
from ab.nn.util.wording import count


def describe_space(model: ModelInfo, space: SearchSpace, fixed: dict) -> list[str]:
    """How each hyperparameter of a model will be chosen, one line each."""
    lines = []
    own = {k: v for k, v in model.own.items() if k not in space.explicit}
    for name in sorted(model.supported) + ["batch", "transform"]:
        if name in fixed:
            how = f"fixed at {fixed[name]!r}"
        elif name == "pretrained" and space.pretrained is not None:
            how = f"fixed at {space.pretrained} (--pretrained)"
        elif name in own:
            rule = own[name]
            how = (f"one of {list(rule['choices'])} (the model's own)" if "choices" in rule else
                   f"{'log-' if rule.get('log') else ''}uniform in [{rule['low']:g}, {rule['high']:g}] (the model's own)")
        elif name == "lr":
            how = f"log-uniform in [{space.min_lr:g}, {space.max_lr:g}]"
        elif name in ("momentum", "dropout"):
            low, high = getattr(space, f"min_{name}"), getattr(space, f"max_{name}")
            how = f"uniform in [{low:g}, {high:g}]"
        elif name == "batch":
            how = f"one of {space.batches}"
        elif name == "transform":
            how = f"one of {list(space.transforms)}"
            if model.input_sizes is not None:
                how += f" (the model takes {input_sizes.describe(model.input_sizes)})"
        elif name == "pretrained":
            how = "one of [0, 1]"
        else:
            how = "uniform in [0, 1] (LEMUR's default)"
        lines.append(f"    {name}: {how}")
    return lines


def plan(sweep) -> str:
    """What ``sweep.run()`` would do: the configs, the data each is judged on, how many trials would run,
    and how hyperparameters are chosen."""
    lines = []
    for config in sweep.configs:
        lines.append(config.name)
        try:
            identity = sweep.identity(config)
            model = sweep.model(config.nn)
        except (DataError, registry.RegistryError) as error:
            lines.append(f"  cannot run: {str(error).splitlines()[0]}")
            continue
        if (reason := sweep.cannot_take(model)) is not None:
            lines.append(f"  cannot run: {reason}")
            continue
        total, wanted = sweep.total(config, identity.key)
        epochs = sweep.options.epochs
        lines.append(f"  data: {identity.describe()}")
        lines.append(f"  trials: {wanted} to run ({'no total' if total is None else f'{total} wanted in all'}, "
                     f"{count(epochs, 'epoch')} each), study {sweep.study_name(config, identity)!r}")
        counts = identity.counts or {}
        images = counts.get("train", 0) + counts.get("eval", 0) if counts else None
        rate = estimate.measured_rate(sweep.store, config, sweep.device)
        lines.append("  " + estimate.describe(rate, images, epochs, wanted, sweep.device))
        threads = sweep.options.threads or system.training_threads(sweep.options.workers)
        why = "--threads" if sweep.options.threads else "OMP_NUM_THREADS" if system.threads_asked() else \
            f"{count(system.cpu_count(), 'core')}, {count(sweep.options.workers, 'DataLoader worker')}"
        lines.append(f"  training: {count(threads, 'torch thread')} per trial ({why})")
        lines.append("  hyperparameters:")
        lines += describe_space(model, sweep.space_for(model), sweep.fixed_for(config.nn))
    return "\n".join(lines) if lines else "no config selected"
