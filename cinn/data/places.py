"""Places365 scene photos (torchvision's small 256x256 images), as squares labelled by their scene class."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import functional as TF

from cinn.data.errors import DataError, one_line_reason
from cinn.data.images import fit_square, open_image

PLACES365_CLASSES = 365
DEFAULT_PLACES365_ROOT = Path("data")  # the configs' data.root: torchvision's layout under ./data
_BASE_URL = "http://data.csail.mit.edu/places/places365/"
_CATEGORIES = "categories_places365.txt"
_FILE_LISTS_ARCHIVE = "filelist_places365-standard.tar"


@dataclass(frozen=True)
class _SmallLayout:
    """Where torchvision keeps one split of Places365 with ``small=True``, and the archive of its images."""

    file_list: str  # lines "<path relative to images_dir> <label>"
    images_dir: str
    images_archive: str
    extracted_as: str  # the folder the archive extracts to (torchvision renames it to images_dir)


PLACES365_SPLITS = {
    "train-standard": _SmallLayout("places365_train_standard.txt", "data_256_standard",
                                   "train_256_places365standard.tar", "data_256"),
    "val": _SmallLayout("places365_val.txt", "val_256", "val_256.tar", "val_256"),
}


class Places365Dataset(Dataset):
    """The photos of a torchvision ``Places365`` split, each resized so its shorter side is ``image_size``
    (bicubic, antialiased) and centre-cropped square, as 8-bit RGB, labelled by its scene class.

    Items are decoded like :class:`~cinn.data.folder.ImageFolderDataset`'s (:func:`open_image`, then
    :func:`fit_square`); an unreadable photo is a :class:`DataError` naming the file.

    Shapes: ``dataset[i]`` is ``(uint8 (3, image_size, image_size), int64 label)`` with ``label`` in
    ``0..364``; ``num_classes`` is 365; ``classes[label]`` is the scene's name (``"/a/airfield"``).

    Example (built by :func:`load_places365`):
        >>> val_set = load_places365("data", "val", image_size=64)   # doctest: +SKIP
        >>> val_set[0][0].shape, val_set.num_classes   # doctest: +SKIP
        (torch.Size([3, 64, 64]), 365)
    """

    num_classes = PLACES365_CLASSES

    def __init__(self, places: torchvision.datasets.Places365, image_size: int):
        self.places = places
        self.image_size = image_size
        self.classes = sorted(places.class_to_idx, key=places.class_to_idx.__getitem__)

    def __len__(self) -> int:
        return len(self.places.imgs)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        path, label = self.places.imgs[index]
        image = fit_square(open_image(path, channels=3), self.image_size)
        return TF.pil_to_tensor(image), torch.tensor(label, dtype=torch.int64)


def _open_places365(root: Path, split: str, download: bool) -> torchvision.datasets.Places365:
    """torchvision's Places365 (small images) at ``root``, whose images folder exists."""
    places = torchvision.datasets.Places365(str(root), split=split, small=True, download=download)
    if not Path(places.images_dir).is_dir():  # torchvision checks it only when downloading
        raise FileNotFoundError(f"the images folder {places.images_dir} does not exist")
    return places


def load_places365(root: str | Path | None, split: str = "train-standard", image_size: int = 256,
                   download: bool = True) -> Places365Dataset:
    """Places365's ``"train-standard"`` or ``"val"`` split with torchvision's small (256x256) images, found
    in torchvision's layout under ``root`` (default ``./data``, as the configs' ``data.root``), or
    downloaded there by torchvision when missing or corrupt and ``download`` is on.

    The layout is ``<root>/categories_places365.txt``, the split's file list (``places365_val.txt``,
    ``places365_train_standard.txt``) and its images folder (``val_256/``, ``data_256_standard/``);
    torchvision checks the two text files against their md5 sums. When they are not there (or not
    Places365's) and the download is off or fails, a one-line :class:`DataError` says where it looked,
    why it failed and what to do.

    Shapes: see :class:`Places365Dataset`: ``(uint8 (3, image_size, image_size), int64 label)``.

    Example (offline, in an empty folder):
        >>> import tempfile
        >>> load_places365(tempfile.mkdtemp(), "val", image_size=64, download=False)   # doctest: +ELLIPSIS
        Traceback (most recent call last):
        cinn.data.errors.DataError: Places365 val (small images) was not found in ... and downloading is off; ...
        >>> train_set = load_places365(None, "train-standard", image_size=64)   # doctest: +SKIP
        >>> len(train_set), train_set.num_classes   # doctest: +SKIP
        (1803460, 365)
    """
    if split not in PLACES365_SPLITS:
        raise DataError(f"unknown Places365 split {split!r}; choose one of {', '.join(PLACES365_SPLITS)}")
    if image_size < 1:
        raise DataError(f"image_size must be a positive number of pixels, got {image_size}; set image_size")
    root = DEFAULT_PLACES365_ROOT if root is None else Path(root).expanduser()
    layout = PLACES365_SPLITS[split]
    renamed = f" renamed to {layout.images_dir}" if layout.extracted_as != layout.images_dir else ""
    fix = (f"download {_BASE_URL}{_FILE_LISTS_ARCHIVE} and {_BASE_URL}{layout.images_archive} and extract both "
           f"into {root} (torchvision's layout: {_CATEGORIES}, {layout.file_list}, {layout.extracted_as}/"
           f"{renamed}), or pass a folder of photos with --data.path")
    try:
        return Places365Dataset(_open_places365(root, split, download=False), image_size)
    except Exception as error:  # missing or corrupt files: try the download, or say what to do
        if not download:
            raise DataError(f"Places365 {split} (small images) was not found in {root} ({one_line_reason(error)}) "
                            f"and downloading is off; {fix}") from error
    try:
        return Places365Dataset(_open_places365(root, split, download=True), image_size)
    except Exception as error:  # any failure (network, disk, checksum) becomes one actionable message
        raise DataError(f"Places365 {split} (small images) was not found in {root} and the download failed "
                        f"({one_line_reason(error)}); {fix}") from error
