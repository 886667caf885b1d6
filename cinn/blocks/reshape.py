"""Volume-preserving reshapes: 2x2 squeeze (space-to-depth) and Haar wavelet downsampling."""

from __future__ import annotations

import torch.nn.functional as F
from FrEIA.modules import HaarDownsampling as FrEIAHaarDownsampling
from FrEIA.modules import InvertibleModule
from torch import Tensor

from cinn.blocks._shapes import exact_precision, per_sample


def _halved(shape: tuple[int, ...], block: str) -> tuple[int, int, int]:
    channels, height, width = shape
    if height % 2 or width % 2:
        raise ValueError(f"{block} needs an even height and width, got {height}x{width}")
    return channels * 4, height // 2, width // 2


class Squeeze(InvertibleModule):
    r"""2x2 space-to-depth: ``(B, C, H, W) → (B, 4C, H/2, W/2)``, a permutation, ``log_det = 0``.

    Output channel ``4c + 2i + j`` holds input channel ``c`` at offset ``(i, j)`` of each 2x2 cell
    (Glow's ordering, ``torch.nn.functional.pixel_unshuffle``).

    Example:
        >>> import torch
        >>> (y,), log_det = Squeeze([(1, 4, 4)])([torch.arange(16.0).view(1, 1, 4, 4)])
        >>> y.shape, log_det
        (torch.Size([1, 4, 2, 2]), tensor([0.]))
        >>> y[0, :, 0, 0]   # the top-left 2x2 cell [[0, 1], [4, 5]] of the input
        tensor([0., 1., 4., 5.])
    """

    def __init__(self, dims_in: list[tuple[int, ...]], dims_c: list[tuple[int, ...]] | None = None):
        super().__init__(dims_in, dims_c)
        self.out_shape = _halved(dims_in[0], "Squeeze")

    def forward(self, x_or_z: list[Tensor], c: list[Tensor] | None = None, rev: bool = False,
                jac: bool = True) -> tuple[tuple[Tensor], Tensor]:
        x = x_or_z[0]
        out = F.pixel_shuffle(x, 2) if rev else F.pixel_unshuffle(x, 2)
        return (out,), per_sample(0.0, x)

    def output_dims(self, input_dims: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return [_halved(input_dims[0], "Squeeze")]


class HaarDownsampling(FrEIAHaarDownsampling):
    r"""Haar wavelet downsampling ``(B, C, H, W) → (B, 4C, H/2, W/2)`` (FrEIA's, with its defects fixed).

    Each channel's 2x2 cells become (average, vertical, horizontal, diagonal) coefficients, each
    scaled by ``rebalance/2``; ``log_det = C·H·W·log(rebalance)`` (0 for the default orthonormal
    transform), shape ``(B,)``.

    Fixed against FrEIA 0.2: its reverse scales the caller's tensor in place; its log-det is a
    Python float rather than one value per sample; its constant wavelet filter is registered as
    a (non-trainable) parameter, so it shows up in ``parameters()`` and optimisers. Here the
    filter is a buffer and nothing is modified in place.

    Example:
        >>> import torch
        >>> (y,), log_det = HaarDownsampling([(1, 2, 2)])([torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])])
        >>> y.shape, log_det
        (torch.Size([1, 4, 1, 1]), tensor([0.]))
        >>> y.flatten()   # (average, vertical, horizontal, diagonal) of the cell [[1, 2], [3, 4]]
        tensor([ 5., -1., -2.,  0.])
    """

    def __init__(self, dims_in: list[tuple[int, ...]], dims_c: list[tuple[int, ...]] | None = None,
                 order_by_wavelet: bool = False, rebalance: float = 1.0):
        _halved(dims_in[0], "HaarDownsampling")
        super().__init__(dims_in, dims_c, order_by_wavelet=order_by_wavelet, rebalance=rebalance)
        weights = self.haar_weights.data
        del self.haar_weights
        self.register_buffer("haar_weights", weights)
        if self.permute:
            perm, perm_inv = self.perm, self.perm_inv
            del self.perm, self.perm_inv
            self.register_buffer("perm", perm)
            self.register_buffer("perm_inv", perm_inv)

    def forward(self, x_or_z: list[Tensor], c: list[Tensor] | None = None, rev: bool = False,
                jac: bool = True) -> tuple[tuple[Tensor], Tensor]:
        x = x_or_z[0]
        elements = x[0].numel()
        with exact_precision(x):
            return (self._transform(x, rev),), per_sample(elements * (self.jac_rev if rev else self.jac_fwd), x)

    def _transform(self, x: Tensor, rev: bool) -> Tensor:
        """Wavelet coefficients of ``x`` (forward) or the image with coefficients ``x`` (reverse)."""
        if not rev:
            out = F.conv2d(x, self.haar_weights.to(x.dtype), stride=2, groups=self.in_channels)
            if self.permute:
                out = out[:, self.perm]
            return out * self.fac_fwd
        coefficients = x[:, self.perm_inv] if self.permute else x
        return F.conv_transpose2d(coefficients * self.fac_rev, self.haar_weights.to(x.dtype), stride=2,
                                  groups=self.in_channels)
