"""A trial's datasets, loaded through the LEMUR loader contract under the run's settings. Used by
the trial itself and by the deployment worker, which must see exactly the same inputs."""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from torch.utils.data import Subset

from ab.nn import registry, workspace
from ab.nn.config import Config
from ab.nn.dataset import DataError, settings as data_settings
from ab.nn.dataset.settings import DataSettings
from ab.nn.workspace import Workspace


@dataclass
class TrialData:
    out_shape: tuple
    minimum_accuracy: float
    train: object
    eval: object
    test: object | None
    fingerprint: str | None


@dataclass(frozen=True)
class DataSpec:
    """Everything needed to load a trial's data again, in another process."""

    config: str
    transform: str
    workspace: Workspace
    data: DataSettings
    seed: int

    def to_json(self) -> dict:
        return {"config": self.config, "transform": self.transform, "root": str(self.workspace.root),
                "db": self.workspace.db, "data_dir": str(self.workspace.data_dir) if self.workspace.data_dir else None,
                "data": asdict(self.data), "seed": self.seed}

    @classmethod
    def from_json(cls, value: dict) -> "DataSpec":
        return cls(config=value["config"], transform=value["transform"],
                   workspace=Workspace.resolve(value["root"], value["db"], value["data_dir"]),
                   data=DataSettings(**value["data"]), seed=value["seed"])


def cap(dataset, limit: int | None, seed: int):
    """Generic ``--max-samples`` for loaders that do not apply it themselves."""
    if dataset is None or limit is None or len(dataset) <= limit:
        return dataset
    return Subset(dataset, sorted(random.Random(seed).sample(range(len(dataset)), limit)))


def load(spec: DataSpec) -> TrialData:
    config = Config.parse(spec.config)
    with workspace.active.use(spec.workspace), data_settings.active.use(spec.data):
        loader_module = registry.load(registry.LOADER, config.dataset)
        transform_module = registry.load(registry.TRANSFORM, spec.transform)
        out_shape, minimum_accuracy, train_set, eval_set = loader_module.loader(transform_module.transform,
                                                                               config.task)
    test_set = getattr(eval_set, "held_out_test", None)
    fingerprint = getattr(eval_set, "fingerprint", None)
    limit = spec.data.max_samples
    train_set, eval_set, test_set = (cap(d, limit, spec.seed) for d in (train_set, eval_set, test_set))
    if len(train_set) == 0 or len(eval_set) == 0:
        raise DataError(f"{config.dataset}: the split left {len(train_set)} training and {len(eval_set)} "
                        f"evaluation images; nothing to train on")
    return TrialData(tuple(out_shape), minimum_accuracy, train_set, eval_set,
                     test_set if test_set is not None and len(test_set) else None, fingerprint)
