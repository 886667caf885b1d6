"""Data sources for the tasks: MNIST-format idx files, CIFAR-10, folders of images, and a seeded split.

Every source yields ``(image, label)`` with ``image`` a ``uint8`` tensor ``(C, H, W)`` and ``label`` an
``int64`` scalar (0 for unlabelled folders); :func:`collate_images` batches them to ``(B, C, H, W)`` and
``(B,)``. Scaling to ``[0, 1]``, quantisation and dequantisation are the objective's job
(:mod:`cinn.likelihood`), not the data's. Problems a user can fix (a missing, truncated or corrupt file,
an empty folder) raise :class:`DataError` with a one-sentence message naming the file.
"""

from __future__ import annotations

import gzip
import math
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import skimage.data
import torch
import torchvision
from PIL import Image, ImageOps
from torch import Tensor
from torch.utils.data import Dataset, Subset
from torchvision.transforms import InterpolationMode, RandomCrop
from torchvision.transforms import functional as TF

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})

# idx type code (third byte of the magic number) → big-endian element type.
_IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

# PIL modes that hold more than 8 bits per pixel; PIL's own conversion to "L" clips them at 255.
_WIDE_INTEGER_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


class DataError(RuntimeError):
    """A data problem the user can fix (missing, truncated or corrupt files); the message says how."""


def load_idx(path: Path, *, magic: int | None = None) -> np.ndarray:
    """The array stored in an idx file (the MNIST format), plain or gzip-compressed (``.gz``).

    The header is the magic number ``0x0000TTNN`` (``TT`` the element type, ``0x08`` for ``uint8``;
    ``NN`` the number of dimensions), then ``NN`` big-endian ``int32`` sizes, then the data. MNIST
    images have magic 2051 (``uint8``, 3-D), labels 2049 (``uint8``, 1-D); pass ``magic`` to require one.

    Shapes: returns the array with the stored dimensions, in native byte order.

    Example:
        >>> labels = load_idx(Path("MNIST/raw/t10k-labels-idx1-ubyte.gz"))   # doctest: +SKIP
        >>> labels.shape, labels.dtype   # doctest: +SKIP
        ((10000,), dtype('uint8'))
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as file:
                data = file.read()
        else:
            data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"idx file {path} does not exist; check the data root or download it again") from None
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"cannot read idx file {path} ({error}); delete it and download it again") from error
    if len(data) < 4:
        raise DataError(f"{path} is {len(data)} bytes long, too short for an idx header; "
                        "delete it and download it again")
    found = int.from_bytes(data[:4], "big")
    type_code, ndim = data[2], data[3]
    if data[:2] != b"\x00\x00" or type_code not in _IDX_DTYPES or ndim == 0:
        raise DataError(f"{path} is not an idx file (magic number {found} = {found:#010x}, expected 0x0000TTNN "
                        "with an idx type code TT such as 0x08 and NN dimensions); point the data root at "
                        "MNIST-format files")
    if magic is not None and found != magic:
        raise DataError(f"{path} has magic number {found} where {magic} is expected; check that the file is the "
                        "one its name says (images 2051, labels 2049) and not swapped or renamed")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(f"{path} is truncated inside its header ({len(data)} of {header_size} bytes); "
                        "delete it and download it again")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[type_code]
    expected = math.prod(dims) * dtype.itemsize
    actual = len(data) - header_size
    if actual != expected:
        raise DataError(f"{path} holds {actual} bytes of data after its header but its dimensions {dims} need "
                        f"{expected} bytes; the file is truncated or corrupt, delete it and download it again")
    array = np.frombuffer(data, dtype=dtype, count=math.prod(dims), offset=header_size).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


class TensorImageDataset(Dataset):
    """Images and labels held in memory as tensors.

    ``images``: ``uint8 (N, C, H, W)``; ``labels``: ``int64 (N,)``; ``num_classes``: the number of
    classes, 0 when unknown. ``dataset[i]`` is ``(images[i], labels[i])``; ``__getitems__`` (which
    ``DataLoader`` calls with a batch of indices) returns the batch ``(images[idx], labels[idx])`` in
    one indexing operation, which :func:`collate_images` passes through.

    Example:
        >>> data = TensorImageDataset(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), torch.arange(4), 10)
        >>> images, labels = data.__getitems__([0, 2])
        >>> images.shape, labels.tolist()
        (torch.Size([2, 1, 28, 28]), [0, 2])
    """

    def __init__(self, images: Tensor, labels: Tensor, num_classes: int = 0):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be a uint8 tensor (N, C, H, W), got {images.dtype} "
                             f"{tuple(images.shape)}")
        if labels.dtype != torch.int64 or labels.shape != images.shape[:1]:
            raise ValueError(f"labels must be an int64 tensor ({len(images)},), got {labels.dtype} "
                             f"{tuple(labels.shape)}")
        self.images = images
        self.labels = labels
        self.num_classes = num_classes

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


@dataclass(frozen=True)
class _MnistLayout:
    title: str
    torchvision_class: str  # also the folder torchvision downloads into: <root>/<class>/raw
    system_dirs: tuple[Path, ...]  # read-only copies from distribution packages


_MNIST_LIKE = {
    "mnist": _MnistLayout("MNIST", "MNIST", ()),
    # Debian/Ubuntu package dataset-fashion-mnist
    "fashion-mnist": _MnistLayout("Fashion-MNIST", "FashionMNIST", (Path("/usr/share/datasets/fashion-mnist"),)),
}


def _reason(error: Exception) -> str:
    """An exception as one line, for embedding in a one-sentence message."""
    return " ".join(f"{type(error).__name__}: {error}".split())


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

    Shapes: ``images`` ``uint8 (N, 1, 28, 28)``, ``labels`` ``int64 (N,)`` in ``0..9``; ``num_classes`` 10.

    Example:
        >>> test_set = load_mnist_like("fashion-mnist", None, train=False)   # doctest: +SKIP
        >>> len(test_set), test_set[0][0].shape   # doctest: +SKIP
        (10000, torch.Size([1, 28, 28]))
    """
    if name not in _MNIST_LIKE:
        raise DataError(f"unknown MNIST-like dataset {name!r}; choose one of {', '.join(_MNIST_LIKE)}")
    layout = _MNIST_LIKE[name]
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
            download_failure = f"the download failed ({_reason(error)})"
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
                              num_classes=10)


def load_cifar10(root: Path | str | None, train: bool) -> TensorImageDataset:
    """CIFAR-10 via torchvision (downloaded into ``<root>/cifar-10-batches-py`` when missing).

    Shapes: ``images`` ``uint8 (N, 3, 32, 32)``, ``labels`` ``int64 (N,)``; ``num_classes`` 10.

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
                        f"({_reason(error)}); download cifar-10-python.tar.gz and extract it "
                        f"into {root}") from error
    images = torch.from_numpy(np.ascontiguousarray(cifar.data)).permute(0, 3, 1, 2).contiguous()
    return TensorImageDataset(images, torch.tensor(cifar.targets, dtype=torch.int64), num_classes=10)


def _to_8bit(image: Image.Image, channels: int) -> Image.Image:
    """``image`` as 8-bit ``"RGB"`` (``channels`` 3) or ``"L"`` (1); alpha is dropped."""
    if image.mode in _WIDE_INTEGER_MODES:
        # 16-bit values scale to 8 bits by v·255/65535, rounded (65535 → 255, 32768 → 128).
        wide = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        image = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))
    elif image.mode in ("P", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")  # PIL's supported route for palette/keyed transparency
    target = "L" if channels == 1 else "RGB"
    return image if image.mode == target else image.convert(target)


def open_image(path: Path | str, channels: int = 3) -> Image.Image:
    """The image file at ``path``, upright (EXIF orientation applied), as 8-bit ``"RGB"`` (``channels`` 3)
    or ``"L"`` (1), from any mode PIL reads (16-bit scaled, palette and CMYK converted, alpha dropped).

    Raises :class:`DataError` naming the file when it is missing, truncated or not an image.

    Example:
        >>> open_image("photo.jpg").mode   # doctest: +SKIP
        'RGB'
    """
    path = Path(path)
    try:
        # Photos up to PIL's hard limit (~179 Mpx) are wanted here; beyond it PIL raises, and so do we.
        with warnings.catch_warnings(), Image.open(path) as opened:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return _to_8bit(ImageOps.exif_transpose(opened), channels)
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist; check the path") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise DataError(f"cannot read image {path} ({error}); delete or replace the file") from error


def fit_square(image: Image.Image, size: int) -> Image.Image:
    """``image`` resized so its shorter side is ``size`` (bicubic, antialiased), then centre-cropped to
    ``size × size``."""
    image = TF.resize(image, size, interpolation=InterpolationMode.BICUBIC, antialias=True)
    return TF.center_crop(image, [size, size])


# scikit-image's bundled colour photos (no download needed); "motorcycle" is the left view of the stereo pair.
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
    """
    images = torch.stack([TF.pil_to_tensor(fit_square(photo, size)) for photo in photos])
    return TensorImageDataset(images, torch.zeros(len(images), dtype=torch.int64))


def cache_in_memory(dataset: Dataset) -> TensorImageDataset:
    """Every item of ``dataset`` decoded once and held as one uint8 tensor (for small photo sets)."""
    images, labels = collate_images([dataset[index] for index in range(len(dataset))])
    return TensorImageDataset(images, labels, getattr(dataset, "num_classes", 0))


class ImageFolderDataset(Dataset):
    """Every image below a folder, resized and cropped to ``image_size × image_size``, unlabelled.

    Files with the extensions in ``IMAGE_EXTENSIONS`` (any case) are listed recursively and sorted by
    relative path. Each item is opened with PIL, turned upright from its EXIF orientation, converted to
    8-bit RGB (``channels`` 3) or grey (1) from any mode (16-bit images are scaled, not clipped; alpha
    is dropped), resized so its shorter side is ``image_size`` (bicubic, antialiased), then
    centre-cropped, or cropped at a position drawn from torch's RNG when ``random_crop``. An image whose
    shorter side is below ``min_size`` is a :class:`DataError` that names the config ``setting`` to lower
    (rather than an input upscaled beyond recognition).

    Shapes: ``dataset[i]`` is ``(uint8 (channels, image_size, image_size), int64 0)``; ``num_classes``
    is 0; ``paths`` lists the files.

    Example:
        >>> faces = ImageFolderDataset("data/faces", image_size=64)   # doctest: +SKIP
        >>> faces[0][0].shape   # doctest: +SKIP
        torch.Size([3, 64, 64])
    """

    num_classes = 0

    def __init__(self, path: Path | str, image_size: int, channels: int = 3, random_crop: bool = False,
                 min_size: int = 1, setting: str = "image_size"):
        root = Path(path).expanduser()
        if channels not in (1, 3):
            raise DataError(f"an image folder gives 1 (grey) or 3 (RGB) channels, not {channels}; set channels")
        if image_size < 1:
            raise DataError(f"image_size must be a positive number of pixels, got {image_size}; set image_size")
        if not root.exists():
            raise DataError(f"image folder {root} does not exist; check the path")
        if not root.is_dir():
            raise DataError(f"{root} is a file, not a folder of images; pass the folder that contains the images")
        self.paths = sorted((file for file in root.rglob("*") if file.suffix.lower() in IMAGE_EXTENSIONS
                             and file.is_file()), key=lambda file: file.relative_to(root).as_posix())
        if not self.paths:
            raise DataError(f"image folder {root} contains no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
                            "add images or pass another folder")
        self.root = root
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


def load_dataset(name_or_path: str, root: str | Path | None, train: bool, image_size: int | None = None,
                 channels: int = 3) -> Dataset:
    """The dataset a task asks for: ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``, or a folder of images.

    ``root`` is where the named datasets live (see :func:`load_mnist_like`, :func:`load_cifar10`);
    ``image_size`` and ``channels`` apply to image folders only (the named datasets keep their own size);
    a folder has no train/test split, so ``train`` is ignored for it (hold out images with
    :func:`split_dataset`) and its images are centre-cropped.

    Example:
        >>> train_set = load_dataset("fashion-mnist", None, train=True)   # doctest: +SKIP
        >>> len(train_set), train_set.num_classes   # doctest: +SKIP
        (60000, 10)
    """
    key = name_or_path.lower()
    if key in _MNIST_LIKE:
        return load_mnist_like(key, root, train)
    if key == "cifar10":
        return load_cifar10(root, train)
    if not Path(name_or_path).expanduser().exists():
        raise DataError(f"{name_or_path!r} is neither a dataset name (mnist, fashion-mnist, cifar10) nor an "
                        "existing folder of images; fix the dataset setting")
    if image_size is None:
        raise DataError(f"the image folder {name_or_path} needs an image_size to resize its images to; set it")
    return ImageFolderDataset(name_or_path, image_size, channels, min_size=image_size, setting="data.image_size")


def split_dataset(dataset: Dataset, val_fraction: float, seed: int) -> tuple[Subset, Subset]:
    """A random ``(train, validation)`` split with ``round(val_fraction · N)`` validation items (at least one).

    The permutation comes from a ``torch.Generator`` seeded with ``seed``, so the same seed gives the
    same split on every machine; the global RNGs are neither used nor reseeded.

    Example:
        >>> train, val = split_dataset(TensorImageDataset(torch.zeros(10, 1, 2, 2, dtype=torch.uint8),
        ...                                               torch.zeros(10, dtype=torch.int64)), 0.2, seed=0)
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
