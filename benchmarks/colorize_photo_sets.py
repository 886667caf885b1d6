"""The photo folders of the colourisation models: training photos and held-out photos, as folders of links to
``../shared/data`` (nothing is copied).

    python benchmarks/colorize_photo_sets.py   # writes data/colorize_train/, sun_hays_heldout/, colorize_train571/

``colorize_train/`` (179 photos, the shipped model's until now): all of ``urban_set14_set5/`` (109 photos) and the
70 Sun-Hays photos that ``configs/colorize/sun_hays80.yaml`` trains on; ``sun_hays_heldout/``: the other 10, the
same seeded split (``split_dataset(photos, 0.125, seed=0)``), the Sun-Hays benchmark's photos.
``colorize_train571/``: every photo of ``sun_hays80/``, ``urban_set14_set5/`` and ``bsds432/`` (621) except the
50 of the held-out list ``benchmarks/colorize_heldout.csv`` (those 10 Sun-Hays photos and 40 BSDS photos): 571,
also written as the photo list ``benchmarks/colorize_train571.csv`` (each tagged with its folder).
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

from cinn.data import ImageFolderDataset, read_photo_list, split_dataset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
HELD_OUT = Path(__file__).resolve().parent / "colorize_heldout.csv"
TRAIN_LIST = Path(__file__).resolve().parent / "colorize_train571.csv"


def link_all(paths: list[Path], folder: Path, prefix: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        link = folder / f"{prefix}_{path.name}"
        if not link.exists():
            link.symlink_to(path.resolve())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=SHARED, help="the folder holding sun_hays80/ and "
                                                                    "urban_set14_set5/")
    parser.add_argument("--out", type=Path, default=Path("data"))
    parser.add_argument("--held-out", type=Path, default=HELD_OUT, help="the photo list never to train on")
    parser.add_argument("--train-list", type=Path, default=TRAIN_LIST,
                        help="where to list colorize_train571/'s photos (a photo list)")
    args = parser.parse_args()
    sun_hays = ImageFolderDataset(args.shared / "sun_hays80", image_size=128)
    train, held_out = split_dataset(sun_hays, 0.125, seed=0)  # as configs/colorize/sun_hays80.yaml splits it
    urban = ImageFolderDataset(args.shared / "urban_set14_set5", image_size=128)
    link_all([sun_hays.paths[i] for i in train.indices], args.out / "colorize_train", "sunhays")
    link_all(list(urban.paths), args.out / "colorize_train", "urban")
    link_all([sun_hays.paths[i] for i in held_out.indices], args.out / "sun_hays_heldout", "sunhays")
    print(f"{args.out / 'colorize_train'}: {len(train) + len(urban)} photos; {args.out / 'sun_hays_heldout'}: "
          f"{len(held_out)} photos ({', '.join(sun_hays.paths[i].name for i in held_out.indices)})")
    listed, _ = read_photo_list(args.held_out)
    never = {path.resolve() for path in listed}
    rows = []
    for folder, prefix in (("sun_hays80", "sunhays"), ("urban_set14_set5", "urban"), ("bsds432", "bsds")):
        paths = [path for path in ImageFolderDataset(args.shared / folder, image_size=128).paths
                 if path.resolve() not in never]
        link_all(paths, args.out / "colorize_train571", prefix)
        rows += [(folder, path.name) for path in paths]
    print(f"{args.out / 'colorize_train571'}: {len(rows)} photos (none of the {len(never)} in {args.held_out})")
    write_photo_list(args.train_list, [(Path(os.path.relpath(args.shared / folder, args.train_list.parent)),
                                        photo, folder) for folder, photo in rows])
    print(f"{args.train_list}: the same photos as a photo list, tagged with their folder")


def write_photo_list(csv_file: Path, rows: list[tuple[Path, str, str]]) -> None:
    """Write a photo list (``folder,photo,tag``, :func:`cinn.data.read_photo_list`'s format)."""
    with csv_file.open("w", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(["folder", "photo", "tag"])
        writer.writerows((folder.as_posix(), photo, tag) for folder, photo, tag in rows)


if __name__ == "__main__":
    main()
