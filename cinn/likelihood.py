r"""Discrete-data likelihood conventions: quantisation, uniform dequantisation, bits per dimension.

Data ``x ∈ [0, 1]`` (e.g. ``uint8 / 255``) is reduced to ``n_bits``: the integer
``k = ⌊x · 255 / 2^(8 − n_bits)⌋ ∈ {0, …, n_bins − 1}`` with ``n_bins = 2^n_bits``. A flow models
the continuous ``x̃ = (k + u) / n_bins``, ``u ~ U[0, 1)^M``, whose density lives on ``[0, 1]^M``.
Each bin has volume ``n_bins^(−M)``, so by Jensen's inequality

    ``−log P(k) ≤ E_u[−log p(x̃)] + M · log(n_bins)``,

and the reported number is the bound in bits per dimension

    ``bits/dim = (NLL_nats + M · log(n_bins)) / (M · ln 2)``,   ``NLL_nats = −log p(x̃)``.

Averaged over a test set this is a valid upper bound on the discrete model's code length. (Gaussian
dequantisation noise gives no such bound; it must never be used for reported numbers.)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def n_bins(n_bits: int) -> int:
    """Number of quantisation levels ``2^n_bits``."""
    if not 1 <= n_bits <= 8:
        raise ValueError(f"n_bits must be between 1 and 8, got {n_bits}")
    return 2**n_bits


def quantize(x: Tensor, n_bits: int = 8) -> Tensor:
    """Integer levels ``k ∈ {0, …, 2^n_bits − 1}`` (as float) of ``x ∈ [0, 1]`` given with 8-bit precision.

    Example:
        >>> quantize(torch.tensor([0, 7, 8, 255]) / 255, n_bits=5)   # 8 of the 256 levels per 5-bit level
        tensor([ 0.,  0.,  1., 31.])
    """
    levels_8bit = torch.round(x.clamp(0, 1) * 255)
    return torch.floor(levels_8bit / 2 ** (8 - n_bits))


def dequantize(levels: Tensor, n_bits: int = 8, generator: torch.Generator | None = None) -> Tensor:
    """``x̃ = (k + u) / n_bins`` with ``u ~ U[0, 1)``: a point drawn uniformly from bin ``k``, in ``[0, 1)``."""
    noise = torch.rand(levels.shape, generator=generator, dtype=levels.dtype, device=levels.device)
    return (levels + noise) / n_bins(n_bits)


def bin_centers(levels: Tensor, n_bits: int = 8) -> Tensor:
    """``(k + 1/2) / n_bins``: the deterministic point of each bin (for pictures, not likelihoods)."""
    return (levels + 0.5) / n_bins(n_bits)


def bits_per_dim(nll_nats: Tensor, num_dims: int, n_bits: int = 8) -> Tensor:
    r"""``(NLL_nats + M · log(n_bins)) / (M · ln 2)`` for the continuous NLL of dequantised data.

    ``nll_nats`` is ``−log p(x̃)`` per sample (any shape); ``num_dims`` is ``M``, the dimensions per
    sample.

    Example:
        >>> bits_per_dim(torch.tensor(0.0), num_dims=784, n_bits=8)   # uniform density on [0, 1]^M
        tensor(8.)
    """
    return (nll_nats + num_dims * math.log(n_bins(n_bits))) / (num_dims * math.log(2.0))
