"""The model container: a chain of invertible blocks ending in standard-normal latents."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from FrEIA.modules import InvertibleModule
from torch import Tensor, nn

from cinn.blocks._shapes import sum_per_sample
from cinn.models.inverted_backprop import transform_inverting_for_backward

Condition = Tensor | Sequence[Tensor] | None
Backprop = Literal["standard", "inversion"]


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """``Σ log N(z; 0, I)`` over all but the batch axis: shape ``(B,)``."""
    return -0.5 * sum_per_sample(z.pow(2) + math.log(2 * math.pi))


class Flow(nn.Module):
    r"""An invertible network ``x ↦ (ε_1, …, ε_K)`` with standard-normal latents, built block by block.

    Blocks are FrEIA ``InvertibleModule`` s (cinn's or FrEIA's own). A block with several outputs
    (a :class:`~cinn.blocks.Split`) passes its first output on and sends the others to the latent
    list; the last block's output is the last latent. Learned priors are blocks too (see
    :mod:`cinn.blocks.prior`), so

        ``log p(x | c) = Σ_k log N(ε_k; 0, I) + log|det ∂ε/∂x|``   (nats, shape ``(B,)``).

    Conditions: the user's ``c`` (an image, labels, ...) goes through ``condition_net`` (owned and
    trained with the flow) to give one tensor per entry of ``condition_shapes``; a block appended
    with ``condition=i`` receives tensor ``i``. Without a ``condition_net``, ``c`` is that list
    (or a single tensor).

    ``backprop = "inversion"`` makes :meth:`transform` (and so :meth:`log_prob`) keep no activations
    for the backward pass, which reconstructs them by inverting the blocks instead: activation memory
    independent of depth, same gradients (:mod:`cinn.models.inverted_backprop`). It is a runtime
    setting, not part of the state dict.

    Example:
        >>> from cinn.blocks import ActNorm, CouplingBlock, conv_subnet
        >>> flow = Flow((4, 8, 8))
        >>> _ = flow.append(ActNorm)
        >>> _ = flow.append(CouplingBlock, subnet_constructor=conv_subnet(16))
        >>> nll = -flow.log_prob(torch.rand(2, 4, 8, 8))
        >>> x = flow.sample(3, temperature=0.7)
    """

    def __init__(self, input_shape: Sequence[int], condition_shapes: Sequence[Sequence[int]] = (),
                 condition_net: nn.Module | None = None):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.condition_shapes = [tuple(shape) for shape in condition_shapes]
        self.condition_net = condition_net
        self.blocks = nn.ModuleList()
        self.block_conditions: list[int | None] = []
        self.block_latents: list[int] = []
        self.split_shapes: list[tuple[int, ...]] = []
        self.output_shape = self.input_shape
        self.backprop: Backprop = "standard"
        self.memory_format = torch.contiguous_format

    def use_channels_last(self) -> Flow:
        """Store 4-D parameters NHWC and run image activations (inputs, latents, image conditions) in that
        layout too, so no convolution converts layouts in the forward or backward pass; the CPU runs the
        convolutions faster so (BENCHMARKS.md). Returns the flow; :meth:`inverse` still returns NCHW images.

        Example:
            >>> flow = build_glow((1, 8, 8), n_levels=2, steps_per_level=1, channels_last=False)
            >>> flow = flow.use_channels_last()   # what build_glow does by default
        """
        self.memory_format = torch.channels_last
        return self.to(memory_format=torch.channels_last)

    def _in_layout(self, tensors: Sequence[Tensor]) -> list[Tensor]:
        return [t.contiguous(memory_format=self.memory_format) if t.dim() == 4 else t for t in tensors]

    def append(self, block_class: type[InvertibleModule], *, condition: int | None = None,
               **kwargs: Any) -> InvertibleModule:
        """Build ``block_class`` for the current shape (and condition ``condition``) and append it."""
        if condition is not None:
            if not 0 <= condition < len(self.condition_shapes):
                raise ValueError(f"condition index {condition} out of range: this flow has "
                                 f"{len(self.condition_shapes)} condition tensor(s)")
            kwargs["dims_c"] = [self.condition_shapes[condition]]
        block = block_class([self.output_shape], **kwargs)
        shapes = [tuple(shape) for shape in block.output_dims([self.output_shape])]
        self.blocks.append(block)
        self.block_conditions.append(condition)
        self.block_latents.append(len(shapes) - 1)
        self.split_shapes.extend(shapes[1:])
        self.output_shape = shapes[0]
        return block

    @property
    def latent_shapes(self) -> list[tuple[int, ...]]:
        """Shapes (without batch) of the latents returned by :meth:`encode`, in order."""
        return [*self.split_shapes, self.output_shape]

    @property
    def latent_dims(self) -> int:
        """Total number of latent (= input) dimensions ``M``."""
        return math.prod(self.input_shape)

    def conditions(self, c: Condition) -> list[Tensor]:
        """The condition tensors the blocks receive for user condition ``c`` (in the flow's memory layout)."""
        if not self.condition_shapes:
            if c is not None:
                raise ValueError("this model is unconditional: call it without a condition")
            return []
        if c is None:
            raise ValueError("this model is conditional: pass a condition c")
        if self.condition_net is not None:
            c = self.condition_net(self._in_layout([c])[0] if isinstance(c, Tensor) else c)
        return self._in_layout([c] if isinstance(c, Tensor) else list(c))

    def _run_block(self, index: int, inputs: list[Tensor], conditions: Sequence[Tensor],
                   rev: bool) -> tuple[tuple[Tensor, ...], Tensor | float]:
        block, condition = self.blocks[index], self.block_conditions[index]
        if condition is None:
            return block(inputs, rev=rev, jac=True)
        return block(inputs, c=[conditions[condition]], rev=rev, jac=True)

    def transform(self, x: Tensor, c: Condition = None) -> tuple[list[Tensor], Tensor]:
        """Forward pass: ``x ↦ (latents, log|det ∂latents/∂x|)``; log-det has shape ``(B,)``."""
        conditions = self.conditions(c)
        (x,) = self._in_layout([x])
        if self.backprop == "inversion" and torch.is_grad_enabled():
            return transform_inverting_for_backward(self, x, conditions)
        return self.transform_with_conditions(x, conditions)

    def transform_with_conditions(self, x: Tensor, conditions: Sequence[Tensor]) -> tuple[list[Tensor], Tensor]:
        """:meth:`transform` for the blocks' condition tensors (the output of :meth:`conditions`)."""
        latents: list[Tensor] = []
        log_det = x.new_zeros(x.shape[0])
        h = x
        for index in range(len(self.blocks)):
            outputs, block_log_det = self._run_block(index, [h], conditions, rev=False)
            h, *split_off = outputs
            latents.extend(split_off)
            log_det = log_det + block_log_det
        latents.append(h)
        return latents, log_det

    def inverse(self, latents: Sequence[Tensor], c: Condition = None) -> tuple[Tensor, Tensor]:
        """Reverse pass: ``latents ↦ (x, log|det ∂x/∂latents|)`` (minus the forward log-det)."""
        if len(latents) != len(self.latent_shapes):
            raise ValueError(f"expected {len(self.latent_shapes)} latent tensors, got {len(latents)}")
        conditions = self.conditions(c)
        remaining = self._in_layout(latents)
        h = remaining.pop()
        log_det = h.new_zeros(h.shape[0])
        for index in reversed(range(len(self.blocks))):
            count = self.block_latents[index]
            split_off = remaining[len(remaining) - count:]
            del remaining[len(remaining) - count:]
            outputs, block_log_det = self._run_block(index, [h, *split_off], conditions, rev=True)
            h = outputs[0]
            log_det = log_det + block_log_det
        return h.contiguous(), log_det

    def encode(self, x: Tensor, c: Condition = None) -> list[Tensor]:
        """The standard-normal latents of ``x``, one tensor per scale (see :attr:`latent_shapes`)."""
        return self.transform(x, c)[0]

    def decode(self, latents: Sequence[Tensor], c: Condition = None) -> Tensor:
        """The input whose latents are ``latents``: the inverse of :meth:`encode`."""
        return self.inverse(latents, c)[0]

    def log_prob(self, x: Tensor, c: Condition = None) -> Tensor:
        """``log p(x | c)`` in nats, shape ``(B,)``."""
        latents, log_det = self.transform(x, c)
        return sum(standard_normal_log_prob(z) for z in latents) + log_det

    def forward(self, x: Tensor, c: Condition = None) -> Tensor:
        """Same as :meth:`log_prob` (so that wrappers such as DDP see the training objective)."""
        return self.log_prob(x, c)

    def latent_shapes_at(self, spatial_size: Sequence[int] | None = None) -> list[tuple[int, ...]]:
        """:attr:`latent_shapes` for an input of another height and width (fully convolutional models).

        Each latent's spatial size scales with the input's: ``(C, h, w)`` at input ``(H₀, W₀)`` becomes
        ``(C, h·H/H₀, w·W/W₀)`` at ``(H, W)``. ``None`` gives the model's own input size.

        Example:
            >>> build_cinn((2, 64, 64), (1, 64, 64), n_levels=3).latent_shapes_at((64, 96))[-1]
            (32, 8, 12)
        """
        if spatial_size is None:
            return self.latent_shapes
        if len(self.input_shape) != 3:
            raise ValueError(f"only image models (C, H, W) change size; this one takes {self.input_shape}")
        (height, width), (base_height, base_width) = tuple(spatial_size), self.input_shape[1:]
        shapes = []
        for channels, h, w in self.latent_shapes:
            if (h * height) % base_height or (w * width) % base_width:
                raise ValueError(f"input size {height}x{width} does not divide into this model's scales; use "
                                 f"multiples of {base_height // math.gcd(base_height, h)}")
            shapes.append((channels, h * height // base_height, w * width // base_width))
        return shapes

    def sample_latents(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None,
                       spatial_size: Sequence[int] | None = None) -> list[Tensor]:
        """``n`` draws of every latent from ``N(0, temperature² I)``, for inputs of ``spatial_size``
        (default: the model's own input size; see :meth:`latent_shapes_at`)."""
        reference = next(self.parameters(), None)
        if reference is None:
            reference = next(self.buffers())
        return [temperature * torch.randn((n, *shape), generator=generator, device=reference.device,
                                          dtype=reference.dtype)
                for shape in self.latent_shapes_at(spatial_size)]

    @torch.no_grad()
    def sample(self, n: int, c: Condition = None, temperature: float = 1.0,
               generator: torch.Generator | None = None, spatial_size: Sequence[int] | None = None) -> Tensor:
        """``n`` samples ``x = decode(ε)`` with ``ε ~ N(0, temperature² I)``; ``temperature=0`` decodes the
        prior mean. A condition ``c`` must have batch size ``n`` (and, for an image condition, the
        ``spatial_size`` of the samples, when that differs from the model's input size)."""
        return self.decode(self.sample_latents(n, temperature, generator, spatial_size), c)
