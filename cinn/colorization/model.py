"""Colourisation models: their spec (cINN or L2 baseline), their size rule, the data conventions a
checkpoint records for them, and the :class:`~cinn.colorization.Colorizer` of a trained one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from cinn.blocks import CouplingSpec, map_spec
from cinn.color import AB_SCALE, L_CENTER, L_SCALE
from cinn.colorization.colorizer import Colorizer, ColorModel
from cinn.engine.checkpoint import CheckpointError, load_trained, require_task
from cinn.models import build_cinn, build_regressor
from cinn.models.registry import build_from_spec, model_spec


def colorization_model_spec(architecture: Literal["cinn", "regressor"], crop_size: int, ab_downsample: int = 1,
                            *, n_levels: int = 3, blocks_per_level: int = 4, hidden_channels: int = 64,
                            condition_channels: Sequence[int] | None = None,
                            coupling: CouplingSpec = "soft_clamp_affine", subnet: str = "cinn_conv",
                            split_prior: bool = False, actnorm: bool = False, global_features: int = 0,
                            seed: int = 0) -> dict[str, Any]:
    """The spec (:mod:`cinn.models.registry`) of a model of ab ``(2, s, s)``, ``s = crop_size /
    ab_downsample``, given L ``(1, crop_size, crop_size)``: the cINN (:func:`~cinn.models.build_cinn`) or
    the L2 baseline with the same condition network (:func:`~cinn.models.build_regressor`; with
    ``global_features`` it also sees the whole photo, :class:`~cinn.models.condition.ImageConditionPyramid`).
    Both also run at other sizes (L sides multiples of ``2^n_levels · ab_downsample``).

    Example:
        >>> colorization_model_spec("regressor", 16, 2, n_levels=2)["arguments"]["input_shape"]
        [2, 8, 8]
    """
    ab_size = crop_size // ab_downsample
    shapes = {"input_shape": (2, ab_size, ab_size), "condition_shape": (1, crop_size, crop_size),
              "n_levels": n_levels, "condition_channels": condition_channels, "global_features": global_features}
    if architecture == "regressor":
        return model_spec(build_regressor, **shapes)
    if architecture != "cinn":
        raise ValueError(f"unknown architecture {architecture!r}; use 'cinn' or 'regressor'")
    return model_spec(build_cinn, **shapes, blocks_per_level=blocks_per_level, hidden_channels=hidden_channels,
                      coupling=map_spec(coupling), subnet=subnet, split_prior=split_prior, actnorm=actnorm,
                      seed=seed)


def build_colorization_model(architecture: Literal["cinn", "regressor"], crop_size: int, ab_downsample: int = 1,
                             **options: Any) -> ColorModel:
    """The model :func:`colorization_model_spec` describes (same arguments).

    Example:
        >>> model = build_colorization_model("cinn", 16, 2, n_levels=2, blocks_per_level=1, hidden_channels=8)
        >>> model.log_prob(torch.randn(3, 2, 8, 8), torch.randn(3, 1, 16, 16)).shape
        torch.Size([3])
    """
    return build_from_spec(colorization_model_spec(architecture, crop_size, ab_downsample, **options))


def size_multiple(n_levels: int, ab_downsample: int) -> int:
    """What the sides of L must be multiples of for a model with ``n_levels`` levels: ``2^n_levels · f``.

    Example:
        >>> size_multiple(3, 2)
        16
    """
    return 2**n_levels * ab_downsample


def colour_conventions(shorter_side: int, n_levels: int, ab_downsample: int) -> dict[str, Any]:
    """What a colourisation checkpoint records about its data: the scale photos were seen at (shorter side
    in pixels), the ab resolution factor, the size rule, and the Lab normalisation of :mod:`cinn.color`.

    Example:
        >>> colour_conventions(128, 3, 2)["size_multiple"]
        16
    """
    return {"shorter_side": shorter_side, "ab_downsample": ab_downsample,
            "size_multiple": size_multiple(n_levels, ab_downsample),
            "lab": {"L_center": L_CENTER, "L_scale": L_SCALE, "ab_scale": AB_SCALE}}


def colorizer_for(model: nn.Module, conventions: dict[str, Any], device: torch.device | str = "cpu") -> Colorizer:
    """The :class:`Colorizer` of a trained model with the data ``conventions`` its checkpoint records.

    Example:
        >>> model = build_colorization_model("regressor", 16, 2, n_levels=2)
        >>> colorizer_for(model, colour_conventions(16, 2, 2)).multiple
        8
    """
    return Colorizer(model, conventions["shorter_side"], conventions["size_multiple"],
                     conventions["ab_downsample"], device)


PRETRAINED_COLORIZER = Path(__file__).parent / "pretrained" / "colorizer.pt"
"""The pretrained colourisation cINN shipped with cinn (weights and model spec; see docs/COLORIZATION.md)."""


def load_colorizer(checkpoint: str | Path | None = None, device: torch.device | str = "cpu") -> Colorizer:
    """The :class:`Colorizer` of a ``tasks.colorize`` checkpoint (the weights it gives users), built from the
    file alone with :func:`cinn.load_trained`; without a path, the pretrained model shipped with cinn.

    Example:
        >>> colorizer = load_colorizer()   # doctest: +SKIP
        >>> colourings = colorizer.colorize(photo, n_samples=8, temperature=0.8)   # doctest: +SKIP
    """
    if checkpoint is None:
        if not PRETRAINED_COLORIZER.is_file():
            raise CheckpointError(f"the pretrained colouriser {PRETRAINED_COLORIZER} is not installed; "
                                  "reinstall cinn, or pass the checkpoint of a model you trained")
        checkpoint = PRETRAINED_COLORIZER
    trained = load_trained(checkpoint, device)
    require_task(trained.task, "colorize", checkpoint)
    return colorizer_for(trained.model, trained.conventions, device)
