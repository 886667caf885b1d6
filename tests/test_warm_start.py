"""Pre-training: a colourisation cINN whose condition network starts from a regressor's and trains at its own
learning rate (``train.init_from``, ``train.init_modules``, ``train.lr_scale``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cinn.config import ConfigError
from cinn.engine import load_checkpoint
from cinn.engine.checkpoint import CheckpointError
from tasks import colorize

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--config", str(ROOT / "configs/colorize/tiny.yaml"), "--train.keep=last"]


def weights(run: Path, prefix: str) -> dict[str, torch.Tensor]:
    model = load_checkpoint(run / "checkpoint.pt")["model"]
    return {key: value for key, value in model.items() if key.startswith(prefix)}


@pytest.fixture(scope="module")
def regressor(tmp_path_factory) -> Path:
    """A tiny L2 colouriser: the pre-training stage."""
    run = tmp_path_factory.mktemp("runs") / "regressor"
    assert colorize.main(["train", *TINY, "--model.architecture=regressor", f"--run_dir={run}"]) == 0
    return run


def test_the_cinn_starts_from_the_pretrained_condition_network_and_trains_it_at_its_own_rate(regressor, tmp_path):
    run = tmp_path / "joint"
    assert colorize.main(["train", *TINY, f"--run_dir={run}", f"--train.init_from={regressor / 'checkpoint.pt'}",
                          "--train.init_modules=[condition_net]", "--train.lr_scale={condition_net: 1e-9}"]) == 0
    pretrained, joint = weights(regressor, "condition_net."), weights(run, "condition_net.")
    assert pretrained.keys() == joint.keys() and len(joint) > 0
    for key, value in joint.items():  # 4 Adam steps of at most ~1e-12 each
        torch.testing.assert_close(value, pretrained[key], rtol=0, atol=1e-9)
    scratch = tmp_path / "scratch"
    assert colorize.main(["train", *TINY, f"--run_dir={scratch}"]) == 0
    fresh = weights(scratch, "condition_net.")
    assert any((fresh[key] - value).abs().max() > 1e-3 for key, value in joint.items())
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["optimizer"]["param_groups"][0]["lr"] < 1e-10  # the condition network's group


@pytest.mark.parametrize("overrides, error, message", [
    (["--train.init_modules=[condition_net]"], ConfigError, "go together"),
    (["--train.lr_scale={condition_net: 0}"], ConfigError, "must be a positive number"),
    (["--train.lr_scale={prior: 0.1}"], ConfigError, "has no module 'prior'"),
    (["--train.init_modules=[nothing]"], ConfigError, "has no module 'nothing'"),
    (["--train.init_modules=[condition_net]", "--model.condition_channels=[4, 16]"], CheckpointError,
     "build the same condition_net"),
], ids=["modules_without_checkpoint", "zero_scale", "unknown_scaled_module", "unknown_module", "other_widths"])
def test_a_warm_start_that_cannot_work_is_refused_in_one_line(regressor, tmp_path, overrides, error, message):
    init = [] if overrides[0].startswith("--train.lr_scale") or "go together" in message else [
        f"--train.init_from={regressor / 'checkpoint.pt'}"]
    with pytest.raises(error, match=message):
        colorize.main(["train", *TINY, f"--run_dir={tmp_path / 'run'}", *init, *overrides])
