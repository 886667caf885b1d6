r"""The element-wise maps of a coupling block: how the transformed half changes, given its subnet's output.

A :class:`~cinn.blocks.CouplingBlock` computes ``params = NN([x_a, c])`` and applies a :class:`CouplingMap` to
the other half, ``y_b = g(x_b; params)``. The map is an object the block is given (as zuko's couplings take
their univariate transform). Maps hold constants only, no parameters or buffers: a block's state dict is its
subnets'.

Every map is registered under one name, the snake case of its class name (:data:`COUPLING_MAPS`), and is
written as plain data — a *map spec* ``{"map": NAME, OPTION: VALUE, ...}`` — wherever it is chosen: the
builders' ``coupling=``, a config's ``model.coupling`` and the model spec a checkpoint stores. A new kind of
coupling is one frozen-dataclass subclass of :class:`CouplingMap` decorated with :func:`register_coupling_map`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from cinn.blocks._shapes import sum_per_sample


class CouplingMap(ABC):
    r"""An invertible element-wise map ``y = g(x; params)`` whose parameters a coupling's subnet computes.

    For a target ``x`` of shape ``(B, C, *spatial)``, ``params`` has shape ``(B, k·C, *spatial)`` with
    ``k = params_per_channel``. :meth:`forward` returns ``(g(x), log|det ∂g/∂x|)`` and :meth:`inverse`
    returns ``(g⁻¹(y), log|det ∂g⁻¹/∂y|)``, log-dets of shape ``(B,)``; neither modifies its inputs.
    """

    params_per_channel: ClassVar[int]

    @abstractmethod
    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """``(g(x; params), log|det ∂g/∂x|)``, the log-det of shape ``(B,)``."""

    @abstractmethod
    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """``(g⁻¹(y; params), log|det ∂g⁻¹/∂y|)``: at ``y = g(x)``, minus :meth:`forward`'s log-det."""


CouplingSpec = CouplingMap | str | Mapping[str, Any]
"""A coupling map as a builder or block takes it: a map object, a registered name (default options), or a map
spec ``{"map": NAME, OPTION: VALUE, ...}``."""

MapClass = TypeVar("MapClass", bound=type)

COUPLING_MAPS: dict[str, type[CouplingMap]] = {}
"""Every coupling map by name (see :func:`register_coupling_map`)."""


def register_coupling_map(cls: MapClass) -> MapClass:
    """Make the :class:`CouplingMap` subclass ``cls`` (a frozen dataclass whose fields are its options) usable by
    name in specs and configs: the snake case of its class name (``SoftClampAffine`` → ``"soft_clamp_affine"``).
    Returns ``cls``, so it works as a class decorator.

    Example:
        >>> @register_coupling_map
        ... @dataclass(frozen=True)
        ... class PlusOne(Additive):
        ...     "y = x + t + 1"
        ...     def forward(self, x, params):
        ...         return x + params + 1, x.new_zeros(x.shape[0])
        ...     def inverse(self, y, params):
        ...         return y - params - 1, y.new_zeros(y.shape[0])
        >>> coupling_map({"map": "plus_one"})
        PlusOne()
        >>> del COUPLING_MAPS["plus_one"]
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"a coupling map is a frozen dataclass whose fields are its options; {cls.__name__} is "
                        "not one")
    COUPLING_MAPS[re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()] = cls
    return cls


def map_name(transform: CouplingMap) -> str:
    """The registered name of a map object's class."""
    return next(name for name, cls in COUPLING_MAPS.items() if type(transform) is cls)


@register_coupling_map
@dataclass(frozen=True)
class Additive(CouplingMap):
    r"""The additive map of NICE and Glow: ``y = x + t`` with ``t = params``; ``log_det = 0``.

    Shapes: ``x``, ``params`` and ``y`` are ``(B, C, *spatial)``; the log-det is ``(B,)``.

    Example:
        >>> x, t = torch.randn(2, 3), torch.randn(2, 3)
        >>> y, log_det = Additive().forward(x, t)
        >>> torch.allclose(Additive().inverse(y, t)[0], x), log_det.tolist()
        (True, [0.0, 0.0])
    """

    params_per_channel: ClassVar[int] = 1

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return x + params, x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return y - params, y.new_zeros(y.shape[0])


@register_coupling_map
@dataclass(frozen=True)
class SigmoidAffine(CouplingMap):
    r"""Glow's affine map: ``y = (x + t) · s`` with ``s = m + (1 − m)·σ(h + 2)`` and ``[t, h] = params``.

    ``log_det = Σ log s`` over all but the batch axis (for ``m = 0``, Glow's form, as ``logsigmoid(h + 2)``,
    accurate where ``s`` underflows). The inverse is ``x = y / s − t``.

    The floor ``m = min_scale`` bounds the inverse: it amplifies rounding errors by at most ``1/m``. Glow's
    ``σ(h + 2)`` (``m = 0``) lets a trained model contract some inputs by 10⁻⁴ and more, and float32 inversion
    then fails on them (Behrmann et al. 2021, "Understanding and mitigating exploding inverses in invertible
    neural networks"; BENCHMARKS.md, "Trained models stay invertible"). A zero-initialised subnet
    (``t = h = 0``) makes the map the fixed scaling ``y = x · (m + (1 − m)·σ(2))``.

    Shapes: ``x`` and ``y`` are ``(B, C, *spatial)``; ``params`` is ``(B, 2C, *spatial)``, the shift ``t`` in
    its first ``C`` channels and the raw scale ``h`` in the last ``C``; the log-det is ``(B,)``.

    Example:
        >>> x, params = torch.randn(2, 3), torch.randn(2, 6)
        >>> y, log_det = SigmoidAffine(min_scale=0.5).forward(x, params)
        >>> x_back, log_det_rev = SigmoidAffine(min_scale=0.5).inverse(y, params)
        >>> torch.allclose(x_back, x, atol=1e-6), torch.allclose(log_det_rev, -log_det)
        (True, True)
    """

    min_scale: float = 0.0
    params_per_channel: ClassVar[int] = 2

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_scale < 1.0:
            raise ValueError(f"min_scale must be in [0, 1), got {self.min_scale}")

    def log_scale(self, h: Tensor) -> Tensor:
        """``log s = log(m + (1 − m)·σ(h + 2))``, element-wise."""
        if self.min_scale == 0.0:
            return F.logsigmoid(h + 2.0)
        return torch.log(torch.sigmoid(h + 2.0) * (1.0 - self.min_scale) + self.min_scale)

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        shift, h = params.chunk(2, dim=1)
        log_scale = self.log_scale(h)
        return (x + shift) * torch.exp(log_scale), sum_per_sample(log_scale)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        shift, h = params.chunk(2, dim=1)
        log_scale = self.log_scale(h)
        return y * torch.exp(-log_scale) - shift, -sum_per_sample(log_scale)


@register_coupling_map
@dataclass(frozen=True)
class SoftClampAffine(CouplingMap):
    r"""The cINN's affine map: ``y = x · exp(s) + t`` with ``s = clamp·(2/π)·atan(h/clamp)`` and
    ``[t, h] = params``.

    The soft clamp bounds the log-scale to ``(−clamp, clamp)`` while ``s ≈ h`` near 0, so a zero-initialised
    subnet makes the map the identity. ``log_det = Σ s`` over all but the batch axis; the inverse is
    ``x = (y − t) · exp(−s)``.

    Shapes: ``x`` and ``y`` are ``(B, C, *spatial)``; ``params`` is ``(B, 2C, *spatial)``, the shift ``t`` in
    its first ``C`` channels and the raw scale ``h`` in the last ``C``; the log-det is ``(B,)``.

    Example:
        >>> x, params = torch.randn(2, 3), torch.randn(2, 6)
        >>> y, log_det = SoftClampAffine(clamp=1.5).forward(x, params)
        >>> bool(log_det.abs().max() < 3 * 1.5)   # |s| < clamp in each of the 3 channels
        True
    """

    clamp: float = 1.5
    params_per_channel: ClassVar[int] = 2

    def __post_init__(self) -> None:
        if not self.clamp > 0:
            raise ValueError(f"clamp must be positive, got {self.clamp}")

    def log_scale(self, h: Tensor) -> Tensor:
        """``s = clamp·(2/π)·atan(h/clamp)``, element-wise."""
        return self.clamp * (2.0 / math.pi) * torch.atan(h / self.clamp)

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        shift, h = params.chunk(2, dim=1)
        log_scale = self.log_scale(h)
        return x * torch.exp(log_scale) + shift, sum_per_sample(log_scale)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        shift, h = params.chunk(2, dim=1)
        log_scale = self.log_scale(h)
        return (y - shift) * torch.exp(-log_scale), -sum_per_sample(log_scale)


def coupling_map(spec: CouplingSpec) -> CouplingMap:
    """The map a spec stands for: a :class:`CouplingMap` is itself, a name is that registered map with its
    default options, ``{"map": NAME, OPTION: VALUE, ...}`` is that map with those options. An unknown name or
    option, or an option out of range, is a :class:`ValueError` that says what is allowed.

    Example:
        >>> coupling_map({"map": "soft_clamp_affine", "clamp": 1.5}), coupling_map("additive")
        (SoftClampAffine(clamp=1.5), Additive())
    """
    if isinstance(spec, CouplingMap):
        return spec
    if isinstance(spec, str):
        spec = {"map": spec}
    if not isinstance(spec, Mapping) or not isinstance(spec.get("map"), str):
        raise ValueError(f"a coupling map is a name or {{'map': NAME, OPTION: VALUE, ...}}, got {str(spec)[:80]}")
    options = {key: value for key, value in spec.items() if key != "map"}
    cls = COUPLING_MAPS.get(spec["map"])
    if cls is None:
        raise ValueError(f"unknown coupling map {spec['map'][:80]!r}; known: {', '.join(sorted(COUPLING_MAPS))}")
    allowed = [field.name for field in dataclasses.fields(cls) if field.init]
    unknown = sorted(str(key)[:40] for key in set(options) - set(allowed))
    if unknown:
        takes = f"takes {', '.join(allowed)}" if allowed else "takes no options"
        raise ValueError(f"coupling map {spec['map']!r} {takes}, not {', '.join(unknown)}")
    try:
        return cls(**options)
    except (TypeError, ValueError) as error:
        raise ValueError(f"coupling map {spec['map']!r}: {error}") from None


def map_spec(transform: CouplingSpec) -> dict[str, Any]:
    """The map spec of a map given any way :func:`coupling_map` takes (plain data, for a model spec).

    Example:
        >>> map_spec(SigmoidAffine(min_scale=0.5))
        {'map': 'sigmoid_affine', 'min_scale': 0.5}
    """
    transform = coupling_map(transform)
    return {"map": map_name(transform), **dataclasses.asdict(transform)}
