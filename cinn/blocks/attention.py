r"""Attention subnets for coupling blocks: every output position sees the whole kept half, not a 3x3 window.

Both are registered subnets (:data:`~cinn.blocks.subnets.SUBNETS`), chosen by name like the conv ones
(``model.subnet: vit_attention``, ``build_glow(..., subnet="gated_attention")``). A subnet maps
``(B, C_in, H, W)`` to ``(B, C_out, H, W)`` for any ``H, W`` (the ``H·W`` positions are the tokens, no patches,
so 1x1 maps work too); with a condition ``C_in`` counts its channels, which the coupling concatenates to the kept
half. The last layer is zero-initialised, so a coupling block built with either starts as the identity (or
its map's fixed scaling).

* :func:`vit_attention` — a small ViT (Jet, Kolesnikov et al. 2024): conv3x3 in → 2 pre-LayerNorm transformer
  blocks → LayerNorm → zero 1x1 conv out.
* :func:`gated_attention` — Flow++'s coupling network (Ho et al. 2019): conv3x3 in → 2 × [gated residual conv
  block, gated self-attention block] → concat-ELU → zero 3x3 conv out.

Attention costs ``O((H·W)²·width)`` time and ``O(heads·(H·W)²)`` memory, so these subnets suit the small maps a
multi-scale flow works on (``H·W`` up to a few hundred positions).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cinn.blocks.subnets import SubnetConstructor, ZeroConv2d, register_subnet

DEPTH = 2
"""Blocks per attention subnet (transformer blocks in :func:`vit_attention`, gated conv + attention pairs in
:func:`gated_attention`), fixed: the flow's depth comes from its couplings, a subnet needs only to see far."""


def attention_heads(width: int) -> int:
    """Heads of ``width / heads ≥ 64`` channels: the largest divisor of ``width`` not above
    ``max(1, width // 64)``.

    Example:
        >>> [attention_heads(width) for width in (8, 64, 128, 192, 200, 512)]
        [1, 1, 2, 3, 2, 8]
    """
    heads = max(1, width // 64)
    while width % heads:
        heads -= 1
    return heads


def sinusoidal_position_embedding(rows: int, cols: int, channels: int, *, dtype: torch.dtype = torch.float32,
                                  device: torch.device | str | None = None) -> Tensor:
    r"""The fixed 2-D position embedding of a ``rows x cols`` map: a ``channels``-vector per position, row-major.

    With ``q = channels // 4`` frequencies ``ω_k = 10000^(−k/q)``, position ``(i, j)`` gets
    ``[sin(i·ω), cos(i·ω), sin(j·ω), cos(j·ω)]`` followed by ``channels − 4q`` zeros. It depends on the pixel
    coordinates only, so it is defined for any map size: a model runs on images of a size it was not trained at.
    Computed in at least float32, returned in ``dtype``.

    Shapes: returns ``(rows·cols, channels)``.

    Example:
        >>> embedding = sinusoidal_position_embedding(3, 5, 8)
        >>> tuple(embedding.shape), embedding[0].tolist()   # position (0, 0)
        ((15, 8), [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    """
    quarter = channels // 4
    compute_dtype = torch.promote_types(dtype, torch.float32)
    frequencies = 10000.0 ** (-torch.arange(quarter, dtype=compute_dtype, device=device) / max(quarter, 1))

    def waves(count: int) -> Tensor:
        angles = torch.arange(count, dtype=compute_dtype, device=device)[:, None] * frequencies
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    row_waves = waves(rows)[:, None, :].expand(rows, cols, 2 * quarter)
    col_waves = waves(cols)[None, :, :].expand(rows, cols, 2 * quarter)
    embedding = torch.cat([row_waves, col_waves], dim=2).reshape(rows * cols, 4 * quarter)
    return F.pad(embedding, (0, channels - 4 * quarter)).to(dtype)


def to_tokens(x: Tensor) -> Tensor:
    """``(B, C, H, W) → (B, H·W, C)``, the positions row-major; a view for a channels_last ``x``."""
    batch, channels, rows, cols = x.shape
    return x.permute(0, 2, 3, 1).reshape(batch, rows * cols, channels)


def to_image(tokens: Tensor, rows: int, cols: int) -> Tensor:
    """``(B, H·W, C) → (B, C, H, W)``, the inverse of :func:`to_tokens` (a channels_last view)."""
    return tokens.reshape(tokens.shape[0], rows, cols, tokens.shape[2]).permute(0, 3, 1, 2)


class KeyValueCache:
    """The keys and values, ``(B, heads, t, d)`` each, of the ``t`` tokens an attention layer has seen so far in
    a sequential pass (None before the first)."""

    def __init__(self) -> None:
        self.keys: Tensor | None = None
        self.values: Tensor | None = None

    def extend(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Append the new tokens' keys and values; return all of them. Concatenated (not written into a
        preallocated buffer) so that the sequential pass stays differentiable; the copy costs no more than the
        attention that reads the cache anyway."""
        if self.keys is not None and self.values is not None:
            keys, values = torch.cat([self.keys, keys], dim=2), torch.cat([self.values, values], dim=2)
        self.keys, self.values = keys, values
        return keys, values


class MultiHeadSelfAttention(nn.Module):
    r"""Multi-head self-attention over tokens: ``[Q, K, V] = t W_qkv``, per head
    ``softmax(Q Kᵀ/√d + M) V`` (:func:`torch.nn.functional.scaled_dot_product_attention`), heads concatenated,
    then a linear map to ``out_features`` (default ``channels``). ``M = 0``, or with ``causal`` the mask that lets
    token ``t`` attend to tokens ``≤ t`` only. Given a :class:`KeyValueCache` (causal attention, one token at a
    time), ``t`` holds the next token only: it attends to the cached tokens and itself, and its keys and values
    join the cache.

    Shapes: ``(B, N, channels) → (B, N, out_features)``; ``heads`` divides ``channels``, ``d = channels/heads``;
    ``N = 1`` with a cache.

    Example:
        >>> attention = MultiHeadSelfAttention(16, heads=2)
        >>> attention(torch.randn(3, 10, 16)).shape
        torch.Size([3, 10, 16])
    """

    def __init__(self, channels: int, heads: int, out_features: int | None = None, causal: bool = False):
        super().__init__()
        if channels % heads:
            raise ValueError(f"{channels} channels do not split into {heads} heads; use a divisor of {channels}")
        self.heads, self.causal = heads, causal
        self.qkv = nn.Linear(channels, 3 * channels)
        self.project = nn.Linear(channels, out_features or channels)

    def forward(self, tokens: Tensor, cache: KeyValueCache | None = None) -> Tensor:
        batch, count, channels = tokens.shape
        q, k, v = self.qkv(tokens).view(batch, count, 3, self.heads, channels // self.heads).permute(2, 0, 3, 1, 4)
        if cache is None:
            mixed = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)  # (B, heads, N, d)
        else:
            if count != 1 or not self.causal:
                raise ValueError(f"a cached attention step takes one token of causal attention, got {count}")
            # No mask: the one query is the newest token and sees every cached one (is_causal would align the
            # mask top-left and let it see only the first).
            mixed = F.scaled_dot_product_attention(q, *cache.extend(k, v))
        return self.project(mixed.transpose(1, 2).reshape(batch, count, channels))


class TransformerBlock(nn.Module):
    r"""A pre-LayerNorm transformer block on tokens ``t`` of ``channels`` features:

        ``t ← t + MHSA(LN(t))``,  ``t ← t + W₂ GELU(W₁ LN(t))``  (``W₁``: ``channels → 4·channels``),

    the attention causal when asked (:class:`MultiHeadSelfAttention`; then token ``t`` of the output depends on
    tokens ``≤ t`` only, and a :class:`KeyValueCache` runs it one token at a time).

    Shapes: ``(B, N, channels) → (B, N, channels)``.

    Example (causal, all tokens at once or one at a time):
        >>> layer, t = TransformerBlock(16, heads=2, causal=True), torch.randn(1, 5, 16)
        >>> cache = KeyValueCache()
        >>> steps = torch.cat([layer(t[:, k:k + 1], cache) for k in range(5)], dim=1)
        >>> torch.allclose(steps, layer(t), atol=1e-6)
        True
    """

    def __init__(self, channels: int, heads: int, causal: bool = False):
        super().__init__()
        self.attention_norm = nn.LayerNorm(channels)
        self.attention = MultiHeadSelfAttention(channels, heads, causal=causal)
        self.mlp_norm = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels))

    def forward(self, tokens: Tensor, cache: KeyValueCache | None = None) -> Tensor:
        tokens = tokens + self.attention(self.attention_norm(tokens), cache)
        return tokens + self.mlp(self.mlp_norm(tokens))


class VisionTransformerSubnet(nn.Module):
    r"""A small ViT as a coupling subnet: ``t = conv3x3(x) + P`` over the ``H·W`` positions (``P`` the fixed
    :func:`sinusoidal_position_embedding`), ``depth`` :class:`TransformerBlock` s, ``LN``, then a zero-initialised
    1x1 conv (:class:`~cinn.blocks.subnets.ZeroConv2d`) to ``out_channels``.

    Shapes: ``(B, in_channels, H, W) → (B, out_channels, H, W)`` for any ``H, W``.
    """

    def __init__(self, in_channels: int, out_channels: int, width: int, depth: int = DEPTH):
        super().__init__()
        self.embed = nn.Conv2d(in_channels, width, 3, padding=1)
        self.blocks = nn.Sequential(*(TransformerBlock(width, attention_heads(width)) for _ in range(depth)))
        self.norm = nn.LayerNorm(width)
        self.out = ZeroConv2d(width, out_channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        _, channels, rows, cols = h.shape
        tokens = to_tokens(h) + sinusoidal_position_embedding(rows, cols, channels, dtype=h.dtype, device=h.device)
        return self.out(to_image(self.norm(self.blocks(tokens)), rows, cols))


def concat_elu(x: Tensor) -> Tensor:
    """``ELU([x, −x])`` on the channel axis (PixelCNN++, Flow++): ``(B, C, ...) → (B, 2C, ...)``, keeping both
    signs' information where an ELU alone would squash the negative half."""
    return F.elu(torch.cat([x, -x], dim=1))


def channel_layer_norm(norm: nn.LayerNorm, x: Tensor) -> Tensor:
    """LayerNorm ``norm`` over the channels of each position of ``x`` ``(B, C, H, W)`` (a view for NHWC)."""
    return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class GatedConvBlock(nn.Module):
    r"""Flow++'s gated residual conv block on ``x`` of ``channels`` channels:

        ``[a, b] = conv3x3(CELU(conv3x3(CELU(x))))``,  ``x ← LN(x + a ⊙ σ(b))``

    with ``CELU`` :func:`concat_elu` and the gate a GLU; LN over the channels of each position.

    Shapes: ``(B, channels, H, W) → (B, channels, H, W)``.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv_in = nn.Conv2d(2 * channels, channels, 3, padding=1)
        self.conv_gate = nn.Conv2d(2 * channels, 2 * channels, 3, padding=1)
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.conv_gate(concat_elu(self.conv_in(concat_elu(x)))).chunk(2, dim=1)
        return channel_layer_norm(self.norm, x + value * torch.sigmoid(gate))  # F.glu's backward would be NCHW


class GatedAttentionBlock(nn.Module):
    r"""Flow++'s gated self-attention block on the ``H·W`` positions of ``x`` (tokens ``t``):

        ``[a, b] = MHSA(t + P)`` (to ``2·channels``),  ``t ← LN(t + a ⊙ σ(b))``

    with ``P`` the fixed :func:`sinusoidal_position_embedding` (Flow++ learns one of a fixed size; this one holds
    for any ``H, W``).

    Shapes: ``(B, channels, H, W) → (B, channels, H, W)``.
    """

    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.attention = MultiHeadSelfAttention(channels, heads, out_features=2 * channels)
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        _, channels, rows, cols = x.shape
        tokens = to_tokens(x)
        position = sinusoidal_position_embedding(rows, cols, channels, dtype=tokens.dtype, device=tokens.device)
        gated = F.glu(self.attention(tokens + position), dim=-1)
        return to_image(self.norm(tokens + gated), rows, cols)


class GatedAttentionSubnet(nn.Module):
    r"""Flow++'s coupling network: ``h = conv3x3(x)``, ``depth`` × (:class:`GatedConvBlock` →
    :class:`GatedAttentionBlock`), then a zero-initialised conv3x3 of ``concat_elu(h)``
    (:class:`~cinn.blocks.subnets.ZeroConv2d`) to ``out_channels``.

    Shapes: ``(B, in_channels, H, W) → (B, out_channels, H, W)`` for any ``H, W``.
    """

    def __init__(self, in_channels: int, out_channels: int, width: int, depth: int = DEPTH):
        super().__init__()
        heads = attention_heads(width)
        self.embed = nn.Conv2d(in_channels, width, 3, padding=1)
        self.blocks = nn.Sequential(*(block for _ in range(depth)
                                      for block in (GatedConvBlock(width), GatedAttentionBlock(width, heads))))
        self.out = ZeroConv2d(2 * width, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(concat_elu(self.blocks(self.embed(x))))


@register_subnet
def vit_attention(width: int) -> SubnetConstructor:
    r"""A small ViT of ``width`` channels (:class:`VisionTransformerSubnet`): conv3x3 → + sinusoidal 2-D
    positions → 2 pre-LN transformer blocks (``attention_heads(width)`` heads, i.e. heads of ≥ 64 channels; MLP
    4·width, GELU) → LN → zero 1x1 conv. About ``24·width²`` weights.

    Example:
        >>> net = vit_attention(32)(in_channels=6, out_channels=12)
        >>> net(torch.randn(2, 6, 5, 7)).shape
        torch.Size([2, 12, 5, 7])
        >>> net(torch.randn(2, 6, 3, 3)).abs().max().item()  # zero last layer: the coupling starts as the identity
        0.0
    """
    return lambda in_channels, out_channels: VisionTransformerSubnet(in_channels, out_channels, width)


@register_subnet
def gated_attention(width: int) -> SubnetConstructor:
    r"""Flow++'s subnet of ``width`` channels (:class:`GatedAttentionSubnet`): conv3x3 → 2 × (gated residual conv
    block → gated self-attention block with ``attention_heads(width)`` heads) → concat-ELU → zero conv3x3.
    About ``118·width²`` weights (the 3x3 convs of the gated blocks).

    Example:
        >>> net = gated_attention(32)(in_channels=6, out_channels=12)
        >>> net(torch.randn(2, 6, 5, 7)).shape
        torch.Size([2, 12, 5, 7])
        >>> net(torch.randn(2, 6, 3, 3)).abs().max().item()  # zero last layer: the coupling starts as the identity
        0.0
    """
    return lambda in_channels, out_channels: GatedAttentionSubnet(in_channels, out_channels, width)

