r"""Colourisation with a conditional model of ab given L: the training objective, metrics, and the API.

A model here is anything with ``log_prob(ab_n, L_n)`` and ``sample(n, L_n, temperature, generator,
spatial_size)`` in the network units of :mod:`cinn.color` — a cINN (:func:`~cinn.models.build_cinn`)
or the deterministic :class:`~cinn.models.GaussianRegressor` baseline. Both are fully convolutional,
so they colourise photos of any aspect ratio at the scale they were trained at.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from cinn.color import (
    ab_bits_per_dim,
    denormalize_ab,
    dequantize_ab,
    lab_to_rgb,
    normalize_ab,
    normalize_lightness,
    rgb_to_lab,
)
from cinn.data import collate_images
from cinn.engine.checkpoint import CheckpointError, load_checkpoint
from cinn.engine.trainer import trained_weights
from cinn.models import build_cinn, build_regressor


class ColorModel(Protocol):
    def log_prob(self, x: Tensor, c: Tensor) -> Tensor: ...

    def sample(self, n: int, c: Tensor, temperature: float = 1.0, generator: torch.Generator | None = None,
               spatial_size: Sequence[int] | None = None) -> Tensor: ...


def downsample_ab(ab: Tensor, factor: int) -> Tensor:
    """Mean of ab over ``factor × factor`` pixel blocks: ``(B, 2, H, W)`` → ``(B, 2, H/factor, W/factor)``."""
    return F.avg_pool2d(ab, factor) if factor > 1 else ab


class LabColorization:
    r"""Objective for colourisation: uint8 RGB photos → ``x`` = dequantised ``ab_n``, ``c`` = ``L_n``.

    ``prepare``: optionally a random ``crop_size²`` crop and a random horizontal flip per photo (both
    drawn from ``generator``), RGB → Lab (scikit-image), then ``L_n`` at full resolution as the
    condition and ``ab`` — averaged over ``ab_downsample²`` pixel blocks (colour varies slowly, so
    it is modelled at a lower resolution than L, as in the cINN paper), rounded to integer Lab units,
    plus noise — as the variable, in network units (:mod:`cinn.color`).
    ``noise="uniform"``: ``u − ½``, ``u ~ U[0, 1)`` (a valid bound, see :func:`~cinn.color.ab_bits_per_dim`);
    ``"gaussian"``: ``N(0, gaussian_std²)`` Lab units — a training loss only, never a reported number.

    Shapes: images ``uint8 (B, 3, H, W)`` → ``x (B, 2, h/f, w/f)``, ``c (B, 1, h, w)`` with ``h = w =
    crop_size`` (``H, W`` without cropping), ``f = ab_downsample``; ``bits_per_dim`` gives bits per
    ab dimension ``(B,)``.

    Example:
        >>> objective = LabColorization(crop_size=64, ab_downsample=2, flip=True)
        >>> ab, lightness = objective.prepare(photos_uint8, labels, torch.Generator().manual_seed(0))
    """

    def __init__(self, crop_size: int | None = None, ab_downsample: int = 1, flip: bool = False,
                 noise: Literal["uniform", "gaussian"] = "uniform", gaussian_std: float = 0.5):
        if noise not in ("uniform", "gaussian"):
            raise ValueError(f"noise must be 'uniform' or 'gaussian', got {noise!r}")
        self.crop_size, self.ab_downsample, self.flip = crop_size, ab_downsample, flip
        self.noise, self.gaussian_std = noise, gaussian_std

    def augment(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Random crops and flips, one draw per image."""
        if self.crop_size is not None:
            size = self.crop_size
            height, width = images.shape[-2:]
            if size > min(height, width):
                raise ValueError(f"crop size {size} exceeds the photos' size {height}x{width}")
            tops = torch.randint(height - size + 1, (len(images),), generator=generator, device=images.device)
            lefts = torch.randint(width - size + 1, (len(images),), generator=generator, device=images.device)
            images = torch.stack([image[:, top:top + size, left:left + size]
                                  for image, top, left in zip(images, tops.tolist(), lefts.tolist(), strict=True)])
        if self.flip:
            flipped = torch.rand(len(images), generator=generator, device=images.device) < 0.5
            images = torch.where(flipped[:, None, None, None], images.flip(-1), images)
        return images

    def prepare(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        lab = rgb_to_lab(self.augment(images, generator))
        ab = downsample_ab(lab[:, 1:], self.ab_downsample)
        if self.noise == "uniform":
            ab = dequantize_ab(ab, generator)
        else:
            noise = torch.randn(ab.shape, generator=generator, device=ab.device, dtype=ab.dtype)
            ab = torch.round(ab) + self.gaussian_std * noise
        return normalize_ab(ab), normalize_lightness(lab[:, :1])

    def bits_per_dim(self, log_prob: Tensor, x: Tensor) -> Tensor:
        return ab_bits_per_dim(-log_prob, x[0].numel())


@dataclass
class SampleMetrics:
    """Per-photo sample quality, all in Lab units: best-of-``n`` RMSE of ab against the truth, RMSE of
    the ``ab = 0`` (grey) prediction, and diversity (per-pixel standard deviation of ab across samples)."""

    best_rmse: Tensor
    grey_rmse: Tensor
    diversity: Tensor


@torch.no_grad()
def sample_metrics(model: ColorModel, dataset: Dataset, *, ab_downsample: int = 1, n_samples: int = 8,
                   temperature: float = 1.0, seed: int = 0, device: torch.device | str = "cpu") -> SampleMetrics:
    r"""Colourise every photo of ``dataset`` ``n_samples`` times and compare with its true ab, both at
    the model's ab resolution (1/``ab_downsample`` of the photo's).

    For photo ``i`` with true ``ab`` (``M`` values) and samples ``ab^(s)``:
    ``RMSE_s = sqrt(mean((ab^(s) − ab)²))``; best-of-n is ``min_s RMSE_s`` (the cINN paper's metric);
    grey is ``sqrt(mean(ab²))``; diversity is the mean over pixels and both channels of the standard
    deviation across samples (0 for a deterministic model).
    """
    device = torch.device(device)
    generator = torch.Generator(device).manual_seed(seed)
    best, grey, diversity = [], [], []
    for index in range(len(dataset)):
        image, _ = collate_images([dataset[index]])
        lab = rgb_to_lab(image.to(device))
        truth, lightness = downsample_ab(lab[:, 1:], ab_downsample), normalize_lightness(lab[:, :1])
        samples = denormalize_ab(model.sample(n_samples, lightness.expand(n_samples, -1, -1, -1), temperature,
                                              generator, spatial_size=truth.shape[-2:]))
        rmse = (samples - truth).pow(2).flatten(1).mean(1).sqrt()
        best.append(rmse.min())
        grey.append(truth.pow(2).mean().sqrt())
        diversity.append(samples.std(0, unbiased=True).mean() if n_samples > 1 else samples.new_zeros(()))
    return SampleMetrics(torch.stack(best).cpu(), torch.stack(grey).cpu(), torch.stack(diversity).cpu())


def working_size(height: int, width: int, shorter_side: int, multiple: int) -> tuple[int, int]:
    """The size at which a model trained on photos whose shorter side was ``shorter_side`` sees a
    ``height × width`` photo: same scale, each side rounded to a multiple of ``multiple`` (at least one).

    Example:
        >>> working_size(768, 1024, shorter_side=128, multiple=8)
        (128, 168)
    """
    scale = shorter_side / min(height, width)
    return tuple(max(multiple, round(side * scale / multiple) * multiple) for side in (height, width))


STRIP_PIXELS = 1 << 20  # full-resolution work is done in strips of about this many pixels per image


def lightness_of(photo: Tensor) -> Tensor:
    """``L`` of a uint8 RGB photo ``(3, H, W)`` as float32 ``(1, 1, H, W)``, converted in row strips so
    that a photo of any size needs only a few bytes per pixel beyond the result."""
    height, width = photo.shape[-2:]
    rows = max(1, STRIP_PIXELS // width)
    lightness = torch.empty((1, 1, height, width), dtype=torch.float32, device=photo.device)
    for top in range(0, height, rows):
        lightness[:, :, top:top + rows] = rgb_to_lab(photo[None, :, top:top + rows])[:, :1]
    return lightness


def resize_rows(image: Tensor, height: int, top: int, bottom: int) -> Tensor:
    """Rows ``top:bottom`` of ``image`` ``(B, C, h, W)`` resized to height ``height`` (bilinear,
    ``align_corners=False``), without making the other rows: equal to
    ``F.interpolate(image, size=(height, W), mode="bilinear")[..., top:bottom, :]``."""
    source_height = image.shape[-2]
    rows = torch.arange(top, bottom, device=image.device, dtype=torch.float32)
    position = ((rows + 0.5) * (source_height / height) - 0.5).clamp(min=0)
    below = position.floor().long().clamp(max=source_height - 1)
    above = (below + 1).clamp(max=source_height - 1)
    weight = (position - below)[:, None]
    return image[..., below, :] * (1 - weight) + image[..., above, :] * weight


def join_lightness(lightness: Tensor, ab: Tensor) -> Tensor:
    """RGB images from a full-resolution ``L`` ``(1, 1, H, W)`` and low-resolution ab fields ``(n, 2, h, w)``
    (Lab units), upsampled bilinearly to ``H × W``: uint8 ``(n, 3, H, W)``, built in row strips."""
    n, (height, width) = len(ab), lightness.shape[-2:]
    ab_wide = F.interpolate(ab.float().cpu(), size=(ab.shape[-2], width), mode="bilinear", align_corners=False)
    images = torch.empty((n, 3, height, width), dtype=torch.uint8)
    rows = max(1, STRIP_PIXELS // width)
    for top in range(0, height, rows):
        bottom = min(top + rows, height)
        strip_lightness = lightness[:, :, top:bottom].cpu().expand(n, -1, -1, -1)
        strip_ab = resize_rows(ab_wide, height, top, bottom)
        images[:, :, top:bottom] = lab_to_rgb(torch.cat([strip_lightness, strip_ab], dim=1))
    return images


def grey_version(photo: Tensor) -> Tensor:
    """A uint8 RGB photo ``(3, H, W)`` reduced to its lightness: ``L`` kept, ``ab = 0`` (what the model sees)."""
    return join_lightness(lightness_of(photo), torch.zeros(1, 2, 1, 1))[0]


class Colorizer:
    r"""Colourise photos of any size with a trained model.

    A photo ``(3, H, W)`` (uint8 RGB; a grey photo has R = G = B) → its lightness ``L``, which is
    resized to the model's working scale (:func:`working_size`; shorter side ``shorter_side``, sides
    multiples of ``multiple``; box filter when shrinking); the model draws ``n_samples`` ab fields
    at 1/``ab_downsample`` of that size at ``temperature``; each is upsampled (bilinear) to ``H × W``
    and joined with the photo's own full-resolution ``L``, then Lab → RGB. The full-resolution steps
    run in strips of rows, so memory beyond the photo and the result stays small for any size.

    Example:
        >>> colorizer = Colorizer(model, shorter_side=128, multiple=16, ab_downsample=2)
        >>> colourings = colorizer.colorize(photo_uint8, n_samples=8, temperature=0.8)  # (8, 3, H, W) uint8
    """

    def __init__(self, model: ColorModel, shorter_side: int, multiple: int, ab_downsample: int = 1,
                 device: torch.device | str = "cpu"):
        self.model = model
        self.shorter_side, self.multiple, self.ab_downsample = shorter_side, multiple, ab_downsample
        self.device = torch.device(device)

    @torch.no_grad()
    def colorize(self, image: Tensor, n_samples: int = 8, temperature: float = 0.8, seed: int = 0) -> Tensor:
        """``n_samples`` colourings ``(n_samples, 3, H, W)`` uint8 of one photo ``(3, H, W)`` uint8."""
        if image.dim() != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
            raise ValueError(f"expected a uint8 RGB photo (3, H, W), got {image.dtype} {tuple(image.shape)}")
        if n_samples < 1:
            raise ValueError(f"n_samples must be at least 1, got {n_samples}")
        height, width = image.shape[-2:]
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


def build_colorization_model(architecture: Literal["cinn", "regressor"], crop_size: int, ab_downsample: int = 1,
                             *, n_levels: int = 3, blocks_per_level: int = 4, hidden_channels: int = 64,
                             condition_channels: Sequence[int] | None = None, clamp: float = 1.5,
                             split_prior: bool = False, actnorm: bool = False, seed: int = 0) -> ColorModel:
    """A model of ab ``(2, s, s)``, ``s = crop_size / ab_downsample``, given L ``(1, crop_size,
    crop_size)``: the cINN (:func:`~cinn.models.build_cinn`) or the L2 baseline with the same
    condition network (:func:`~cinn.models.build_regressor`). Both also run at other sizes (L sides
    multiples of ``2^n_levels · ab_downsample``).

    Example:
        >>> model = build_colorization_model("cinn", 64, 2, n_levels=3, blocks_per_level=2, hidden_channels=32)
    """
    ab_size = crop_size // ab_downsample
    input_shape, condition_shape = (2, ab_size, ab_size), (1, crop_size, crop_size)
    if architecture == "regressor":
        return build_regressor(input_shape, condition_shape, n_levels=n_levels,
                               condition_channels=condition_channels)
    if architecture != "cinn":
        raise ValueError(f"unknown architecture {architecture!r}; use 'cinn' or 'regressor'")
    return build_cinn(input_shape, condition_shape, n_levels=n_levels, blocks_per_level=blocks_per_level,
                      hidden_channels=hidden_channels, condition_channels=condition_channels, clamp=clamp,
                      split_prior=split_prior, actnorm=actnorm, seed=seed)


def load_colorizer(checkpoint: str | Path, device: torch.device | str = "cpu") -> Colorizer:
    """The :class:`Colorizer` of a ``tasks.colorize`` checkpoint (its EMA weights when it kept them).

    The checkpoint carries ``model_spec`` (the arguments of :func:`build_colorization_model`) and
    ``shorter_side`` (the scale the photos were trained at), so nothing else is needed.

    Example:
        >>> colorizer = load_colorizer("runs/colorize/checkpoint.pt")   # doctest: +SKIP
        >>> colourings = colorizer.colorize(photo, n_samples=8, temperature=0.8)   # doctest: +SKIP
    """
    state = load_checkpoint(Path(checkpoint), map_location=device)
    model, spec = model_from_checkpoint(state, Path(checkpoint))
    factor = spec["ab_downsample"]
    return Colorizer(model.to(device).eval(), state["shorter_side"], size_multiple(spec["n_levels"], factor),
                     factor, device)


def size_multiple(n_levels: int, ab_downsample: int) -> int:
    """What the sides of L must be multiples of for a model with ``n_levels`` levels: ``2^n_levels · f``."""
    return 2**n_levels * ab_downsample


def model_from_checkpoint(state: dict[str, Any], path: Path) -> tuple[ColorModel, dict[str, Any]]:
    """Rebuild a colourisation model from a loaded checkpoint; returns it and its ``model_spec``."""
    if state.get("task") != "colorize" or "model_spec" not in state:
        raise CheckpointError(f"{path} is a checkpoint of the '{state.get('task')}' task, not 'colorize'")
    spec = dict(state["model_spec"])
    model = build_colorization_model(**spec)
    model.load_state_dict(trained_weights(state))
    return model, spec


def rmse_summary(values: Tensor) -> str:
    """``mean ± standard error`` of per-photo values, for printing."""
    if len(values) < 2:
        return f"{values.mean().item():.2f}"
    return f"{values.mean().item():.2f} ± {values.std().item() / math.sqrt(len(values)):.2f}"
