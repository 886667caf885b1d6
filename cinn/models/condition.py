"""Condition networks: turn the user's condition into the tensors the coupling blocks receive.

Each returns a list of tensors, one per scale of the flow, and is trained jointly with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class OneHot(nn.Module):
    """Class labels → one-hot vectors: ``(B,)`` integers → ``[(B, K)]``; float ``(B, K)`` passes through.

    Example:
        >>> OneHot(10)(torch.tensor([3, 1]))[0].shape
        torch.Size([2, 10])
    """

    def __init__(self, n_classes: int):
        super().__init__()
        self.n_classes = n_classes
        # Follows .to()/.double() of the model, so the one-hot vectors get the model's dtype.
        self.register_buffer("dtype_reference", torch.zeros(()), persistent=False)

    def forward(self, c: Tensor) -> list[Tensor]:
        if c.is_floating_point():
            if c.dim() != 2 or c.shape[1] != self.n_classes:
                raise ValueError(f"expected labels (B,) or one-hot (B, {self.n_classes}), got {tuple(c.shape)}")
            return [c]
        if c.dim() != 1:
            raise ValueError(f"expected integer labels of shape (B,), got {tuple(c.shape)}")
        if c.numel() and (c.min() < 0 or c.max() >= self.n_classes):
            raise ValueError(f"labels must lie in [0, {self.n_classes - 1}], got {c.min()}..{c.max()}")
        return [F.one_hot(c, self.n_classes).to(self.dtype_reference.dtype)]


def default_condition_channels(n_levels: int) -> list[int]:
    """Feature widths per level of an image condition network: 32, 64, 128, 256, 256, ..."""
    return [min(32 * 2**level, 256) for level in range(n_levels)]


class ImageConditionPyramid(nn.Module):
    """A conv net on a condition image giving features at each scale of a multi-scale cINN.

    Each stage is a stride-2 3x3 conv, ReLU, 3x3 conv, ReLU applied to the previous stage's output (the
    condition image for the first). The first ``extra_stages`` stages (width ``channels[0] // 2``)
    only bring a condition image ``2^extra_stages`` times larger than the flow's input down to its
    size — as in colourisation, where L has a higher resolution than ab — and give no output. Output
    ``l`` (0-based) has ``channels[l]`` maps at ``(H / 2^(e+l+1), W / 2^(e+l+1))``, ``e = extra_stages``:
    the resolution of level ``l`` of a flow that Haar-downsamples before each level.

    With ``global_features = G > 0`` the pyramid also sees the whole image (Iizuka et al. 2016's fusion): the
    coarsest output ``f_L``, averaged over all positions, goes through two linear layers with ReLU to a vector
    ``g`` of ``G`` numbers, and every output gets a per-channel offset from it,
    ``f_l ← f_l + W_l g`` broadcast over positions. The ``W_l`` start at zero, so an untrained global branch
    leaves the features as they were; ``g`` does not depend on the image size (a mean over positions), so a
    model trained on crops runs on whole photos.

    Shapes: ``(B, C_c, H, W)`` → ``[(B, channels[l], H/2^(e+l+1), W/2^(e+l+1)) for l]``.

    Example:
        >>> net = ImageConditionPyramid(1, (16, 32))
        >>> [f.shape[1:] for f in net(torch.randn(2, 1, 16, 16))]
        [torch.Size([16, 8, 8]), torch.Size([32, 4, 4])]
        >>> [f.shape[1:] for f in ImageConditionPyramid(1, (16, 32), extra_stages=1)(torch.randn(2, 1, 32, 32))]
        [torch.Size([16, 8, 8]), torch.Size([32, 4, 4])]
        >>> [f.shape[1:] for f in ImageConditionPyramid(1, (16, 32), global_features=8)(torch.randn(2, 1, 16, 16))]
        [torch.Size([16, 8, 8]), torch.Size([32, 4, 4])]
    """

    def __init__(self, in_channels: int, channels: Sequence[int], extra_stages: int = 0, global_features: int = 0):
        super().__init__()
        if extra_stages < 0 or global_features < 0:
            raise ValueError(f"extra_stages and global_features must not be negative, got {extra_stages} and "
                             f"{global_features}")
        self.extra_stages = extra_stages
        stages = []
        width = in_channels
        for out in [max(channels[0] // 2, 1)] * extra_stages + list(channels):
            stages.append(nn.Sequential(
                nn.Conv2d(width, out, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(out, out, 3, padding=1), nn.ReLU(),
            ))
            width = out
        self.stages = nn.ModuleList(stages)
        self.global_net = self.fusions = None
        if global_features:
            self.global_net = nn.Sequential(  # no convolution of a 1x1 map: its bf16 NHWC weight gradient is NaN
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, width), nn.ReLU(),
                nn.Linear(width, global_features), nn.ReLU())
            self.fusions = nn.ModuleList(nn.Linear(global_features, out, bias=False) for out in channels)
            for fusion in self.fusions:
                nn.init.zeros_(fusion.weight)

    def forward(self, c: Tensor) -> list[Tensor]:
        features = []
        for stage in self.stages:
            c = stage(c)
            features.append(c)
        features = features[self.extra_stages:]
        if self.global_net is None:
            return features
        whole = self.global_net(features[-1])
        return [f + fusion(whole)[:, :, None, None].to(f.dtype) for f, fusion in zip(features, self.fusions,
                                                                                       strict=True)]


class LabelMaps(nn.Module):
    """Class labels → learned embeddings broadcast as constant feature maps at each scale.

    Shapes: labels ``(B,)`` (or one-hot ``(B, K)``) → ``[(B, channels[l], *sizes[l]) for l]``.

    Example:
        >>> net = LabelMaps(10, (8, 8), [(14, 14), (7, 7)])
        >>> [f.shape[1:] for f in net(torch.tensor([1, 2]))]
        [torch.Size([8, 14, 14]), torch.Size([8, 7, 7])]
    """

    def __init__(self, n_classes: int, channels: Sequence[int], sizes: Sequence[tuple[int, int]]):
        super().__init__()
        self.one_hot = OneHot(n_classes)
        self.embeddings = nn.ModuleList(nn.Linear(n_classes, width) for width in channels)
        self.sizes = [tuple(size) for size in sizes]

    def forward(self, c: Tensor) -> list[Tensor]:
        (y,) = self.one_hot(c)
        return [embed(y)[:, :, None, None].expand(-1, -1, *size)
                for embed, size in zip(self.embeddings, self.sizes, strict=True)]
