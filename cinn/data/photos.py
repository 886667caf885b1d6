"""scikit-image's bundled colour photos (no download needed), and photos as a dataset of squares."""

from __future__ import annotations

from collections.abc import Sequence

import skimage.data
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from cinn.data.errors import DataError
from cinn.data.images import fit_square
from cinn.data.tensor_dataset import TensorImageDataset

# "motorcycle" is the left view of the stereo pair.
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "motorcycle",
                  "retina", "rocket")


def skimage_photo(name: str) -> Image.Image:
    """One of :data:`SKIMAGE_PHOTOS` as an RGB PIL image.

    Example:
        >>> skimage_photo("coffee").size
        (600, 400)
    """
    if name not in SKIMAGE_PHOTOS:
        raise DataError(f"{name!r} is not one of scikit-image's bundled photos; choose one of "
                        f"{', '.join(SKIMAGE_PHOTOS)}")
    pixels = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    return Image.fromarray(pixels).convert("RGB")


def square_photos(photos: Sequence[Image.Image], size: int) -> TensorImageDataset:
    """Photos as an unlabelled in-memory dataset of ``size × size`` squares (see :func:`fit_square`).

    Shapes: ``images`` ``uint8 (N, C, size, size)``, ``labels`` zeros ``(N,)``.

    Example:
        >>> square_photos([Image.new("RGB", (60, 40)), Image.new("RGB", (30, 50))], 16).images.shape
        torch.Size([2, 3, 16, 16])
    """
    images = torch.stack([TF.pil_to_tensor(fit_square(photo, size)) for photo in photos])
    return TensorImageDataset(images, torch.zeros(len(images), dtype=torch.int64))
