r"""The training objective of colourisation: uint8 RGB photos → dequantised ``ab_n`` given ``L_n``."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from cinn.color import ab_bits_per_dim, dequantize_ab, normalize_ab, normalize_lightness, rgb_to_lab


def downsample_ab(ab: Tensor, factor: int) -> Tensor:
    """Mean of ab over ``factor × factor`` pixel blocks: ``(B, 2, H, W)`` → ``(B, 2, H/factor, W/factor)``.

    Example:
        >>> downsample_ab(torch.ones(1, 2, 8, 6), 2).shape
        torch.Size([1, 2, 4, 3])
    """
    return F.avg_pool2d(ab, factor) if factor > 1 else ab


class LabColorization:
    r"""Objective for colourisation: uint8 RGB photos → ``x`` = dequantised ``ab_n``, ``c`` = ``L_n``.

    ``prepare``: optionally a random ``crop_size²`` crop and a random horizontal flip per photo (both
    drawn from ``generator``), RGB → Lab (scikit-image), then ``L_n`` at full resolution as the
    condition and ``ab`` — averaged over ``ab_downsample²`` pixel blocks (colour varies slowly, so
    it is modelled at a lower resolution than L, as in the cINN paper), rounded to integer Lab units,
    plus noise — as the variable, in network units (:mod:`cinn.color`).
    ``noise="uniform"``: ``u − ½``, ``u ~ U[0, 1)`` (a valid bound, see :func:`~cinn.color.ab_bits_per_dim`);
    ``"gaussian"``: ``N(0, gaussian_std²)`` Lab units — a training loss only, never a reported number.

    Shapes: images ``uint8 (B, 3, H, W)`` → ``x (B, 2, h/f, w/f)``, ``c (B, 1, h, w)`` with ``h = w =
    crop_size`` (``H, W`` without cropping), ``f = ab_downsample``; ``bits_per_dim`` gives bits per
    ab dimension ``(B,)``.

    Example:
        >>> objective = LabColorization(crop_size=16, ab_downsample=2, flip=True)
        >>> photos = torch.randint(0, 256, (4, 3, 24, 32), dtype=torch.uint8)
        >>> ab, lightness = objective.prepare(photos, torch.zeros(4), torch.Generator().manual_seed(0))
        >>> ab.shape, lightness.shape
        (torch.Size([4, 2, 8, 8]), torch.Size([4, 1, 16, 16]))
    """

    def __init__(self, crop_size: int | None = None, ab_downsample: int = 1, flip: bool = False,
                 noise: Literal["uniform", "gaussian"] = "uniform", gaussian_std: float = 0.5):
        if noise not in ("uniform", "gaussian"):
            raise ValueError(f"noise must be 'uniform' or 'gaussian', got {noise!r}")
        self.crop_size, self.ab_downsample, self.flip = crop_size, ab_downsample, flip
        self.noise, self.gaussian_std = noise, gaussian_std

    def augment(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Random crops and flips, one draw per image."""
        if self.crop_size is not None:
            size = self.crop_size
            height, width = images.shape[-2:]
            if size > min(height, width):
                raise ValueError(f"crop size {size} exceeds the photos' size {height}x{width}")
            tops = torch.randint(height - size + 1, (len(images),), generator=generator, device=images.device)
            lefts = torch.randint(width - size + 1, (len(images),), generator=generator, device=images.device)
            images = torch.stack([image[:, top:top + size, left:left + size]
                                  for image, top, left in zip(images, tops.tolist(), lefts.tolist(), strict=True)])
        if self.flip:
            flipped = torch.rand(len(images), generator=generator, device=images.device) < 0.5
            images = torch.where(flipped[:, None, None, None], images.flip(-1), images)
        return images

    def prepare(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        lab = rgb_to_lab(self.augment(images, generator))
        ab = downsample_ab(lab[:, 1:], self.ab_downsample)
        if self.noise == "uniform":
            ab = dequantize_ab(ab, generator)
        else:
            noise = torch.randn(ab.shape, generator=generator, device=ab.device, dtype=ab.dtype)
            ab = torch.round(ab) + self.gaussian_std * noise
        return normalize_ab(ab), normalize_lightness(lab[:, :1])

    def bits_per_dim(self, log_prob: Tensor, x: Tensor) -> Tensor:
        return ab_bits_per_dim(-log_prob, x[0].numel())
