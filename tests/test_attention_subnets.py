"""The attention subnets (cinn/blocks/attention.py): zero at initialisation, global, any map size, chosen by name,
and flows built with them train and invert. The block contract itself is checked in tests/test_blocks.py."""

from __future__ import annotations

import pytest
import torch
from invertibility import perturb_

from cinn import build_cinn, build_glow
from cinn.blocks import SUBNETS, CouplingBlock, gated_attention, subnet_constructor, vit_attention
from cinn.blocks.attention import GatedAttentionSubnet, VisionTransformerSubnet, sinusoidal_position_embedding

FACTORIES = [vit_attention, gated_attention]
by_name = lambda factory: factory.__name__  # noqa: E731


def perturbed(factory, in_channels: int = 3, out_channels: int = 4, width: int = 8) -> torch.nn.Module:
    torch.manual_seed(0)
    return perturb_(factory(width)(in_channels, out_channels).double())


@pytest.mark.parametrize("factory", FACTORIES, ids=by_name)
def test_a_fresh_subnet_outputs_zero_so_its_coupling_is_the_identity(factory):
    torch.manual_seed(0)
    x, condition = torch.randn(2, 4, 6, 6), torch.randn(2, 3, 6, 6)
    assert torch.equal(factory(16)(5, 4)(torch.cat([x[:, :2], condition], 1)), torch.zeros(2, 4, 6, 6))
    block = CouplingBlock([(4, 6, 6)], [(3, 6, 6)], subnet_constructor=factory(16), transform="additive")
    (y,), log_det = block([x], c=[condition])
    assert torch.equal(y, x) and torch.equal(log_det, torch.zeros(2))


@pytest.mark.parametrize("factory", FACTORIES, ids=by_name)
def test_the_output_at_a_corner_depends_on_the_input_at_the_opposite_corner(factory):
    """Attention is global; the convolutions alone reach 1 (ViT) or 6 (gated) pixels, not the 7 across."""
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    far = x.clone()
    far[..., 7, 7] += 1.0
    for net, reaches in ((perturbed(factory), True), (perturbed(SUBNETS["cinn_conv"]), False)):
        with torch.no_grad():
            change = (net(far) - net(x))[..., 0, 0].abs().max().item()
        assert (change > 1e-6) == reaches, (net, change)


@pytest.mark.parametrize("factory", FACTORIES, ids=by_name)
@pytest.mark.parametrize("size", [(4, 4), (6, 10), (1, 1)])
def test_one_subnet_runs_on_any_map_size_in_float64(factory, size):
    net = perturbed(factory)
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    y = net(x)
    assert y.shape == (2, 4, *size) and y.dtype == torch.float64
    assert torch.isfinite(y).all() and y.abs().min() > 0


def test_the_position_embedding_of_a_map_is_the_corner_of_a_larger_maps():
    """Positions are pixel coordinates, so a pixel means the same at every image size; distinct pixels differ."""
    small, large = sinusoidal_position_embedding(4, 6, 10), sinusoidal_position_embedding(9, 7, 10)
    torch.testing.assert_close(small.view(4, 6, 10), large.view(9, 7, 10)[:4, :6], rtol=0, atol=1e-6)
    assert torch.cdist(large, large).add(torch.eye(63)).min() > 0.1
    assert torch.equal(large[:, 8:], torch.zeros(63, 2))  # 10 channels: two sine-cosine pairs per axis, 2 zeros


@pytest.mark.parametrize("name, subnet_class", [("vit_attention", VisionTransformerSubnet),
                                                ("gated_attention", GatedAttentionSubnet)])
def test_the_attention_subnets_are_built_by_name(name, subnet_class):
    assert SUBNETS[name] in FACTORIES
    net = subnet_constructor(name, 16)(2, 6)
    assert isinstance(net, subnet_class) and net.embed.out_channels == 16
    assert net(torch.randn(1, 2, 4, 4)).shape == (1, 6, 4, 4)


def test_each_glow_level_takes_its_own_subnet():
    glow = build_glow((1, 8, 8), n_levels=2, steps_per_level=2, hidden_channels=16,
                      subnet=["glow_conv", "vit_attention"])
    subnets = [module for module in glow.modules() if isinstance(module, CouplingBlock)]
    kinds = [any(isinstance(m, VisionTransformerSubnet) for m in block.modules()) for block in subnets]
    assert kinds == [False, False, True, True]  # finest level first
    with pytest.raises(ValueError, match="one per level \\(2\\), got 3"):
        build_glow((1, 8, 8), n_levels=2, subnet=["glow_conv"] * 3)


@pytest.mark.parametrize("build, condition", [
    (lambda: build_glow((1, 8, 8), n_levels=2, steps_per_level=1, hidden_channels=16, subnet="vit_attention"),
     None),
    (lambda: build_cinn((2, 8, 8), (1, 8, 8), n_levels=2, blocks_per_level=1, hidden_channels=8,
                        condition_channels=(4, 4), subnet="gated_attention"), torch.randn(4, 1, 8, 8)),
], ids=["glow_vit_attention", "cinn_gated_attention"])
def test_a_flow_of_attention_couplings_trains_a_step_and_inverts(build, condition):
    torch.manual_seed(0)
    model = build()
    x = torch.rand(4, *model.input_shape)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss = -model.log_prob(x, condition).mean()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    outputs = [block.subnet_b.out.conv.weight for block in model.modules() if isinstance(block, CouplingBlock)]
    assert outputs and all(weight.abs().min() > 0 for weight in outputs)  # no coupling is the identity any more
    with torch.no_grad():
        assert (model.decode(model.encode(x, condition), condition) - x).abs().max() <= 1e-5
        assert torch.isfinite(model.log_prob(x, condition)).all()
