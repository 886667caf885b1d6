"""Named binary attributes of a dataset's items — a class ("sneaker"), or one of CelebA's 40 face attributes
("Smiling") — and the two groups of items an attribute direction contrasts."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset

MAX_LISTING = 300
"""The most characters of attribute names an error message lists."""


def attribute_key(name: str) -> str:
    """The form names are compared in: lower case, runs of spaces, underscores and hyphens as one ``_``.

    Example:
        >>> attribute_key("Ankle boot"), attribute_key("ankle-boot"), attribute_key(" ANKLE__BOOT")
        ('ankle_boot', 'ankle_boot', 'ankle_boot')
    """
    return re.sub(r"[\s_-]+", "_", name.strip().lower())


@dataclass(frozen=True)
class BinaryAttributes:
    """Which items of a dataset have which attribute: ``values[i, a]`` is whether item ``i`` has ``names[a]``.

    Shapes: ``names`` ``A`` strings; ``values`` ``bool (N, A)``. A class-labelled dataset has one attribute per
    class (:meth:`of_classes`; exactly one true per row); CelebA has 40 independent ones.

    Example:
        >>> attributes = BinaryAttributes.of_classes(torch.tensor([0, 2, 1, 2]), ["T-shirt/top", "Trouser", "Bag"])
        >>> attributes.index("bag"), attributes.index("t-shirt"), attributes.index("1")
        (2, 0, 1)
        >>> with_bag, without_bag = attributes.contrast("Bag")                 # class vs rest
        >>> with_bag.tolist(), without_bag.tolist()
        ([False, True, False, True], [True, False, True, False])
        >>> attributes.contrast("bag", against="trouser")[1].tolist()        # class vs class
        [False, False, True, False]
    """

    names: tuple[str, ...]
    values: Tensor

    def __post_init__(self) -> None:
        if self.values.dtype != torch.bool or self.values.dim() != 2 or self.values.shape[1] != len(self.names):
            raise ValueError(f"values must be a bool tensor (N, {len(self.names)}), got {self.values.dtype} "
                             f"{tuple(self.values.shape)}")

    @classmethod
    def of_classes(cls, labels: Tensor, classes: Sequence[str]) -> BinaryAttributes:
        """One attribute per class: ``values[i, k] = (labels[i] == k)`` for class names ``classes``."""
        return cls(tuple(classes), labels[:, None] == torch.arange(len(classes), device=labels.device))

    def index(self, name: str) -> int:
        """The column of attribute ``name``: a name compared by :func:`attribute_key` (for a name with ``/``,
        such as ``"T-shirt/top"``, each part too), else an index ``0..A−1``; an unknown name is a
        :class:`ValueError` that lists the known ones."""
        key = attribute_key(name)
        for column, known in enumerate(self.names):
            if key in {attribute_key(known), *(attribute_key(part) for part in known.split("/"))}:
                return column
        if name.strip().isdigit() and int(name) < len(self.names):
            return int(name)
        raise ValueError(f"unknown attribute {name!r}; known: {self.listing()} "
                         f"(or an index 0-{len(self.names) - 1})")

    def listing(self) -> str:
        """The names, comma-separated, cut after :data:`MAX_LISTING` characters."""
        text = ", ".join(self.names)
        if len(text) <= MAX_LISTING:
            return text
        return text[:text.rfind(", ", 0, MAX_LISTING)] + f", ... ({len(self.names)} in all)"

    def contrast(self, attribute: str, against: str | None = None) -> tuple[Tensor, Tensor]:
        """The two groups ``(with, without)``, bool masks ``(N,)``, of an attribute direction.

        ``against=None``: items with ``attribute`` vs all others. Else items with ``attribute`` and not
        ``against`` vs items with ``against`` and not ``attribute`` (for classes: class vs class; items of
        other classes are in neither group).
        """
        column = self.values[:, self.index(attribute)]
        if against is None:
            return column, ~column
        other = self.index(against)
        if other == self.index(attribute):
            raise ValueError(f"{against!r} names the same attribute as {attribute!r}; contrast it with another "
                             "one")
        other_column = self.values[:, other]
        return column & ~other_column, other_column & ~column


def dataset_attributes(dataset: Dataset) -> BinaryAttributes | None:
    """The binary attributes of a dataset's items, or None when it has none: a dataset's own ``attributes``
    (:class:`~cinn.data.celeba.CelebADataset`), else its classes for a dataset with ``labels`` (int64 ``(N,)``),
    ``classes`` and at least two classes (:class:`~cinn.data.TensorImageDataset`).

    Example:
        >>> from cinn.data import TensorImageDataset
        >>> digits = TensorImageDataset(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 9, 9]), 10)
        >>> dataset_attributes(digits).values[:, 9].tolist()
        [False, True, True]
    """
    attributes = getattr(dataset, "attributes", None)
    if isinstance(attributes, BinaryAttributes):
        return attributes
    labels, classes = getattr(dataset, "labels", None), getattr(dataset, "classes", None)
    if isinstance(labels, Tensor) and classes and len(classes) >= 2:
        return BinaryAttributes.of_classes(labels, classes)
    return None
