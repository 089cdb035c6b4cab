"""The evaluation counterpart of a training transform: never random.

LEMUR applies the training transform (random crops, flips) to the test set too, which makes
evaluation stochastic. Here a transform's evaluation pipeline is, in order of preference: the
``eval_transform`` attached to the function, the ``eval_transform`` of its module, or the
training pipeline with its random operations removed (random crops become centre crops).
"""
from __future__ import annotations

import sys

_RANDOM_PREFIX = "Random"
_ALSO_RANDOM = {"ColorJitter", "GaussianBlur", "GaussianNoise", "AugMix", "AutoAugment", "RandAugment",
                "TrivialAugmentWide", "ElasticTransform", "JPEG"}


def _strip(pipeline):
    from torchvision import transforms as v1
    from torchvision.transforms import v2

    for compose_type, module in ((v2.Compose, v2), (v1.Compose, v1)):
        if isinstance(pipeline, compose_type):
            kept = []
            for op in pipeline.transforms:
                name = type(op).__name__
                if name in ("RandomResizedCrop", "RandomCrop"):
                    size = op.size
                    if name == "RandomResizedCrop":
                        kept.append(module.Resize(size))
                    kept.append(module.CenterCrop(size))
                elif name.startswith(_RANDOM_PREFIX) or name in _ALSO_RANDOM:
                    continue
                else:
                    kept.append(_strip(op))
            return compose_type(kept)
    return pipeline


def eval_transform_for(transform_fn, norm):
    attached = getattr(transform_fn, "eval_transform", None)
    if attached is None:
        attached = getattr(sys.modules.get(getattr(transform_fn, "__module__", ""), None), "eval_transform", None)
    if attached is not None:
        return attached(norm)
    return _strip(transform_fn(norm))
