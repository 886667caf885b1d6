r"""Sample quality of a colourisation model: best-of-n RMSE, the grey baseline's RMSE, and diversity."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset

from cinn.color import denormalize_ab, normalize_lightness, rgb_to_lab
from cinn.colorization.colorizer import ColorModel
from cinn.colorization.objective import downsample_ab
from cinn.data import collate_images


@dataclass
class SampleMetrics:
    """Per-photo sample quality, all in Lab units: best-of-``n`` RMSE of ab against the truth, RMSE of
    the ``ab = 0`` (grey) prediction, and diversity (per-pixel standard deviation of ab across samples).

    Shapes: each field ``(N,)`` for ``N`` photos.
    """

    best_rmse: Tensor
    grey_rmse: Tensor
    diversity: Tensor


@torch.no_grad()
def sample_metrics(model: ColorModel, dataset: Dataset, *, ab_downsample: int = 1, n_samples: int = 8,
                   temperature: float = 1.0, seed: int = 0, device: torch.device | str = "cpu") -> SampleMetrics:
    r"""Colourise every photo of ``dataset`` ``n_samples`` times and compare with its true ab, both at
    the model's ab resolution (1/``ab_downsample`` of the photo's).

    For photo ``i`` with true ``ab`` (``M`` values) and samples ``ab^(s)``:
    ``RMSE_s = sqrt(mean((ab^(s) − ab)²))``; best-of-n is ``min_s RMSE_s`` (the cINN paper's metric);
    grey is ``sqrt(mean(ab²))``; diversity is the mean over pixels and both channels of the standard
    deviation across samples (0 for a deterministic model).

    Example:
        >>> from cinn.colorization import build_colorization_model
        >>> model = build_colorization_model("regressor", 16, n_levels=2).eval()
        >>> photos = [(torch.randint(0, 256, (3, 16, 24), dtype=torch.uint8), 0)] * 3
        >>> sample_metrics(model, photos, n_samples=2).diversity
        tensor([0., 0., 0.])
    """
    device = torch.device(device)
    generator = torch.Generator(device).manual_seed(seed)
    best, grey, diversity = [], [], []
    for index in range(len(dataset)):
        image, _ = collate_images([dataset[index]])
        lab = rgb_to_lab(image.to(device))
        truth, lightness = downsample_ab(lab[:, 1:], ab_downsample), normalize_lightness(lab[:, :1])
        samples = denormalize_ab(model.sample(n_samples, lightness.expand(n_samples, -1, -1, -1), temperature,
                                              generator, spatial_size=truth.shape[-2:]))
        rmse = (samples - truth).pow(2).flatten(1).mean(1).sqrt()
        best.append(rmse.min())
        grey.append(truth.pow(2).mean().sqrt())
        diversity.append(samples.std(0, unbiased=True).mean() if n_samples > 1 else samples.new_zeros(()))
    return SampleMetrics(torch.stack(best).cpu(), torch.stack(grey).cpu(), torch.stack(diversity).cpu())


def rmse_summary(values: Tensor) -> str:
    """``mean ± standard error`` of per-photo values, for printing.

    Example:
        >>> rmse_summary(torch.tensor([1.0, 2.0, 3.0]))
        '2.00 ± 0.58'
    """
    if len(values) < 2:
        return f"{values.mean().item():.2f}"
    return f"{values.mean().item():.2f} ± {values.std().item() / math.sqrt(len(values)):.2f}"
