"""Training objectives: how a batch of data becomes model input and a loss in bits/dim."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from cinn.likelihood import bits_per_dim, dequantize, n_bins, quantize
from cinn.models.flow import Condition


class Objective(Protocol):
    """What the engine needs from a task: batch → ``(x, c)``, and log-likelihood → bits/dim."""

    def prepare(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Condition]:
        """Model input ``x`` and condition ``c`` for a batch; all randomness from ``generator``."""
        ...

    def bits_per_dim(self, log_prob: Tensor, x: Tensor) -> Tensor:
        """Per-sample bits/dim ``(B,)`` of ``log_prob`` (nats) for input ``x``."""
        ...


class DequantizedImages:
    r"""The standard image likelihood: uint8 images → ``n_bits`` levels → uniform dequantisation.

    ``prepare`` returns ``x̃ = (k + u) / 2^n_bits ∈ [0, 1)`` (see :mod:`cinn.likelihood`) and the
    labels as condition when ``class_conditional``; ``bits_per_dim`` is the discrete bound
    ``(−log p(x̃) + M·log n_bins) / (M·ln 2)``.

    Example:
        >>> objective = DequantizedImages(n_bits=5)
        >>> images, labels = torch.tensor([0, 8, 255], dtype=torch.uint8).view(3, 1, 1, 1), torch.tensor([0, 1, 2])
        >>> x, c = objective.prepare(images, labels, torch.Generator().manual_seed(0))
        >>> (x * 32).floor().flatten(), c   # x̃ lies in bin k = 0, 1, 31; no condition without class_conditional
        (tensor([ 0.,  1., 31.]), None)
    """

    def __init__(self, n_bits: int = 8, class_conditional: bool = False):
        self.n_bits = n_bits
        self.class_conditional = class_conditional

    def prepare(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Condition]:
        levels = quantize(images.float() / 255.0, self.n_bits)
        return dequantize(levels, self.n_bits, generator), (labels if self.class_conditional else None)

    def bits_per_dim(self, log_prob: Tensor, x: Tensor) -> Tensor:
        return bits_per_dim(-log_prob, x[0].numel(), self.n_bits)


class GaussianNoiseImages(DequantizedImages):
    r"""Training only: bin centres plus Gaussian noise, ``x̃ = (k + ½) / 2^n_bits + σ·n``, ``n ~ N(0, I)``.

    The official cINN MNIST code trains this way. ``−log p(x̃)`` of a continuous density at noisy
    points is *not* a bound on the discrete likelihood, so its "bits/dim" (same formula as
    :class:`DequantizedImages`) is a training loss, never a reported number: tasks evaluate with
    :class:`DequantizedImages`.

    Example:
        >>> objective = GaussianNoiseImages(n_bits=8, std=0.08, class_conditional=True)
    """

    def __init__(self, n_bits: int = 8, std: float = 0.08, class_conditional: bool = False):
        super().__init__(n_bits, class_conditional)
        if std <= 0:
            raise ValueError(f"the noise standard deviation must be positive, got {std}")
        self.std = std

    def prepare(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Condition]:
        centres = (quantize(images.float() / 255.0, self.n_bits) + 0.5) / n_bins(self.n_bits)
        noise = torch.randn(centres.shape, generator=generator, device=centres.device, dtype=centres.dtype)
        return centres + self.std * noise, (labels if self.class_conditional else None)
