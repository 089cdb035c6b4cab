"""One epoch of training batches, as handed to a model's ``learn``."""
from __future__ import annotations

import time

from tqdm.auto import tqdm


class DataRoll:
    """Iterates a DataLoader once with a progress bar, stopping early when the epoch's wall-clock
    limit has passed. Unlike LEMUR, the cut is not silent: ``truncated`` says it happened and the
    runner records it with the epoch."""

    def __init__(self, loader, limit_minutes: float | None = None, desc: str = "batches", progress: bool = True):
        self.loader = loader
        self.limit_seconds = None if not limit_minutes or limit_minutes <= 0 else limit_minutes * 60.0
        self.desc = desc
        self.progress = progress
        self.truncated = False
        self.samples = 0
        self.batches = 0

    @property
    def dataset(self):
        return self.loader.dataset

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        start = time.monotonic()
        self.truncated, self.samples, self.batches = False, 0, 0
        with tqdm(total=len(self.loader), desc=self.desc, unit="batch", leave=False, disable=not self.progress,
                  position=2) as bar:
            for batch in self.loader:
                yield batch
                self.batches += 1
                self.samples += len(batch[-1])
                bar.update(1)
                if self.limit_seconds is not None and time.monotonic() - start > self.limit_seconds:
                    self.truncated = self.batches < len(self.loader)
                    break
