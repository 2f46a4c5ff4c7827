"""Optional length bucketing: batches of similar length (text tokens or box counts) waste less padding.

``LengthBucketBatchSampler`` draws a seeded (seed, epoch) permutation, cuts it into windows of
``batch_size * window_batches`` examples, sorts each window by length, cuts it into batches and shuffles
the batch order; so batches stay random across the epoch while lengths inside a batch are close.
With ``num_replicas`` > 1 each process takes every ``num_replicas``-th batch (same batch count each).
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class LengthBucketBatchSampler(Sampler[list[int]]):
    def __init__(self, lengths: Sequence[int] | np.ndarray, batch_size: int, *, window_batches: int = 50,
                 shuffle: bool = True, drop_last: bool = False, seed: int = 0, num_replicas: int = 1,
                 rank: int = 0) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.lengths = np.asarray(lengths, np.int64)
        self.batch_size, self.window = batch_size, batch_size * max(1, window_batches)
        self.shuffle, self.drop_last, self.seed, self.epoch = shuffle, drop_last, seed, 0
        self.num_replicas, self.rank = num_replicas, rank

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _batches(self) -> list[np.ndarray]:
        n = len(self.lengths)
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        batches = []
        for s in range(0, n, self.window):
            win = order[s : s + self.window]
            win = win[np.argsort(self.lengths[win], kind="stable")]
            batches.extend(win[i : i + self.batch_size] for i in range(0, len(win), self.batch_size))
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        usable = len(batches) - len(batches) % self.num_replicas if self.num_replicas > 1 else len(batches)
        return batches[self.rank : usable : self.num_replicas]

    def __iter__(self) -> Iterator[list[int]]:
        for b in self._batches():
            yield b.tolist()

    def __len__(self) -> int:
        return len(self._batches())
