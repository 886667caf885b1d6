r"""TarFlow's blocks (Zhai et al. 2024, "Normalizing Flows are Capable Generative Models"): an image cut into
patch tokens (:class:`Patchify`), then affine autoregressive flows over the tokens whose parameters come from a
causal transformer (:class:`TransformerAutoregressiveBlock`).

The forward pass (``x → z``, training) transforms all tokens at once; the inverse (sampling) is sequential over
the tokens and caches every attention layer's keys and values (:class:`KeyValueCache`), so each step computes
one token.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from FrEIA.modules import InvertibleModule
from torch import Tensor, nn

from cinn.blocks._shapes import exact_precision, per_sample, sum_per_sample
from cinn.blocks.attention import KeyValueCache, TransformerBlock, attention_heads, to_image, to_tokens
from cinn.blocks.subnets import zero_linear


def _patch_grid(shape: Sequence[int], patch_size: int) -> tuple[int, int]:
    """The ``(rows, cols)`` of ``patch_size`` patches that tile an image of ``shape`` ``(C, H, W)``."""
    if len(shape) != 3:
        raise ValueError(f"Patchify takes images (C, H, W), got shape {tuple(shape)}")
    _, height, width = shape
    if patch_size < 1 or height % patch_size or width % patch_size:
        raise ValueError(f"patch size {patch_size} does not divide the image size {height}x{width}; use a "
                         "divisor of both sides")
    return height // patch_size, width // patch_size


class Patchify(InvertibleModule):
    r"""Cut an image into non-overlapping ``p x p`` patches, one token each, row-major: ``(B, C, H, W) →
    (B, T, D)`` with ``T = (H/p)·(W/p)`` tokens of ``D = C·p²`` features; a permutation, ``log_det = 0``.

    Feature ``c·p² + i·p + j`` of a token is channel ``c`` at offset ``(i, j)`` of its patch
    (:func:`torch.nn.functional.pixel_unshuffle`'s order, so ``p = 2`` is :class:`~cinn.blocks.Squeeze` with the
    positions as tokens).

    Example:
        >>> (tokens,), log_det = Patchify([(1, 4, 4)], patch_size=2)([torch.arange(16.0).view(1, 1, 4, 4)])
        >>> tokens.shape, log_det
        (torch.Size([1, 4, 4]), tensor([0.]))
        >>> tokens[0, 1]   # the top-right patch [[2, 3], [6, 7]]
        tensor([2., 3., 6., 7.])
    """

    def __init__(self, dims_in: list[tuple[int, ...]], dims_c: list[tuple[int, ...]] | None = None, *,
                 patch_size: int):
        super().__init__(dims_in, dims_c)
        self.patch_size = patch_size
        self.rows, self.cols = _patch_grid(dims_in[0], patch_size)

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}"

    def forward(self, x_or_z: list[Tensor], c: list[Tensor] | None = None, rev: bool = False,
                jac: bool = True) -> tuple[tuple[Tensor], Tensor]:
        x = x_or_z[0]
        if rev:
            out = F.pixel_shuffle(to_image(x, self.rows, self.cols), self.patch_size).contiguous()
        else:
            out = to_tokens(F.pixel_unshuffle(x, self.patch_size))
        return (out,), per_sample(0.0, x)

    def output_dims(self, input_dims: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        rows, cols = _patch_grid(input_dims[0], self.patch_size)
        return [(rows * cols, input_dims[0][0] * self.patch_size ** 2)]


class TransformerAutoregressiveBlock(InvertibleModule):
    r"""TarFlow's block: an affine autoregressive flow over ``T`` tokens whose parameters come from a causal
    transformer (Zhai et al. 2024).

    With the tokens shifted by one, ``s = (0, x_0, …, x_{T−2})``, the network computes

        ``h = W_in s + P [+ W_c c]``,  ``h ← layers × TransformerBlock(h)`` (causal),
        ``[μ, a] = W_out LN(h)``  (``W_out`` zero-initialised),  ``α = clamp·tanh(a/clamp)``

    with ``P`` a learned position embedding ``(T, width)`` and ``c`` an optional one-hot class vector added to
    every token. Token ``t``'s ``(μ_t, α_t)`` thus depend on ``x_{<t}`` (and ``c``) only — token 0's on ``c`` and
    ``P_0`` alone — and

        ``z_t = (x_t − μ_t)·exp(−α_t)``,  ``log_det = −Σ_t Σ_d α_{t,d}``  (shape ``(B,)``).

    The soft clamp keeps ``|α| < clamp``: one block scales a feature by at most ``e^clamp`` either way, which
    bounds how much the sequential inverse can amplify an error. ``reverse_order=True`` runs the same map on the
    tokens in reverse order (a flip of the token axis before and after), so ``z_t`` depends on ``x_{≥t}``;
    TarFlow alternates the two from block to block. The zero last layer makes a new block the identity.

    Forward (``x → z``) runs all tokens at once: one batched pass of ``T`` tokens through ``layers`` causal
    layers. The inverse ``x_t = z_t·exp(α_t) + μ_t`` is sequential, ``t = 0, …, T−1``: each step runs the network
    on one token, which attends to the earlier ones through one :class:`KeyValueCache` per layer, so one inverse
    costs ``T`` one-token passes — the work of one forward pass (``O(T·width²·layers)`` in the weights plus
    ``O(T²·width·layers)`` in attention), but in ``T`` small sequential steps instead of one batched one.

    Under autocast (bf16) the one-token steps round differently from the forward's batched pass (its attention
    kernel sums in another order), and one bf16 rounding in a token moves the parameters of every later token:
    the cached inverse would hold to bf16 precision only. So under autocast it is then settled by batched passes
    ``x ← z·exp(α(x)) + μ(x)`` until ``x`` no longer changes; each pass fixes at least one more token, and in bf16
    it takes about ``T`` of them (``T`` forward passes in all), after which it inverts the forward exactly as
    computed. cinn samples in float32, without autocast, where the cached inverse agrees with the forward to
    float32 precision. The network runs in bfloat16 under autocast; ``μ, α``, ``z`` and the log-det stay in
    ``x``'s dtype.

    Shapes: ``x`` ``(B, T, D)``, condition ``[(B, K)]`` (or none) → ``z`` ``(B, T, D)``.

    Example:
        >>> block = TransformerAutoregressiveBlock([(4, 3)], [(2,)], width=16, layers=1)
        >>> x, c = torch.randn(5, 4, 3), torch.eye(2)[torch.tensor([0, 1, 1, 0, 1])]
        >>> (z,), log_det = block([x], c=[c])
        >>> (x_back,), _ = block([z], c=[c], rev=True)
        >>> z.shape, log_det.shape, torch.allclose(x_back, x)
        (torch.Size([5, 4, 3]), torch.Size([5]), True)
    """

    def __init__(self, dims_in: list[tuple[int, ...]], dims_c: list[tuple[int, ...]] | None = None, *,
                 width: int = 128, layers: int = 4, heads: int | None = None, clamp: float = 2.0,
                 reverse_order: bool = False):
        super().__init__(dims_in, dims_c)
        if len(dims_in[0]) != 2:
            raise ValueError(f"an autoregressive block takes tokens (T, D), got shape {tuple(dims_in[0])}; "
                             "cut images into tokens with Patchify first")
        if self.dims_c and (len(self.dims_c) != 1 or len(self.dims_c[0]) != 1):
            raise ValueError(f"an autoregressive block takes one flat condition (a one-hot class vector), got "
                             f"{self.dims_c}")
        if not clamp > 0:
            raise ValueError(f"clamp must be positive, got {clamp}")
        self.tokens, self.features = dims_in[0]
        self.clamp = clamp
        self.reverse_order = reverse_order
        self.embed = nn.Linear(self.features, width)
        self.position = nn.Parameter(0.02 * torch.randn(self.tokens, width))
        self.class_embedding = nn.Linear(self.dims_c[0][0], width) if self.dims_c else None
        heads = attention_heads(width) if heads is None else heads
        self.layers = nn.ModuleList(TransformerBlock(width, heads, causal=True) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.out = zero_linear(width, 2 * self.features)

    def extra_repr(self) -> str:
        return f"clamp={self.clamp}, reverse_order={self.reverse_order}"

    def _mean_and_log_scale(self, inputs: Tensor, conditions: list[Tensor],
                            caches: Sequence[KeyValueCache] | None = None, first: int = 0
                            ) -> tuple[Tensor, Tensor]:
        """``(μ, α)`` of the tokens ``first, first + 1, …`` from their network inputs (each the token before,
        zeros for token 0), in the inputs' dtype even under autocast. With ``caches`` (one per layer) the
        earlier tokens come from the caches and the new ones join them."""
        h = self.embed(inputs) + self.position[first:first + inputs.shape[1]]
        if self.class_embedding is not None:
            h = h + self.class_embedding(conditions[0])[:, None, :]
        for index, layer in enumerate(self.layers):
            h = layer(h, None if caches is None else caches[index])
        mean, raw = self.out(self.norm(h)).to(inputs.dtype).chunk(2, dim=-1)
        with exact_precision(inputs):
            return mean, self.clamp * torch.tanh(raw / self.clamp)

    def _predicted(self, x: Tensor, conditions: list[Tensor]) -> tuple[Tensor, Tensor]:
        """``(μ, α)`` of every token of ``x`` in one batched pass, from the tokens shifted by one."""
        return self._mean_and_log_scale(F.pad(x[:, :-1], (0, 0, 1, 0)), conditions)

    def _invert(self, z: Tensor, conditions: list[Tensor]) -> tuple[Tensor, Tensor]:
        """``x`` with ``z = (x − μ(x))·exp(−α(x))``, token by token, and its ``α``."""
        caches = [KeyValueCache() for _ in self.layers]
        token = z.new_zeros(z.shape[0], 1, self.features)
        tokens, log_scales = [], []
        for t in range(self.tokens):
            mean, log_scale = self._mean_and_log_scale(token, conditions, caches, first=t)
            with exact_precision(z):
                token = z[:, t:t + 1] * torch.exp(log_scale) + mean
            tokens.append(token)
            log_scales.append(log_scale)
        x, log_scale = torch.cat(tokens, dim=1), torch.cat(log_scales, dim=1)
        if torch.is_autocast_enabled(z.device.type):
            for _ in range(self.tokens):
                mean, log_scale = self._predicted(x, conditions)
                with exact_precision(z):
                    settled = z * torch.exp(log_scale) + mean
                if torch.equal(settled, x):
                    break
                x = settled
        return x, log_scale

    def forward(self, x_or_z: list[Tensor], c: list[Tensor] | None = None, rev: bool = False,
                jac: bool = True) -> tuple[tuple[Tensor], Tensor]:
        conditions = list(c) if c is not None else []
        if tuple(x_or_z[0].shape[1:]) != (self.tokens, self.features):
            raise ValueError(f"this block takes (B, {self.tokens}, {self.features}) tokens, got "
                             f"{tuple(x_or_z[0].shape)}: a TarFlow takes images of the size it was built for")
        x = x_or_z[0].flip(1) if self.reverse_order else x_or_z[0]
        if rev:
            out, log_scale = self._invert(x, conditions)
        else:
            mean, log_scale = self._predicted(x, conditions)
            with exact_precision(x):
                out = (x - mean) * torch.exp(-log_scale)
        log_det = sum_per_sample(log_scale)
        return (out.flip(1) if self.reverse_order else out,), (log_det if rev else -log_det)

    def output_dims(self, input_dims: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return input_dims
