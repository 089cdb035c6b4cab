"""The pipeline behind this project's named transforms (``norm_<size>[_flip|_aug|_bg|_bg75|_bgs]``).

It accepts a uint8 CHW tensor from the decode-once cache (already at ``image_size``) or a PIL
image, so augmentation runs on tensors. ``eval_transform`` of every named transform is the same
pipeline without augmentation, hence deterministic. ``bg`` and ``bg75`` are ``aug`` with background
replacement (``ab.nn.transform._background``) in half or three quarters of the crops, ``bgs`` in half of
them with the ``shapes`` family added to the textures: a search does not draw them unless asked
(``named(..., searched=False)``).

torch and torchvision are imported when a pipeline is built, not with the module: a sweep's runner reads
every package transform's size (``ab.nn.sweep.input_sizes``) and would otherwise pay their import (and
``torch._dynamo``'s under torchvision, seconds) for a size.
"""
from __future__ import annotations

BACKGROUNDS = {"bg": (0.5, "TEXTURES"), "bg75": (0.75, "TEXTURES"), "bgs": (0.5, "FAMILIES")}
"""Each background-replacing augmentation: the share of training crops whose background it replaces, and
which families of ``ab.nn.transform._background`` (its name there) the textures are drawn from."""
AUGMENTATIONS = ("none", "flip", "aug", *BACKGROUNDS)


class ImagePipeline:
    def __init__(self, norm, image_size: int, augment: str = "none"):
        import torch
        from torchvision.transforms import v2

        from ab.nn.transform import _background

        if augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
        mean, std = norm
        ops = []
        if augment in BACKGROUNDS:
            share, families = BACKGROUNDS[augment]
            ops.append(_background.ReplaceBackground(share, getattr(_background, families)))
        if augment != "none":
            ops.append(v2.RandomHorizontalFlip())
        if augment == "aug" or augment in BACKGROUNDS:
            ops += [v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
                    v2.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.95, 1.05))]
        self.image_size = image_size
        self.augment = augment
        self.mean, self.std = tuple(mean), tuple(std)
        self._resize = v2.Resize((image_size, image_size), antialias=True)
        self._augment = v2.Compose(ops) if ops else None
        self._normalize = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)])
        self._to_tensor = v2.functional.pil_to_tensor
        self._tensor = torch.Tensor

    def __call__(self, image):
        if not isinstance(image, self._tensor):
            image = self._to_tensor(image)
        if tuple(image.shape[-2:]) != (self.image_size, self.image_size):
            image = self._resize(image)
        if self._augment is not None:
            image = self._augment(image)
        return self._normalize(image)

    def __repr__(self) -> str:
        return f"ImagePipeline(size={self.image_size}, augment={self.augment!r})"


def named(image_size: int, augment: str, searched: bool = True):
    """``(transform, eval_transform)`` functions of the LEMUR transform contract. ``searched=False``: a
    sweep uses it only when told to (``-f``, ``-p transform``), never draws it (``ab.nn.sweep.input_sizes``),
    so that adding one leaves the default search and its existing studies as they were."""

    def transform(norm):
        return ImagePipeline(norm, image_size, augment)

    def eval_transform(norm):
        return ImagePipeline(norm, image_size, "none")

    transform.eval_transform = eval_transform
    transform.image_size = eval_transform.image_size = image_size
    transform.searched = searched
    return transform, eval_transform
