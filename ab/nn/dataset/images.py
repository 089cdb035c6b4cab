"""A torch ``Dataset`` of labelled images read from a decode-once cache."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ab.nn.dataset.cache import ImageCache


class CachedImages(Dataset):
    """``(image, age)`` pairs; the age is a float32 tensor of shape (1,) in years.

    A transform that declares ``image_size`` receives the cached uint8 CHW tensor at that size
    (augmentation then runs on tensors); any other transform (e.g. a LEMUR torchvision v1
    pipeline) receives a PIL image.
    """

    def __init__(self, cache: ImageCache, rows: np.ndarray, ages: np.ndarray, transform, names: list[str],
                 image_ids: list[str] | None = None, attributes: list | None = None):
        self.cache = cache
        self.rows = np.asarray(rows, dtype=np.int64)
        self.ages = np.asarray(ages, dtype=np.float32)
        self.names = names
        self.image_ids = image_ids  # content ids (ab.nn.dataset.identity), for per-image predictions
        self.attributes = attributes  # gender and race labels of each image (ab.nn.dataset.utkface.attributes)
        self.transform = transform
        self.tensor_input = getattr(transform, "image_size", None) is not None
        self._images = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        if self._images is None:
            self._images = self.cache.array()
        pixels = self._images[self.rows[index]]
        if self.tensor_input:
            image = torch.from_numpy(np.array(pixels)).permute(2, 0, 1)
        else:
            from PIL import Image

            image = Image.fromarray(np.array(pixels))
        label = torch.tensor([self.ages[index]], dtype=torch.float32)
        return (self.transform(image) if self.transform is not None else image), label

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_images"] = None  # each DataLoader worker maps the file itself
        return state

    def pixels(self, indices=None) -> np.ndarray:
        """Images of this set (all, or those at ``indices``) as a uint8 (N, H, W, 3) array."""
        rows = self.rows if indices is None else self.rows[np.asarray(indices, dtype=np.int64)]
        return np.asarray(self.cache.array()[rows])
