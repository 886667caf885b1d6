"""Photos of any size at full resolution: the model's working size, and L extraction, ab upsampling and
Lab → RGB done in row strips, so memory beyond the photo and the result stays small."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cinn.color import lab_to_rgb, rgb_to_lab

STRIP_PIXELS = 1 << 20  # full-resolution work is done in strips of about this many pixels per image


def working_size(height: int, width: int, shorter_side: int, multiple: int) -> tuple[int, int]:
    """The size at which a model trained on photos whose shorter side was ``shorter_side`` sees a
    ``height × width`` photo: same scale, each side rounded to a multiple of ``multiple`` (at least one).

    Example:
        >>> working_size(768, 1024, shorter_side=128, multiple=8)
        (128, 168)
    """
    scale = shorter_side / min(height, width)
    return tuple(max(multiple, round(side * scale / multiple) * multiple) for side in (height, width))


def lightness_of(photo: Tensor) -> Tensor:
    """``L`` of a uint8 RGB photo ``(3, H, W)`` as float32 ``(1, 1, H, W)``, converted in row strips so
    that a photo of any size needs only a few bytes per pixel beyond the result.

    Example:
        >>> lightness_of(torch.full((3, 4, 5), 255, dtype=torch.uint8)).shape
        torch.Size([1, 1, 4, 5])
    """
    height, width = photo.shape[-2:]
    rows = max(1, STRIP_PIXELS // width)
    lightness = torch.empty((1, 1, height, width), dtype=torch.float32, device=photo.device)
    for top in range(0, height, rows):
        lightness[:, :, top:top + rows] = rgb_to_lab(photo[None, :, top:top + rows])[:, :1]
    return lightness


def resize_rows(image: Tensor, height: int, top: int, bottom: int) -> Tensor:
    """Rows ``top:bottom`` of ``image`` ``(B, C, h, W)`` resized to height ``height`` (bilinear,
    ``align_corners=False``), without making the other rows: equal to
    ``F.interpolate(image, size=(height, W), mode="bilinear")[..., top:bottom, :]``.

    Example:
        >>> image = torch.randn(1, 2, 5, 4)
        >>> full = F.interpolate(image, size=(9, 4), mode="bilinear", align_corners=False)
        >>> torch.allclose(resize_rows(image, 9, 2, 6), full[..., 2:6, :], atol=1e-6)
        True
    """
    source_height = image.shape[-2]
    rows = torch.arange(top, bottom, device=image.device, dtype=torch.float32)
    position = ((rows + 0.5) * (source_height / height) - 0.5).clamp(min=0)
    below = position.floor().long().clamp(max=source_height - 1)
    above = (below + 1).clamp(max=source_height - 1)
    weight = (position - below)[:, None]
    return image[..., below, :] * (1 - weight) + image[..., above, :] * weight


def join_lightness(lightness: Tensor, ab: Tensor) -> Tensor:
    """RGB images from a full-resolution ``L`` ``(1, 1, H, W)`` and low-resolution ab fields ``(n, 2, h, w)``
    (Lab units), upsampled bilinearly to ``H × W``: uint8 ``(n, 3, H, W)``, built in row strips.

    Example:
        >>> join_lightness(torch.full((1, 1, 6, 8), 50.0), torch.zeros(3, 2, 3, 4)).shape
        torch.Size([3, 3, 6, 8])
    """
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
    """A uint8 RGB photo ``(3, H, W)`` reduced to its lightness: ``L`` kept, ``ab = 0`` (what the model sees).

    Example:
        >>> grey = grey_version(torch.tensor([255, 0, 0], dtype=torch.uint8)[:, None, None].repeat(1, 2, 3))
        >>> grey.shape, grey[:, 0, 0].tolist()
        (torch.Size([3, 2, 3]), [127, 127, 127])
    """
    return join_lightness(lightness_of(photo), torch.zeros(1, 2, 1, 1))[0]
