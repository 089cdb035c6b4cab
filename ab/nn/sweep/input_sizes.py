"""Which transforms a search draws from: those a package transform does not keep out of searches
(``searched``), and of those the ones whose input size is among the sizes the model file declares with
``supported_input_sizes()`` (read by ``ab.nn.model_probe.declared_sizes``).

A package transform is imported (trusted code) and its size read from its ``transform`` function's
``image_size`` (``ab.nn.transform._pipeline.named`` sets it). A workspace transform is never imported
here (untrusted code): its size is unknown, and a transform of unknown size is allowed for every model.
A model that declares nothing takes every transform.
"""
from __future__ import annotations

from typing import Iterable

from ab.nn import registry

Size = tuple[int, int]


def transform_size(name: str) -> Size | None:
    """``(height, width)`` a transform produces; None when unknown (a workspace transform, or a package one
    that does not say)."""
    if registry.origin(registry.TRANSFORM, name) != registry.PACKAGE:
        return None
    side = getattr(registry.load(registry.TRANSFORM, name).transform, "image_size", None)
    return None if side is None else (int(side), int(side))


def searched(name: str) -> bool:
    """Whether a search draws this transform when none is fixed. A package transform may say no
    (``ab.nn.transform._pipeline.named(..., searched=False)``); a workspace one is not imported here, so
    it is drawn."""
    if registry.origin(registry.TRANSFORM, name) != registry.PACKAGE:
        return True
    return bool(getattr(registry.load(registry.TRANSFORM, name).transform, "searched", True))


def allowed(transforms: Iterable[str], sizes: Iterable[Size] | None) -> list[str]:
    """The transforms a model that declares ``sizes`` takes (all when it declares none), in order."""
    if sizes is None:
        return list(transforms)
    declared = set(map(tuple, sizes))
    return [name for name in transforms if (size := transform_size(name)) is None or size in declared]


def describe(sizes: Iterable[Size]) -> str:
    """``64x64 or 96x96`` px."""
    return " or ".join(f"{h}x{w}" for h, w in sizes) + " px"
