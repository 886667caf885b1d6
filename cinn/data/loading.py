"""What a task loads: a dataset by name or folder, and a seeded train/validation split of it."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset

from cinn.data.celeba import load_celeba
from cinn.data.errors import DataError
from cinn.data.folder import ImageFolderDataset
from cinn.data.named_datasets import MNIST_LIKE, load_cifar10, load_mnist_like


def load_dataset(name_or_path: str, root: str | Path | None, train: bool, image_size: int | None = None,
                 channels: int = 3) -> Dataset:
    """The dataset a task asks for: ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``, ``"celeba"``, or a folder of
    images.

    ``root`` is where the named datasets live (see :func:`load_mnist_like`, :func:`load_cifar10`,
    :func:`~cinn.data.celeba.load_celeba`, which is never downloaded here); ``image_size`` and ``channels``
    apply to CelebA (its train and test splits) and image folders only (the other named datasets keep their
    own size); a folder has no train/test split, so ``train`` is ignored for it (hold out images with
    :func:`split_dataset`) and its images are centre-cropped, as CelebA's are.

    Example:
        >>> train_set = load_dataset("fashion-mnist", None, train=True)   # doctest: +SKIP
        >>> len(train_set), train_set.num_classes   # doctest: +SKIP
        (60000, 10)
    """
    key = name_or_path.lower()
    if key in MNIST_LIKE:
        return load_mnist_like(key, root, train)
    if key == "cifar10":
        return load_cifar10(root, train)
    if key != "celeba" and not Path(name_or_path).expanduser().exists():
        raise DataError(f"{name_or_path!r} is neither a dataset name (mnist, fashion-mnist, cifar10, celeba) nor "
                        "an existing folder of images; fix the dataset setting")
    if image_size is None:
        what = "CelebA" if key == "celeba" else f"the image folder {name_or_path}"
        raise DataError(f"{what} needs an image_size to resize its images to; set it")
    if key == "celeba":
        return load_celeba(root, "train" if train else "test", image_size, channels)
    return ImageFolderDataset(name_or_path, image_size, channels, min_size=image_size, setting="data.image_size")


def split_dataset(dataset: Dataset, val_fraction: float, seed: int) -> tuple[Subset, Subset]:
    """A random ``(train, validation)`` split with ``round(val_fraction · N)`` validation items (at least one).

    The permutation comes from a ``torch.Generator`` seeded with ``seed``, so the same seed gives the
    same split on every machine; the global RNGs are neither used nor reseeded.

    Example:
        >>> train, val = split_dataset(list(range(10)), 0.2, seed=0)
        >>> len(train), len(val)
        (8, 2)
    """
    size = len(dataset)
    if not 0 < val_fraction < 1:
        raise DataError(f"the validation fraction must lie strictly between 0 and 1, got {val_fraction}; fix it")
    n_val = max(1, round(val_fraction * size))
    if n_val >= size:
        raise DataError(f"a dataset of {size} items is too small to hold out {val_fraction:.0%} for validation "
                        "and still train; use more data or a smaller fraction")
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed)).tolist()
    return Subset(dataset, order[n_val:]), Subset(dataset, order[:n_val])
