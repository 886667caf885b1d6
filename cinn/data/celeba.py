"""CelebA's aligned faces (torchvision's layout) as squares, with the 40 binary attributes of each face."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import functional as TF

from cinn.data.attributes import BinaryAttributes
from cinn.data.errors import DataError, one_line_reason
from cinn.data.images import fit_square, open_image

CELEBA_SPLITS = ("train", "valid", "test")
CELEBA_PAGE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
CELEBA_FILES = ("img_align_celeba/", "list_attr_celeba.txt", "list_eval_partition.txt", "identity_CelebA.txt",
                "list_bbox_celeba.txt", "list_landmarks_align_celeba.txt")
"""What torchvision's ``CelebA`` reads below ``<root>/celeba`` (it checks the md5 sum of each text file)."""


class CelebADataset(Dataset):
    """The aligned faces of a torchvision ``CelebA`` split (178x218 JPEGs), each resized so its shorter side is
    ``image_size`` (bicubic, antialiased) and centre-cropped square, as 8-bit RGB (``channels`` 3) or grey (1).

    Items are decoded like :class:`~cinn.data.folder.ImageFolderDataset`'s (:func:`open_image`, then
    :func:`fit_square`); an unreadable face is a :class:`DataError` naming the file. Faces have no class
    (label 0, ``num_classes`` 0); ``attributes`` holds their 40 binary attributes (``"Smiling"``,
    ``"Eyeglasses"``, ...), read from ``list_attr_celeba.txt`` without opening an image.

    Shapes: ``dataset[i]`` is ``(uint8 (channels, image_size, image_size), int64 0)``;
    ``attributes.values`` is ``bool (N, 40)``.

    Example (built by :func:`load_celeba`):
        >>> faces = load_celeba("data", "test", image_size=64)   # doctest: +SKIP
        >>> len(faces), faces[0][0].shape, faces.attributes.names[31]   # doctest: +SKIP
        (19962, torch.Size([3, 64, 64]), 'Smiling')
    """

    num_classes = 0

    def __init__(self, celeba: torchvision.datasets.CelebA, image_size: int, channels: int = 3):
        self.filenames = list(celeba.filename)
        self.images_dir = Path(celeba.root) / celeba.base_folder / "img_align_celeba"
        self.image_size, self.channels = image_size, channels
        # the file's header line ends in a space, which torchvision's csv reader turns into one more, empty, name
        names = tuple(name for name in celeba.attr_names if name)
        self.attributes = BinaryAttributes(names, celeba.attr.bool())

    def __len__(self) -> int:
        return len(self.filenames)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = fit_square(open_image(self.images_dir / self.filenames[index], self.channels), self.image_size)
        return TF.pil_to_tensor(image), torch.tensor(0)


def load_celeba(root: str | Path | None, split: str = "train", image_size: int = 64, channels: int = 3,
                download: bool = False) -> CelebADataset:
    """CelebA's ``"train"`` (162,770 faces), ``"valid"`` (19,867) or ``"test"`` (19,962) split in torchvision's
    layout under ``root`` (``<root>/celeba/``: ``img_align_celeba/*.jpg`` and the five list files of
    :data:`CELEBA_FILES`), read in place; with ``download`` torchvision fetches missing files from Google
    Drive first (it needs the ``gdown`` package, and Drive often refuses for a while: its quota).

    Missing or corrupt files (torchvision checks the md5 sum of every list file) are a one-line
    :class:`DataError` that says where it looked and how to get them.

    Shapes: see :class:`CelebADataset`: ``(uint8 (channels, image_size, image_size), int64 0)``.

    Example (offline, in an empty folder):
        >>> import tempfile
        >>> load_celeba(tempfile.mkdtemp(), "test", image_size=64)   # doctest: +ELLIPSIS
        Traceback (most recent call last):
        cinn.data.errors.DataError: CelebA was not found in .../celeba ...; download img_align_celeba.zip and ...
    """
    if split not in CELEBA_SPLITS:
        raise DataError(f"unknown CelebA split {split!r}; choose one of {', '.join(CELEBA_SPLITS)}")
    if image_size < 1 or channels not in (1, 3):
        raise DataError(f"CelebA's image_size must be positive and channels 1 or 3, got {image_size} and "
                        f"{channels}; set them")
    if root is None:
        raise DataError("CelebA needs a data root holding torchvision's celeba/ folder; set the data root")
    root = Path(root).expanduser()
    try:
        celeba = torchvision.datasets.CelebA(str(root), split=split, target_type="attr", download=download)
    except Exception as error:  # missing, corrupt or undownloadable files become one actionable message
        raise DataError(
            f"CelebA was not found in {root / 'celeba'} ({one_line_reason(error)}); download img_align_celeba.zip "
            f"and the list files from {CELEBA_PAGE} into {root / 'celeba'} and unzip the images there "
            f"(torchvision's layout: {', '.join(CELEBA_FILES)}), or fetch them with pip install gdown and "
            f"python -c \"import torchvision; torchvision.datasets.CelebA('{root}', download=True)\"") from error
    return CelebADataset(celeba, image_size, channels)
