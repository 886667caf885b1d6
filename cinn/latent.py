"""Latent-space tools: flattening multi-scale latents, interpolation, style transfer, PCA.

A flow maps ``x`` (with condition ``c``) to latents ``(ε_1, …, ε_K)``, one tensor per scale,
standard normal under the model. In a conditional INN the latent holds what the condition does not
explain (for class-conditional digits: the *style* — slant, stroke width); these tools work on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import prod

import torch
from torch import Tensor

from cinn.models.flow import Condition, Flow


def flatten_latents(latents: Sequence[Tensor]) -> Tensor:
    """Concatenate multi-scale latents ``[(B, *s_k)]`` into one ``(B, D)`` matrix, ``D = Σ_k prod(s_k)``."""
    return torch.cat([z.flatten(1) for z in latents], dim=1)


def unflatten_latents(flat: Tensor, shapes: Sequence[Sequence[int]]) -> list[Tensor]:
    """Inverse of :func:`flatten_latents` for latent shapes ``shapes`` (e.g. ``Flow.latent_shapes``)."""
    sizes = [prod(shape) for shape in shapes]
    if flat.dim() != 2 or flat.shape[1] != sum(sizes):
        raise ValueError(f"expected a (B, {sum(sizes)}) latent matrix, got {tuple(flat.shape)}")
    return [part.reshape(-1, *shape) for part, shape in zip(flat.split(sizes, dim=1), shapes, strict=True)]


def interpolate_latents(start: list[Tensor], end: list[Tensor], steps: int) -> list[Tensor]:
    """Linear paths between two multi-scale latents (each tensor batch 1) in ``steps`` points, ends included.

    Returns one tensor per scale with batch ``steps``: row ``i`` is ``(1 − t_i)·start + t_i·end``
    with ``t_i = i / (steps − 1)``.

    Example:
        >>> from cinn.models import build_glow
        >>> model, x = build_glow((1, 8, 8), n_levels=2, steps_per_level=1), torch.rand(2, 1, 8, 8)
        >>> path = interpolate_latents(model.encode(x[:1]), model.encode(x[1:2]), steps=8)
        >>> frames = model.decode(path)
        >>> frames.shape, torch.allclose(frames[[0, -1]], x, atol=1e-5)   # 8 frames from x[0] to x[1]
        (torch.Size([8, 1, 8, 8]), True)
    """
    if steps < 2:
        raise ValueError(f"an interpolation needs at least 2 steps, got {steps}")
    weights = torch.linspace(0, 1, steps, dtype=start[0].dtype, device=start[0].device)
    return [torch.lerp(a.expand(steps, *a.shape[1:]), b.expand(steps, *b.shape[1:]),
                       weights.view(-1, *([1] * (a.dim() - 1))))
            for a, b in zip(start, end, strict=True)]


@torch.no_grad()
def transfer_style(model: Flow, x: Tensor, c: Condition, targets: Sequence[Condition]) -> Tensor:
    """Encode ``x`` under its own condition ``c``, then decode each latent under every target condition.

    ``z = f(x; c)`` keeps what ``c`` does not explain (the style); ``f⁻¹(z; t)`` redraws it under
    condition ``t``. Returns ``(B, T, *x.shape[1:])``: row ``b`` is input ``b`` under each of the
    ``T`` targets (each target must hold a condition for a batch of ``B``).

    Example:
        >>> from cinn.models import build_cinn_fc
        >>> model = build_cinn_fc((1, 28, 28), 10, n_blocks=2, hidden_features=16)
        >>> x, labels = torch.rand(4, 1, 28, 28), torch.tensor([3, 1, 4, 1])
        >>> digits = transfer_style(model, x, labels, [torch.full_like(labels, k) for k in range(10)])
        >>> digits.shape   # (B, 10, 1, 28, 28): every input digit written as 0, 1, ..., 9
        torch.Size([4, 10, 1, 28, 28])
    """
    latents = model.encode(x, c)
    return torch.stack([model.decode(latents, target) for target in targets], dim=1)


@dataclass
class LatentPCA:
    r"""Principal axes of flattened latents ``Z (N, D)``: ``Z ≈ mean + (W · std) @ components``.

    ``components (k, D)`` are orthonormal rows ordered by explained variance ``std² (k,)``;
    :meth:`whiten` gives coordinates ``W = (Z − mean) @ componentsᵀ / std`` with unit variance
    along each axis, and :meth:`walk` returns latents at chosen whitened coordinates along one axis.

    Example:
        >>> from cinn.models import build_cinn_fc
        >>> model = build_cinn_fc((1, 28, 28), 10, n_blocks=2, hidden_features=16)
        >>> x, labels = torch.rand(20, 1, 28, 28), torch.arange(20) % 10
        >>> pca = LatentPCA.fit(flatten_latents(model.encode(x, labels)), k=8)
        >>> path = pca.walk(axis=0, values=torch.linspace(-2, 2, 9))     # (9, D)
        >>> sevens = model.decode(unflatten_latents(path, model.latent_shapes), torch.full((9,), 7))
        >>> pca.components.shape, path.shape, sevens.shape
        (torch.Size([8, 784]), torch.Size([9, 784]), torch.Size([9, 1, 28, 28]))
    """

    mean: Tensor
    components: Tensor
    std: Tensor

    @classmethod
    def fit(cls, latents: Tensor, k: int | None = None) -> LatentPCA:
        """Fit on ``latents (N, D)`` (N ≥ 2), keeping the top ``k`` axes (default all ``min(N − 1, D)``)."""
        if latents.dim() != 2 or latents.shape[0] < 2:
            raise ValueError(f"PCA needs a (N, D) matrix with N >= 2, got {tuple(latents.shape)}")
        data = latents.double()
        mean = data.mean(0)
        _, singular_values, right = torch.linalg.svd(data - mean, full_matrices=False)
        keep = min(k or len(singular_values), latents.shape[0] - 1, len(singular_values))
        std = singular_values[:keep] / (latents.shape[0] - 1) ** 0.5
        return cls(mean.to(latents.dtype), right[:keep].to(latents.dtype), std.to(latents.dtype))

    def whiten(self, latents: Tensor) -> Tensor:
        """Whitened coordinates ``(N, k)`` of ``latents (N, D)``."""
        return (latents - self.mean) @ self.components.T / self.std

    def unwhiten(self, coordinates: Tensor) -> Tensor:
        """Latents ``(N, D)`` at whitened coordinates ``(N, k)`` (the part outside the k axes is the mean's)."""
        return self.mean + (coordinates * self.std) @ self.components

    def walk(self, axis: int, values: Tensor, origin: Tensor | None = None) -> Tensor:
        """Latents ``(len(values), D)`` at ``origin + v · std[axis] · components[axis]`` for each ``v``.

        ``origin`` defaults to the mean; ``values`` are in standard deviations along the axis.
        """
        if not 0 <= axis < len(self.std):
            raise ValueError(f"axis {axis} out of range: this PCA keeps {len(self.std)} axes")
        start = self.mean if origin is None else origin
        return start + values.to(self.std.dtype)[:, None] * (self.std[axis] * self.components[axis])
