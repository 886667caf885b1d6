"""Photos given to colourisation: the files of an input folder, and training sets checked for colour."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cinn.data import IMAGE_EXTENSIONS, DataError, TensorImageDataset, is_image_file


def photo_paths(source: Path) -> list[Path]:
    """The photo ``source``, or every photo below the folder ``source`` (sorted), to colourise.

    Example:
        >>> photo_paths(Path("holiday/"))   # doctest: +SKIP
        [PosixPath('holiday/beach.jpg'), PosixPath('holiday/hills.png')]
    """
    if source.is_dir():
        paths = sorted(path for path in source.rglob("*") if is_image_file(path))
        if not paths:
            raise DataError(f"folder {source} contains no photos ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        return paths
    if not source.exists():
        raise DataError(f"input {source} does not exist; pass a photo or a folder of photos")
    if not source.is_file():
        raise DataError(f"input {source} is not a regular file; pass a photo or a folder of photos")
    return [source]


GREY_SPREAD = 10  # levels of 255: a photo whose pixels' RGB channels (99% of them) differ by no more is grey


def colour_photos(photos: TensorImageDataset, names: Sequence[str]) -> TensorImageDataset:
    """The photos that hold colour to learn from. A photo is grey, and skipped with one warning line that
    counts them, when in 99% of its pixels the three channels differ by at most ``GREY_SPREAD`` levels
    (grey and nearly grey scans, sepia-free black and white, JPEG noise on grey); a :class:`DataError`
    when no colour photo is left.

    Example:
        >>> import torch
        >>> images = torch.stack([torch.full((3, 4, 4), 128, dtype=torch.uint8),
        ...                       torch.tensor([200, 90, 40], dtype=torch.uint8)[:, None, None].expand(3, 4, 4)])
        >>> kept = colour_photos(TensorImageDataset(images, torch.zeros(2).long()), ["grey.png", "orange.png"])
        skipped 1 of the 2 training photos as greyscale (grey.png): they hold no colour to learn from
        >>> len(kept)
        1
    """
    images = photos.images.int()
    spread = (images.amax(1) - images.amin(1)).flatten(1).float().quantile(0.99, dim=1)
    grey = [name for name, value in zip(names, spread.tolist(), strict=True) if value <= GREY_SPREAD]
    if not grey:
        return photos
    shown = ", ".join(grey[:3]) + (", ..." if len(grey) > 3 else "")
    if len(grey) == len(names):
        raise DataError(f"{len(grey)} of the {len(names)} training photos are greyscale ({shown}); "
                        "colourisation learns from colour photos, add some")
    print(f"skipped {len(grey)} of the {len(names)} training photos as greyscale ({shown}): they hold no colour "
          "to learn from")
    keep = (spread > GREY_SPREAD).nonzero().flatten()
    return TensorImageDataset(photos.images[keep], photos.labels[keep], photos.num_classes)
