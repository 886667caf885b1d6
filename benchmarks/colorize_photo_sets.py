"""The photo folders of the pretrained colourisation model: its training photos and the 10 held-out
Sun-Hays photos it is judged on, as folders of links to ``../shared/data`` (nothing is copied).

    python benchmarks/colorize_photo_sets.py            # writes data/colorize_train/ and data/sun_hays_heldout/

Training: all of ``urban_set14_set5/`` (109 photos) and the 70 Sun-Hays photos that
``configs/colorize/sun_hays80.yaml`` trains on; held out: the other 10, the same seeded split
(``split_dataset(photos, 0.125, seed=0)``), so the pretrained model is judged on the Sun-Hays benchmark's photos.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cinn.data import ImageFolderDataset, split_dataset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


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
    args = parser.parse_args()
    sun_hays = ImageFolderDataset(args.shared / "sun_hays80", image_size=128)
    train, held_out = split_dataset(sun_hays, 0.125, seed=0)  # as configs/colorize/sun_hays80.yaml splits it
    urban = ImageFolderDataset(args.shared / "urban_set14_set5", image_size=128)
    link_all([sun_hays.paths[i] for i in train.indices], args.out / "colorize_train", "sunhays")
    link_all(list(urban.paths), args.out / "colorize_train", "urban")
    link_all([sun_hays.paths[i] for i in held_out.indices], args.out / "sun_hays_heldout", "sunhays")
    print(f"{args.out / 'colorize_train'}: {len(train) + len(urban)} photos; {args.out / 'sun_hays_heldout'}: "
          f"{len(held_out)} photos ({', '.join(sun_hays.paths[i].name for i in held_out.indices)})")


if __name__ == "__main__":
    main()
