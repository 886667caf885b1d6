"""The model container: a chain of invertible blocks ending in standard-normal latents."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from FrEIA.modules import Flatten, InvertibleModule
from torch import Tensor, nn

from cinn.blocks import Patchify
from cinn.blocks._shapes import sum_per_sample
from cinn.models.arguments import require_batch, require_count, require_inputs, require_temperature, require_tensor

Condition = Tensor | Sequence[Tensor] | None
Backprop = Literal["standard", "inversion"]
"""How a flow's gradients are computed: by standard backprop, or by inversion without stored activations
(:func:`cinn.models.inverted_backprop.with_backprop`)."""


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """``Σ log N(z; 0, I)`` over all but the batch axis: shape ``(B,)``."""
    return -0.5 * sum_per_sample(z.pow(2) + math.log(2 * math.pi))


def log_prob_from_latents(latents: Sequence[Tensor], log_det: Tensor) -> Tensor:
    """``log p(x) = Σ_k log N(ε_k; 0, I) + log|det ∂ε/∂x|`` from a flow's latents ``ε_k`` and log-det, shape
    ``(B,)``."""
    return sum(standard_normal_log_prob(z) for z in latents) + log_det


@dataclass(frozen=True)
class FlowStep:
    """One block of a :class:`Flow` with where it sits in the flow: the index of the condition tensor it
    receives (``None``: none) and the positions of the latents it splits off in the flow's latent list
    (:meth:`Flow.encode`'s output), a slice, empty for a block that splits off none.

    Example:
        >>> from cinn.blocks import Split
        >>> flow = Flow((4, 2, 2))
        >>> _ = flow.append(Split)
        >>> [(type(step.block).__name__, step.split_off) for step in flow.steps()]
        [('Split', slice(0, 1, None))]
    """

    block: InvertibleModule
    condition: int | None
    split_off: slice

    def conditions_of(self, conditions: Sequence[Tensor]) -> list[Tensor]:
        """The block's condition tensors among the flow's ``conditions``: ``[conditions[i]]``, or ``[]``."""
        return [] if self.condition is None else [conditions[self.condition]]

    def __call__(self, inputs: list[Tensor], block_conditions: list[Tensor], rev: bool
                 ) -> tuple[tuple[Tensor, ...], Tensor | float]:
        """The block's FrEIA call ``block(inputs, c=block_conditions, rev=rev, jac=True)``, without ``c`` for an
        unconditional block (some FrEIA blocks take none): ``(outputs, log_det)``."""
        if block_conditions:
            return self.block(inputs, c=block_conditions, rev=rev, jac=True)
        return self.block(inputs, rev=rev, jac=True)


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

    :meth:`steps` is the one walk over the blocks, first to last: :meth:`transform` runs it forwards,
    :meth:`inverse` backwards, and so does the backward pass of backprop by inversion, which a wrapper
    chooses (:func:`~cinn.models.inverted_backprop.with_backprop`): activation memory independent of
    depth, same gradients.

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
        self.memory_format = torch.contiguous_format
        self.layout_settled = True
        """False for a flow built with ``channels_last=None``: the training engine times both layouts on this
        machine and keeps the faster (:mod:`cinn.engine.layout`)."""

    def use_channels_last(self) -> Flow:
        """Store 4-D parameters NHWC and run image activations (inputs, latents, image conditions) in that
        layout too, so no convolution converts layouts in the forward or backward pass; most CPUs run the
        convolutions faster so (BENCHMARKS.md). Returns the flow; :meth:`inverse` still returns NCHW images.

        Example:
            >>> from cinn.models import build_glow
            >>> flow = build_glow((1, 8, 8), n_levels=2, steps_per_level=1, channels_last=False)
            >>> flow = flow.use_channels_last()
        """
        return self.use_memory_format(torch.channels_last)

    def use_memory_format(self, memory_format: torch.memory_format) -> Flow:
        """Parameters and activations in ``memory_format`` (``torch.channels_last`` or
        ``torch.contiguous_format``, NCHW); the parameters stay the same objects, so an optimiser built on them
        goes on working. The layout is settled after this (:attr:`layout_settled`). Returns the flow."""
        self.memory_format = memory_format
        self.layout_settled = True
        return self.to(memory_format=memory_format)

    @property
    def layout(self) -> str:
        """``"channels_last"`` or ``"nchw"``."""
        return "channels_last" if self.memory_format == torch.channels_last else "nchw"

    def in_layout(self, tensors: Sequence[Tensor]) -> list[Tensor]:
        """``tensors`` in the flow's memory layout: 4-D ones NHWC after :meth:`use_channels_last`, the rest as
        they are (a tensor already in that layout is returned itself)."""
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

    def steps(self) -> list[FlowStep]:
        """The blocks first to last, each with its condition index and the slice of the latent list it
        splits off (see :class:`FlowStep`)."""
        steps, start = [], 0
        for block, condition, count in zip(self.blocks, self.block_conditions, self.block_latents, strict=True):
            steps.append(FlowStep(block, condition, slice(start, start + count)))
            start += count
        return steps

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
        if not isinstance(c, (list, tuple)):
            require_tensor(c, "c")
        if self.condition_net is not None:
            c = self.condition_net(self.in_layout([c])[0] if isinstance(c, Tensor) else c)
        return self.in_layout([c] if isinstance(c, Tensor) else list(c))

    def transform(self, x: Tensor, c: Condition = None) -> tuple[list[Tensor], Tensor]:
        """Forward pass: ``x ↦ (latents, log|det ∂latents/∂x|)``; log-det has shape ``(B,)``. ``x`` is a batch
        ``(B, *input_shape)`` of the weights' dtype (an image model takes other heights and widths too), else a
        :class:`ValueError` or :class:`TypeError` that says what was expected."""
        x = require_inputs(x, self.input_shape, self.dtype, any_size=self._other_size(x, self.input_shape))
        conditions = self.conditions(c)
        require_batch(conditions, x.shape[0])
        return self.transform_with_conditions(x, conditions)

    @property
    def dtype(self) -> torch.dtype | None:
        """The dtype of the weights (float32 unless the flow was converted); None for a flow without any."""
        reference = next(self.parameters(), None)
        if reference is None:
            reference = next(self.buffers(), None)
        return None if reference is None else reference.dtype

    def _other_size(self, tensor: Tensor, shape: Sequence[int]) -> bool:
        """Whether ``tensor`` is a batch of another size than ``shape`` that this flow takes (the walk over the
        blocks runs only then, not on every call)."""
        return isinstance(tensor, Tensor) and tuple(tensor.shape[1:]) != tuple(shape) and self.takes_any_size

    @property
    def takes_any_size(self) -> bool:
        """Whether the flow runs on images of other heights and widths than ``input_shape`` (a fully convolutional
        image model: no block flattens its input or cuts it into a fixed number of tokens)."""
        fixed_size = (Flatten, Patchify)
        return len(self.input_shape) == 3 and not any(isinstance(block, fixed_size) for block in self.blocks)

    def transform_with_conditions(self, x: Tensor, conditions: Sequence[Tensor]) -> tuple[list[Tensor], Tensor]:
        """:meth:`transform` for the blocks' condition tensors (the output of :meth:`conditions`)."""
        (h,) = self.in_layout([x])
        latents: list[Tensor] = []
        log_det = h.new_zeros(h.shape[0])
        for step in self.steps():
            (h, *split_off), block_log_det = step([h], step.conditions_of(conditions), rev=False)
            latents.extend(split_off)
            log_det = log_det + block_log_det
        latents.append(h)
        return latents, log_det

    def inverse(self, latents: Sequence[Tensor], c: Condition = None) -> tuple[Tensor, Tensor]:
        """Reverse pass: ``latents ↦ (x, log|det ∂x/∂latents|)`` (minus the forward log-det)."""
        if isinstance(latents, Tensor) or len(latents) != len(self.latent_shapes):
            raise ValueError(f"expected a list of {len(self.latent_shapes)} latent tensors (one per scale, see "
                             f"latent_shapes), got {'a tensor' if isinstance(latents, Tensor) else len(latents)}")
        dtype = self.dtype
        for index, (latent, shape) in enumerate(zip(latents, self.latent_shapes, strict=True)):
            require_inputs(latent, shape, dtype, f"latents[{index}]", any_size=self._other_size(latent, shape))
        if len({latent.shape[0] for latent in latents}) > 1:
            raise ValueError(f"the latents have batch sizes {[latent.shape[0] for latent in latents]}; give them "
                             "one")
        conditions = self.conditions(c)
        require_batch(conditions, latents[0].shape[0])
        latents = self.in_layout(latents)
        h = latents[-1]
        log_det = h.new_zeros(h.shape[0])
        for step in reversed(self.steps()):
            outputs, block_log_det = step([h, *latents[step.split_off]], step.conditions_of(conditions), rev=True)
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
        return log_prob_from_latents(*self.transform(x, c))

    def forward(self, x: Tensor, c: Condition = None) -> Tensor:
        """Same as :meth:`log_prob` (so that wrappers such as DDP see the training objective)."""
        return self.log_prob(x, c)

    def latent_shapes_at(self, spatial_size: Sequence[int] | None = None) -> list[tuple[int, ...]]:
        """:attr:`latent_shapes` for an input of another height and width (fully convolutional models).

        Each latent's spatial size scales with the input's: ``(C, h, w)`` at input ``(H₀, W₀)`` becomes
        ``(C, h·H/H₀, w·W/W₀)`` at ``(H, W)``. ``None`` gives the model's own input size.

        Example:
            >>> from cinn.models import build_cinn
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
        n, temperature = require_count(n), require_temperature(temperature)
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


def settle_layout(flow: Flow, channels_last: bool | None) -> Flow:
    """What a builder's ``channels_last`` argument means: ``True`` NHWC, ``False`` NCHW, ``None`` NHWC with the
    layout left unsettled, for the training engine to choose by timing both (:mod:`cinn.engine.layout`)."""
    flow.use_memory_format(torch.contiguous_format if channels_last is False else torch.channels_last)
    flow.layout_settled = channels_last is not None
    return flow
