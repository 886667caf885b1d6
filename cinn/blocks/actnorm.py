"""ActNorm: a per-channel affine map with data-dependent initialisation (Kingma & Dhariwal 2018)."""

from __future__ import annotations

import torch
from FrEIA.modules import InvertibleModule
from torch import Tensor, nn

from cinn.blocks._shapes import channel_param_shape, per_sample, spatial_size


class ActNorm(InvertibleModule):
    r"""Per-channel affine normalisation ``y = (x + b) · exp(s)``.

    Forward: ``y_c = (x_c + b_c) · exp(s_c)`` for every channel ``c`` and position.
    ``log_det = H·W·Σ_c s_c`` (``H·W`` = positions per channel, 1 for flat inputs), shape ``(B,)``.
    Reverse: ``x = y · exp(-s) - b`` with ``log_det`` negated.

    The first forward pass on data initialises ``b = -mean(x)``, ``s = -log(std(x))`` per channel,
    so the output of that batch has zero mean and unit variance. Whether that happened is the
    persisted buffer ``initialized``: loading a checkpoint restores it and never re-initialises. The buffer
    is read once; after it has been seen true the forward pass does not read it again (on a GPU every read
    waits for the device), until a state dict is loaded.
    Running the reverse direction before initialisation is an error (it would initialise from
    latents).

    Shapes: input and output ``(B, C)`` or ``(B, C, H, W)``.

    Example:
        >>> norm = ActNorm([(3, 8, 8)])
        >>> (y,), log_det = norm([torch.randn(16, 3, 8, 8) * 5 + 2])   # initialises on this batch
        >>> (x,), _ = norm([y], rev=True)
    """

    def __init__(self, dims_in: list[tuple[int, ...]], dims_c: list[tuple[int, ...]] | None = None,
                 eps: float = 1e-6):
        super().__init__(dims_in, dims_c)
        shape = dims_in[0]
        self.bias = nn.Parameter(torch.zeros(channel_param_shape(shape)))
        self.log_scale = nn.Parameter(torch.zeros(channel_param_shape(shape)))
        self.register_buffer("initialized", torch.tensor(False))
        self._seen_initialized = False
        self.positions = spatial_size(shape)
        self.eps = eps

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set ``b`` and ``s`` so that ``x`` is mapped to zero mean, unit variance per channel."""
        reduce_dims = [d for d in range(x.dim()) if d != 1]
        mean = x.mean(dim=reduce_dims, keepdim=True)
        std = x.std(dim=reduce_dims, keepdim=True, unbiased=False)
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + self.eps))
        self.initialized.fill_(True)

    def forward(self, x_or_z: list[Tensor], c: list[Tensor] | None = None, rev: bool = False,
                jac: bool = True) -> tuple[tuple[Tensor], Tensor]:
        x = x_or_z[0]
        if not self._seen_initialized:
            if not self.initialized:
                if rev:
                    raise RuntimeError(
                        "ActNorm is not initialised: run a forward pass on data (or load a trained "
                        "checkpoint) before running the model in reverse.")
                self.initialize(x)
            self._seen_initialized = True
        log_det = per_sample(self.log_scale.sum() * self.positions, x)
        if rev:
            return (x * torch.exp(-self.log_scale) - self.bias,), -log_det
        return ((x + self.bias) * torch.exp(self.log_scale),), log_det

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # the loaded buffer decides again
        self._seen_initialized = False
        super()._load_from_state_dict(*args, **kwargs)

    def output_dims(self, input_dims: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return input_dims
