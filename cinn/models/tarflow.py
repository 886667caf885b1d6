"""TarFlow (Zhai et al. 2024, "Normalizing Flows are Capable Generative Models"): an image cut into patch tokens,
then a stack of causal-transformer autoregressive flows over the tokens, alternating the token order."""

from __future__ import annotations

from collections.abc import Sequence

from cinn.blocks import Patchify, TransformerAutoregressiveBlock
from cinn.models.arguments import require_sizes
from cinn.models.condition import OneHot
from cinn.models.flow import Flow
from cinn.models.registry import MAX_BLOCKS, MAX_WIDTH, register_builder

MAX_TOKENS = 4096
"""The most patch tokens a TarFlow may have (64x64 patches): attention costs ``T²`` per layer and the position
embeddings ``T·width`` weights per block (TarFlow's largest models use 1,024)."""


@register_builder
def build_tarflow(input_shape: Sequence[int], *, patch_size: int = 4, width: int = 128, n_blocks: int = 4,
                  layers_per_block: int = 4, heads: int | None = None, n_classes: int = 0,
                  clamp: float = 2.0) -> Flow:
    r"""TarFlow: :class:`~cinn.blocks.Patchify` into ``T = (H/p)·(W/p)`` tokens of ``D = C·p²`` features, then
    ``n_blocks`` :class:`~cinn.blocks.TransformerAutoregressiveBlock` s, the token order reversed in every second
    block, ending in standard-normal latents.

    Block ``k`` is an affine autoregressive flow whose parameters come from a causal transformer (``width``
    channels, ``layers_per_block`` layers, ``heads`` heads; by default heads of 64 channels or fewer), with its
    log-scale softly bounded by ``clamp``:

        ``z_t = (x_t − μ_t(x_{<t}, y))·exp(−α_t(x_{<t}, y))``,  ``log|det ∂z/∂x| = −Σ_t α_t``,

    ``x_{<t}`` meaning the tokens before ``t`` in the block's order, and

        ``log p(x | y) = log N(z; 0, I) + Σ_blocks log|det|``.

    With ``n_classes > 0`` every block receives the one-hot label ``y``, added to each token's embedding: pass
    ``c`` as integer labels ``(B,)`` or one-hot ``(B, n_classes)``. Training (``log_prob``) runs every token at
    once; sampling (``decode``) is sequential over the tokens of each block, one token per step with cached keys
    and values (the block's docstring gives the cost). The model takes images of ``input_shape`` only (the
    position embeddings are learned per token), expected dequantised in ``[0, 1]`` (see :mod:`cinn.likelihood`).
    The single latent has the tokens' shape ``(B, T, D)``.

    Example:
        >>> import torch
        >>> model = build_tarflow((1, 8, 8), patch_size=4, width=16, n_blocks=2, layers_per_block=1, n_classes=3)
        >>> log_p = model.log_prob(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 0]))
        >>> model.sample(3, torch.arange(3), temperature=0.7).shape
        torch.Size([3, 1, 8, 8])
    """
    if len(input_shape) != 3:
        raise ValueError(f"expected an image shape (C, H, W), got {tuple(input_shape)}")
    require_sizes(patch_size=patch_size, width=width, n_blocks=n_blocks, layers_per_block=layers_per_block)
    require_sizes(0, n_classes=n_classes)
    if heads is not None:
        require_sizes(heads=heads)
        if width % heads:
            raise ValueError(f"width {width} does not split into {heads} heads; use a divisor of {width}")
    if width > MAX_WIDTH or n_classes > MAX_WIDTH:
        raise ValueError(f"width {width} or n_classes {n_classes} is above the {MAX_WIDTH} allowed")
    if n_blocks * layers_per_block > MAX_BLOCKS:
        raise ValueError(f"the model would have {n_blocks * layers_per_block} transformer layers, more than the "
                         f"{MAX_BLOCKS} allowed")
    _, height, image_width = input_shape
    if height % patch_size or image_width % patch_size:
        raise ValueError(f"patch size {patch_size} does not divide the image size {height}x{image_width}; use a "
                         "divisor of both sides")
    tokens = (height // patch_size) * (image_width // patch_size)
    if tokens > MAX_TOKENS:
        raise ValueError(f"{height}x{image_width} images in {patch_size}x{patch_size} patches make {tokens} "
                         f"tokens, more than the {MAX_TOKENS} allowed; use larger patches")
    conditional = n_classes > 0
    flow = Flow(input_shape, condition_shapes=[(n_classes,)] if conditional else [],
                condition_net=OneHot(n_classes) if conditional else None)
    flow.append(Patchify, patch_size=patch_size)
    for block in range(n_blocks):
        flow.append(TransformerAutoregressiveBlock, condition=0 if conditional else None, width=width,
                    layers=layers_per_block, heads=heads, clamp=clamp, reverse_order=block % 2 == 1)
    return flow
