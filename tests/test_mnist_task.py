"""``python -m tasks.mnist`` end to end on a tiny MNIST-format fixture in torchvision's layout."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from mnist_fixture import write_mnist_fixture
from PIL import Image

from cinn.cli import run_command
from cinn.engine import load_checkpoint
from tasks import mnist

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs/mnist/tiny.yaml")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny model trained on the fixture: (data root, run directory)."""
    data_root = write_mnist_fixture(tmp_path_factory.mktemp("mnist"), n_train=128, n_test=48)
    run_dir = tmp_path_factory.mktemp("run")
    assert mnist.main(["train", "--config", TINY, "--data.root", str(data_root), "--run_dir", str(run_dir)]) == 0
    return data_root, run_dir


def test_train_writes_a_resumable_run(trained_run):
    _, run_dir = trained_run
    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert state["task"] == "mnist" and state["step"] == 6
    assert {"config.yaml", "metrics.csv", "learning_curve.png"} <= {p.name for p in run_dir.iterdir()}


def test_eval_reports_bits_per_dim_and_class_consistency(trained_run, capsys):
    _, run_dir = trained_run
    assert mnist.main(["eval", "--checkpoint", str(run_dir / "checkpoint.pt")]) == 0
    out = capsys.readouterr().out
    assert "test bits/dim:" in out and "48 images" in out
    assert "Bayes-rule accuracy, argmax_y log p(x | y) over the 10 classes with equal priors: " in out
    assert re.search(r"priors: \d+\.\d% ± \d+\.\d% of 48 images", out)
    assert "class consistency:" in out and "of 40 samples at temperature 0.8" in out
    assert (run_dir / "classifier.pt").is_file()


def test_sample_transfer_and_pca_write_their_figures(trained_run, tmp_path):
    _, run_dir = trained_run
    checkpoint = str(run_dir / "checkpoint.pt")
    assert mnist.main(["sample", "--checkpoint", checkpoint, "--n", "3", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").is_file()
    assert mnist.main(["transfer", "--checkpoint", checkpoint, "--n", "2", "--out", str(tmp_path / "t.png")]) == 0
    assert (tmp_path / "t.png").is_file()
    assert mnist.main(["pca", "--checkpoint", checkpoint, "--label", "7", "--axes", "2", "--steps", "3",
                       "--images", "40", "--out", str(tmp_path / "pca")]) == 0
    assert (tmp_path / "pca" / "class_7.png").is_file()


def test_pca_of_a_label_the_model_lacks_gives_one_clear_line(trained_run, tmp_path, capsys):
    _, run_dir = trained_run
    with pytest.raises(SystemExit) as exit_info:
        run_command(mnist.main, ["pca", "--checkpoint", str(run_dir / "checkpoint.pt"), "--label", "10",
                                 "--out", str(tmp_path / "pca")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert "--label 10 is not a class of this model; its labels are 0 to 9" in err
    assert not (tmp_path / "pca").exists()


def test_transfer_under_the_own_label_gives_back_the_input(trained_run):
    data_root, run_dir = trained_run
    task = mnist.ClassConditionalTask()
    run = task.open(run_dir / "checkpoint.pt", torch.device("cpu"))
    config, model = run.config, run.model
    test_set, _ = task.eval_data(config, str(data_root))
    images, labels = test_set.images[:3], test_set.labels[:3]
    x, c = task.objective(config, train=False).prepare(images, labels, torch.Generator().manual_seed(0))
    latents = model.encode(x, c)
    assert torch.allclose(model.decode(latents, c), x, atol=1e-4)


def test_conv_architecture_and_gaussian_training_noise_train(trained_run, tmp_path):
    data_root, _ = trained_run
    assert mnist.main(["train", "--config", TINY, "--data.root", str(data_root), "--run_dir", str(tmp_path),
                       "--model.architecture=conv", "--model.blocks_per_level=1", "--model.hidden_channels=8",
                       "--data.train_noise=gaussian", "--train.steps=2"]) == 0
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2


def test_fashion_mnist_from_the_debian_package_trains(tmp_path):
    assert mnist.main(["train", "--config", TINY, "--data.dataset=fashion-mnist", "--data.root", str(tmp_path),
                       "--run_dir", str(tmp_path / "run"), "--train.steps=2"]) == 0


@pytest.mark.parametrize("args, message", [
    (["--data.dataset=imagenet"], "is neither a dataset name (mnist, fashion-mnist, cifar10, celeba, places365) "
                                  "nor an"),
    (["--model.architecture=rnn"], "model.architecture"),
    (["--model.coupling.clamp=0"], "model.coupling: coupling map 'soft_clamp_affine': clamp must be "
                                  "positive"),
])
def test_bad_settings_give_one_clear_line(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_command(mnist.main, ["train", "--config", TINY, "--run_dir", str(tmp_path), *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_mnist_names_the_expected_files(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_command(mnist.main, ["train", "--config", TINY, "--data.root", str(tmp_path / "none"),
                                 "--run_dir", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert "train-images-idx3-ubyte" in capsys.readouterr().err


def test_fc_model_with_orthogonal_mixing_trains(trained_run, tmp_path):
    data_root, run_dir = trained_run
    default = mnist.ClassConditionalTask().open(run_dir / "checkpoint.pt", torch.device("cpu")).model
    assert any(type(block).__name__ == "ChannelPermutation" for block in default.blocks)  # the paper's shuffle
    assert mnist.main(["train", "--config", TINY, "--data.root", str(data_root), "--run_dir", str(tmp_path),
                       "--model.permutation=orthogonal", "--train.steps=2"]) == 0
    model = mnist.ClassConditionalTask().open(tmp_path / "checkpoint.pt", torch.device("cpu")).model
    assert any(type(block).__name__ == "OrthogonalPermutation" for block in model.blocks)


def write_class_folder(root: Path, n_classes: int = 3, per_class: int = 8) -> Path:
    """A folder with one sub-folder of small PNGs per class; each class has its own mean brightness."""
    generator = torch.Generator().manual_seed(0)
    for label in range(n_classes):
        (root / f"class_{label}").mkdir(parents=True)
        for index in range(per_class):
            pixels = (40 + 80 * label + 30 * torch.rand(8, 8, 3, generator=generator)).to(torch.uint8)
            Image.fromarray(pixels.numpy()).save(root / f"class_{label}" / f"{index}.png")
    return root


def test_a_folder_with_one_sub_folder_per_class_trains_with_its_number_of_classes(tmp_path, capsys):
    folder = write_class_folder(tmp_path / "photos")
    run_dir = tmp_path / "run"
    assert mnist.main(["train", "--config", TINY, "--data.dataset", str(folder), "--data.image_size=8",
                       "--data.test_fraction=0.25", "--run_dir", str(run_dir), "--train.steps=2",
                       "--train.batch_size=4", "--train.init_batch_size=8"]) == 0
    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert state["conventions"]["n_classes"] == 3 and state["conventions"]["image_shape"] == [3, 8, 8]
    assert mnist.main(["sample", "--checkpoint", str(run_dir / "checkpoint.pt"), "--n", "2",
                       "--out", str(tmp_path / "s.png")]) == 0
    assert mnist.main(["eval", "--checkpoint", str(run_dir / "checkpoint.pt")]) == 0
    out = capsys.readouterr().out
    assert "6 images" in out and "of 12 samples" in out  # 25% of 24 held out; 4 samples for each of 3 classes
