"""Latent-space tools: flattening multi-scale latents, interpolation, style transfer, PCA, attribute directions.

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


def _condition_rows(condition: Condition, rows: slice | Tensor) -> Condition:
    """The rows ``rows`` of a per-sample condition (a tensor or a list of them), None for none."""
    if condition is None:
        return None
    if isinstance(condition, Tensor):
        return condition[rows]
    return [part[rows] for part in condition]


@dataclass
class AttributeDirection:
    r"""The latent direction of a binary attribute (Kingma & Dhariwal 2018, Glow, section 5.3 and Figure 6).

    For the ``P`` images with the attribute and the ``N`` without, per latent scale ``k``:

        ``d_k = (1/P)·Σ_{i with} ε_k(x_i) − (1/N)·Σ_{i without} ε_k(x_i)``

    (means accumulated in float64). ``direction``, ``mean_with`` and ``mean_without`` hold one tensor per
    scale, each of the latent's shape without batch (:attr:`~cinn.models.Flow.latent_shapes`), so
    ``mean_without + d = mean_with`` on every scale; ``norm`` is ``‖d‖ = √(Σ_k ‖d_k‖²)``, to be read
    against ``√D``, the typical norm of a standard-normal latent of ``D`` dimensions.
    """

    direction: list[Tensor]
    mean_with: list[Tensor]
    mean_without: list[Tensor]
    count_with: int
    count_without: int

    @property
    def norm(self) -> float:
        """``‖d‖ = √(Σ_k ‖d_k‖²)`` over every scale."""
        return float(sum(d.double().pow(2).sum() for d in self.direction) ** 0.5)


@torch.no_grad()
def attribute_direction(model: Flow, x: Tensor, labels: Tensor, *, condition: Condition = None,
                        batch_size: int = 256) -> AttributeDirection:
    """The mean latent of the images with an attribute minus the mean latent of those without, every scale.

    ``x`` ``(N, *model.input_shape)`` are model inputs, ``labels`` ``bool (N,)`` says which have the
    attribute, ``condition`` is the per-image condition of a conditional model (batch ``N``). Images are
    encoded ``batch_size`` at a time without a graph. Either group empty is a :class:`ValueError`.
    Returns an :class:`AttributeDirection`: ``direction[k]`` has shape ``model.latent_shapes[k]``.

    Example:
        >>> from cinn.models import build_glow
        >>> model = build_glow((1, 8, 8), n_levels=2, steps_per_level=1)
        >>> x, glasses = torch.rand(12, 1, 8, 8), torch.arange(12) % 3 == 0     # 4 images with, 8 without
        >>> found = attribute_direction(model, x, glasses, batch_size=5)
        >>> [tuple(d.shape) for d in found.direction], found.count_with, found.count_without
        ([(2, 4, 4), (8, 2, 2)], 4, 8)
        >>> moved = move_latents([m[None] for m in found.mean_without], found.direction, [1.0])
        >>> all(torch.allclose(a[0], b, atol=1e-6) for a, b in zip(moved, found.mean_with))   # mean + d = mean
        True
    """
    if labels.dtype != torch.bool or labels.shape != x.shape[:1]:
        raise ValueError(f"labels must be a bool tensor ({len(x)},) saying which images have the attribute, got "
                         f"{labels.dtype} {tuple(labels.shape)}")
    count_with = int(labels.sum())
    count_without = len(labels) - count_with
    if not count_with or not count_without:
        raise ValueError(f"an attribute direction needs images with and without the attribute, got {count_with} "
                         f"with and {count_without} without")
    sums_with: list[Tensor] = []
    sums_without: list[Tensor] = []
    for start in range(0, len(x), batch_size):
        rows = slice(start, start + batch_size)
        latents = model.encode(x[rows], _condition_rows(condition, rows))
        has = labels[rows].to(latents[0].device)
        if not sums_with:
            sums_with = [z.new_zeros(z.shape[1:], dtype=torch.float64) for z in latents]
            sums_without = [z.new_zeros(z.shape[1:], dtype=torch.float64) for z in latents]
        for k, z in enumerate(latents):
            sums_with[k] += z[has].double().sum(0)
            sums_without[k] += z[~has].double().sum(0)
    dtype = latents[0].dtype
    mean_with = [total / count_with for total in sums_with]
    mean_without = [total / count_without for total in sums_without]
    return AttributeDirection([(a - b).to(dtype) for a, b in zip(mean_with, mean_without, strict=True)],
                              [m.to(dtype) for m in mean_with], [m.to(dtype) for m in mean_without],
                              count_with, count_without)


def move_latents(latents: Sequence[Tensor], direction: Sequence[Tensor], scales: Sequence[float]) -> list[Tensor]:
    """Every latent moved by every scale along ``direction``: ``ε_k + s·d_k``, one tensor per scale ``k``.

    ``latents[k]`` ``(B, *s_k)`` and ``direction[k]`` ``(*s_k)`` give ``(B·S, *s_k)`` for ``S`` scales, row
    ``b·S + j`` being latent ``b`` moved by ``scales[j]`` (``s = 0`` leaves it where it is).

    Example:
        >>> moved = move_latents([torch.zeros(2, 3)], [torch.ones(3)], [-1.0, 0.0, 2.0])
        >>> moved[0][:, 0].tolist()                       # latent 0 at -1, 0, 2, then latent 1
        [-1.0, 0.0, 2.0, -1.0, 0.0, 2.0]
    """
    if len(direction) != len(latents):
        raise ValueError(f"the direction has {len(direction)} scales, the latents {len(latents)}")
    moved = []
    for z, d in zip(latents, direction, strict=True):
        if d.shape != z.shape[1:]:
            raise ValueError(f"a direction of shape {tuple(d.shape)} cannot move latents of shape "
                             f"{tuple(z.shape[1:])}")
        steps = torch.as_tensor(scales, dtype=z.dtype, device=z.device).view(1, -1, *([1] * d.dim()))
        moved.append((z[:, None] + steps * d.to(z)).flatten(0, 1))
    return moved


@torch.no_grad()
def manipulate(model: Flow, x: Tensor, direction: Sequence[Tensor], scales: Sequence[float], *,
               condition: Condition = None) -> Tensor:
    """Encode ``x``, move its latents along ``direction`` by each of ``scales`` and decode:
    ``f⁻¹(f(x; c) + s·d; c)`` (:func:`move_latents`; Glow's semantic manipulation).

    With ``d`` an :class:`AttributeDirection`'s ``direction``, positive scales add the attribute and negative
    ones remove it; ``s = 0`` reconstructs ``x``. ``condition`` is ``x``'s own (batch ``B``), kept for every
    scale. Returns ``(B, S, *x.shape[1:])``: row ``b`` is image ``b`` at each of the ``S`` scales.

    Example:
        >>> from cinn.models import build_glow
        >>> model = build_glow((1, 8, 8), n_levels=2, steps_per_level=1)
        >>> x, glasses = torch.rand(12, 1, 8, 8), torch.arange(12) % 3 == 0
        >>> found = attribute_direction(model, x, glasses)
        >>> images = manipulate(model, x[~glasses][:3], found.direction, [-1.0, 0.0, 1.0, 2.0])
        >>> images.shape, torch.allclose(images[:, 1], x[~glasses][:3], atol=1e-5)   # scale 0 reconstructs
        (torch.Size([3, 4, 1, 8, 8]), True)
    """
    moved = move_latents(model.encode(x, condition), direction, scales)
    rows = torch.arange(len(x), device=x.device).repeat_interleave(len(scales))
    return model.decode(moved, _condition_rows(condition, rows)).view(len(x), len(scales), *x.shape[1:])
