"""Block-specific properties beyond the generic contract: initialisation, persistence, accuracy."""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch
from invertibility import perturb_

from cinn.blocks import (
    ActNorm,
    Additive,
    CouplingBlock,
    InvertibleConv1x1,
    InvertibleConv1x1LU,
    LearnedPrior,
    OrthogonalPermutation,
    PointwiseConv2d,
    SigmoidAffine,
    SoftClampAffine,
    Split,
    conv_subnet,
    coupling_map,
    fc_subnet,
    map_spec,
)
from cinn.blocks._shapes import mix_channels


def test_actnorm_initialises_to_zero_mean_unit_variance():
    norm = ActNorm([(3, 5, 5)])
    noise = torch.randn(64, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    x = noise * torch.tensor([0.1, 3.0, 10.0])[:, None, None] + 4.0
    (y,), _ = norm([x])
    assert bool(norm.initialized)
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(y.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)


def test_actnorm_initialises_only_once():
    norm = ActNorm([(2,)])
    norm([torch.randn(32, 2) * 5])
    state = {k: v.clone() for k, v in norm.state_dict().items()}
    norm([torch.randn(32, 2) + 100])
    assert all(torch.equal(state[k], v) for k, v in norm.state_dict().items())


def test_actnorm_state_survives_state_dict_round_trip_without_reinit():
    trained = ActNorm([(3, 4, 4)])
    trained([torch.randn(16, 3, 4, 4) * 2 + 1])
    buffer = io.BytesIO()
    torch.save(trained.state_dict(), buffer)
    buffer.seek(0)
    restored = ActNorm([(3, 4, 4)])
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert bool(restored.initialized)
    restored([torch.randn(16, 3, 4, 4) * 50 - 7])  # a different batch must not re-initialise it
    assert torch.equal(restored.bias, trained.bias)
    assert torch.equal(restored.log_scale, trained.log_scale)


def test_actnorm_uninitialised_state_stays_uninitialised_after_load():
    restored = ActNorm([(2,)])
    restored.load_state_dict(ActNorm([(2,)]).state_dict())
    assert not bool(restored.initialized)


def test_actnorm_reverse_before_init_is_an_error():
    norm = ActNorm([(3, 4, 4)])
    with pytest.raises(RuntimeError, match="not initialised"):
        norm([torch.randn(2, 3, 4, 4)], rev=True)
    assert not bool(norm.initialized)


@pytest.mark.parametrize("transform", ["additive", "soft_clamp_affine", Additive(), SoftClampAffine(clamp=0.5)],
                         ids=repr)
@pytest.mark.parametrize("two_sided", [False, True])
def test_zero_initialised_coupling_is_the_identity(transform, two_sided):
    block = CouplingBlock([(4, 4, 4)], [(2, 4, 4)], subnet_constructor=conv_subnet(8), transform=transform,
                          two_sided=two_sided)
    x, c = torch.randn(2, 4, 4, 4), torch.randn(2, 2, 4, 4)
    (y,), log_det = block([x], c=[c])
    assert torch.equal(y, x)
    assert torch.equal(log_det, torch.zeros(2))


def test_zero_initialised_glow_sigmoid_coupling_is_a_fixed_scaling():
    """Glow's σ(h + 2) starts at σ(2) ≈ 0.88, not 1: the block starts as y_b = x_b·σ(2)."""
    block = CouplingBlock([(4,)], subnet_constructor=fc_subnet(8), transform="sigmoid_affine")
    x = torch.randn(3, 4)
    (y,), log_det = block([x])
    scale = torch.sigmoid(torch.tensor(2.0))
    assert torch.equal(y[:, :2], x[:, :2])
    assert torch.allclose(y[:, 2:], x[:, 2:] * scale)
    assert torch.allclose(log_det, torch.full((3,), 2 * torch.log(scale).item()))


def test_min_scale_floors_the_sigmoid_scale_and_bounds_the_inverse():
    """With ``min_scale = m`` the scale is ``m + (1 − m)·σ(h + 2)``: ``m`` when the subnet says "contract
    all the way", so the inverse amplifies an error in ``y_b`` by at most ``1/m``; Glow's form gives 0."""
    glow, floored = (CouplingBlock([(4,)], subnet_constructor=fc_subnet(8),
                                   transform={"map": "sigmoid_affine", "min_scale": m}).double()
                     for m in (0.0, 0.25))
    for block in (glow, floored):
        torch.nn.init.constant_(block.subnet_b[-1].bias[2:], -60.0)
    x = torch.randn(3, 4, dtype=torch.float64)
    (y_glow,), _ = glow([x])
    (y,), log_det = floored([x])
    assert y_glow[:, 2:].abs().max() <= 1e-20
    assert torch.allclose(y[:, 2:], 0.25 * x[:, 2:])
    assert torch.allclose(log_det, torch.full((3,), 2 * torch.log(torch.tensor(0.25)).item(), dtype=torch.float64))
    error = torch.zeros_like(y)
    error[:, 2:] = 1e-6
    (x_back,), _ = floored([y + error], rev=True)
    assert (x_back - x).abs().max() <= 1e-6 / 0.25 * (1 + 1e-9)


def test_min_scale_zero_is_glows_sigmoid_and_out_of_range_floors_are_refused():
    torch.manual_seed(3)
    blocks = [CouplingBlock([(4,)], subnet_constructor=fc_subnet(8), transform={"map": "sigmoid_affine",
                                                                                 "min_scale": m})
              for m in (0.0, 1e-12)]
    perturb_(blocks[0])
    blocks[1].load_state_dict(blocks[0].state_dict())
    x = torch.randn(3, 4)
    (y0,), log_det0 = blocks[0]([x])
    (y1,), log_det1 = blocks[1]([x])
    assert torch.allclose(y0, y1) and torch.allclose(log_det0, log_det1, atol=1e-5)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="min_scale must be in"):
            CouplingBlock([(4,)], subnet_constructor=fc_subnet(8), transform={"map": "sigmoid_affine",
                                                                              "min_scale": bad})


@pytest.mark.parametrize("name, options, expected", [
    ("additive", {}, Additive()),
    ("sigmoid_affine", {}, SigmoidAffine(min_scale=0.0)),
    ("sigmoid_affine", {"min_scale": 0.5}, SigmoidAffine(min_scale=0.5)),
    ("soft_clamp_affine", {}, SoftClampAffine(clamp=1.5)),
    ("soft_clamp_affine", {"clamp": 2.0}, SoftClampAffine(clamp=2.0)),
])
def test_map_specs_stand_for_registered_maps_and_round_trip(name, options, expected):
    spec = {"map": name, **options}
    assert coupling_map(spec) == expected and coupling_map(map_spec(expected)) == expected
    assert CouplingBlock([(4,)], subnet_constructor=fc_subnet(8), transform=spec).transform == expected
    assert map_spec(spec) == {"map": name, **dataclasses.asdict(expected)}


@pytest.mark.parametrize("spec, transform", [({"map": "additive"}, Additive()),
                                             ({"map": "sigmoid_affine", "min_scale": 0.3}, SigmoidAffine(0.3)),
                                             ({"map": "soft_clamp_affine", "clamp": 1.5}, SoftClampAffine(1.5))],
                         ids=repr)
def test_a_map_object_builds_the_same_block_as_its_name(spec, transform):
    """Same subnet names, shapes and outputs (the maps hold no state), so checkpoints load either way."""
    torch.manual_seed(0)
    by_name = perturb_(CouplingBlock([(5, 3, 3)], [(2, 3, 3)], subnet_constructor=conv_subnet(8), transform=spec,
                                     two_sided=True))
    by_object = CouplingBlock([(5, 3, 3)], [(2, 3, 3)], subnet_constructor=conv_subnet(8), transform=transform,
                              two_sided=True)
    by_object.load_state_dict(by_name.state_dict())
    assert by_object.state_dict().keys() == by_name.state_dict().keys()
    assert all(key.startswith(("subnet_a.", "subnet_b.")) for key in by_object.state_dict())
    x, c = torch.randn(2, 5, 3, 3), torch.randn(2, 2, 3, 3)
    for rev in (False, True):
        (expected,), expected_log_det = by_name([x], c=[c], rev=rev)
        (actual,), actual_log_det = by_object([x], c=[c], rev=rev)
        assert torch.equal(actual, expected) and torch.equal(actual_log_det, expected_log_det)


def test_unknown_transforms_and_impossible_clamps_are_refused():
    with pytest.raises(ValueError, match="unknown coupling map 'spline'; known: additive, logistic_mixture_cdf, "
                                         "rational_quadratic_spline, sigmoid_affine"):
        CouplingBlock([(4,)], subnet_constructor=fc_subnet(8), transform="spline")
    with pytest.raises(ValueError, match="coupling map 'additive' takes no options, not clamp"):
        coupling_map({"map": "additive", "clamp": 1.0})
    with pytest.raises(ValueError, match="'soft_clamp_affine' takes clamp, not min_scale"):
        coupling_map({"map": "soft_clamp_affine", "min_scale": 1.0})
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="clamp must be positive"):
            SoftClampAffine(clamp=bad)


def test_zero_initialised_priors_are_the_identity():
    x = torch.randn(2, 4, 3, 3)
    (kept, eps), log_det = Split([(4, 3, 3)])([x])
    assert torch.equal(torch.cat([kept, eps], 1), x) and torch.equal(log_det, torch.zeros(2))
    (eps,), log_det = LearnedPrior([(4, 3, 3)])([x])
    assert torch.equal(eps, x) and torch.equal(log_det, torch.zeros(2))


def test_lu_and_plain_conv_agree_at_init():
    torch.manual_seed(11)
    plain = InvertibleConv1x1([(6, 3, 3)])
    torch.manual_seed(11)
    lu = InvertibleConv1x1LU([(6, 3, 3)])
    x = torch.randn(2, 6, 3, 3)
    (y_plain,), log_det_plain = plain([x])
    (y_lu,), log_det_lu = lu([x])
    assert torch.allclose(y_plain, y_lu, atol=1e-6)
    assert torch.allclose(log_det_plain, log_det_lu, atol=1e-5)
    assert log_det_lu.abs().max() < 1e-4  # a rotation preserves volume


@pytest.mark.parametrize("block_class", [InvertibleConv1x1, InvertibleConv1x1LU])
def test_conv1x1_inverse_is_accurate_in_float32_after_training(block_class):
    """After training W drifts far from a rotation; the float64 inverse keeps float32 round trips tight."""
    torch.manual_seed(0)
    block = perturb_(block_class([(48, 4, 4)]), scale=0.1)
    weight = block.weight() if isinstance(block, InvertibleConv1x1LU) else block.weight
    x = torch.randn(8, 48, 4, 4)
    (y,), _ = block([x])
    (x_back,), _ = block([y], rev=True)
    naive_float32_inverse = mix_channels(y, torch.linalg.inv(weight.detach()))
    assert (x_back - x).abs().max() < 1e-5
    assert (x_back - x).abs().max() < (naive_float32_inverse - x).abs().max()


def test_orthogonal_permutation_is_seeded_and_leaves_global_rngs_alone():
    torch_state = torch.random.get_rng_state()
    first = OrthogonalPermutation([(8, 2, 2)], seed=3)
    second = OrthogonalPermutation([(8, 2, 2)], seed=3)
    other = OrthogonalPermutation([(8, 2, 2)], seed=4)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert torch.equal(first.weight, second.weight)
    assert not torch.equal(first.weight, other.weight)
    assert torch.allclose(first.weight @ first.weight.T, torch.eye(8, dtype=torch.float64), atol=1e-14)


def test_orthogonal_permutation_survives_save_load():
    saved = OrthogonalPermutation([(5,)], seed=1)
    restored = OrthogonalPermutation([(5,)], seed=2)
    restored.load_state_dict(saved.state_dict())
    assert torch.equal(restored.weight, saved.weight)


def test_pointwise_conv_as_matrix_product_equals_the_1x1_convolution():
    """On channels_last input the 1x1 layer runs as a matrix product; outputs and all gradients must be
    those of ``nn.Conv2d`` with the same parameters, and the state dict must load into one."""
    torch.manual_seed(0)
    pointwise = PointwiseConv2d(5, 7).double().to(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(5, 7, 1).double()
    conv.load_state_dict(pointwise.state_dict())
    x = torch.randn(3, 5, 4, 6, dtype=torch.float64)
    x_last = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    x_first = x.clone().requires_grad_()
    grad = torch.randn(3, 7, 4, 6, dtype=torch.float64)
    out_last, out_first = pointwise(x_last), conv(x_first)
    assert out_last.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out_last, out_first, rtol=1e-12, atol=1e-12)
    out_last.backward(grad)
    out_first.backward(grad)
    torch.testing.assert_close(x_last.grad, x_first.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pointwise.weight.grad, conv.weight.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pointwise.bias.grad, conv.bias.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pointwise(x), conv(x), rtol=1e-12, atol=1e-12)  # NCHW: the convolution
