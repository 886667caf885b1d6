"""Deterministic, resumable batch order and the learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """A 63-bit seed for (run seed, step, stream): every step's randomness is a pure function of these."""
    return (seed * 1_000_003 + step * 7_919 + stream * 104_729) % (2**63 - 1)


class BatchSchedule(Sampler[list[int]]):
    """Global batches of dataset indices for steps ``start_step, …, steps − 1``.

    Epoch ``e`` visits the data in the order ``randperm(N)`` drawn from a generator seeded with
    ``(seed, e)``; step ``s`` takes the ``s``-th full batch of that order (the last partial batch of
    an epoch is dropped). Nothing depends on earlier steps, so resuming at any step reproduces the
    uninterrupted order exactly.

    Example:
        >>> list(BatchSchedule(10, batch_size=4, steps=3, seed=0))   # 3 batches of 4 indices
        [[9, 1, 7, 2], [5, 4, 8, 6], [9, 3, 5, 7]]
        >>> list(BatchSchedule(10, batch_size=4, steps=3, seed=0, start_step=2))   # resumed at step 2
        [[9, 3, 5, 7]]
    """

    def __init__(self, dataset_size: int, batch_size: int, steps: int, seed: int, start_step: int = 0):
        if dataset_size < batch_size:
            raise ValueError(f"the dataset has {dataset_size} items, fewer than one batch of {batch_size}; "
                             "use a smaller batch size or more data")
        self.dataset_size, self.batch_size = dataset_size, batch_size
        self.steps, self.seed, self.start_step = steps, seed, start_step
        self.batches_per_epoch = dataset_size // batch_size

    def __len__(self) -> int:
        return max(self.steps - self.start_step, 0)

    def __iter__(self) -> Iterator[list[int]]:
        order, order_epoch = None, -1
        for step in range(self.start_step, self.steps):
            epoch, position = divmod(step, self.batches_per_epoch)
            if epoch != order_epoch:
                generator = torch.Generator().manual_seed(step_seed(self.seed, epoch, stream=1))
                order, order_epoch = torch.randperm(self.dataset_size, generator=generator), epoch
            yield order[position * self.batch_size:(position + 1) * self.batch_size].tolist()


def learning_rate_factor(step: int, warmup_steps: int, total_steps: int, decay: str,
                         time_fraction: float | None = None) -> float:
    """Multiplier of the base learning rate: linear warmup over ``warmup_steps``, then ``decay``
    (``"none"``, ``"linear"`` to 0 or ``"cosine"`` to 0 at ``total_steps``). With ``time_fraction`` (the share of
    a time budget spent), the decay's progress is the larger of the steps' and the time's, so it also ends with
    the budget.

    Example:
        >>> learning_rate_factor(100, 0, 200, "cosine"), learning_rate_factor(100, 0, 200, "cosine", 1.0)
        (0.5, 0.0)
    """
    warmup = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if decay == "none" or step < warmup_steps:
        return warmup
    progress = min(1.0, max((step - warmup_steps) / max(1, total_steps - warmup_steps), time_fraction or 0.0))
    if decay == "linear":
        return 1.0 - progress
    if decay == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown learning-rate decay {decay!r}; use 'none', 'linear' or 'cosine'")
