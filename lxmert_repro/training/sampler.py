"""A shuffling sampler whose order is a pure function of (seed, epoch).

Resuming mid-epoch then only needs the epoch number and how many batches were consumed: the same
permutation is rebuilt and ``accelerator.skip_first_batches`` drops the batches already seen.
Every process builds the same permutation, so Accelerate's batch sharding splits one global order.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochShuffleSampler(Sampler[int]):
    """Yields ``range(n)`` permuted by ``torch.randperm`` seeded with ``seed + epoch`` (or in order)."""

    def __init__(self, num_samples: int, seed: int = 0, shuffle: bool = True) -> None:
        if num_samples <= 0:
            raise ValueError(f"EpochShuffleSampler: the dataset is empty (num_samples={num_samples})")
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.num_samples))
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=g).tolist())

    def __len__(self) -> int:
        return self.num_samples
