"""Places365 (small images) through torchvision: a fake local layout read in place, and offline failures."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision.datasets.places365 as tv_places
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from cinn.data import DataError, collate_images, fit_square, load_places365, open_image

# The folder each split's file list is relative to, for small=True (torchvision's Places365.images_dir).
IMAGES_DIR = {"train-standard": "data_256_standard", "val": "val_256"}


def write_fake_places365(root: Path, split: str) -> list[tuple[Path, int]]:
    """torchvision's small-image layout of ``split`` under ``root``: all 365 categories, three tiny photos
    (a JPEG, an RGB PNG, a grey PNG) and the file list naming them; returns ``(photo, label)`` in order."""
    categories = [f"/{chr(ord('a') + i % 26)}/scene{i:03d}" for i in range(365)]
    root.mkdir(parents=True, exist_ok=True)
    (root / tv_places.Places365._CATEGORIES_META[0]).write_text(
        "".join(f"{name} {index}\n" for index, name in enumerate(categories)))
    photos = [(Image.new("RGB", (20, 12), (200, 30, 10)), ".jpg", 7),
              (Image.linear_gradient("L").resize((16, 24)).convert("RGB"), ".png", 364),
              (Image.linear_gradient("L").resize((10, 10)), ".png", 0)]
    lines, items = [], []
    for number, (photo, suffix, label) in enumerate(photos, start=1):
        # train lists "/a/airfield/00000001.jpg 0" (sub-folder per class), val "Places365_val_00000001.jpg 0"
        relative = (f"{categories[label]}/{number:08d}{suffix}" if split.startswith("train")
                    else f"Places365_val_{number:08d}{suffix}")
        path = root / IMAGES_DIR[split] / relative.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        photo.save(path)
        lines.append(f"{relative} {label}\n")
        items.append((path, label))
    (root / tv_places.Places365._FILE_LIST_META[split][0]).write_text("".join(lines))
    return items


@pytest.fixture
def downloads(monkeypatch) -> list[str]:
    """torchvision's Places365 downloads fail as offline; the URLs it tried are recorded."""
    calls = []

    def offline(url, download_root, *args, **kwargs):
        calls.append(url)
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_places, "download_and_extract_archive", offline)
    return calls


@pytest.fixture
def fake_checksums(monkeypatch) -> None:
    """Unavoidable: torchvision checks the md5 of the category and file-list files on every load (download
    or not), which fake files cannot match; existence is checked instead."""
    monkeypatch.setattr(tv_places, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


@pytest.mark.parametrize("split", ["train-standard", "val"])
def test_reads_a_local_layout_like_an_image_folder(tmp_path, split, downloads, fake_checksums):
    items = write_fake_places365(tmp_path, split)
    dataset = load_places365(tmp_path, split, image_size=8)
    assert downloads == []  # found in place: no download tried
    assert len(dataset) == 3 and dataset.num_classes == 365 and len(dataset.classes) == 365
    for index, (path, label) in enumerate(items):
        image, target = dataset[index]
        assert image.dtype == torch.uint8 and image.shape == (3, 8, 8)
        assert target.dtype == torch.int64 and target.item() == label
        assert torch.equal(image, pil_to_tensor(fit_square(open_image(path), 8)))
    assert dataset.classes[7] == "/h/scene007"
    assert dataset[0][0][0].float().mean() > 150 > dataset[0][0][2].float().mean()  # the red JPEG stays red
    images, labels = collate_images([dataset[0], dataset[1], dataset[2]])
    assert images.shape == (3, 3, 8, 8) and labels.tolist() == [7, 364, 0]


def test_empty_root_offline_is_one_line_naming_root_and_fix(tmp_path, downloads):
    root = tmp_path / "places"
    with pytest.raises(DataError) as error:
        load_places365(root, "val", image_size=32)
    message = str(error.value)
    assert "\n" not in message
    assert f"was not found in {root} and the download failed (URLError: " in message
    assert "Temporary failure in name resolution" in message
    assert re.search(rf"extract both into {re.escape(str(root))} .*categories_places365\.txt, places365_val\.txt, "
                     r"val_256/", message)
    assert message.endswith("or pass a folder of photos with --data.path")
    assert downloads == ["http://data.csail.mit.edu/places/places365/filelist_places365-standard.tar"]


def test_corrupt_file_lists_are_downloaded_again_and_offline_says_so(tmp_path, downloads):
    write_fake_places365(tmp_path, "train-standard")  # real md5 checks: these files are not Places365's
    with pytest.raises(DataError, match=r"the download failed \(URLError: .*data_256/ renamed to "
                                        r"data_256_standard\)"):
        load_places365(tmp_path, "train-standard", image_size=32)
    assert len(downloads) == 1


def test_missing_images_without_download(tmp_path, downloads, fake_checksums):
    write_fake_places365(tmp_path, "val")
    shutil.rmtree(tmp_path / "val_256")
    with pytest.raises(DataError, match=rf"not found in {re.escape(str(tmp_path))} \(FileNotFoundError: the "
                                        r"images folder .*val_256 does not exist\) and downloading is off"):
        load_places365(tmp_path, "val", image_size=32, download=False)
    assert downloads == []


def test_unknown_split(tmp_path):
    with pytest.raises(DataError, match="choose one of train-standard, val"):
        load_places365(tmp_path, "test", image_size=32)


def test_colourisation_trains_on_places365_by_name(tmp_path, downloads, fake_checksums, capsys):
    from tasks import colorize

    for split in ("train-standard", "val"):
        write_fake_places365(tmp_path / "places", split)
    tiny = str(Path(__file__).resolve().parents[1] / "configs/colorize/tiny.yaml")
    assert colorize.main(["train", "--config", tiny, "--data", "places365",
                          "--data.root", str(tmp_path / "places"), "--data.image_size=16",
                          "--run_dir", str(tmp_path / "run"), "--train.steps=2"]) == 0
    assert "training on 3 photos, 3 held out for validation" in capsys.readouterr().out


def test_places365_offline_is_one_line_for_colourisation(tmp_path, downloads, capsys):
    from cinn.cli import run_command
    from tasks import colorize

    tiny = str(Path(__file__).resolve().parents[1] / "configs/colorize/tiny.yaml")
    with pytest.raises(SystemExit) as exit_info:
        run_command(colorize.main, ["train", "--config", tiny, "--data", "places365", "--data.root",
                                    str(tmp_path / "empty"), "--run_dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "download failed" in err
    assert not (tmp_path / "run").exists()
