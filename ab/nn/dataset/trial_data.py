"""A trial's datasets, loaded through the LEMUR loader contract under the run's settings. Used by
the trial itself, by the deployment worker, which must see exactly the same inputs, and by AgeMoE:
it lies below all three. Loaders are found by name through the registry, never imported here."""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from types import SimpleNamespace

from ab.nn import registry, workspace
from ab.nn.config import Config
from ab.nn.dataset import DataError, settings as data_settings
from ab.nn.dataset.identity import DataIdentity
from ab.nn.dataset.settings import DataSettings
from ab.nn.workspace import Workspace


@dataclass
class TrialData:
    out_shape: tuple
    minimum_accuracy: float
    train: object
    eval: object
    test: object | None
    identity: DataIdentity


@dataclass(frozen=True)
class DataSpec:
    """Everything needed to load a trial's data again, in another process."""

    config: str
    transform: str
    workspace: Workspace
    data: DataSettings

    def to_json(self) -> dict:
        return {"config": self.config, "transform": self.transform, "root": str(self.workspace.root),
                "db": self.workspace.db, "data_dir": str(self.workspace.data_dir) if self.workspace.data_dir else None,
                "data": asdict(self.data)}

    @classmethod
    def from_json(cls, value: dict) -> "DataSpec":
        return cls(config=value["config"], transform=value["transform"],
                   workspace=Workspace.resolve(value["root"], value["db"], value["data_dir"]),
                   data=DataSettings(**value["data"]))


def cap(dataset, limit: int | None, seed: int):
    """Generic ``--max-samples`` for loaders that do not apply it themselves (UTKFace's does: a runner
    preparing its images never gets here, and never imports torch)."""
    if dataset is None or limit is None or len(dataset) <= limit:
        return dataset
    from torch.utils.data import Subset

    return Subset(dataset, sorted(random.Random(seed).sample(range(len(dataset)), limit)))


def identify(config: Config, ws: Workspace, settings: DataSettings) -> DataIdentity:
    """The data key of ``config`` under ``settings``, from the loader's ``data_identity`` hook where it
    has one (no image is decoded); its errors (no images, unreadable folder) surface here, once."""
    found = _loader_hook(config, ws, settings, "data_identity") or {}
    return DataIdentity(config.dataset, settings, found.get("digests"), found.get("counts"), found.get("skipped_log"))


def part_ages(config: Config, ws: Workspace, settings: DataSettings) -> dict | None:
    """The true ages of each part (``train``, ``eval``, ``test``) of ``config``'s data under ``settings``, from
    the loader's ``data_labels`` hook (no image is decoded); None where the loader has no such hook."""
    return _loader_hook(config, ws, settings, "data_labels")


def _loader_hook(config: Config, ws: Workspace, settings: DataSettings, name: str, *args):
    """What the loader's ab.nn extension ``name(task, *args)`` says under ``settings``; None where it has
    none."""
    with workspace.active.use(ws), data_settings.active.use(settings):
        hook = getattr(registry.load(registry.LOADER, config.dataset), name, None)
        return hook(config.task, *args) if hook is not None else None


def load(spec: DataSpec, transform=None) -> TrialData:
    """The trial's data; ``transform``: a transform function to use instead of the spec's (``prepare``)."""
    config = Config.parse(spec.config)
    with workspace.active.use(spec.workspace), data_settings.active.use(spec.data):
        loader_module = registry.load(registry.LOADER, config.dataset)
        transform = transform or registry.load(registry.TRANSFORM, spec.transform).transform
        out_shape, minimum_accuracy, train_set, eval_set = loader_module.loader(transform, config.task)
    test_set = getattr(eval_set, "held_out_test", None)
    digests = getattr(eval_set, "digests", None)
    limit = spec.data.max_samples
    train_set, eval_set, test_set = (cap(d, limit, spec.data.split_seed) for d in (train_set, eval_set, test_set))
    if len(train_set) == 0 or len(eval_set) == 0:
        raise DataError(f"{config.dataset}: the split left {len(train_set)} training and {len(eval_set)} "
                        f"evaluation images; nothing to train on")
    test_set = test_set if test_set is not None and len(test_set) else None
    counts = {"train": len(train_set), "eval": len(eval_set), "test": len(test_set) if test_set is not None else 0}
    return TrialData(tuple(out_shape), minimum_accuracy, train_set, eval_set, test_set,
                     DataIdentity(config.dataset, spec.data, digests, counts))


def prepare(spec: DataSpec, image_size: int | None = None) -> None:
    """Decode the images a trial of ``spec`` reads into the image cache, here (a sandboxed trial sees the
    cache read-only). The cache is keyed by image size alone: ``image_size`` where asked, else the size the
    package's transform states (its pipeline, and torchvision with it, is never built here); a package
    transform that states none is used itself. A workspace transform is code that runs only in the sandbox:
    without ``image_size``, the loader's native size is prepared for it. A loader's ``data_cache`` hook
    decodes without making datasets (no torch in the runner); a loader without one is run with a stand-in
    transform that names the size. A workspace loader is never run here, so nothing is prepared for it."""
    config = Config.parse(spec.config)
    with workspace.active.use(spec.workspace):
        if registry.origin(registry.LOADER, config.dataset) != registry.PACKAGE:
            return
        if image_size is None and registry.origin(registry.TRANSFORM, spec.transform) == registry.PACKAGE:
            image_size = _stated_size(registry.load(registry.TRANSFORM, spec.transform).transform)
            if image_size is None:
                load(spec)
                return
    if _loader_hook(config, spec.workspace, spec.data, "data_cache", image_size) is None:
        load(spec, _stand_in(image_size))


def _stated_size(transform) -> int | None:
    """The image size a package transform function and its attached ``eval_transform`` both state
    (``ab.nn.transform._pipeline.named``); None where either does not, or they differ."""
    size = getattr(transform, "image_size", None)
    evaluation = getattr(getattr(transform, "eval_transform", None), "image_size", None)
    return size if size is not None and evaluation == size else None


def _stand_in(image_size: int | None):
    """A transform function whose transform only names its image size (the cache's key): the cache is
    built, no image is transformed."""
    sized = SimpleNamespace(image_size=image_size)

    def transform(norm):
        return sized

    transform.eval_transform = transform
    return transform


def _text(value) -> str | None:
    return value if isinstance(value, str) and value else None


def recorded_identity(trial) -> DataIdentity:
    """The data a recorded trial (a row of ``api.trials()``, as a mapping) was judged on."""
    settings = DataSettings.from_label(trial["split"], trial.get("max_samples"))
    digests = {part: _text(trial.get(f"{part}_digest")) for part in ("train", "eval", "test")}
    return DataIdentity(trial["dataset"], settings, digests if any(digests.values()) else None)


def load_judged(trial, ws: Workspace, transform: str, settings: DataSettings | None = None,
                progress: bool = False) -> TrialData:
    """A recorded trial's data, rebuilt from ``ws`` (under ``settings``, by default the trial's own)
    and checked against what the trial was judged on: ``DataMismatch`` names both when they differ."""
    recorded = recorded_identity(trial)
    what = f"trial {int(trial['id'])} ({trial['config']})"
    settings = DataSettings(**{**asdict(settings or recorded.settings), "progress": progress})
    identify(Config.parse(trial["config"]), ws, settings).require_same(recorded, what)  # before decoding anything
    data = load(DataSpec(trial["config"], transform, ws, settings))
    data.identity.require_same(recorded, what)
    return data
