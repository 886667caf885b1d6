"""Held-out evaluation: mean bits/dim with its standard error."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from cinn.data import collate_images
from cinn.engine.objective import Objective
from cinn.engine.schedule import step_seed
from cinn.models.flow import Condition, Flow
from cinn.progress import Progress


def prepared_batches(dataset: Dataset, objective: Objective, *, batch_size: int = 256, seed: int = 0,
                     device: torch.device | str = "cpu", limit: int | None = None, progress: bool = True,
                     description: str = "eval") -> Iterator[tuple[Tensor, Condition]]:
    """Model inputs ``(x, c)`` for the first ``limit`` items of ``dataset`` in order, batch by batch.

    The objective's noise is drawn from generators seeded with ``seed`` and the batch index, so the
    same call gives the same batches.
    """
    device = torch.device(device)
    indices = list(range(len(dataset) if limit is None else min(limit, len(dataset))))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=indices, collate_fn=collate_images)
    with Progress(description, total=len(loader), unit="batches", enabled=progress, leave=False) as bar:
        for index, (images, labels) in enumerate(loader):  # the bar is closed if the batches are abandoned
            generator = torch.Generator(device).manual_seed(step_seed(seed, index, stream=2))
            yield objective.prepare(images.to(device), labels.to(device), generator)
            bar.update()


class BitsPerDim(NamedTuple):
    """Held-out bits/dim: the mean with its standard error over ``count`` images, and the median and
    worst image (far apart when a few images are outliers, which dominate the mean)."""

    mean: float
    standard_error: float
    count: int
    median: float
    worst: float

    @classmethod
    def of(cls, per_image: Tensor) -> BitsPerDim:
        """The summary of per-image bits/dim; the standard error is ``std / sqrt(N)`` (NaN for one image).

        Example:
            >>> BitsPerDim.of(torch.tensor([3.0, 4.0, 8.0])).summary()
            '5.0000 ± 1.5275 (standard error, 3 images; median 4.0000, worst image 8)'
        """
        standard_error = per_image.std().item() / math.sqrt(len(per_image)) if len(per_image) > 1 else float("nan")
        return cls(per_image.mean().item(), standard_error, len(per_image), per_image.median().item(),
                   per_image.max().item())

    def summary(self) -> str:
        """``mean ± s.e. (… images); median …, worst image …`` for printing."""
        if self.count == 1:
            return f"{self.mean:.4f} (1 image)"
        return (f"{self.mean:.4f} ± {self.standard_error:.4f} (standard error, {self.count} images; median "
                f"{self.median:.4f}, worst image {self.worst:.4g})")


@torch.no_grad()
def per_image_bits_per_dim(model: Flow, dataset: Dataset, objective: Objective, *, batch_size: int = 256,
                           seed: int = 0, device: torch.device | str = "cpu", limit: int | None = None,
                           progress: bool = True) -> Tensor:
    """The bits/dim of each of the first ``limit`` items of ``dataset``, in order: ``(N,)`` float64.

    Dequantisation noise is drawn from generators seeded with ``seed`` and the batch index, so the numbers are
    reproducible.
    """
    model.eval()
    values = []
    for x, c in prepared_batches(dataset, objective, batch_size=batch_size, seed=seed, device=device,
                                 limit=limit, progress=progress):
        values.append(objective.bits_per_dim(model.log_prob(x, c).float(), x).double().cpu())
    return torch.cat(values)


def evaluate_bits_per_dim(model: Flow, dataset: Dataset, objective: Objective, *, batch_size: int = 256,
                          seed: int = 0, device: torch.device | str = "cpu", limit: int | None = None,
                          progress: bool = True) -> BitsPerDim:
    """Mean bits/dim over ``dataset`` (the first ``limit`` items) with its standard error, the count,
    the median and the worst image: :meth:`BitsPerDim.of` :func:`per_image_bits_per_dim`."""
    return BitsPerDim.of(per_image_bits_per_dim(model, dataset, objective, batch_size=batch_size, seed=seed,
                                                device=device, limit=limit, progress=progress))
