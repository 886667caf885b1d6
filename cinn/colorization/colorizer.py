r"""The colourisation API: a trained model of ab given L turned into colourings of photos of any size.

A model here is anything with ``log_prob(ab_n, L_n)`` and ``sample(n, L_n, temperature, generator,
spatial_size)`` in the network units of :mod:`cinn.color` (:class:`ColorModel`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from cinn.color import denormalize_ab, normalize_lightness
from cinn.colorization.full_resolution import join_lightness, lightness_of, working_size
from cinn.data.images import MAX_ASPECT_RATIO, MAX_PIXELS
from cinn.models.arguments import require_count, require_temperature, require_tensor

MAX_SAMPLES = 64
"""The most colourings of one photo in one call: they are drawn in one batch, so memory grows with them."""
MIN_PHOTO_SIDE = 8
"""The fewest pixels a photo to colourise may have on its shorter side: below it there is nothing to see."""


class ColorModel(Protocol):
    """A conditional model of ``ab_n`` given ``L_n``: the cINN (:func:`~cinn.models.build_cinn`) or the
    deterministic :class:`~cinn.models.GaussianRegressor` baseline."""

    def log_prob(self, x: Tensor, c: Tensor) -> Tensor: ...

    def sample(self, n: int, c: Tensor, temperature: float = 1.0, generator: torch.Generator | None = None,
               spatial_size: Sequence[int] | None = None) -> Tensor: ...


class Colorizer:
    r"""Colourise photos of any size with a trained model.

    A photo ``(3, H, W)`` (uint8 RGB; a grey photo has R = G = B) → its lightness ``L``, which is
    resized to the model's working scale (:func:`working_size`; shorter side ``shorter_side``, sides
    multiples of ``multiple``; box filter when shrinking); the model draws ``n_samples`` ab fields
    at 1/``ab_downsample`` of that size at ``temperature``; each is upsampled (bilinear) to ``H × W``
    and joined with the photo's own full-resolution ``L``, then Lab → RGB. The full-resolution steps
    run in strips of rows, so memory beyond the photo and the result stays small for any size.

    Example:
        >>> from cinn.colorization import build_colorization_model
        >>> model = build_colorization_model("cinn", 16, 2, n_levels=2, blocks_per_level=1, hidden_channels=8)
        >>> colorizer = Colorizer(model.eval(), shorter_side=16, multiple=8, ab_downsample=2)
        >>> colorizer.colorize(torch.randint(0, 256, (3, 40, 30), dtype=torch.uint8), n_samples=2).shape
        torch.Size([2, 3, 40, 30])
    """

    def __init__(self, model: ColorModel, shorter_side: int, multiple: int, ab_downsample: int = 1,
                 device: torch.device | str = "cpu"):
        self.model = model
        self.shorter_side, self.multiple, self.ab_downsample = shorter_side, multiple, ab_downsample
        self.device = torch.device(device)

    @torch.no_grad()
    def colorize(self, image: Tensor, n_samples: int = 8, temperature: float = 0.8, seed: int = 0) -> Tensor:
        """``n_samples`` colourings ``(n_samples, 3, H, W)`` uint8 of one photo ``(3, H, W)`` uint8. The photo
        may have at most :data:`~cinn.data.images.MAX_PIXELS` pixels, sides at most
        :data:`~cinn.data.images.MAX_ASPECT_RATIO` apart and at least :data:`MIN_PHOTO_SIDE` pixels, as for the
        ``colorize`` command; a wrong photo, count or
        temperature is a :class:`ValueError` or :class:`TypeError` that says what was expected."""
        image = require_tensor(image, "image")
        if image.dim() != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
            raise ValueError(f"expected a uint8 RGB photo (3, H, W), got {image.dtype} {tuple(image.shape)}; "
                             "torchvision.transforms.functional.pil_to_tensor makes one from a PIL image")
        n_samples = require_count(n_samples, "n_samples", MAX_SAMPLES)
        temperature = require_temperature(temperature)
        height, width = image.shape[-2:]
        if (height * width > MAX_PIXELS or max(height, width) > MAX_ASPECT_RATIO * min(height, width)
                or min(height, width) < MIN_PHOTO_SIDE):
            raise ValueError(f"the photo is {width}x{height} pixels; a photo may have at most {MAX_PIXELS} "
                             f"pixels, its longer side at most {MAX_ASPECT_RATIO} times its shorter side, which "
                             f"must be at least {MIN_PHOTO_SIDE}")
        lightness = lightness_of(image)
        size = working_size(height, width, self.shorter_side, self.multiple)
        shrinking = size[0] <= height and size[1] <= width
        small = (F.interpolate(lightness, size=size, mode="area") if shrinking else
                 F.interpolate(lightness, size=size, mode="bilinear", align_corners=False))
        generator = torch.Generator(self.device).manual_seed(seed)
        ab_size = tuple(side // self.ab_downsample for side in size)
        condition = normalize_lightness(small.to(self.device)).expand(n_samples, -1, -1, -1)
        ab = denormalize_ab(self.model.sample(n_samples, condition, temperature, generator, spatial_size=ab_size))
        return join_lightness(lightness, ab)
