"""benchmarks/colorize_photo_sets.py: the training photos are every shared photo but the held-out ones, listed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cinn.data import read_photo_list
from tests.benchmark_scripts import load_script

photo_sets = load_script("colorize_photo_sets")


def write_photos(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True)
    generator = np.random.default_rng(len(names))
    for name in names:
        Image.fromarray(generator.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / name)


def test_the_training_list_names_every_shared_photo_except_the_held_out_ones(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    write_photos(shared / "sun_hays80", [f"scene_{index}.png" for index in range(8)])
    write_photos(shared / "urban_set14_set5", ["street.png", "tower.png"])
    write_photos(shared / "bsds432", ["1.png", "2.png", "3.png"])
    held_out = tmp_path / "heldout.csv"
    held_out.write_text("folder,photo,tag\nshared/bsds432,2.png,people\nshared/sun_hays80,scene_0.png,urban\n")
    train_list = tmp_path / "lists" / "train.csv"
    train_list.parent.mkdir()
    monkeypatch.setattr("sys.argv", ["colorize_photo_sets.py", "--shared", str(shared), "--out",
                                     str(tmp_path / "data"), "--held-out", str(held_out),
                                     "--train-list", str(train_list)])
    photo_sets.main()
    paths, tags = read_photo_list(train_list)
    names = sorted(f"{path.parent.name}/{path.name}" for path in paths)
    assert names == sorted([f"sun_hays80/scene_{index}.png" for index in range(1, 8)]
                           + ["urban_set14_set5/street.png", "urban_set14_set5/tower.png",
                              "bsds432/1.png", "bsds432/3.png"])
    assert all(path.is_file() and path.resolve().is_relative_to(shared.resolve()) for path in paths)
    assert tags == [path.parent.name for path in paths]
    assert len(list((tmp_path / "data" / "colorize_train571").iterdir())) == len(paths)
