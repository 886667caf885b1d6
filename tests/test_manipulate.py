"""Semantic manipulation (Glow's Figure 6): attribute directions against known answers, class names and
attributes, CelebA in torchvision's layout, and ``python -m tasks.glow manipulate`` end to end."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
import torchvision.datasets.celeba as tv_celeba
from mnist_fixture import write_mnist_fixture
from PIL import Image
from test_glow_task import data_root, glow_command, run, run_in_process, tiny_train_args  # noqa: F401 (a fixture)
from torchvision.transforms.functional import pil_to_tensor

from cinn.blocks import ActNorm, InvertibleConv1x1, InvertibleConv1x1LU, Split, Squeeze
from cinn.data import (
    BinaryAttributes,
    DataError,
    TensorImageDataset,
    dataset_attributes,
    fit_square,
    load_celeba,
    load_dataset,
    load_mnist_like,
    open_image,
)
from cinn.latent import attribute_direction, flatten_latents, manipulate, move_latents, unflatten_latents
from cinn.models import Flow, build_glow
from tasks import glow

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open",
    "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young")


def perturbed(model: Flow, x: torch.Tensor, c=None) -> Flow:
    """``model`` in float64 with ActNorm initialised on ``x`` and every parameter moved off its (near-identity)
    initial value, so the test sees a generic invertible map."""
    model = model.double()
    model.encode(x, c)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    return model


def affine_flow() -> Flow:
    """A two-scale flow of linear maps only (squeezes, 1x1 convolutions, ActNorm, a plain split):
    ``encode(x) = A·x + b``, so the mean of encodings is the encoding of the mean."""
    flow = Flow((1, 4, 4))
    for block, kwargs in ((Squeeze, {}), (InvertibleConv1x1, {}), (ActNorm, {}), (Split, {"learned_prior": False}),
                          (Squeeze, {}), (InvertibleConv1x1LU, {})):
        flow.append(block, **kwargs)
    return perturbed(flow, torch.rand(16, 1, 4, 4, dtype=torch.float64))


def test_in_an_affine_flow_the_direction_adds_the_mean_image_difference():
    torch.manual_seed(0)
    model = affine_flow()
    bar = torch.zeros(1, 4, 4, dtype=torch.float64)
    bar[:, :, 1] = 0.8  # the "attribute": a bright column
    without = torch.rand(7, 1, 4, 4, dtype=torch.float64)
    with_bar = torch.rand(5, 1, 4, 4, dtype=torch.float64) + bar
    x, labels = torch.cat([without, with_bar]), torch.arange(12) >= 7
    found = attribute_direction(model, x, labels, batch_size=5)
    assert (found.count_with, found.count_without) == (5, 7)
    assert [tuple(d.shape) for d in found.direction] == model.latent_shapes == [(2, 2, 2), (8, 1, 1)]
    expected = (flatten_latents(model.encode(with_bar.mean(0, keepdim=True)))
                - flatten_latents(model.encode(without.mean(0, keepdim=True))))
    assert torch.allclose(flatten_latents([d[None] for d in found.direction]), expected, atol=1e-12)
    assert found.norm == pytest.approx(expected.norm().item(), rel=1e-12)

    images = manipulate(model, without, found.direction, [0.0, 1.0, -0.5])
    shift = with_bar.mean(0) - without.mean(0)  # A·x + A·(m₁ − m₀) + b = A·(x + m₁ − m₀) + b
    assert images.shape == (7, 3, 1, 4, 4)
    assert torch.allclose(images[:, 0], without, atol=1e-12)
    assert torch.allclose(images[:, 1], without + shift, atol=1e-12)
    assert torch.allclose(images[:, 2], without - 0.5 * shift, atol=1e-12)


@pytest.mark.parametrize("n_classes", [0, 3], ids=["unconditional", "class-conditional"])
def test_direction_is_the_difference_of_mean_encodings_whatever_the_batches(n_classes):
    torch.manual_seed(1)
    x = torch.rand(13, 1, 8, 8, dtype=torch.float64)
    c = torch.arange(13) % 3 if n_classes else None
    model = perturbed(build_glow((1, 8, 8), n_levels=2, steps_per_level=1, hidden_channels=4, n_classes=n_classes,
                                 channels_last=False), x, c)
    labels = torch.tensor([1, 0, 0, 1, 1, 0, 0, 0, 1, 0, 1, 0, 0], dtype=torch.bool)
    found = attribute_direction(model, x, labels, condition=c, batch_size=4)  # 4 batches, the last of 1
    z = flatten_latents(model.encode(x, c))
    expected = z[labels].mean(0) - z[~labels].mean(0)
    assert torch.allclose(flatten_latents([d[None] for d in found.direction])[0], expected, atol=1e-12)
    assert torch.allclose(flatten_latents([m[None] for m in found.mean_with])[0], z[labels].mean(0), atol=1e-12)
    assert (found.count_with, found.count_without) == (5, 8)
    # from the mean latent of the images without, the direction leads to the mean latent of those with
    start = unflatten_latents(z[~labels].mean(0, keepdim=True), model.latent_shapes)
    assert torch.allclose(flatten_latents(move_latents(start, found.direction, [1.0]))[0], z[labels].mean(0),
                          atol=1e-12)
    images = manipulate(model, x[:3], found.direction, [0.0, 1.0], condition=None if c is None else c[:3])
    assert torch.allclose(images[:, 0], x[:3], atol=1e-9)
    assert (images[:, 1] - x[:3]).abs().max() > 1e-3


def test_direction_needs_both_groups_and_boolean_labels():
    model = build_glow((1, 8, 8), n_levels=2, steps_per_level=1, hidden_channels=4)
    x = torch.rand(4, 1, 8, 8)
    with pytest.raises(ValueError, match="needs images with and without the attribute, got 4 with and 0"):
        attribute_direction(model, x, torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="labels must be a bool tensor"):
        attribute_direction(model, x, torch.tensor([0, 1, 0, 1]))


def test_moved_latents_are_ordered_image_major_and_shapes_are_checked():
    moved = move_latents([torch.arange(2.0)[:, None, None].expand(2, 1, 3)], [torch.ones(1, 3)], [0.0, 10.0])
    assert moved[0][:, 0, 0].tolist() == [0.0, 10.0, 1.0, 11.0]
    with pytest.raises(ValueError, match="cannot move latents of shape"):
        move_latents([torch.zeros(2, 3)], [torch.zeros(4)], [1.0])


FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")


def test_attributes_are_found_by_name_in_any_spelling_or_by_index():
    attributes = BinaryAttributes.of_classes(torch.tensor([7, 9, 0, 7, 3]), FASHION)
    for spelling in ("Ankle boot", "ankle_boot", "ANKLE-BOOT", " ankle  boot ", "9"):
        assert attributes.index(spelling) == 9
    assert attributes.index("t-shirt") == attributes.index("Top") == attributes.index("t shirt/top") == 0
    with_sneaker, rest = attributes.contrast("sneaker")  # class vs rest
    assert with_sneaker.tolist() == [1, 0, 0, 1, 0] and rest.tolist() == [0, 1, 1, 0, 1]
    sneaker, boot = attributes.contrast("sneaker", against="ankle boot")  # class vs class
    assert sneaker.tolist() == [1, 0, 0, 1, 0] and boot.tolist() == [0, 1, 0, 0, 0]
    with pytest.raises(ValueError, match=r"unknown attribute 'sandals'; known: T-shirt/top, Trouser, .*Ankle boot "
                                         r"\(or an index 0-9\)"):
        attributes.index("sandals")
    with pytest.raises(ValueError, match="names the same attribute"):
        attributes.contrast("8", against="bag")
    many = BinaryAttributes(tuple(CELEBA_ATTRIBUTES), torch.zeros(1, 40, dtype=torch.bool))
    assert len(many.listing()) < 330 and many.listing().endswith(", ... (40 in all)")


def test_named_datasets_name_their_classes_and_unlabelled_data_has_no_attributes(tmp_path):
    write_mnist_fixture(tmp_path, n_train=8, n_test=4, folder="FashionMNIST")
    fashion = load_mnist_like("fashion-mnist", tmp_path, train=False)
    assert fashion.classes == list(FASHION)
    attributes = dataset_attributes(fashion)
    assert attributes.names == FASHION
    assert torch.equal(attributes.values[:, 7], fashion.labels == 7)
    assert dataset_attributes(TensorImageDataset(torch.zeros(2, 1, 2, 2, dtype=torch.uint8),
                                                 torch.zeros(2, dtype=torch.int64))) is None


# ---------------------------------------------------------------------------------------------------- CelebA
CELEBA_PARTITION = [0] * 16 + [1] * 4 + [2] * 8  # train, valid, test
SMILING = [index % 2 == 0 for index in range(len(CELEBA_PARTITION))]


def write_fake_celeba(root: Path) -> list[Path]:
    """torchvision's CelebA layout under ``root/celeba``: tiny 18x22 JPEGs (smiling faces bright), the
    attribute table in the original's format (a header with a trailing space, ±1 values), the partition and
    the identity, box and landmark lists torchvision also reads; returns the JPEGs in order."""
    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    names = [f"{number:06d}.jpg" for number in range(1, len(CELEBA_PARTITION) + 1)]
    paths = []
    for index, (name, smiling) in enumerate(zip(names, SMILING, strict=True)):
        paths.append(folder / "img_align_celeba" / name)
        Image.new("RGB", (18, 22), (230, 200, 180) if smiling else (40, 60 + 5 * index, 90)).save(paths[-1])
    rows = []
    for name, smiling in zip(names, SMILING, strict=True):
        values = [1 if attribute == "Smiling" and smiling else -1 for attribute in CELEBA_ATTRIBUTES]
        rows.append(f"{name} " + " ".join(f"{value:2d}" for value in values) + "\n")
    count = f"{len(names)}\n"
    (folder / "list_attr_celeba.txt").write_text(count + " ".join(CELEBA_ATTRIBUTES) + " \n" + "".join(rows))
    (folder / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in zip(names, CELEBA_PARTITION,
                                                                                          strict=True)))
    (folder / "identity_CelebA.txt").write_text("".join(f"{n} {i}\n" for i, n in enumerate(names)))
    (folder / "list_bbox_celeba.txt").write_text(count + "image_id x_1 y_1 width height\n"
                                                 + "".join(f"{n} 95 71 226 313\n" for n in names))
    (folder / "list_landmarks_align_celeba.txt").write_text(
        count + "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x "
        "rightmouth_y\n" + "".join(f"{n} 69 109 106 113 77 142 73 152 108 154\n" for n in names))
    return paths


@pytest.fixture
def fake_checksums(monkeypatch) -> None:
    """Unavoidable: torchvision checks the md5 of CelebA's list files on every load (download or not), which
    fake files cannot match; existence is checked instead."""
    monkeypatch.setattr(tv_celeba, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


def test_celeba_is_read_in_place_with_its_40_attributes(tmp_path, fake_checksums):
    paths = write_fake_celeba(tmp_path)
    test_set = load_dataset("celeba", tmp_path, train=False, image_size=8)  # the test split, squares of 8
    assert len(test_set) == 8 and len(load_celeba(tmp_path, "valid", 8)) == 4 and test_set.num_classes == 0
    assert test_set.attributes.names == tuple(CELEBA_ATTRIBUTES)  # no empty name from the trailing space
    assert test_set.attributes.values.shape == (8, 40)
    smiling = test_set.attributes.values[:, test_set.attributes.index("smiling")]
    assert smiling.tolist() == SMILING[20:] and test_set.attributes.values.sum() == sum(SMILING[20:])
    image, label = test_set[1]
    assert image.dtype == torch.uint8 and image.shape == (3, 8, 8) and label.item() == 0
    assert torch.equal(image, pil_to_tensor(fit_square(open_image(paths[21]), 8)))
    assert load_dataset("celeba", tmp_path, train=True, image_size=8, channels=1)[0][0].shape == (1, 8, 8)


@pytest.mark.parametrize("layout", ["empty", "not-celeba-files"])
def test_missing_or_corrupt_celeba_is_one_line_that_says_where_and_how(tmp_path, layout):
    if layout == "not-celeba-files":
        write_fake_celeba(tmp_path)  # the real md5 check refuses the fake list files
    with pytest.raises(DataError) as error:
        load_dataset("celeba", tmp_path, train=True, image_size=8)
    message = str(error.value)
    assert "\n" not in message
    assert f"CelebA was not found in {tmp_path / 'celeba'}" in message and "not found or corrupted" in message
    assert "list_attr_celeba.txt" in message and "img_align_celeba.zip" in message and "download=True" in message


# ---------------------------------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def mnist_checkpoint(data_root, tmp_path_factory) -> Path:  # noqa: F811 (data_root is the fixture)
    run_dir = tmp_path_factory.mktemp("manipulate") / "run"
    assert glow.main(tiny_train_args(data_root, run_dir, "--train.steps=2")) == 0
    return run_dir / "checkpoint.pt"


def test_manipulate_writes_the_grid_and_prints_norm_and_counts(data_root, mnist_checkpoint, tmp_path):  # noqa: F811
    out = tmp_path / "grid.png"
    result = run(glow_command("manipulate", "--checkpoint", str(mnist_checkpoint), "--attribute", "3", "--against",
                              "7", "--scales", "-2,-1,0,1,2", "--images", "2", "--out", str(out)))
    assert result.returncode == 0, result.stderr
    labels = load_mnist_like("mnist", data_root, train=True).labels
    counts = (int((labels == 3).sum()), int((labels == 7).sum()))
    assert min(counts) > 0
    assert (f"the mean latent of {counts[0]} training images with '3' minus that of {counts[1]} with '7'"
            in result.stdout)
    assert float(re.search(r"norm (\d+\.\d+)", result.stdout).group(1)) > 0
    assert "2 test images with '7' (rows) at scales -2, -1, 0, 1, 2" in result.stdout
    assert result.stdout.rstrip().endswith(str(out))
    with Image.open(out) as grid:
        assert grid.size == (5 * 30 + 2, 2 * 30 + 2)  # 5 scales by 2 images of 28x28, 2 pixels apart


@pytest.fixture(scope="module")
def folder_checkpoint(tmp_path_factory) -> Path:
    """A tiny Glow trained on a folder of unlabelled images."""
    folder = tmp_path_factory.mktemp("folder")
    for index in range(16):
        Image.new("L", (8, 8), 10 * index).save(folder / f"{index:02d}.png")
    run_dir = tmp_path_factory.mktemp("folder_run") / "run"  # not inside the data: its figures would be read
    assert glow.main(["train", "--config", "configs/glow/tiny.yaml", "--data.dataset", str(folder),
                      "--data.image_size=8", "--data.channels=1", "--run_dir", str(run_dir), "--train.steps=2",
                      "--train.init_batch_size=16"]) == 0
    return run_dir / "checkpoint.pt"


@pytest.mark.parametrize("args, message", [
    (["--attribute", "sneaker"], "--attribute/--against: unknown attribute 'sneaker'; known: 0, 1, 2, 3, 4, 5, 6, "
                                 "7, 8, 9 (or an index 0-9)"),
    (["--attribute", "3", "--against", "3"], "'3' names the same attribute as '3'"),
    (["--attribute", "3", "--scales=1,,2"], "argument --scales: must be 1 to 32 comma-separated finite numbers"),
    (["--attribute", "3", "--scales", "-1,nan"], "argument --scales: must be 1 to 32 comma-separated finite"),
    (["--attribute", "3", "--images", "0"], "argument --images: must be an integer >= 1"),
])
def test_bad_manipulations_are_one_line(mnist_checkpoint, tmp_path, capsys, args, message):
    out = tmp_path / "grid.png"
    code, stderr = run_in_process(["manipulate", "--checkpoint", str(mnist_checkpoint), "--out", str(out), *args],
                                  capsys)
    assert code == 2 and message in stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert not out.exists()


def test_a_run_on_unlabelled_images_has_no_attributes(folder_checkpoint, capsys):
    code, stderr = run_in_process(["manipulate", "--checkpoint", str(folder_checkpoint), "--attribute", "0"],
                                  capsys)
    assert code == 2 and stderr.count("\n") == 1
    assert "which has no classes or attributes to take a direction from; manipulate needs a run on" in stderr
    assert not list(folder_checkpoint.parent.glob("manipulation*"))


def test_manipulate_on_celeba_by_attribute_name(tmp_path, fake_checksums, capsys):
    write_fake_celeba(tmp_path)
    run_dir = tmp_path / "run"
    assert glow.main(["train", "--config", "configs/glow/tiny.yaml", "--data.dataset=celeba",
                      f"--data.root={tmp_path}", "--data.image_size=8", "--run_dir", str(run_dir),
                      "--train.steps=2", "--train.init_batch_size=16"]) == 0
    checkpoint = str(run_dir / "checkpoint.pt")
    assert glow.main(["manipulate", "--checkpoint", checkpoint, "--attribute", "smiling", "--scales=-1,0,1"]) == 0
    stdout = capsys.readouterr().out
    assert "the mean latent of 8 training images with 'Smiling' minus that of 8 without 'Smiling'" in stdout
    assert "4 test images without 'Smiling' (rows) at scales -1, 0, 1" in stdout
    with Image.open(run_dir / "manipulation_smiling.png") as grid:
        assert grid.size == (3 * 10 + 2, 4 * 10 + 2)

    code, stderr = run_in_process(["manipulate", "--checkpoint", checkpoint, "--attribute", "Bald"], capsys)
    assert code == 2 and "celeba has no training image with 'Bald'" in stderr and stderr.count("\n") == 1
