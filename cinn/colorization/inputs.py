"""Photos given to colourisation: the files of an input folder, and training sets checked for colour."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cinn.data import IMAGE_EXTENSIONS, DataError, TensorImageDataset


def photo_paths(source: Path) -> list[Path]:
    """The photo ``source``, or every photo below the folder ``source`` (sorted), to colourise.

    Example:
        >>> photo_paths(Path("holiday/"))   # doctest: +SKIP
        [PosixPath('holiday/beach.jpg'), PosixPath('holiday/hills.png')]
    """
    if source.is_dir():
        paths = sorted(path for path in source.rglob("*") if path.suffix.lower() in IMAGE_EXTENSIONS)
        if not paths:
            raise DataError(f"folder {source} contains no photos ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        return paths
    if not source.exists():
        raise DataError(f"input {source} does not exist; pass a photo or a folder of photos")
    return [source]


def reject_grey_photos(photos: TensorImageDataset, names: Sequence[str]) -> TensorImageDataset:
    """``photos`` unchanged, or a :class:`DataError` naming those whose three channels are equal (within 2
    levels): they hold no colour to learn from.

    Example:
        >>> import torch
        >>> grey = TensorImageDataset(torch.full((1, 3, 4, 4), 128, dtype=torch.uint8), torch.zeros(1).long())
        >>> try:
        ...     reject_grey_photos(grey, ["grey.png"])
        ... except DataError as error:
        ...     print(str(error).split(";")[0])
        1 of the 1 training photos are greyscale (grey.png)
    """
    images = photos.images.int()
    spread = (images.amax(1) - images.amin(1)).flatten(1).amax(1)
    grey = [name for name, value in zip(names, spread.tolist(), strict=True) if value <= 2]
    if grey:
        shown = ", ".join(grey[:3]) + (", ..." if len(grey) > 3 else "")
        raise DataError(f"{len(grey)} of the {len(names)} training photos are greyscale ({shown}); "
                        "colourisation learns from colour photos, remove them")
    return photos
