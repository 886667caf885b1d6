"""Held-out evaluation: mean bits/dim with its standard error."""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from cinn.data import collate_images
from cinn.engine.objective import Objective
from cinn.engine.schedule import step_seed
from cinn.models.flow import Flow


@torch.no_grad()
def evaluate_bits_per_dim(model: Flow, dataset: Dataset, objective: Objective, *, batch_size: int = 256,
                          seed: int = 0, device: torch.device | str = "cpu", limit: int | None = None,
                          progress: bool = True) -> tuple[float, float, int]:
    """Mean bits/dim over ``dataset`` (the first ``limit`` items), its standard error, and the count.

    The standard error is ``std / sqrt(N)`` over per-image bits/dim. Dequantisation noise is drawn
    from generators seeded with ``seed`` and the batch index, so the number is reproducible.
    """
    model.eval()
    device = torch.device(device)
    indices = list(range(len(dataset) if limit is None else min(limit, len(dataset))))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=indices, collate_fn=collate_images)
    values = []
    for index, (images, labels) in enumerate(tqdm(loader, desc="eval", disable=not progress, leave=False)):
        generator = torch.Generator(device).manual_seed(step_seed(seed, index, stream=2))
        x, c = objective.prepare(images.to(device), labels.to(device), generator)
        values.append(objective.bits_per_dim(model.log_prob(x, c).float(), x).double().cpu())
    per_image = torch.cat(values)
    mean = per_image.mean().item()
    standard_error = per_image.std().item() / math.sqrt(len(per_image)) if len(per_image) > 1 else float("nan")
    return mean, standard_error, len(per_image)
