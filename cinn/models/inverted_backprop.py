r"""Backprop by inversion: gradients of a :class:`~cinn.models.Flow` without storing its activations.

Standard backprop keeps every block's intermediate tensors until the backward pass, so activation memory
grows linearly with depth. A flow does not need them: each block's input is a function of its output,
``x_k = f_k⁻¹(y_k)``. :class:`InvertingBackprop` runs the flow's forward pass without a graph and keeps only
the latents; the backward pass walks the flow's steps (:meth:`Flow.steps <cinn.models.Flow.steps>`) from last
to first and, for each block,

1. reconstructs its input from its output, ``x_k = f_k⁻¹(y_k)`` (no graph),
2. runs ``f_k(x_k)`` again with a graph for this block alone,
3. back-propagates ``∂L/∂y_k`` (plus the gradient of the block's latent, if it splits one off, and of
   ``log_det``) to ``∂L/∂x_k = ∂L/∂y_{k−1}``, the block's parameters and its condition tensor,

then drops that block's graph. A block that implements :class:`SupportsInvertedBackprop` (a coupling block)
does steps 1–3 itself, running its subnets once instead of twice. Activation memory is therefore that of the
latents plus one block, whatever the depth (as in i-RevNet / MemCNN), at the cost of one inverse and one extra
forward per block. The gradients equal standard backprop's up to the reconstruction error of ``f⁻¹(f(x))``
(exact in float64 up to rounding; ``tests/test_inverted_backprop.py``).

It is chosen by wrapping, not by changing the model: :func:`with_backprop` returns the flow itself for
``"standard"`` and ``InvertingBackprop(flow)`` for ``"inversion"``; both compute ``log p(x | c)``, and the flow
and its state dict are untouched. Conditions are inputs of the autograd function, so gradients still reach a
condition network outside the flow. Blocks must be deterministic, and their parameters must not change between
forward and backward.

Under autocast (``--train.precision=bf16``) the backward pass reconstructs and recomputes each block with the
forward pass's autocast state, so the gradients are those of the bf16 model that produced the loss. They
then equal standard bf16 backprop's up to rounding: a reconstructed subnet input one float32 rounding away
from a bf16 rounding boundary is rounded the other way (``tests/test_inverted_backprop.py`` bounds the
difference).

Example:
    >>> from cinn.models import build_glow
    >>> flow = build_glow((3, 16, 16), n_levels=2, steps_per_level=4, hidden_channels=32)
    >>> model = with_backprop(flow, "inversion")
    >>> (-model(torch.rand(8, 3, 16, 16))).mean().backward()   # flow's gradients, less memory
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from cinn.models.flow import Backprop, Condition, Flow, FlowStep, log_prob_from_latents


@runtime_checkable
class SupportsInvertedBackprop(Protocol):
    """A block with its own backward step for backprop by inversion (:class:`~cinn.blocks.CouplingBlock`),
    used instead of the generic "invert, then run forward again with a graph"."""

    def invert_and_backpropagate(self, y: Tensor, conditions: list[Tensor], grad_y: Tensor, grad_log_det: Tensor
                                 ) -> tuple[Tensor, Tensor, list[Tensor | None], list[Tensor | None]]:
        """From the block's output ``y`` (a single tensor; the block splits nothing off), its condition tensors
        and ``∂L/∂y``, ``∂L/∂log_det`` (shape ``(B,)``), return the input ``x = f⁻¹(y)``, ``∂L/∂x``, ``∂L/∂c``
        (one per condition tensor) and ``∂L/∂θ`` (aligned with the block's ``parameters()``)."""
        ...


class InvertingBackprop(nn.Module):
    r"""``log p(x | c)`` of ``flow``, shape ``(B,)``, with gradients computed by backprop by inversion: the
    forward pass keeps only the latents and the condition tensors, the backward pass reconstructs each
    block's input by inverting it (see :mod:`cinn.models.inverted_backprop`). Same value and gradients as
    ``flow`` itself (up to rounding); activation memory independent of depth. The wrapper holds ``flow`` as
    :attr:`flow` and adds nothing to it. Without grad mode it is ``flow``'s plain forward pass.

    Example:
        >>> from cinn.models import build_cinn_fc
        >>> flow = build_cinn_fc((1, 4, 4), 3, n_blocks=2, hidden_features=8)
        >>> log_p = InvertingBackprop(flow)(torch.rand(5, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1]))
        >>> log_p.sum().backward()
        >>> tuple(log_p.shape)
        (5,)
    """

    def __init__(self, flow: Flow):
        super().__init__()
        self.flow = flow

    def transform(self, x: Tensor, c: Condition = None) -> tuple[list[Tensor], Tensor]:
        """:meth:`Flow.transform <cinn.models.Flow.transform>`, ``x ↦ (latents, log|det ∂latents/∂x|)``, with
        the inverting backward pass."""
        conditions = self.flow.conditions(c)
        if not torch.is_grad_enabled():
            return self.flow.transform_with_conditions(x, conditions)
        (x,) = self.flow.in_layout([x])
        parameters = [p for p in self.flow.blocks.parameters() if p.requires_grad]
        *latents, log_det = _InvertedBackprop.apply(self.flow, len(conditions), x, *conditions, *parameters)
        return latents, log_det

    def log_prob(self, x: Tensor, c: Condition = None) -> Tensor:
        """``log p(x | c)`` in nats, shape ``(B,)``."""
        return log_prob_from_latents(*self.transform(x, c))

    def forward(self, x: Tensor, c: Condition = None) -> Tensor:
        """Same as :meth:`log_prob`: the training objective, as for a :class:`~cinn.models.Flow`."""
        return self.log_prob(x, c)


def with_backprop(model: nn.Module, backprop: Backprop) -> nn.Module:
    """``model`` trained with ``backprop``: ``model`` itself for ``"standard"``, ``InvertingBackprop(model)``
    for ``"inversion"`` (which needs a :class:`~cinn.models.Flow`). Both compute the same ``model(x, c)``.

    Example:
        >>> from cinn.models import build_glow
        >>> flow = build_glow((1, 8, 8), n_levels=2, steps_per_level=1, hidden_channels=8)
        >>> with_backprop(flow, "standard") is flow, with_backprop(flow, "inversion").flow is flow
        (True, True)
    """
    if backprop == "standard":
        return model
    if backprop != "inversion":
        raise ValueError(f"unknown backprop {backprop!r}; use 'standard' or 'inversion'")
    if not isinstance(model, Flow):
        raise ValueError(f"backprop by inversion needs an invertible model (a Flow); a {type(model).__name__} "
                         "is not one, so train it with backprop='standard'")
    return InvertingBackprop(model)


def _zeros_if_none(grad: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if grad is None else grad


def _accumulate(total: Tensor | None, grad: Tensor | None) -> Tensor | None:
    if grad is None:
        return total
    return grad if total is None else total + grad


class _InvertedBackprop(torch.autograd.Function):
    """Inputs: the flow, the number of condition tensors, ``x``, the conditions, the block parameters.
    Outputs: the latents and the log-det. Saves only the latents and the conditions."""

    @staticmethod
    def forward(ctx: Any, flow: Flow, n_conditions: int, x: Tensor, *tensors: Tensor) -> tuple[Tensor, ...]:
        conditions = list(tensors[:n_conditions])
        with torch.no_grad():
            latents, log_det = flow.transform_with_conditions(x, conditions)
        ctx.flow = flow
        ctx.autocast = _autocast_state(x.device.type)
        ctx.n_conditions = n_conditions
        ctx.parameters = tensors[n_conditions:]
        ctx.save_for_backward(*latents, *conditions)
        return (*latents, log_det)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor | None) -> tuple[Tensor | None, ...]:
        flow: Flow = ctx.flow
        saved = ctx.saved_tensors
        latents = [latent.detach() for latent in saved[:len(saved) - ctx.n_conditions]]
        conditions = [condition.detach() for condition in saved[len(latents):]]
        grad_latents = [_zeros_if_none(grad, latent) for grad, latent in zip(grads[:-1], latents, strict=True)]
        grad_log_det = _zeros_if_none(grads[-1], latents[0].new_zeros(latents[0].shape[0]))

        parameter_index = {id(p): i for i, p in enumerate(ctx.parameters)}
        grad_parameters: list[Tensor | None] = [None] * len(ctx.parameters)
        grad_conditions: list[Tensor | None] = [None] * ctx.n_conditions

        h, grad_h = latents[-1], grad_latents[-1]
        with ctx.autocast:
            for step in reversed(flow.steps()):
                split_off, grad_split_off = latents[step.split_off], grad_latents[step.split_off]
                block_conditions = step.conditions_of(conditions)
                if isinstance(step.block, SupportsInvertedBackprop) and not split_off:
                    h, grad_h, block_grad_conditions, block_grad_parameters = step.block.invert_and_backpropagate(
                        h, block_conditions, grad_h, grad_log_det)
                else:
                    h, grad_h, block_grad_conditions, block_grad_parameters = _invert_and_backpropagate(
                        step, [h, *split_off], block_conditions, [grad_h, *grad_split_off], grad_log_det)
                if step.condition is not None:
                    grad_conditions[step.condition] = _accumulate(grad_conditions[step.condition],
                                                                  block_grad_conditions[0])
                for parameter, grad in zip(step.block.parameters(), block_grad_parameters, strict=True):
                    if id(parameter) in parameter_index:
                        i = parameter_index[id(parameter)]
                        grad_parameters[i] = _accumulate(grad_parameters[i], grad)
        return (None, None, grad_h, *grad_conditions, *grad_parameters)


def _autocast_state(device_type: str) -> torch.autocast:
    """A context that restores the current autocast state of ``device_type`` (on or off, and its dtype)."""
    return torch.autocast(device_type, dtype=torch.get_autocast_dtype(device_type),
                          enabled=torch.is_autocast_enabled(device_type))


def _invert_and_backpropagate(step: FlowStep, outputs: list[Tensor], condition: list[Tensor],
                              grad_outputs: list[Tensor], grad_log_det: Tensor
                              ) -> tuple[Tensor, Tensor, list[Tensor | None], list[Tensor | None]]:
    """Any block: ``x = f⁻¹(outputs)`` without a graph, then ``f(x)`` again with one, then backprop through
    it. Returns ``x``, ``∂L/∂x``, ``∂L/∂c`` (per condition tensor) and ``∂L/∂θ`` (aligned with
    ``block.parameters()``)."""
    with torch.no_grad():
        (block_input,), _ = step(outputs, condition, rev=True)
    block_input.requires_grad_()
    condition_leaves = [c.detach().requires_grad_(c.is_floating_point()) for c in condition]
    parameters = [p for p in step.block.parameters() if p.requires_grad]
    with torch.enable_grad():
        recomputed, log_det = step([block_input], condition_leaves, rev=False)
    pairs = [(out, grad) for out, grad in zip(recomputed, grad_outputs, strict=True) if out.requires_grad]
    if isinstance(log_det, Tensor) and log_det.requires_grad:
        pairs.append((log_det, grad_log_det))
    differentiable_conditions = [c for c in condition_leaves if c.requires_grad]
    wrt = [block_input, *differentiable_conditions, *parameters]
    grads = (list(torch.autograd.grad([out for out, _ in pairs], wrt, [grad for _, grad in pairs],
                                      allow_unused=True)) if pairs else [None] * len(wrt))
    grad_conditions = iter(grads[1:1 + len(differentiable_conditions)])
    grad_parameters = iter(grads[1 + len(differentiable_conditions):])
    return (block_input.detach(), _zeros_if_none(grads[0], block_input),
            [next(grad_conditions) if c.requires_grad else None for c in condition_leaves],
            [next(grad_parameters) if p.requires_grad else None for p in step.block.parameters()])
