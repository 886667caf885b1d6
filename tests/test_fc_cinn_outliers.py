"""``benchmarks/fc_cinn_outliers.py`` (what sets a class-conditional model's worst test images apart) on a tiny
MNIST-format fixture: its numbers agree with ``eval``'s, and its probes measure what they say."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from benchmark_scripts import load_script, one_line_error
from mnist_fixture import write_mnist_fixture

from cinn.cli import run_command
from cinn.data import TensorImageDataset
from cinn.engine import evaluate_bits_per_dim
from cinn.models import build_cinn_fc
from tasks import mnist

outliers = load_script("fc_cinn_outliers")
TINY = str(Path(__file__).resolve().parents[1] / "configs/mnist/tiny.yaml")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny FC cINN with asinh subnet inputs trained on the fixture: (data root, checkpoint)."""
    data_root = write_mnist_fixture(tmp_path_factory.mktemp("digits"), n_train=64, n_test=24)
    run_dir = tmp_path_factory.mktemp("run")
    assert mnist.main(["train", "--config", TINY, "--data.root", str(data_root), "--run_dir", str(run_dir),
                       "--model.subnet_inputs=asinh"]) == 0
    return data_root, run_dir / "checkpoint.pt"


def test_prints_eval_s_median_and_a_row_per_image(trained, capsys):
    data_root, checkpoint = trained
    with pytest.raises(SystemExit) as exit_info:
        run_command(outliers.main, ["--checkpoint", str(checkpoint), "--data-root", str(data_root),
                                    "--limit", "16", "--worst", "2", "--show", "3"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    task = mnist.ClassConditionalTask()
    run = task.open(checkpoint, torch.device("cpu"))
    test_set, _ = task.eval_data(run.config, str(data_root))
    expected = evaluate_bits_per_dim(run.model, test_set, task.objective(run.config, train=False), limit=16,
                                     progress=False)
    assert f"16 test images, median {expected.median:.4f} bits/dim, mean {expected.mean:.4f}" in out
    rows = [line for line in out.splitlines() if re.match(r"\| (worst \d|shown|median): ", line)]
    assert [row.split(":")[0] for row in rows] == ["| worst 1", "| worst 2", "| shown", "| median"]
    assert rows[2].startswith("| shown: 3 |")
    bits = [float(row.split("|")[3].split()[0]) for row in rows]
    assert bits[0] >= bits[1] >= max(bits[2:]) and rows[3].split("|")[3].strip().endswith("(1.00x)")
    for row in rows:  # asinh subnet inputs: the first linear layer reads asinh of what the subnet receives
        received, read = (float(cell) for cell in row.split("|")[5:7])
        assert read == pytest.approx(math.asinh(received), rel=1e-3)


def test_showing_an_image_past_the_evaluated_ones_is_a_one_line_error(trained, capsys):
    data_root, checkpoint = trained
    message = one_line_error(lambda: run_command(outliers.main, [
        "--checkpoint", str(checkpoint), "--data-root", str(data_root), "--limit", "8", "--show", "8"]), capsys)
    assert message.strip() == "error: --show 8: only the first 8 test images are evaluated"


@pytest.mark.parametrize("subnet_inputs", ["raw", "asinh"])
def test_the_probe_records_each_image_s_largest_subnet_input(subnet_inputs):
    torch.manual_seed(0)
    model = build_cinn_fc((1, 4, 4), 3, n_blocks=2, hidden_features=8, subnet_inputs=subnet_inputs).eval()
    for parameter in model.parameters():  # not the identity: later subnets see what earlier couplings did
        parameter.data.add_(0.3 * torch.randn_like(parameter))
    x, labels = torch.rand(5, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1])
    x[2, 0, 1, 1] = 50.0  # one image with a huge value
    probe = outliers.SubnetInputs(model)
    with torch.no_grad():
        model.transform(x, labels)
    received, read = probe.take()
    assert received.shape == (5,) and received.argmax() == 2 and received[2] >= 50.0
    assert torch.allclose(read, torch.asinh(received) if subnet_inputs == "asinh" else received)
    assert probe.take() == (None, None)  # taken: the next batch starts afresh


def test_ink_frequency_counts_values_of_128_and_above():
    images = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.tensor([128, 255, 127, 0], dtype=torch.uint8)
    images[3, 0, 1, 1] = 200
    frequency = outliers.ink_frequency(TensorImageDataset(images, torch.zeros(4, dtype=torch.int64)))
    assert frequency.flatten().tolist() == [0.5, 0.0, 0.0, 0.25]
