"""TarFlow from the tasks (``model.architecture: tarflow`` in ``tasks.mnist`` and ``tasks.glow``), and the
validation split the tasks can tune on (``data.validation_images``), on a tiny MNIST-format fixture."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mnist_fixture import write_mnist_fixture

from cinn.cli import run_command
from cinn.config import load_config
from cinn.engine import load_checkpoint
from tasks import glow, mnist

ROOT = Path(__file__).resolve().parents[1]
MNIST_TINY = str(ROOT / "configs/mnist/tiny.yaml")
TINY_TARFLOW = ["--model.architecture=tarflow", "--model.tarflow.width=8", "--model.tarflow.n_blocks=2",
                "--model.tarflow.layers_per_block=1"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return write_mnist_fixture(tmp_path_factory.mktemp("mnist"), n_train=64, n_test=24)


@pytest.fixture(scope="module")
def class_conditional_run(data_root, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("tarflow")
    assert mnist.main(["train", "--config", MNIST_TINY, "--data.root", str(data_root), "--run_dir", str(run_dir),
                       *TINY_TARFLOW]) == 0
    return run_dir


def glow_tarflow_config(tmp_path: Path) -> str:
    """A seconds-long unconditional TarFlow config of ``tasks.glow``."""
    path = tmp_path / "tarflow.yaml"
    path.write_text("data: {dataset: mnist, n_bits: 5}\n"
                    "model: {architecture: tarflow, tarflow: {width: 8, n_blocks: 2, layers_per_block: 1}}\n"
                    "train: {steps: 4, batch_size: 8, warmup_steps: 2, log_every: 2, sample_every: 0}\n")
    return str(path)


def test_the_class_conditional_task_trains_a_tarflow_and_reports_its_bayes_rule_accuracy(class_conditional_run,
                                                                                         capsys):
    state = load_checkpoint(class_conditional_run / "checkpoint.pt")
    assert state["model_spec"]["builder"] == "build_tarflow"
    assert state["model_spec"]["arguments"]["n_classes"] == 10
    capsys.readouterr()
    assert mnist.main(["eval", "--checkpoint", str(class_conditional_run / "checkpoint.pt")]) == 0
    out = capsys.readouterr().out
    assert "test bits/dim:" in out and "24 images" in out
    assert "Bayes-rule accuracy, argmax_y log p(x | y) over the 10 classes with equal priors: " in out
    assert "class consistency:" in out


def test_check_sample_transfer_and_pca_take_a_tarflow(class_conditional_run, tmp_path, capsys):
    checkpoint = str(class_conditional_run / "checkpoint.pt")
    assert mnist.main(["check", "--checkpoint", checkpoint]) == 0
    assert "check passed" in capsys.readouterr().out
    assert mnist.main(["sample", "--checkpoint", checkpoint, "--n", "2", "--out", str(tmp_path / "s.png")]) == 0
    assert mnist.main(["transfer", "--checkpoint", checkpoint, "--n", "2", "--out", str(tmp_path / "t.png")]) == 0
    assert mnist.main(["pca", "--checkpoint", checkpoint, "--label", "3", "--axes", "2", "--steps", "3",
                       "--images", "20", "--out", str(tmp_path / "pca")]) == 0
    assert {"s.png", "t.png"} <= {p.name for p in tmp_path.iterdir()}
    assert (tmp_path / "pca" / "class_3.png").is_file()


def test_a_tarflow_trains_in_bf16_and_with_gaussian_noise(data_root, tmp_path):
    assert mnist.main(["train", "--config", MNIST_TINY, "--data.root", str(data_root), "--run_dir", str(tmp_path),
                       *TINY_TARFLOW, "--train.precision=bf16", "--data.train_noise=gaussian",
                       "--train.steps=2"]) == 0
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2


def test_the_glow_task_trains_an_unconditional_tarflow(data_root, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert glow.main(["train", "--config", glow_tarflow_config(tmp_path), "--data.root", str(data_root),
                      "--run_dir", str(run_dir)]) == 0
    spec = load_checkpoint(run_dir / "checkpoint.pt")["model_spec"]
    assert spec["builder"] == "build_tarflow" and spec["arguments"]["n_classes"] == 0
    checkpoint = str(run_dir / "checkpoint.pt")
    for command in (["eval"], ["check"], ["interpolate", "--pairs", "1", "--steps", "3"]):
        assert glow.main([command[0], "--checkpoint", checkpoint, *command[1:]]) == 0
    out = capsys.readouterr().out
    assert "test bits/dim:" in out and "check passed" in out and "Bayes-rule" not in out


def test_the_shipped_tarflow_configs_build_the_size_chosen_on_the_validation_split():
    for task, path in ((mnist.MnistConfig, "configs/mnist/tarflow.yaml"),
                       (glow.GlowConfig, "configs/glow/fashion_mnist_tarflow.yaml")):
        config = load_config(task, ROOT / path)
        spec = config.model.tarflow.spec([1, 28, 28], 10)
        assert spec["arguments"] | {"input_shape": None} == {
            "input_shape": None, "patch_size": 4, "width": 64, "n_blocks": 4, "layers_per_block": 2,
            "heads": None, "n_classes": 10, "clamp": 2.0}


@pytest.mark.parametrize("main, args, message", [
    (mnist.main, ["--model.tarflow.patch_size=5"], "model.tarflow.patch_size 5 does not divide the image size "
                                                   "28x28"),
    (mnist.main, ["--model.tarflow.heads=3"], "model.tarflow.heads must divide model.tarflow.width 8, got 3"),
    (mnist.main, ["--model.tarflow.n_blocks=300", "--model.tarflow.layers_per_block=4"],
     "model.tarflow.n_blocks x layers_per_block must be at most"),
    (mnist.main, ["--model.permutation=orthogonal"],
     "model.permutation=orthogonal: only the fc architecture has this; model.architecture is tarflow"),
    (mnist.main, ["--model.architecture=conv", "--model.tarflow.width=16"],
     "model.tarflow: only the tarflow architecture has this; model.architecture is conv"),
    (glow.main, ["--model.n_levels=3"], "model.n_levels: only the glow architecture has this; model.architecture "
                                        "is tarflow"),
])
def test_impossible_tarflow_settings_give_one_clear_line(main, args, message, data_root, tmp_path, capsys):
    config = MNIST_TINY if main is mnist.main else glow_tarflow_config(tmp_path)
    extra = TINY_TARFLOW if main is mnist.main and "--model.architecture=conv" not in args else []
    with pytest.raises(SystemExit) as exit_info:
        run_command(main, ["train", "--config", config, "--data.root", str(data_root),
                           "--run_dir", str(tmp_path / "run"), *extra, *args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_validation_split_is_held_out_of_training_and_evaluated(data_root, tmp_path, capsys):
    task = mnist.ClassConditionalTask()
    config = load_config(mnist.MnistConfig, MNIST_TINY, ["--data.root", str(data_root),
                                                         "--data.validation_images=16"])
    training, (validation, where) = task.train_data(config), task.eval_data(config, None)
    assert (len(training), len(validation)) == (48, 16)
    assert torch.equal(validation[0][0], task.split(load_config(mnist.MnistConfig, MNIST_TINY, [
        "--data.root", str(data_root)]), train=True)[48][0])  # the last 16 training images
    assert where == "mnist, 5-bit, validation split (the last 16 training images)"
    assert training.num_classes == validation.num_classes == 10
    run_dir = tmp_path / "conditional"
    assert mnist.main(["train", "--config", MNIST_TINY, "--data.root", str(data_root), "--run_dir", str(run_dir),
                       *TINY_TARFLOW, "--data.validation_images=16", "--train.steps=2"]) == 0
    assert load_checkpoint(run_dir / "checkpoint.pt")["model_spec"]["arguments"]["n_classes"] == 10
    run_dir = tmp_path / "run"
    assert glow.main(["train", "--config", glow_tarflow_config(tmp_path), "--data.root", str(data_root),
                      "--run_dir", str(run_dir), "--data.validation_images=16", "--train.steps=2"]) == 0
    capsys.readouterr()
    assert glow.main(["eval", "--checkpoint", str(run_dir / "checkpoint.pt")]) == 0
    assert "validation bits/dim: " in capsys.readouterr().out


def test_eval_bits_only_prints_the_bits_per_dim_alone(class_conditional_run, capsys):
    capsys.readouterr()
    assert mnist.main(["eval", "--checkpoint", str(class_conditional_run / "checkpoint.pt"), "--bits-only"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("test bits/dim:")


def test_eval_writes_each_images_bits_per_dim(class_conditional_run, tmp_path, capsys):
    capsys.readouterr()
    path = tmp_path / "bpd.csv"
    assert mnist.main(["eval", "--checkpoint", str(class_conditional_run / "checkpoint.pt"), "--bits-only",
                       "--per-image", str(path)]) == 0
    printed = float(capsys.readouterr().out.split("test bits/dim: ")[1].split()[0])
    rows = path.read_text().splitlines()
    values = [float(row.split(",")[1]) for row in rows[1:]]
    assert rows[0] == "image,bits_per_dim" and [row.split(",")[0] for row in rows[1:]] == [
        str(index) for index in range(len(values))]
    assert sum(values) / len(values) == pytest.approx(printed, abs=5e-5)


def test_a_validation_split_as_large_as_the_training_split_is_refused(data_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_command(mnist.main, ["train", "--config", MNIST_TINY, "--data.root", str(data_root), "--run_dir",
                                 str(tmp_path), "--data.validation_images=64"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "data.validation_images must be from 1 to 63 (the training split holds 64 images), got 64" in err
