"""The invertibility check of trained models: the library function and each task's ``check`` command."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from invertibility import perturb_
from mnist_fixture import write_mnist_fixture

from cinn import build_glow
from cinn.blocks import InvertibleConv1x1LU
from cinn.check import check_invertibility
from cinn.cli import run_command
from cinn.engine import load_checkpoint, save_checkpoint
from tasks import colorize, glow, mnist

ROOT = Path(__file__).resolve().parents[1]


def tiny_glow() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_glow((1, 8, 8), n_levels=2, steps_per_level=2, hidden_channels=8)
    model.log_prob(torch.rand(16, 1, 8, 8))  # ActNorm init
    return perturb_(model, scale=0.05).eval()


def test_a_healthy_model_passes_and_every_lu_conv_is_reported():
    model = tiny_glow()
    report = check_invertibility(model, [(torch.rand(4, 1, 8, 8), None), (torch.rand(3, 1, 8, 8), None)])
    assert report.passed and report.images == 7
    assert report.max_error < 1e-5 and report.max_log_det_gap < 1e-3
    lu_convs = [module for module in model.modules() if isinstance(module, InvertibleConv1x1LU)]
    assert len(report.lu_smallest_scales) == len(lu_convs) == 4
    assert all(value > 0 for value in report.lu_smallest_scales.values())


def nearly_singular_(model: torch.nn.Module) -> torch.nn.Module:
    """Shrink one diagonal entry s of the first LU 1x1 conv to e^-30: W becomes numerically singular."""
    lu = next(module for module in model.modules() if isinstance(module, InvertibleConv1x1LU))
    with torch.no_grad():
        lu.log_s[0] = -30.0
    return model


def test_a_nearly_singular_lu_conv_fails_and_is_named():
    report = check_invertibility(nearly_singular_(tiny_glow()), [(torch.rand(4, 1, 8, 8), None)])
    assert not report.passed and report.max_error > 1e-3
    assert min(report.lu_smallest_scales.values()) == pytest.approx(torch.exp(torch.tensor(-30.0)).item())
    assert any("smallest |s| 9.36e-14" in line for line in report.lines())


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return write_mnist_fixture(tmp_path_factory.mktemp("mnist"), n_train=96, n_test=32)


def run_check(main, args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        run_command(main, ["check", *args])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_glow_check_passes_then_fails_a_sabotaged_checkpoint(data_root, tmp_path, capsys):
    run_dir = tmp_path / "glow"
    assert glow.main(["train", "--config", str(ROOT / "configs/glow/tiny.yaml"), "--data.dataset", "mnist",
                      "--data.root", str(data_root), "--run_dir", str(run_dir)]) == 0
    checkpoint = run_dir / "checkpoint.pt"
    code, out, _ = run_check(glow.main, ["--checkpoint", str(checkpoint)], capsys)
    assert code == 0 and "over 32 held-out images" in out and "check passed" in out
    assert "LU 1x1 convolutions: 2" in out

    state = load_checkpoint(checkpoint)
    key = next(name for name in state["model"] if name.endswith("log_s"))
    state["model"][key][0] = -30.0
    save_checkpoint(state, tmp_path / "sabotaged.pt")
    code, _, err = run_check(glow.main, ["--checkpoint", str(tmp_path / "sabotaged.pt")], capsys)
    assert code == 1 and "failed the invertibility check" in err and err.count("\n") == 1


def test_mnist_check_passes(data_root, tmp_path, capsys):
    run_dir = tmp_path / "mnist"
    assert mnist.main(["train", "--config", str(ROOT / "configs/mnist/tiny.yaml"), "--data.root", str(data_root),
                       "--run_dir", str(run_dir)]) == 0
    code, out, _ = run_check(mnist.main, ["--checkpoint", str(run_dir / "checkpoint.pt")], capsys)
    assert code == 0 and "over 32 held-out images" in out and "check passed" in out


def test_colorize_check_passes_for_a_cinn_and_refuses_the_regressor(tmp_path, capsys):
    tiny = str(ROOT / "configs/colorize/tiny.yaml")
    assert colorize.main(["train", "--config", tiny, "--run_dir", str(tmp_path / "cinn")]) == 0
    code, out, _ = run_check(colorize.main, ["--checkpoint", str(tmp_path / "cinn" / "checkpoint.pt")], capsys)
    assert code == 0 and "the run's 1 held-out photo(s)" in out and "check passed" in out
    assert colorize.main(["train", "--config", tiny, "--run_dir", str(tmp_path / "l2"),
                          "--model.architecture=regressor"]) == 0
    code, _, err = run_check(colorize.main, ["--checkpoint", str(tmp_path / "l2" / "checkpoint.pt")], capsys)
    assert code == 2 and "not invertible" in err
