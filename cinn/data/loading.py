"""What a task loads: a dataset by its registered name or a folder of images, and a seeded train/validation split.

Every named dataset is one entry of :data:`DATASETS`, name → loader ``(root, train, image_size, channels) ->
Dataset``; the tasks' ``data.dataset`` (and the colouriser's ``data.path``) accept these names and nothing else
lists them. :func:`register_dataset` adds one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from torch.utils.data import Dataset, Subset

from cinn.data.celeba import load_celeba
from cinn.data.errors import DataError
from cinn.data.folder import ImageFolderDataset
from cinn.data.named_datasets import MNIST_LIKE, load_cifar10, load_mnist_like
from cinn.data.places import load_places365

DatasetLoader = Callable[[str | Path | None, bool, int | None, int], Dataset]
"""``loader(root, train, image_size, channels)``: the training (``train``) or test split of a named dataset, found
under ``root`` (None: the dataset's default place); ``image_size`` and ``channels`` for datasets whose images are
resized (None: the dataset's own size). Items are ``(uint8 image (C, H, W), int64 label)``."""

Loader = TypeVar("Loader", bound=DatasetLoader)

DATASETS: dict[str, DatasetLoader] = {}
"""Every dataset known by name (see :func:`register_dataset`)."""


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Make ``loader`` (a :data:`DatasetLoader`) loadable by ``name`` (lower case) wherever a task takes a
    dataset; use it as a decorator.

    Example:
        >>> from cinn.data import TensorImageDataset
        >>> @register_dataset("noise")
        ... def load_noise(root, train, image_size, channels):
        ...     images = torch.randint(0, 256, (8 if train else 4, channels, 8, 8), dtype=torch.uint8)
        ...     return TensorImageDataset(images, torch.zeros(len(images), dtype=torch.int64))
        >>> len(load_dataset("noise", None, train=False)), is_dataset_name("Noise")
        (4, True)
        >>> del DATASETS["noise"]
    """
    def register(loader: Loader) -> Loader:
        DATASETS[name.lower()] = loader
        return loader

    return register


def is_dataset_name(text: str) -> bool:
    """Whether ``text`` names a registered dataset (any case) rather than a folder."""
    return isinstance(text, str) and text.lower() in DATASETS


for _name in MNIST_LIKE:
    register_dataset(_name)(lambda root, train, image_size, channels, name=_name:
                            load_mnist_like(name, root, train))
register_dataset("cifar10")(lambda root, train, image_size, channels: load_cifar10(root, train))


@register_dataset("celeba")
def _celeba(root: str | Path | None, train: bool, image_size: int | None, channels: int) -> Dataset:
    if image_size is None:
        raise DataError("CelebA needs an image_size to resize its images to; set it")
    return load_celeba(root, "train" if train else "test", image_size, channels)


@register_dataset("places365")
def _places365(root: str | Path | None, train: bool, image_size: int | None, channels: int) -> Dataset:
    return load_places365(root, "train-standard" if train else "val", 256 if image_size is None else image_size)


def load_dataset(name_or_path: str, root: str | Path | None, train: bool, image_size: int | None = None,
                 channels: int = 3) -> Dataset:
    """The dataset a task asks for: a registered name (:data:`DATASETS`: ``"mnist"``, ``"fashion-mnist"``,
    ``"cifar10"``, ``"celeba"``, ``"places365"``, ...) or a folder of images.

    ``root`` is where the named datasets live (see :func:`load_mnist_like`, :func:`load_cifar10`,
    :func:`~cinn.data.celeba.load_celeba`, which is never downloaded here, and
    :func:`~cinn.data.places.load_places365`); ``image_size`` and ``channels`` apply to the datasets whose images
    are resized (CelebA, Places365) and image folders only; a folder has no train/test split, so ``train`` is
    ignored for it (hold out images with :func:`split_dataset`) and its images are centre-cropped, as CelebA's are.

    Example:
        >>> train_set = load_dataset("fashion-mnist", None, train=True)   # doctest: +SKIP
        >>> len(train_set), train_set.num_classes   # doctest: +SKIP
        (60000, 10)
    """
    if is_dataset_name(name_or_path):
        return DATASETS[name_or_path.lower()](root, train, image_size, channels)
    if not Path(name_or_path).expanduser().exists():
        raise DataError(f"{name_or_path!r} is neither a dataset name ({', '.join(DATASETS)}) nor an existing "
                        "folder of images; fix the dataset setting")
    if image_size is None:
        raise DataError(f"the image folder {name_or_path} needs an image_size to resize its images to; set it")
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
