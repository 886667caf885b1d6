"""A folder of image files as an unlabelled dataset of squares."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode, RandomCrop
from torchvision.transforms import functional as TF

from cinn.data.errors import DataError
from cinn.data.images import fit_square, open_image

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})


def is_image_file(path: Path | str) -> bool:
    """Whether a file listed in a folder is one of its images: a regular file (a FIFO, socket or device, whose
    reading could block forever, is not) with one of the ``IMAGE_EXTENSIONS`` (any case).

    Example:
        >>> import os, tempfile
        >>> folder = Path(tempfile.mkdtemp()); _ = (folder / "a.PNG").write_bytes(b""); os.mkfifo(folder / "b.png")
        >>> is_image_file(folder / "a.PNG"), is_image_file(folder / "b.png"), is_image_file(folder / "c.png")
        (True, False, False)
    """
    path = Path(path)
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def list_images(root: Path) -> list[Path]:
    """The image files below ``root`` (:func:`is_image_file`), recursively, sorted by relative path; a missing,
    non-folder or imageless ``root`` is a :class:`DataError`."""
    if not root.exists():
        raise DataError(f"image folder {root} does not exist; check the path")
    if not root.is_dir():
        raise DataError(f"{root} is a file, not a folder of images; pass the folder that contains the images")
    paths = sorted((file for file in root.rglob("*") if is_image_file(file)),
                   key=lambda file: file.relative_to(root).as_posix())
    if not paths:
        raise DataError(f"image folder {root} contains no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
                        "add images or pass another folder")
    return paths


class ImageFolderDataset(Dataset):
    """Every image below a folder (or the image files of a list), resized and cropped to
    ``image_size × image_size``, unlabelled.

    Files of a folder with the extensions in ``IMAGE_EXTENSIONS`` (any case) are listed recursively and sorted
    by relative path (:func:`list_images`). Each item is opened with PIL, turned upright from its EXIF
    orientation, converted to 8-bit RGB (``channels`` 3) or grey (1) from any mode (16-bit images are scaled,
    not clipped; alpha is dropped), resized so its shorter side is ``image_size`` (bicubic, antialiased), then
    centre-cropped, or cropped at a position drawn from torch's RNG when ``random_crop``. An image whose
    shorter side is below ``min_size`` is a :class:`DataError` that names the config ``setting`` to lower
    (rather than an input upscaled beyond recognition).

    Shapes: ``dataset[i]`` is ``(uint8 (channels, image_size, image_size), int64 0)``; ``num_classes``
    is 0; ``paths`` lists the files.

    Example:
        >>> import tempfile; from PIL import Image
        >>> folder = Path(tempfile.mkdtemp()); Image.new("RGB", (80, 60)).save(folder / "a.png")
        >>> ImageFolderDataset(folder, image_size=32)[0][0].shape
        torch.Size([3, 32, 32])
    """

    num_classes = 0

    def __init__(self, path: Path | str | Sequence[Path], image_size: int, channels: int = 3,
                 random_crop: bool = False, min_size: int = 1, setting: str = "image_size"):
        if channels not in (1, 3):
            raise DataError(f"an image folder gives 1 (grey) or 3 (RGB) channels, not {channels}; set channels")
        if image_size < 1:
            raise DataError(f"image_size must be a positive number of pixels, got {image_size}; set image_size")
        if isinstance(path, (str, Path)):
            self.paths = list_images(Path(path).expanduser())
        else:  # these files, in this order
            self.paths = [Path(file).expanduser() for file in path]
            if not self.paths:
                raise DataError("the list of images is empty; list at least one")
            missing = [str(file) for file in self.paths if not is_image_file(file)]
            if missing:
                raise DataError(f"{len(missing)} listed image(s) missing or not image files, e.g. "
                                f"{', '.join(missing[:3])}; fix the list or the files")
        self.image_size = image_size
        self.channels = channels
        self.random_crop = random_crop
        self.min_size, self.setting = min_size, setting

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = open_image(self.paths[index], self.channels)
        if min(image.size) < self.min_size:
            raise DataError(f"image {self.paths[index]} is {image.width}x{image.height} pixels, smaller than the "
                            f"model's {self.min_size}x{self.min_size} input; remove it or lower {self.setting}")
        size = self.image_size
        if self.random_crop:
            image = TF.resize(image, size, interpolation=InterpolationMode.BICUBIC, antialias=True)
            image = TF.crop(image, *RandomCrop.get_params(image, (size, size)))
        else:
            image = fit_square(image, size)
        return TF.pil_to_tensor(image), torch.tensor(0)
