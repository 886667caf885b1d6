"""Coupling blocks: one half of the channels transformed element-wise given the other half and a condition."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from FrEIA.modules import InvertibleModule
from torch import Tensor, nn

from cinn.blocks.coupling_maps import CouplingSpec, coupling_map
from cinn.blocks.subnets import SubnetConstructor


class CouplingBlock(InvertibleModule):
    r"""Coupling block: split channels ``x = [x_a, x_b]`` and transform ``x_b`` given ``(x_a, c)``.

    With ``params = NN([x_a, c])`` (the condition tensors concatenated on the channel axis) and an
    element-wise map ``g`` (a :class:`~cinn.blocks.coupling_maps.CouplingMap`),

        ``y_b = g(x_b; params)``,  ``y_a = x_a``,  ``log_det = log|det ∂g/∂x_b|``  (shape ``(B,)``).

    ``transform`` is the map: an object, a registered name, or a map spec ``{"map": NAME, OPTION: VALUE}``
    (:func:`~cinn.blocks.coupling_maps.coupling_map`), for example

    * ``"additive"`` (:class:`~cinn.blocks.coupling_maps.Additive`): ``y_b = x_b + t``, ``log_det = 0``
    * ``{"map": "sigmoid_affine", "min_scale": m}`` (:class:`~cinn.blocks.coupling_maps.SigmoidAffine`):
      ``y_b = (x_b + t) · s`` with ``s = m + (1 − m)·σ(h + 2)`` (Glow: ``m = 0``), ``log_det = Σ log s``
    * ``{"map": "soft_clamp_affine", "clamp": a}`` (:class:`~cinn.blocks.coupling_maps.SoftClampAffine`):
      ``y_b = x_b · exp(s) + t`` with ``s = a·(2/π)·atan(h/a)`` (cINN), ``log_det = Σ s``

    where ``[t, h] = params``; the subnet has ``params_per_channel · C_b`` output channels. With
    ``two_sided=True`` a second subnet then transforms ``x_a`` given the new ``y_b`` the same way (FrEIA's
    ``GLOWCouplingBlock`` layout, used by the cINN paper), so every channel changes in one block.

    The subnets' last layers are zero-initialised (see :mod:`cinn.blocks.subnets`), so additive
    and soft-clamp blocks start as the identity; the sigmoid form starts as the fixed scaling
    ``y_b = x_b · σ(2)``, as in Glow. The block also runs its own backward step for backprop by inversion
    (:meth:`invert_and_backpropagate`, the protocol
    :class:`~cinn.models.inverted_backprop.SupportsInvertedBackprop`).

    Shapes: ``x`` is ``(B, C, H, W)`` with conditions ``(B, C_c, H, W)`` for conv subnets, or
    ``(B, C)`` with conditions ``(B, C_c)`` for fully connected subnets; ``C_a = C // 2``.

    Example:
        >>> from cinn.blocks.coupling_maps import SoftClampAffine
        >>> from cinn.blocks.subnets import conv_subnet
        >>> block = CouplingBlock([(4, 8, 8)], [(3, 8, 8)], subnet_constructor=conv_subnet(32),
        ...                       transform=SoftClampAffine(clamp=1.5))
        >>> (y,), log_det = block([torch.randn(2, 4, 8, 8)], c=[torch.randn(2, 3, 8, 8)])
        >>> tuple(y.shape), tuple(log_det.shape)
        ((2, 4, 8, 8), (2,))
    """

    def __init__(self, dims_in: list[tuple[int, ...]], dims_c: list[tuple[int, ...]] | None = None, *,
                 subnet_constructor: SubnetConstructor,
                 transform: CouplingSpec = "sigmoid_affine",
                 two_sided: bool = False):
        super().__init__(dims_in, dims_c)
        self.transform = coupling_map(transform)
        channels = dims_in[0][0]
        if channels < 2:
            raise ValueError(f"a coupling block needs at least 2 channels to split, got {channels}; "
                             "squeeze or Haar-downsample first")
        for shape in self.dims_c:
            if tuple(shape[1:]) != tuple(dims_in[0][1:]):
                raise ValueError(f"condition shape {tuple(shape)} does not match the input's spatial "
                                 f"shape {tuple(dims_in[0][1:])}")
        self.split_sizes = (channels // 2, channels - channels // 2)
        condition_channels = sum(shape[0] for shape in self.dims_c)
        factor = self.transform.params_per_channel
        size_a, size_b = self.split_sizes
        self.subnet_b = subnet_constructor(size_a + condition_channels, factor * size_b)
        self.subnet_a = subnet_constructor(size_b + condition_channels, factor * size_a) if two_sided else None

    def extra_repr(self) -> str:
        return f"transform={self.transform!r}, two_sided={self.subnet_a is not None}"

    def _subnet_output(self, subnet: nn.Module, given: Tensor, conditions: Sequence[Tensor]) -> Tensor:
        """``NN([given, c])`` in ``given.dtype``: under bf16 autocast the subnet runs in bfloat16, while the
        scales, shifts and log-det are computed from its output in full precision."""
        return subnet(torch.cat([given, *conditions], dim=1) if conditions else given).to(given.dtype)

    def _couple(self, subnet: nn.Module, given: Tensor, target: Tensor, conditions: list[Tensor],
                rev: bool) -> tuple[Tensor, Tensor]:
        """Transform ``target`` with parameters computed from ``given``; return it and its log-det."""
        params = self._subnet_output(subnet, given, conditions)
        return self.transform.inverse(target, params) if rev else self.transform.forward(target, params)

    def _invert_half(self, subnet: nn.Module, given: Tensor, target_out: Tensor, conditions: list[Tensor],
                     grad_target_out: Tensor, grad_log_det: Tensor) -> tuple[Tensor, list[Tensor | None]]:
        """For ``target_out = g(target_in; subnet([given, c]))``: reconstruct ``target_in`` and return it with
        ``∂L/∂(target_in, given, conditions…, subnet parameters…)``, running the subnet once."""
        given = given.detach().requires_grad_()
        conditions = [c.detach().requires_grad_() for c in conditions]
        with torch.enable_grad():
            params = self._subnet_output(subnet, given, conditions)
            with torch.no_grad():
                target_in = self.transform.inverse(target_out, params)[0]
            target_in.requires_grad_()
            out, log_det = self.transform.forward(target_in, params)
        outputs, grads = [out], [grad_target_out]
        if log_det.requires_grad:
            outputs.append(log_det)
            grads.append(grad_log_det)
        wrt = [target_in, given, *conditions, *subnet.parameters()]
        return target_in.detach(), list(torch.autograd.grad(outputs, wrt, grads, allow_unused=True))

    def invert_and_backpropagate(self, y: Tensor, conditions: list[Tensor], grad_y: Tensor, grad_log_det: Tensor
                                 ) -> tuple[Tensor, Tensor, list[Tensor | None], list[Tensor | None]]:
        """Backprop by inversion for this block (see :mod:`cinn.models.inverted_backprop`): from the output
        ``y`` and ``∂L/∂y``, ``∂L/∂log_det``, return the input ``x`` and ``∂L/∂x``, ``∂L/∂c`` (one per condition
        tensor) and ``∂L/∂θ`` (aligned with ``self.parameters()``). Each subnet runs once with a graph, where
        "inverse, then forward again" would run it twice."""
        a, b = torch.split(y, self.split_sizes, dim=1)
        grad_a, grad_b = torch.split(grad_y, self.split_sizes, dim=1)
        n = len(conditions)
        grad_conditions: list[Tensor | None] = [None] * n
        if self.subnet_a is not None:
            a, grads = self._invert_half(self.subnet_a, b, a, conditions, grad_a, grad_log_det)
            grad_a, grad_b = grads[0], grad_b + _zero_if_none(grads[1], b)
            grad_conditions = _add_all(grad_conditions, grads[2:2 + n])
            grad_parameters_a = grads[2 + n:]
        b, grads = self._invert_half(self.subnet_b, a, b, conditions, grad_b, grad_log_det)
        grad_b, grad_a = _zero_if_none(grads[0], b), grad_a + _zero_if_none(grads[1], a)
        grad_conditions = _add_all(grad_conditions, grads[2:2 + n])
        grad_parameters = grads[2 + n:] + (grad_parameters_a if self.subnet_a is not None else [])
        return torch.cat([a, b], dim=1), torch.cat([grad_a, grad_b], dim=1), grad_conditions, grad_parameters

    def forward(self, x_or_z: list[Tensor], c: list[Tensor] | None = None, rev: bool = False,
                jac: bool = True) -> tuple[tuple[Tensor], Tensor]:
        conditions = list(c) if c is not None else []
        a, b = torch.split(x_or_z[0], self.split_sizes, dim=1)
        if not rev:
            b, log_det = self._couple(self.subnet_b, a, b, conditions, rev=False)
            if self.subnet_a is not None:
                a, log_det_a = self._couple(self.subnet_a, b, a, conditions, rev=False)
                log_det = log_det + log_det_a
        else:
            log_det = a.new_zeros(a.shape[0])
            if self.subnet_a is not None:
                a, log_det = self._couple(self.subnet_a, b, a, conditions, rev=True)
            b, log_det_b = self._couple(self.subnet_b, a, b, conditions, rev=True)
            log_det = log_det + log_det_b
        return (torch.cat([a, b], dim=1),), log_det

    def output_dims(self, input_dims: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return input_dims


def _zero_if_none(grad: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if grad is None else grad


def _add_all(totals: list[Tensor | None], grads: list[Tensor | None]) -> list[Tensor | None]:
    return [total if grad is None else grad if total is None else total + grad
            for total, grad in zip(totals, grads, strict=True)]
