"""The datasets known by name: MNIST and Fashion-MNIST (idx files found in place, in Debian's package, or
downloaded by torchvision) and CIFAR-10 (via torchvision)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision

from cinn.data.errors import DataError, one_line_reason
from cinn.data.idx import load_idx
from cinn.data.tensor_dataset import TensorImageDataset


@dataclass(frozen=True)
class MnistLayout:
    """Where the idx files of an MNIST-like dataset are looked for, and its name in messages.

    Example:
        >>> MNIST_LIKE["fashion-mnist"].torchvision_class
        'FashionMNIST'
    """

    title: str
    torchvision_class: str  # also the folder torchvision downloads into: <root>/<class>/raw
    system_dirs: tuple[Path, ...]  # read-only copies from distribution packages
    classes: tuple[str, ...]  # the names of labels 0..9


MNIST_LIKE = {
    "mnist": MnistLayout("MNIST", "MNIST", (), tuple("0123456789")),
    # Debian/Ubuntu package dataset-fashion-mnist
    "fashion-mnist": MnistLayout("Fashion-MNIST", "FashionMNIST", (Path("/usr/share/datasets/fashion-mnist"),),
                                 ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                  "Sneaker", "Bag", "Ankle boot")),
}


def _find_file(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _find_pair(directories: Sequence[Path], names: tuple[str, str]) -> tuple[Path, Path] | None:
    """The first directory holding both files (plain or ``.gz``), so images and labels never mix sources."""
    for directory in directories:
        images, labels = (_find_file(directory, name) for name in names)
        if images is not None and labels is not None:
            return images, labels
    return None


def load_mnist_like(name: str, root: Path | str | None, train: bool) -> TensorImageDataset:
    """MNIST or Fashion-MNIST (``name`` ``"mnist"`` or ``"fashion-mnist"``) as a :class:`TensorImageDataset`.

    The idx files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
    ``t10k-labels-idx1-ubyte``, each plain or ``.gz``) are read in place from the first of
    ``<root>/MNIST/raw`` (``<root>/FashionMNIST/raw``; torchvision's layout), ``<root>`` and, for
    Fashion-MNIST, ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``) that
    holds both files of the split. When none does and ``root`` is given, torchvision downloads them into
    ``<root>``.

    Shapes: ``images`` ``uint8 (N, 1, 28, 28)``, ``labels`` ``int64 (N,)`` in ``0..9``; ``num_classes`` 10;
    ``classes`` the digits ``"0"``..``"9"``, or Fashion-MNIST's ``"T-shirt/top"``, ..., ``"Ankle boot"``.

    Example:
        >>> test_set = load_mnist_like("fashion-mnist", None, train=False)   # doctest: +SKIP
        >>> len(test_set), test_set[0][0].shape   # doctest: +SKIP
        (10000, torch.Size([1, 28, 28]))
    """
    if name not in MNIST_LIKE:
        raise DataError(f"unknown MNIST-like dataset {name!r}; choose one of {', '.join(MNIST_LIKE)}")
    layout = MNIST_LIKE[name]
    prefix = "train" if train else "t10k"
    names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    directories = list(layout.system_dirs)
    if root is not None:
        root = Path(root).expanduser()
        directories = [root / layout.torchvision_class / "raw", root, *directories]
    found = _find_pair(directories, names)
    download_failure = "no data root was given to download into"
    if found is None and root is not None:
        try:
            getattr(torchvision.datasets, layout.torchvision_class)(str(root), train=train, download=True)
            download_failure = "the download did not produce the files"
        except Exception as error:  # any failure (network, disk, checksum) becomes one actionable message
            download_failure = f"the download failed ({one_line_reason(error)})"
        found = _find_pair(directories, names)
    if found is None:
        searched = f"in {', '.join(map(str, directories))}" if directories else "(no folder to search)"
        raise DataError(f"{layout.title} {prefix} files {names[0]} and {names[1]} (plain or .gz) were not found "
                        f"{searched} and {download_failure}; download them and pass their folder as the data root")
    images_path, labels_path = found
    images = load_idx(images_path, magic=2051)
    labels = load_idx(labels_path, magic=2049)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{images_path} holds images of size {images.shape[1]}x{images.shape[2]} where "
                        f"{layout.title} has 28x28; point the data root at the original files")
    if len(images) != len(labels):
        raise DataError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels; "
                        "one of them is from another dataset or corrupt, download both again")
    if len(labels) and labels.max() > 9:
        raise DataError(f"labels in {labels_path} must lie in 0..9 but reach {labels.max()}; the file is corrupt "
                        "or not a label file, download it again")
    return TensorImageDataset(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)),
                              num_classes=10, classes=layout.classes)


def load_cifar10(root: Path | str | None, train: bool) -> TensorImageDataset:
    """CIFAR-10 via torchvision (downloaded into ``<root>/cifar-10-batches-py`` when missing).

    Shapes: ``images`` ``uint8 (N, 3, 32, 32)``, ``labels`` ``int64 (N,)``; ``num_classes`` 10; ``classes``
    ``"airplane"``, ``"automobile"``, ..., ``"truck"`` (from the dataset's own ``batches.meta``).

    Example:
        >>> test_set = load_cifar10("data", train=False)   # doctest: +SKIP
        >>> test_set.images.shape   # doctest: +SKIP
        torch.Size([10000, 3, 32, 32])
    """
    if root is None:
        raise DataError("CIFAR-10 needs a data root to find or download cifar-10-batches-py in; set the data root")
    root = Path(root).expanduser()
    try:
        cifar = torchvision.datasets.CIFAR10(str(root), train=train, download=True)
    except Exception as error:  # any failure (network, disk, checksum) becomes one actionable message
        raise DataError(f"CIFAR-10 was not found in {root / 'cifar-10-batches-py'} and the download failed "
                        f"({one_line_reason(error)}); download cifar-10-python.tar.gz and extract it "
                        f"into {root}") from error
    images = torch.from_numpy(np.ascontiguousarray(cifar.data)).permute(0, 3, 1, 2).contiguous()
    return TensorImageDataset(images, torch.tensor(cifar.targets, dtype=torch.int64), num_classes=10,
                              classes=cifar.classes)
