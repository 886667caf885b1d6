r"""Backprop by inversion: gradients of a :class:`~cinn.models.Flow` without storing its activations.

Standard backprop keeps every block's intermediate tensors until the backward pass, so activation memory
grows linearly with depth. A flow does not need them: each block's input is a function of its output,
``x_k = f_k⁻¹(y_k)``. :func:`transform_inverting_for_backward` runs the forward pass without a graph and
keeps only the latents; the backward pass walks the blocks from last to first and, for each block,

1. reconstructs its input from its output, ``x_k = f_k⁻¹(y_k)`` (no graph),
2. runs ``f_k(x_k)`` again with a graph for this block alone,
3. back-propagates ``∂L/∂y_k`` (plus the gradient of the block's latent, if it splits one off, and of
   ``log_det``) to ``∂L/∂x_k = ∂L/∂y_{k−1}``, the block's parameters and its condition tensor,

then drops that block's graph. Activation memory is therefore that of the latents plus one block, whatever
the depth (as in i-RevNet / MemCNN), at the cost of one inverse and one extra forward per block. The
gradients equal standard backprop's up to the reconstruction error of ``f⁻¹(f(x))`` (exact in float64
up to rounding; ``tests/test_inverted_backprop.py``).

Conditions are inputs of the autograd function, so gradients still reach a condition network outside the
flow. Blocks must be deterministic, and their parameters must not change between forward and backward.

Under autocast (``--train.precision=bf16``) the backward pass reconstructs and recomputes each block with the
forward pass's autocast state, so the gradients are those of the bf16 model that produced the loss. They
then equal standard bf16 backprop's up to rounding: a reconstructed subnet input one float32 rounding away
from a bf16 rounding boundary is rounded the other way (``tests/test_inverted_backprop.py`` bounds the
difference).

Example:
    >>> flow = build_glow((3, 16, 16), n_levels=2, steps_per_level=4, hidden_channels=32)
    >>> flow.backprop = "inversion"
    >>> (-flow.log_prob(torch.rand(8, 3, 16, 16))).mean().backward()   # same gradients, less memory
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from cinn.models.flow import Flow


def transform_inverting_for_backward(flow: Flow, x: Tensor, conditions: Sequence[Tensor]
                                     ) -> tuple[list[Tensor], Tensor]:
    """``flow.transform`` for already-computed condition tensors, with backprop by inversion:
    ``x ↦ (latents, log|det ∂latents/∂x|)``, log-det of shape ``(B,)``."""
    parameters = [p for p in flow.blocks.parameters() if p.requires_grad]
    *latents, log_det = _InvertedBackprop.apply(flow, len(conditions), x, *conditions, *parameters)
    return latents, log_det


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

        h, grad_h = latents.pop(), grad_latents.pop()
        with ctx.autocast:
            for index in reversed(range(len(flow.blocks))):
                block: nn.Module = flow.blocks[index]
                count, condition_index = flow.block_latents[index], flow.block_conditions[index]
                split_off, grad_split_off = latents[len(latents) - count:], grad_latents[len(latents) - count:]
                del latents[len(latents) - count:], grad_latents[len(grad_latents) - count:]
                block_condition = [] if condition_index is None else [conditions[condition_index]]

                fused = getattr(block, "invert_and_backpropagate", None)
                if fused is not None and not split_off:
                    h, grad_h, block_grad_conditions, block_grad_parameters = fused(
                        h, block_condition, grad_h, grad_log_det)
                else:
                    h, grad_h, block_grad_conditions, block_grad_parameters = _invert_and_backpropagate(
                        block, [h, *split_off], block_condition, [grad_h, *grad_split_off], grad_log_det)
                if condition_index is not None:
                    grad_conditions[condition_index] = _accumulate(grad_conditions[condition_index],
                                                                   block_grad_conditions[0])
                for parameter, grad in zip(block.parameters(), block_grad_parameters, strict=True):
                    if id(parameter) in parameter_index:
                        i = parameter_index[id(parameter)]
                        grad_parameters[i] = _accumulate(grad_parameters[i], grad)
        return (None, None, grad_h, *grad_conditions, *grad_parameters)


def _autocast_state(device_type: str) -> torch.autocast:
    """A context that restores the current autocast state of ``device_type`` (on or off, and its dtype)."""
    return torch.autocast(device_type, dtype=torch.get_autocast_dtype(device_type),
                          enabled=torch.is_autocast_enabled(device_type))


def _invert_and_backpropagate(block: nn.Module, outputs: list[Tensor], condition: list[Tensor],
                              grad_outputs: list[Tensor], grad_log_det: Tensor
                              ) -> tuple[Tensor, Tensor, list[Tensor | None], list[Tensor | None]]:
    """Any block: ``x = f⁻¹(outputs)`` without a graph, then ``f(x)`` again with one, then backprop through
    it. Returns ``x``, ``∂L/∂x``, ``∂L/∂c`` (per condition tensor) and ``∂L/∂θ`` (aligned with
    ``block.parameters()``)."""
    with torch.no_grad():
        (block_input,), _ = _call(block, outputs, condition, rev=True)
    block_input.requires_grad_()
    condition_leaves = [c.detach().requires_grad_(c.is_floating_point()) for c in condition]
    parameters = [p for p in block.parameters() if p.requires_grad]
    with torch.enable_grad():
        recomputed, log_det = _call(block, [block_input], condition_leaves, rev=False)
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
            [next(grad_parameters) if p.requires_grad else None for p in block.parameters()])


def _call(block: nn.Module, inputs: list[Tensor], condition: list[Tensor], rev: bool
          ) -> tuple[tuple[Tensor, ...], Tensor | float]:
    if condition:
        return block(inputs, c=condition, rev=rev, jac=True)
    return block(inputs, rev=rev, jac=True)
