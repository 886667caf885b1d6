r"""Learned Gaussian priors written as invertible standardisations.

A latent ``z ~ N(μ, σ²)`` is the same model as ``ε = (z − μ)/σ ~ N(0, I)`` with the change of
variables ``log_det = −Σ log σ``. So a learned prior (Glow's split prior, learned top prior,
class-conditional prior) is an invertible block that outputs ``ε``, and every model in cinn
ends in standard-normal latents: ``log p(x) = Σ log N(ε; 0, I) + Σ log_det``. Sampling at
temperature ``T`` draws ``ε ~ N(0, T²I)``, i.e. ``z ~ N(μ, T²σ²)``, as in Glow; ``T = 0`` gives
the prior mean.
"""

from __future__ import annotations

import torch
from FrEIA.modules import InvertibleModule
from torch import Tensor, nn

from cinn.blocks._shapes import sum_per_sample
from cinn.blocks.subnets import ZeroConv2d, zero_linear


def _standardise(z: Tensor, mean: Tensor, log_scale: Tensor, rev: bool) -> tuple[Tensor, Tensor]:
    """``ε = (z − μ)·exp(−log σ)`` (forward) or ``z = ε·exp(log σ) + μ`` (reverse), with log-det."""
    log_det = sum_per_sample(log_scale.expand_as(z))
    if rev:
        return z * torch.exp(log_scale) + mean, log_det
    return (z - mean) * torch.exp(-log_scale), -log_det


def _class_term(dims_c: list[tuple[int, ...]], out_channels: int) -> nn.Linear | None:
    """Zero-initialised map from a one-hot class vector to per-channel ``[μ, log σ]`` offsets."""
    if not dims_c:
        return None
    if len(dims_c) != 1 or len(dims_c[0]) != 1:
        raise ValueError(f"a prior takes one flat condition (a one-hot class vector), got {dims_c}")
    return zero_linear(dims_c[0][0], 2 * out_channels)


def _add_class_term(params: Tensor, layer: nn.Linear | None, c: list[Tensor] | None,
                    spatial_dims: int) -> Tensor:
    if layer is None:
        return params
    offset = layer(c[0]).to(params.dtype)
    return params + offset.view(*offset.shape, *([1] * spatial_dims))


class Split(InvertibleModule):
    r"""Split off half the channels into the latent space, with a learned conditional prior.

    ``[x] → [x_keep, ε]`` with ``x_keep = x[:, :C_keep]``, ``x_out = x[:, C_keep:]`` and
    ``ε = (x_out − μ(x_keep, c)) · exp(−log σ(x_keep, c))``: ``μ, log σ`` come from a
    zero-initialised 3x3 conv (linear layer for flat inputs) on ``x_keep``, plus a per-channel
    term from an optional one-hot class condition ``c`` (shape ``(B, K)``). ``log_det = −Σ log σ``,
    shape ``(B,)``. With ``learned_prior=False`` this is a plain split (``ε = x_out``, as in the
    cINN paper). ``C_keep = C // 2``.

    Shapes: ``(B, C, H, W)`` → ``(B, C_keep, H, W), (B, C − C_keep, H, W)`` (or flat ``(B, C)``).

    Example:
        >>> split = Split([(8, 4, 4)])
        >>> (kept, eps), log_det = split([torch.randn(2, 8, 4, 4)])
        >>> (x,), _ = split([kept, eps], rev=True)
    """

    def __init__(self, dims_in: list[tuple[int, ...]], dims_c: list[tuple[int, ...]] | None = None,
                 learned_prior: bool = True):
        super().__init__(dims_in, dims_c)
        shape = tuple(dims_in[0])
        self.keep_channels = shape[0] // 2
        out_channels = shape[0] - self.keep_channels
        if self.keep_channels < 1:
            raise ValueError(f"cannot split a tensor with {shape[0]} channel(s)")
        self.spatial_dims = len(shape) - 1
        self.prior: nn.Module | None = None
        if learned_prior:
            self.prior = (ZeroConv2d(self.keep_channels, 2 * out_channels) if self.spatial_dims == 2
                          else zero_linear(self.keep_channels, 2 * out_channels))
        elif self.dims_c:
            raise ValueError("a class condition needs learned_prior=True")
        self.class_term = _class_term(self.dims_c, out_channels)

    def forward(self, x_or_z: list[Tensor], c: list[Tensor] | None = None, rev: bool = False,
                jac: bool = True) -> tuple[tuple[Tensor, ...], Tensor]:
        if rev:
            kept, eps = x_or_z
        else:
            kept, eps = torch.split(x_or_z[0], [self.keep_channels, x_or_z[0].shape[1] - self.keep_channels],
                                    dim=1)
        if self.prior is None:
            out, log_det = eps, kept.new_zeros(kept.shape[0])
        else:
            params = _add_class_term(self.prior(kept).to(kept.dtype), self.class_term, c, self.spatial_dims)
            mean, log_scale = params.chunk(2, dim=1)
            out, log_det = _standardise(eps, mean, log_scale, rev)
        if rev:
            return (torch.cat([kept, out], dim=1),), log_det
        return (kept, out), log_det

    def output_dims(self, input_dims: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        channels, *spatial = input_dims[0]
        return [(self.keep_channels, *spatial), (channels - self.keep_channels, *spatial)]


class LearnedPrior(InvertibleModule):
    r"""Learned top prior ``z ~ N(μ, σ²)`` with one ``μ, log σ`` per element, as an invertible map.

    ``ε = (z − μ) · exp(−log σ)``; ``μ`` and ``log σ`` are learned tensors of the input's sample
    shape, zero-initialised (so the block starts as the identity), plus a per-channel term from
    an optional one-hot class condition ``c`` of shape ``(B, K)`` (Glow's ``ycond``).
    ``log_det = −Σ log σ``, shape ``(B,)``.

    Example:
        >>> prior = LearnedPrior([(48, 4, 4)], [(10,)])
        >>> y = torch.nn.functional.one_hot(torch.tensor([3, 7]), 10).float()
        >>> (eps,), log_det = prior([torch.randn(2, 48, 4, 4)], c=[y])
    """

    def __init__(self, dims_in: list[tuple[int, ...]], dims_c: list[tuple[int, ...]] | None = None,
                 learn_top: bool = True):
        super().__init__(dims_in, dims_c)
        shape = tuple(dims_in[0])
        self.spatial_dims = len(shape) - 1
        self.mean = nn.Parameter(torch.zeros(shape)) if learn_top else None
        self.log_scale = nn.Parameter(torch.zeros(shape)) if learn_top else None
        self.class_term = _class_term(self.dims_c, shape[0])
        if not learn_top and self.class_term is None:
            raise ValueError("LearnedPrior with learn_top=False and no class condition is the identity; "
                             "leave it out instead")

    def forward(self, x_or_z: list[Tensor], c: list[Tensor] | None = None, rev: bool = False,
                jac: bool = True) -> tuple[tuple[Tensor], Tensor]:
        z = x_or_z[0]
        params = z.new_zeros((1, 2 * z.shape[1]) + (1,) * self.spatial_dims)
        if self.mean is not None:
            params = params + torch.cat([self.mean, self.log_scale])[None]
        params = _add_class_term(params, self.class_term, c, self.spatial_dims)
        mean, log_scale = params.chunk(2, dim=1)
        out, log_det = _standardise(z, mean, log_scale, rev)
        return (out,), log_det

    def output_dims(self, input_dims: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return input_dims
