r"""CIE Lab conventions for colourisation: conversion, normalisation, and the ab likelihood.

A photo is split into lightness ``L ∈ [0, 100]`` (the condition) and chroma ``(a, b)`` (what a
colourisation model predicts), with the D65 sRGB ↔ Lab conversion (RGB → Lab in torch, on the batch's device;
Lab → RGB by scikit-image). Networks see

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


# sRGB (D65) → CIE XYZ, and the D65 white point (CIE 1931 2° observer): the constants scikit-image's rgb2lab uses.
XYZ_FROM_RGB = ((0.412453, 0.357580, 0.180423),
                (0.212671, 0.715160, 0.072169),
                (0.019334, 0.119193, 0.950227))
D65_WHITE = (0.95047, 1.0, 1.08883)


def rgb_to_lab(rgb: Tensor) -> Tensor:
    r"""``(B, 3, H, W)`` RGB (``uint8``, or float in ``[0, 1]``) → ``(B, 3, H, W)`` float32 Lab (D65), computed
    in torch on ``rgb``'s device, so a GPU batch never visits the host.

    sRGB is linearised (``((v + 0.055) / 1.055)^2.4`` above 0.04045, ``v / 12.92`` below), mapped to XYZ
    (:data:`XYZ_FROM_RGB`), divided by the white point (:data:`D65_WHITE`), and
    ``f(t) = t^{1/3}`` above 0.008856, ``7.787 t + 16/116`` below, gives ``L = 116 f(Y) − 16``,
    ``a = 500 (f(X) − f(Y))``, ``b = 200 (f(Y) − f(Z))`` — scikit-image's ``rgb2lab`` to within 1e-3 Lab units
    (``tests/test_color.py``).

    Example:
        >>> white = rgb_to_lab(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8))
        >>> white.shape, torch.allclose(white[0, :, 0, 0], torch.tensor([100.0, 0.0, 0.0]), atol=0.01)
        (torch.Size([1, 3, 2, 2]), True)
        >>> rgb_to_lab(torch.tensor([255, 0, 0], dtype=torch.uint8).view(1, 3, 1, 1)).flatten().round()   # red
        tensor([53., 80., 67.])
    """
    if rgb.dtype == torch.uint8:  # 256 values: look the linearisation up
        table = _srgb_to_linear(torch.arange(256, dtype=torch.float64, device=rgb.device) / 255).float()
        linear = table[rgb.long()]
    else:
        linear = _srgb_to_linear(rgb.float())
    matrix = torch.tensor(XYZ_FROM_RGB, device=rgb.device) / torch.tensor(D65_WHITE, device=rgb.device)[:, None]
    xyz = torch.einsum("ij,bjhw->bihw", matrix, linear)
    f = torch.where(xyz > 0.008856, xyz.clamp_min(0.008856) ** (1 / 3), 7.787 * xyz + 16 / 116)
    fx, fy, fz = f.unbind(1)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=1).contiguous()


def _srgb_to_linear(values: Tensor) -> Tensor:
    return torch.where(values > 0.04045, ((values + 0.055) / 1.055) ** 2.4, values / 12.92)


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
