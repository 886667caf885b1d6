"""Labelled images for class-conditional models: the named datasets, or a folder with one sub-folder per
class (torchvision's ``DatasetFolder`` finds the classes and files), with a seeded test split."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets import DatasetFolder
from torchvision.transforms import functional as TF

from cinn.data.errors import DataError
from cinn.data.folder import is_image_file
from cinn.data.images import fit_square, open_image
from cinn.data.loading import is_dataset_name, load_dataset, split_dataset


class ClassFolderDataset(Dataset):
    """Every image below ``root/<class>/``, labelled by its sub-folder (classes sorted by name), resized so
    the shorter side is ``image_size`` and centre-cropped square, as 8-bit RGB (``channels`` 3) or grey (1).

    Shapes: ``dataset[i]`` is ``(uint8 (channels, image_size, image_size), int64 label)``;
    ``num_classes`` and ``classes`` (the sub-folder names) tell the labels.

    Example:
        >>> digits = ClassFolderDataset("data/digits", image_size=32, channels=1)   # doctest: +SKIP
        >>> digits.classes[:3], digits.num_classes   # doctest: +SKIP
        (['0', '1', '2'], 10)
    """

    def __init__(self, root: str | Path, image_size: int, channels: int = 3):
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(f"{root} is not a folder; pass a folder with one sub-folder of images per class")
        try:
            self.folder = DatasetFolder(str(root), loader=lambda path: fit_square(open_image(path, channels),
                                                                                   image_size),
                                        is_valid_file=is_image_file)
        except FileNotFoundError as error:
            raise DataError(f"{root} holds no class sub-folders with images ({error}); put each class's images "
                            "in a sub-folder named after it") from None
        self.classes = list(self.folder.classes)
        self.num_classes = len(self.classes)
        if self.num_classes < 2:
            raise DataError(f"{root} has {self.num_classes} class sub-folder; a class-conditional model needs at "
                            "least two")

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image, label = self.folder[index]
        return TF.pil_to_tensor(image), torch.tensor(label)


def load_labelled_dataset(name_or_path: str, root: str | Path | None, train: bool, *, image_size: int = 32,
                          channels: int = 3, test_fraction: float = 0.1, seed: int = 0) -> Dataset:
    """The training or test split of labelled images: a named dataset (:func:`load_dataset`; their own
    split, size and channels), or a :class:`ClassFolderDataset` split at random (``test_fraction`` held out,
    seeded). The result has ``num_classes``.

    Example:
        >>> test_set = load_labelled_dataset("fashion-mnist", None, train=False)   # doctest: +SKIP
        >>> len(test_set), test_set.num_classes   # doctest: +SKIP
        (10000, 10)
    """
    if is_dataset_name(name_or_path) or not Path(name_or_path).expanduser().is_dir():
        return load_dataset(name_or_path, root, train=train)
    folder = ClassFolderDataset(name_or_path, image_size, channels)
    split = split_dataset(folder, test_fraction, seed)[0 if train else 1]
    split.num_classes = folder.num_classes
    return split
