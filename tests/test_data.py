"""Data sources: idx parsing and its errors, MNIST layouts, Debian's Fashion-MNIST, image folders, splits."""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Subset

from cinn.colorization import photo_paths
from cinn.data import (
    ClassFolderDataset,
    DataError,
    ImageFolderDataset,
    TensorImageDataset,
    collate_images,
    load_cifar10,
    load_dataset,
    load_idx,
    load_mnist_like,
    split_dataset,
)

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
N_TRAIN, N_TEST = 20, 10


def write_idx(path: Path, array: np.ndarray, magic: int | None = None) -> Path:
    """An idx file of a uint8 array (gzip-compressed when the name ends in .gz)."""
    magic = 0x0800 + array.ndim if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(size.to_bytes(4, "big") for size in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def fake_images(n: int, offset: int) -> np.ndarray:
    """Image ``i`` is filled with ``offset + i`` with one marked pixel, so order and layout are checkable."""
    images = np.repeat((offset + np.arange(n, dtype=np.uint8))[:, None, None], 28, axis=1).repeat(28, axis=2)
    images[:, 3, 5] = 255
    return images


def fake_labels(n: int) -> np.ndarray:
    return (np.arange(n) * 7 % 10).astype(np.uint8)


def write_mnist(directory: Path, suffix: str = "") -> None:
    for prefix, n, offset in (("train", N_TRAIN, 0), ("t10k", N_TEST, 100)):
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", fake_images(n, offset))
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", fake_labels(n))


@pytest.fixture(params=["", ".gz"], ids=["plain", "gz"])
def mnist_root(request, tmp_path) -> Path:
    write_mnist(tmp_path / "MNIST" / "raw", request.param)
    return tmp_path


@pytest.fixture
def no_download(monkeypatch) -> list[tuple]:
    """torchvision's dataset classes replaced by ones that fail at once; records the calls."""
    calls = []

    def offline(root, train, download):
        calls.append((root, train, download))
        raise RuntimeError("network is unreachable")

    for name in ("MNIST", "FashionMNIST", "CIFAR10"):
        monkeypatch.setattr(torchvision.datasets, name, offline)
    return calls


# ---- idx files and MNIST layouts -------------------------------------------------------------------------------


def test_mnist_loads_from_torchvision_layout(mnist_root):
    for train, n, offset in ((True, N_TRAIN, 0), (False, N_TEST, 100)):
        data = load_mnist_like("mnist", mnist_root, train=train)
        assert isinstance(data, TensorImageDataset)
        assert data.images.shape == (n, 1, 28, 28) and data.images.dtype == torch.uint8
        assert data.labels.shape == (n,) and data.labels.dtype == torch.int64
        assert data.num_classes == 10 and len(data) == n
        assert torch.equal(data.images[:, 0], torch.from_numpy(fake_images(n, offset)))
        assert data.labels.tolist() == fake_labels(n).tolist()
        image, label = data[3]
        assert image.shape == (1, 28, 28) and image[0, 3, 5] == 255 and image[0, 0, 0] == offset + 3
        assert label.dtype == torch.int64 and label.item() == 3 * 7 % 10


def test_mnist_files_directly_in_root_and_torchvision_layout_first(tmp_path):
    write_mnist(tmp_path, ".gz")
    assert len(load_dataset("mnist", tmp_path, train=True)) == N_TRAIN
    write_idx(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte", fake_images(4, 50))
    write_idx(tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte", fake_labels(4))
    data = load_dataset("mnist", str(tmp_path), train=True)
    assert len(data) == 4 and data.images[0, 0, 0, 0] == 50


def test_load_idx_reads_other_element_types(tmp_path):
    values = np.array([[-2, 300], [7, -40000]], dtype=">i4")
    path = tmp_path / "ints.idx"
    path.write_bytes(bytes([0, 0, 0x0C, 2]) + (2).to_bytes(4, "big") * 2 + values.tobytes())
    array = load_idx(path)
    assert array.shape == (2, 2) and array.dtype == np.int32 and array.tolist() == values.tolist()


def test_getitems_batches_and_collate_accepts_both_forms(mnist_root):
    data = load_mnist_like("mnist", mnist_root, train=True)
    batch = data.__getitems__([4, 0, 9])
    assert batch[0].shape == (3, 1, 28, 28) and batch[1].tolist() == [data.labels[i].item() for i in (4, 0, 9)]
    assert torch.equal(batch[0][0], data[4][0])
    assert collate_images(batch) is batch
    images, labels = collate_images([data[4], data[0], data[9]])
    assert images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert torch.equal(images, batch[0]) and torch.equal(labels, batch[1])
    images, labels = collate_images([(data[1][0], 6), (data[2][0], 2)])
    assert images.shape == (2, 1, 28, 28) and labels.tolist() == [6, 2]


def test_dataloader_uses_batched_indexing(mnist_root):
    data = load_mnist_like("mnist", mnist_root, train=False)
    subset = Subset(data, [9, 1, 5, 3, 7])
    images, labels = next(iter(DataLoader(subset, batch_size=4, collate_fn=collate_images)))
    assert images.shape == (4, 1, 28, 28)
    assert images[:, 0, 0, 0].tolist() == [109, 101, 105, 103]
    assert labels.tolist() == data.labels[[9, 1, 5, 3]].tolist()


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_wrong_magic_number_names_file_and_magic(tmp_path, suffix):
    raw = tmp_path / "MNIST" / "raw"
    write_mnist(raw, suffix)
    bad = write_idx(raw / f"train-images-idx3-ubyte{suffix}", fake_images(N_TRAIN, 0), magic=0x1234ABCD)
    with pytest.raises(DataError, match=re.escape(str(bad))) as error:
        load_mnist_like("mnist", tmp_path, train=True)
    assert str(0x1234ABCD) in str(error.value)


def test_swapped_image_and_label_files_are_reported(mnist_root):
    raw = mnist_root / "MNIST" / "raw"
    for path in raw.iterdir():
        path.unlink()
    write_idx(raw / "t10k-images-idx3-ubyte", fake_labels(N_TEST))
    write_idx(raw / "t10k-labels-idx1-ubyte", fake_labels(N_TEST))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte has magic number 2049 where 2051 is expected"):
        load_mnist_like("mnist", mnist_root, train=False)


def test_truncated_file_reports_expected_and_actual_bytes(mnist_root):
    raw = mnist_root / "MNIST" / "raw"
    path = next(raw.glob("t10k-images-idx3-ubyte*"))
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    truncated = data[:-100]
    path.write_bytes(gzip.compress(truncated) if path.suffix == ".gz" else truncated)
    expected = N_TEST * 28 * 28
    with pytest.raises(DataError, match=re.escape(str(path))) as error:
        load_mnist_like("mnist", mnist_root, train=False)
    assert f"{expected - 100} bytes" in str(error.value) and f"{expected} bytes" in str(error.value)


def test_cut_gzip_stream_is_a_data_error(tmp_path):
    path = write_idx(tmp_path / "labels.gz", fake_labels(5000))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError, match=re.escape(str(path))):
        load_idx(path)


def test_labels_out_of_range(mnist_root):
    raw = mnist_root / "MNIST" / "raw"
    labels = fake_labels(N_TRAIN)
    labels[7] = 10
    write_idx(next(raw.glob("train-labels-idx1-ubyte*")), labels)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.* must lie in 0\.\.9 but reach 10"):
        load_mnist_like("mnist", mnist_root, train=True)


def test_image_and_label_counts_must_match(mnist_root):
    write_idx(next((mnist_root / "MNIST" / "raw").glob("train-labels-idx1-ubyte*")), fake_labels(N_TRAIN - 1))
    with pytest.raises(DataError, match=f"{N_TRAIN} images but .* {N_TRAIN - 1} labels"):
        load_mnist_like("mnist", mnist_root, train=True)


def test_missing_data_lists_files_and_folders_and_download_failure(tmp_path, no_download):
    root = tmp_path / "data"
    with pytest.raises(DataError) as error:
        load_dataset("mnist", root, train=False)
    message = str(error.value)
    assert "t10k-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert f"in {root / 'MNIST' / 'raw'}, {root} and" in message
    assert "download failed (RuntimeError: network is unreachable)" in message and "\n" not in message
    assert no_download == [(str(root), False, True)]


def test_missing_data_without_root_does_not_download(no_download):
    with pytest.raises(DataError, match="no data root was given"):
        load_mnist_like("mnist", None, train=True)
    assert no_download == []


def test_fashion_mnist_from_debian_package():
    """The CI installs Debian's dataset-fashion-mnist; its .gz files are read in place with no root."""
    assert (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file()
    train = load_dataset("fashion-mnist", None, train=True)
    test = load_mnist_like("fashion-mnist", None, train=False)
    assert (len(train), len(test)) == (60000, 10000)
    assert train[0][0].shape == (1, 28, 28) and test.images.dtype == torch.uint8
    assert torch.equal(torch.bincount(train.labels), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(test.labels), torch.full((10,), 1000))
    assert 0 < test.images.float().mean() < 255


def test_cifar10_download_failure_says_where(tmp_path, no_download):
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "cifar-10-batches-py"))) as error:
        load_dataset("cifar10", tmp_path, train=True)
    assert "download failed" in str(error.value)
    with pytest.raises(DataError, match="needs a data root"):
        load_cifar10(None, train=False)


# ---- image folders ---------------------------------------------------------------------------------------------


def solid(mode: str, size: tuple[int, int], color) -> Image.Image:
    return Image.new(mode, size, color)


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Images of every common mode, with upper-case extensions and a nested folder; the expected RGB colour
    of each is in its name."""
    root = tmp_path / "images"
    (root / "nested" / "deeper").mkdir(parents=True)
    solid("RGB", (40, 20), (200, 50, 10)).save(root / "a_rgb.png")
    solid("RGBA", (20, 30), (10, 20, 30, 128)).save(root / "b_rgba.PNG")
    palette = solid("RGB", (25, 25), (0, 255, 0)).convert("P")
    palette.save(root / "nested" / "c_palette.png", transparency=b"\x80\xff")  # per-entry alpha, as bytes
    solid("L", (17, 23), 77).save(root / "nested" / "d_grey.bmp")
    solid("CMYK", (24, 24), (255, 0, 0, 0)).save(root / "nested" / "deeper" / "e_cmyk.JPEG", quality=95)
    for name, value in (("f_16bit_max", 65535), ("g_16bit_half", 32768)):
        Image.fromarray(np.full((16, 16), value, dtype=np.uint16)).save(root / "nested" / f"{name}.png")
    (root / "nested" / "notes.txt").write_text("not an image")
    return root


EXPECTED_RGB = {"a_rgb": (200, 50, 10), "b_rgba": (10, 20, 30), "c_palette": (0, 255, 0), "d_grey": (77, 77, 77),
                "e_cmyk": (0, 255, 255), "f_16bit_max": (255, 255, 255), "g_16bit_half": (128, 128, 128)}


@pytest.mark.filterwarnings("error")
def test_image_folder_converts_every_mode(image_folder):
    data = ImageFolderDataset(image_folder, image_size=16)
    assert [path.stem for path in data.paths] == ["a_rgb", "b_rgba", "c_palette", "d_grey", "e_cmyk",
                                                  "f_16bit_max", "g_16bit_half"]
    assert all(isinstance(path, Path) for path in data.paths) and data.num_classes == 0
    for index, path in enumerate(data.paths):
        image, label = data[index]
        assert image.shape == (3, 16, 16) and image.dtype == torch.uint8, path.name
        assert label.dtype == torch.int64 and label.item() == 0
        tolerance = 3 if path.suffix == ".JPEG" else 0
        expected = torch.tensor(EXPECTED_RGB[path.stem], dtype=torch.int16).view(3, 1, 1)
        assert (image.to(torch.int16) - expected).abs().max() <= tolerance, path.name


def test_image_folder_grey_output_and_16_bit_scaling(image_folder):
    data = ImageFolderDataset(image_folder, image_size=8, channels=1)
    by_name = {path.stem: data[index][0] for index, path in enumerate(data.paths)}
    assert all(image.shape == (1, 8, 8) for image in by_name.values())
    assert torch.all(by_name["d_grey"] == 77)
    assert torch.all(by_name["f_16bit_max"] == 255) and torch.all(by_name["g_16bit_half"] == 128)


def three_bands(width: int = 60, height: int = 20) -> Image.Image:
    bands = np.zeros((height, width, 3), dtype=np.uint8)
    third = width // 3
    bands[:, :third, 0] = bands[:, third:2 * third, 1] = bands[:, 2 * third:, 2] = 255
    return Image.fromarray(bands)


def test_center_crop_and_resize_of_the_shorter_side(tmp_path):
    three_bands().save(tmp_path / "bands.png")
    image, _ = ImageFolderDataset(tmp_path, image_size=20)[0]
    assert torch.equal(image, torch.tensor([0, 255, 0], dtype=torch.uint8).view(3, 1, 1).expand(3, 20, 20))
    smaller, _ = ImageFolderDataset(tmp_path, image_size=10)[0]
    assert smaller.shape == (3, 10, 10)
    # 60x20 becomes 30x10; the crop is its middle third, green, with a little bicubic ringing at the edges
    assert smaller[1, :, 2:8].min() >= 250 and smaller[0::2, :, 2:8].max() <= 5


def test_random_crop_draws_windows_from_torch_rng(tmp_path):
    original = torch.from_numpy(np.array(three_bands())).permute(2, 0, 1)
    three_bands().save(tmp_path / "bands.png")
    data = ImageFolderDataset(tmp_path, image_size=20, random_crop=True)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        first = [data[0][0] for _ in range(12)]
        torch.manual_seed(0)
        again = [data[0][0] for _ in range(12)]
    offsets = set()
    for crop in first:
        matches = [j for j in range(41) if torch.equal(crop, original[:, :, j:j + 20])]
        assert matches, "a random crop must be a 20x20 window of the image"
        offsets.add(matches[0])
    assert len(offsets) > 1
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def test_exif_orientation_is_applied(tmp_path):
    picture = np.zeros((20, 40, 3), dtype=np.uint8)
    picture[:, :20, 0] = 255  # left half red, right half blue as stored
    picture[:, 20:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90° clockwise: the stored left edge is the top
    Image.fromarray(picture).save(tmp_path / "rotated.png", exif=exif)
    image, _ = ImageFolderDataset(tmp_path, image_size=20)[0]
    assert torch.all(image[0, :8] == 255) and torch.all(image[2, :8] == 0)
    assert torch.all(image[2, 12:] == 255) and torch.all(image[0, 12:] == 0)


def test_unreadable_image_names_the_file(image_folder):
    broken = image_folder / "nested" / "broken.png"
    broken.write_text("this is text, not a PNG")
    data = ImageFolderDataset(image_folder, image_size=8)
    index = data.paths.index(broken)
    assert data[index - 1][0].shape == (3, 8, 8)
    with pytest.raises(DataError, match=re.escape(str(broken))):
        data[index]


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ImageFolderDataset(tmp_path / "missing", image_size=8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=f"{re.escape(str(tmp_path / 'empty'))} contains no images"):
        ImageFolderDataset(tmp_path / "empty", image_size=8)
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "readme.txt").write_text("hello")
    with pytest.raises(DataError, match="contains no images"):
        ImageFolderDataset(tmp_path / "text", image_size=8)
    with pytest.raises(DataError, match="not a folder"):
        ImageFolderDataset(tmp_path / "text" / "readme.txt", image_size=8)


def test_load_dataset_dispatches_folders(image_folder, tmp_path):
    data = load_dataset(str(image_folder), None, train=True, image_size=12, channels=1)
    assert isinstance(data, ImageFolderDataset) and data[0][0].shape == (1, 12, 12)
    images, labels = next(iter(DataLoader(data, batch_size=3, collate_fn=collate_images)))
    assert images.shape == (3, 1, 12, 12) and labels.tolist() == [0, 0, 0]
    with pytest.raises(DataError, match="needs an image_size"):
        load_dataset(str(image_folder), None, train=True)
    with pytest.raises(DataError, match="neither a dataset name"):
        load_dataset(str(tmp_path / "fashion_mnist"), None, train=True)


# ---- splits ----------------------------------------------------------------------------------------------------


def test_split_is_seeded_disjoint_and_leaves_global_rng_alone():
    data = TensorImageDataset(torch.zeros(50, 1, 2, 2, dtype=torch.uint8), torch.arange(50) % 10, num_classes=10)
    rng_state = torch.get_rng_state()
    train, val = split_dataset(data, 0.2, seed=3)
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert (len(train), len(val)) == (40, 10)
    assert sorted(train.indices + val.indices) == list(range(50))
    again_train, again_val = split_dataset(data, 0.2, seed=3)
    assert again_train.indices == train.indices and again_val.indices == val.indices
    assert split_dataset(data, 0.2, seed=4)[1].indices != val.indices
    assert sorted(val.indices) != list(range(10)), "the split must shuffle, not take the first items"
    with pytest.raises(DataError, match="between 0 and 1"):
        split_dataset(data, 1.0, seed=0)
    with pytest.raises(DataError, match="too small"):
        split_dataset(Subset(data, [0]), 0.5, seed=0)


def test_folder_listings_skip_named_pipes(tmp_path):
    """A FIFO named like a photo is not opened (its reading would block forever): every listing of a folder of
    photos takes regular files only."""
    for label in ("cats", "dogs"):
        (tmp_path / label).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / label / "photo.png")
        os.mkfifo(tmp_path / label / "pipe.png")
    photos = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("photo.png"))
    assert [str(path.relative_to(tmp_path)) for path in photo_paths(tmp_path)] == photos
    assert [str(path.relative_to(tmp_path)) for path in ImageFolderDataset(tmp_path, 8).paths] == photos
    classes = ClassFolderDataset(tmp_path, 8)
    assert len(classes) == 2 and classes[1][0].shape == (3, 8, 8)
