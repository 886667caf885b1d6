r"""CIE Lab conventions for colourisation: conversion, normalisation, and the ab likelihood.

A photo is split into lightness ``L ∈ [0, 100]`` (the condition) and chroma ``(a, b)`` (what a
colourisation model predicts), with scikit-image's D65 sRGB ↔ Lab conversion. Networks see

    ``L_n = (L − 50) / 50 ∈ [−1, 1]``,      ``ab_n = ab / AB_SCALE``  (``AB_SCALE = 110``; sRGB's ab lies in ±110).

**Likelihood of ab.** ``ab`` of an 8-bit photo is rounded to integer Lab units, ``k = round(ab)``,
and dequantised uniformly within its unit bin, ``ãb = k + u − ½``, ``u ~ U[0, 1)``. A flow models
the density of ``ab_n = ãb / AB_SCALE``; with ``M`` ab dimensions the change of units gives

    ``bits per ab dim = (NLL_nats(ab_n) + M · log AB_SCALE) / (M · ln 2)``,

an upper bound (by Jensen) on the code length of the integer ab values in bits per dimension — the
same construction as :mod:`cinn.likelihood`, with bins of width one Lab unit.
"""

from __future__ import annotations

import math
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from skimage import color
from torch import Tensor

AB_SCALE = 110.0
L_CENTER = 50.0
L_SCALE = 50.0


def rgb_to_lab(rgb: Tensor) -> Tensor:
    """``(B, 3, H, W)`` RGB (``uint8``, or float in ``[0, 1]``) → ``(B, 3, H, W)`` float32 Lab (skimage, D65).

    Example:
        >>> white = rgb_to_lab(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8))
        >>> white.shape, torch.allclose(white[0, :, 0, 0], torch.tensor([100.0, 0.0, 0.0]), atol=0.01)
        (torch.Size([1, 3, 2, 2]), True)
        >>> rgb_to_lab(torch.tensor([255, 0, 0], dtype=torch.uint8).view(1, 3, 1, 1)).flatten().round()   # red
        tensor([53., 80., 67.])
    """
    values = rgb.detach().cpu().numpy()
    values = values.astype(np.float32) / 255.0 if rgb.dtype == torch.uint8 else values.astype(np.float32)
    lab = color.rgb2lab(np.moveaxis(values, 1, -1), channel_axis=-1)
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(lab, -1, 1), dtype=np.float32)).to(rgb.device)


def lab_to_rgb(lab: Tensor) -> Tensor:
    """``(B, 3, H, W)`` Lab → ``(B, 3, H, W)`` ``uint8`` RGB (out-of-gamut colours clipped by skimage).

    The images are converted on ``torch.get_num_threads()`` threads (numpy releases the GIL), which
    matters for several full-resolution colourings of one photo.

    Example:
        >>> lab_to_rgb(torch.tensor([100.0, 0.0, 0.0]).view(1, 3, 1, 1)).flatten().tolist()
        [255, 255, 255]
    """
    values = np.moveaxis(lab.detach().float().cpu().numpy(), 1, -1)
    workers = max(1, min(len(values), torch.get_num_threads()))
    # Sampled colours may leave the sRGB gamut; clipping them is the intent. (The filter is set here,
    # around the pool, because catch_warnings is not thread-safe.)
    with warnings.catch_warnings(), ThreadPoolExecutor(workers) as pool:
        warnings.filterwarnings("ignore", message="Conversion from CIE-LAB", category=UserWarning)
        rgb = np.stack(list(pool.map(_lab_to_rgb_image, values)))
    return torch.from_numpy(np.moveaxis(rgb, -1, 1).copy()).to(lab.device)


def _lab_to_rgb_image(lab: np.ndarray) -> np.ndarray:
    """One ``(H, W, 3)`` Lab image → ``uint8`` RGB."""
    return np.round(color.lab2rgb(lab, channel_axis=-1) * 255).astype(np.uint8)


def normalize_lightness(lightness: Tensor) -> Tensor:
    """``L ∈ [0, 100]`` → ``(L − 50) / 50 ∈ [−1, 1]``."""
    return (lightness - L_CENTER) / L_SCALE


def normalize_ab(ab: Tensor) -> Tensor:
    """Lab units → network units: ``ab / AB_SCALE``."""
    return ab / AB_SCALE


def denormalize_ab(ab_n: Tensor) -> Tensor:
    """Network units → Lab units: ``ab_n · AB_SCALE``."""
    return ab_n * AB_SCALE


def dequantize_ab(ab: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``round(ab) + u − ½`` with ``u ~ U[0, 1)``: a point drawn uniformly from the unit bin of each value."""
    noise = torch.rand(ab.shape, generator=generator, dtype=ab.dtype, device=ab.device)
    return torch.round(ab) + noise - 0.5


def ab_bits_per_dim(nll_nats: Tensor, num_dims: int) -> Tensor:
    r"""``(NLL_nats + M · log AB_SCALE) / (M · ln 2)``: bits per ab dimension in integer Lab units.

    ``nll_nats`` is ``−log p(ab_n)`` of the normalised, dequantised ab per sample; ``num_dims`` is ``M``.

    Example:
        >>> ab_bits_per_dim(torch.tensor(0.0), num_dims=8)   # uniform density on [0, 1]^M in network units
        tensor(6.7814)
    """
    return (nll_nats + num_dims * math.log(AB_SCALE)) / (num_dims * math.log(2.0))
