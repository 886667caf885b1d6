"""Images and labels held in memory as tensors, and the ``collate_fn`` that batches every source."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset


class TensorImageDataset(Dataset):
    """Images and labels held in memory as tensors.

    ``images``: ``uint8 (N, C, H, W)``; ``labels``: ``int64 (N,)``; ``num_classes``: the number of
    classes, 0 when unknown; ``classes``: their names, ``classes[label]`` (default ``"0"``, ``"1"``, ...).
    ``dataset[i]`` is ``(images[i], labels[i])``; ``__getitems__`` (which
    ``DataLoader`` calls with a batch of indices) returns the batch ``(images[idx], labels[idx])`` in
    one indexing operation, which :func:`collate_images` passes through.

    Example:
        >>> data = TensorImageDataset(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), torch.arange(4), 10)
        >>> images, labels = data.__getitems__([0, 2])
        >>> images.shape, labels.tolist()
        (torch.Size([2, 1, 28, 28]), [0, 2])
    """

    def __init__(self, images: Tensor, labels: Tensor, num_classes: int = 0, classes: Sequence[str] | None = None):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be a uint8 tensor (N, C, H, W), got {images.dtype} "
                             f"{tuple(images.shape)}")
        if labels.dtype != torch.int64 or labels.shape != images.shape[:1]:
            raise ValueError(f"labels must be an int64 tensor ({len(images)},), got {labels.dtype} "
                             f"{tuple(labels.shape)}")
        if classes is not None and len(classes) != num_classes:
            raise ValueError(f"{len(classes)} class names given for {num_classes} classes")
        self.images = images
        self.labels = labels
        self.num_classes = num_classes
        self.classes = list(classes) if classes is not None else [str(k) for k in range(num_classes)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(indices, dtype=torch.int64)
        return self.images[index], self.labels[index]


def collate_images(batch: tuple[Tensor, Tensor] | Sequence[tuple[Tensor, Tensor | int]]) -> tuple[Tensor, Tensor]:
    """``collate_fn`` for every source here: a batch ``(images (B, C, H, W), labels (B,))``.

    Accepts either the ready batch that :meth:`TensorImageDataset.__getitems__` returns (passed through)
    or a list of ``(image (C, H, W), label)`` samples (stacked; labels become ``int64``).

    Example:
        >>> images, labels = collate_images([(torch.zeros(1, 4, 4, dtype=torch.uint8), torch.tensor(3))] * 2)
        >>> images.shape, labels
        (torch.Size([2, 1, 4, 4]), tensor([3, 3]))
    """
    if isinstance(batch, tuple) and len(batch) == 2 and isinstance(batch[0], Tensor) and batch[0].dim() == 4:
        return batch
    images = torch.stack([image for image, _ in batch])
    labels = torch.tensor([int(label) for _, label in batch], dtype=torch.int64)
    return images, labels


def cache_in_memory(dataset: Dataset) -> TensorImageDataset:
    """Every item of ``dataset`` decoded once and held as one uint8 tensor (for small photo sets).

    Shapes: items ``(uint8 (C, H, W), label)`` → ``images`` ``uint8 (N, C, H, W)``, ``labels``
    ``int64 (N,)``; ``num_classes`` and ``classes`` are the dataset's (0 and none when it has none).

    Example:
        >>> cached = cache_in_memory([(torch.zeros(3, 8, 8, dtype=torch.uint8), 0)] * 5)
        >>> cached.images.shape, cached.num_classes
        (torch.Size([5, 3, 8, 8]), 0)
    """
    images, labels = collate_images([dataset[index] for index in range(len(dataset))])
    num_classes = getattr(dataset, "num_classes", 0)
    classes = getattr(dataset, "classes", None) if num_classes else None
    return TensorImageDataset(images, labels, num_classes, classes)
