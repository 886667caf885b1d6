"""Photos with a tag each (``people``, ``animals``, …): held-out sets judged per kind of photo.

Tags come from a photo list, a CSV file with the columns ``folder,photo,tag`` (``folder`` relative to the CSV
file's own folder, or absolute), or from a folder's layout: each photo's first sub-folder is its tag.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor
from torch.utils.data import Dataset

from cinn.data.errors import DataError
from cinn.data.folder import ImageFolderDataset, list_images

PHOTO_LIST_COLUMNS = ("folder", "photo", "tag")


def read_photo_list(csv_file: Path | str) -> tuple[list[Path], list[str]]:
    """The photos a CSV photo list names, in its order, and their tags.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp()); _ = (folder / "list.csv").write_text(
        ...     "folder,photo,tag\\nphotos,a.jpg,people\\n/data,b.png,animals\\n")
        >>> paths, tags = read_photo_list(folder / "list.csv")
        >>> [path.relative_to(folder).as_posix() if path.is_relative_to(folder) else str(path) for path in paths]
        ['photos/a.jpg', '/data/b.png']
        >>> tags
        ['people', 'animals']
    """
    csv_file = Path(csv_file)
    try:
        with csv_file.open(newline="") as stream:
            rows = list(csv.DictReader(stream))
            columns = tuple(rows[0]) if rows else ()
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"cannot read the photo list {csv_file}: {error}") from None
    if not rows:
        raise DataError(f"the photo list {csv_file} names no photos; give a header {','.join(PHOTO_LIST_COLUMNS)} "
                        "and one row per photo")
    if any(column not in columns for column in PHOTO_LIST_COLUMNS):
        raise DataError(f"the photo list {csv_file} has the columns {', '.join(map(str, columns))}; it needs "
                        f"{', '.join(PHOTO_LIST_COLUMNS)}")
    empty = [number for number, row in enumerate(rows, start=2) if not all(row[key] for key in PHOTO_LIST_COLUMNS)]
    if empty:
        raise DataError(f"the photo list {csv_file} has empty fields on line(s) {', '.join(map(str, empty[:5]))}")
    paths = [csv_file.parent / row["folder"] / row["photo"] for row in rows]
    if len(set(paths)) < len(paths):
        raise DataError(f"the photo list {csv_file} names a photo twice; list each photo once")
    return paths, [row["tag"] for row in rows]


def folder_tags(root: Path | str, paths: Sequence[Path]) -> list[str]:
    """Each photo's first sub-folder below ``root``; ``""`` for a photo directly in ``root``.

    Example:
        >>> folder_tags("photos", [Path("photos/people/a.jpg"), Path("photos/b.jpg")])
        ['people', '']
    """
    parts = [Path(path).relative_to(root).parts for path in paths]
    return [part[0] if len(part) > 1 else "" for part in parts]


def tag_groups(tags: Sequence[str]) -> dict[str, list[int]]:
    """The indices of each tag's photos, tags sorted.

    Example:
        >>> tag_groups(["people", "animals", "people"])
        {'animals': [1], 'people': [0, 2]}
    """
    indices: dict[str, list[int]] = {}
    for index, tag in enumerate(tags):
        indices.setdefault(tag, []).append(index)
    return dict(sorted(indices.items()))


class TaggedPhotos(Dataset):
    """Photos (an :class:`~cinn.data.ImageFolderDataset`) and a tag for each: ``dataset[i]`` is the photos'
    item ``i``, ``tags[i]`` its tag.

    Example:
        >>> import tempfile; from PIL import Image
        >>> folder = Path(tempfile.mkdtemp())
        >>> for tag in ("animals", "people"):
        ...     (folder / tag).mkdir(); Image.new("RGB", (40, 30)).save(folder / tag / "photo.png")
        >>> photos = TaggedPhotos.from_folder(folder, image_size=16)
        >>> photos.tags, photos[1][0].shape
        (['animals', 'people'], torch.Size([3, 16, 16]))
    """

    def __init__(self, photos: ImageFolderDataset, tags: Sequence[str]):
        if len(tags) != len(photos):
            raise ValueError(f"{len(photos)} photos need as many tags, got {len(tags)}")
        self.photos, self.tags = photos, list(tags)

    @classmethod
    def from_list(cls, csv_file: Path | str, image_size: int, **photo_options) -> TaggedPhotos:
        """The photos of a CSV photo list (:func:`read_photo_list`), as :class:`ImageFolderDataset` reads them."""
        paths, tags = read_photo_list(csv_file)
        return cls(ImageFolderDataset(paths, image_size, **photo_options), tags)

    @classmethod
    def from_folder(cls, root: Path | str, image_size: int, **photo_options) -> TaggedPhotos:
        """Every photo below ``root``, tagged with its first sub-folder (:func:`folder_tags`)."""
        root = Path(root).expanduser()
        paths = list_images(root)
        return cls(ImageFolderDataset(paths, image_size, **photo_options), folder_tags(root, paths))

    @property
    def paths(self) -> list[Path]:
        return self.photos.paths

    def __len__(self) -> int:
        return len(self.photos)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.photos[index]
