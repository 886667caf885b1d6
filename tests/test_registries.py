"""One registry per kind of part: a coupling map, a subnet and a dataset registered from this file alone are
chosen by name in a task's config, trained, saved, and rebuilt by ``cinn.load`` from the checkpoint. (They are
registered for the tests of this file only, so that the other tests see the registries as cinn ships them.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from invertibility import brute_force_log_det, perturb_
from torch import Tensor, nn

import cinn
from cinn.blocks import (
    COUPLING_MAPS,
    SUBNETS,
    CouplingBlock,
    CouplingMap,
    ZeroConv2d,
    coupling_map,
    register_coupling_map,
    register_subnet,
    subnet_constructor,
)
from cinn.blocks.subnets import SubnetConstructor
from cinn.cli import run_command
from cinn.data import DATASETS, TensorImageDataset, register_dataset
from cinn.engine import load_checkpoint
from tasks import glow


@dataclass(frozen=True)
class TanhAffine(CouplingMap):
    """RealNVP's map with a bounded log-scale: ``y = x·exp(s) + t``, ``s = limit·tanh(h)``, ``log_det = Σ s``."""

    limit: float = 1.0
    params_per_channel: ClassVar[int] = 2

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        shift, h = params.chunk(2, dim=1)
        log_scale = self.limit * torch.tanh(h)
        return x * torch.exp(log_scale) + shift, log_scale.flatten(1).sum(1)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        shift, h = params.chunk(2, dim=1)
        log_scale = self.limit * torch.tanh(h)
        return (y - shift) * torch.exp(-log_scale), -log_scale.flatten(1).sum(1)


def shallow_conv(width: int) -> SubnetConstructor:
    """conv3x3 → ReLU → zero conv3x3."""
    return lambda in_channels, out_channels: nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
                                                           ZeroConv2d(width, out_channels))


def load_stripes(root, train: bool, image_size: int | None, channels: int) -> TensorImageDataset:
    """Horizontal (label 0) or vertical (label 1) stripes, 8x8, 32 training and 16 test images."""
    generator = torch.Generator().manual_seed(0 if train else 1)
    count = 32 if train else 16
    labels = torch.randint(0, 2, (count,), generator=generator)
    phase = torch.randint(0, 2, (count, 1, 1), generator=generator)
    rows = (torch.arange(8).view(1, 8, 1) + phase) % 2
    images = torch.where(labels.view(-1, 1, 1) == 0, rows.expand(-1, 8, 8), rows.transpose(1, 2).expand(-1, 8, 8))
    return TensorImageDataset((images * 200 + 20).to(torch.uint8).unsqueeze(1), labels, num_classes=2)


@pytest.fixture(autouse=True)
def registered():
    """The three parts registered as a module of cinn would register them, for one test."""
    register_coupling_map(TanhAffine)
    register_subnet(shallow_conv)
    register_dataset("stripes")(load_stripes)
    yield
    del COUPLING_MAPS["tanh_affine"], SUBNETS["shallow_conv"], DATASETS["stripes"]


def test_the_registered_parts_are_known_by_their_names():
    assert COUPLING_MAPS["tanh_affine"] is TanhAffine and SUBNETS["shallow_conv"] is shallow_conv
    assert DATASETS["stripes"] is load_stripes
    assert coupling_map({"map": "tanh_affine", "limit": 0.5}) == TanhAffine(limit=0.5)


def test_a_block_with_the_registered_map_and_subnet_inverts_with_an_exact_log_det():
    torch.manual_seed(0)
    subnet = subnet_constructor("shallow_conv", 8)
    block = perturb_(CouplingBlock([(4, 4, 4)], [(2, 4, 4)], subnet_constructor=subnet,
                                   transform={"map": "tanh_affine", "limit": 0.7}).double())
    x, c = torch.randn(2, 4, 4, 4, dtype=torch.float64), torch.randn(2, 2, 4, 4, dtype=torch.float64)
    (y,), log_det = block([x], c=[c])
    (x_back,), log_det_back = block([y], c=[c], rev=True)
    assert (x_back - x).abs().max() < 1e-12 and torch.allclose(log_det_back, -log_det)
    for b in range(2):
        for rev, point in ((False, x), (True, y)):
            expected = brute_force_log_det(lambda inputs, b=b, rev=rev: block(inputs, c=[c[b:b + 1]], rev=rev)[0],
                                           [point[b:b + 1]])
            assert torch.allclose((-1 if rev else 1) * log_det[b], expected[0], rtol=0, atol=1e-8)
    assert log_det.abs().min() > 1e-3  # the perturbed subnet scales: not an identity in disguise


def test_a_model_of_registered_parts_trains_by_config_name_and_cinn_load_rebuilds_it(tmp_path):
    run_dir = tmp_path / "run"
    assert glow.main(["train", "--config", "configs/glow/tiny.yaml", "--run_dir", str(run_dir),
                      "--data.dataset=stripes", "--data.image_size=8", "--model.n_levels=1",
                      "--model.coupling={map: tanh_affine, limit: 0.5}", "--model.subnet=shallow_conv",
                      "--train.steps=2", "--train.init_batch_size=16"]) == 0
    state = load_checkpoint(run_dir / "checkpoint.pt")
    arguments = state["model_spec"]["arguments"]
    assert arguments["coupling"] == {"map": "tanh_affine", "limit": 0.5} and arguments["subnet"] == "shallow_conv"
    model = cinn.load(run_dir / "checkpoint.pt")
    couplings = [block for block in model.modules() if isinstance(block, CouplingBlock)]
    assert couplings and all(block.transform == TanhAffine(limit=0.5) for block in couplings)
    assert all(len(block.subnet_b) == 3 for block in couplings)  # the shallow subnet, not Glow's
    images = load_stripes(None, False, None, 1).images[:4].float() / 255
    with torch.no_grad():
        assert torch.isfinite(model.log_prob(images)).all()


@pytest.mark.parametrize("override, message", [
    ("--model.coupling={map: tanh_affin}", "model.coupling: unknown coupling map 'tanh_affin'; known: additive"),
    ("--model.coupling.clamp=2", "model.coupling: coupling map 'sigmoid_affine' takes min_scale, not clamp"),
    ("--model.subnet=deep", "model.subnet: unknown subnet 'deep'; known: cinn_conv, gated_attention, glow_conv"),
])
def test_unknown_names_and_options_are_one_line_config_errors(override, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_command(glow.main, ["train", "--config", "configs/glow/tiny.yaml", override])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
