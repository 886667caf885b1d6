"""One generic contract test for every invertible block (float64, tiny shapes, perturbed parameters).

Adding a block to cinn means adding it to BLOCK_CASES; adding a coupling type means writing its
CouplingMap and adding a CouplingBlock case that uses it (as ExpAffine below, which exists only here).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
from FrEIA.modules import InvertibleModule
from invertibility import brute_force_log_det, max_abs_difference, perturb_

from cinn.blocks import (
    ActNorm,
    Additive,
    AsinhTails,
    ChannelPermutation,
    CouplingBlock,
    CouplingMap,
    HaarDownsampling,
    InvertibleConv1x1,
    InvertibleConv1x1LU,
    LearnedPrior,
    OrthogonalPermutation,
    Patchify,
    Split,
    Squeeze,
    TransformerAutoregressiveBlock,
    conv_subnet,
    fc_subnet,
    gated_attention,
    vit_attention,
)

BATCH = 3


class ExpAffine(CouplingMap):
    """RealNVP's affine map ``y = x·exp(s) + t`` with ``s = tanh(h)``, ``[t, h] = params``; ``log_det = Σ s``."""

    params_per_channel = 2

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift, h = params.chunk(2, dim=1)
        log_scale = torch.tanh(h)
        return x * torch.exp(log_scale) + shift, log_scale.flatten(1).sum(1)

    def inverse(self, y: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift, h = params.chunk(2, dim=1)
        log_scale = torch.tanh(h)
        return (y - shift) * torch.exp(-log_scale), -log_scale.flatten(1).sum(1)


@dataclass
class BlockCase:
    name: str
    block_class: type[InvertibleModule]
    input_shape: tuple[int, ...]
    condition_shapes: list[tuple[int, ...]] = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)

    def build(self, seed: int = 0) -> InvertibleModule:
        torch.manual_seed(seed)
        block = self.block_class([self.input_shape], self.condition_shapes or None, **self.kwargs).double()
        return perturb_(block, seed=seed)

    def inputs(self, seed: int = 1) -> tuple[torch.Tensor, list[torch.Tensor]]:
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn((BATCH, *self.input_shape), generator=generator, dtype=torch.float64)
        conditions = []
        for shape in self.condition_shapes:
            if len(shape) == 1 and self.block_class in (Split, LearnedPrior):
                labels = torch.randint(shape[0], (BATCH,), generator=generator)
                conditions.append(torch.nn.functional.one_hot(labels, shape[0]).double())
            else:
                conditions.append(torch.randn((BATCH, *shape), generator=generator, dtype=torch.float64))
        return x, conditions


def call(block: InvertibleModule, inputs: list[torch.Tensor], conditions: list[torch.Tensor], rev: bool):
    if conditions:
        return block(inputs, c=conditions, rev=rev, jac=True)
    return block(inputs, rev=rev, jac=True)


CONV = conv_subnet(8)
FC = fc_subnet(8)
BLOCK_CASES = [
    BlockCase("actnorm", ActNorm, (3, 4, 4)),
    BlockCase("actnorm_flat", ActNorm, (5,)),
    BlockCase("conv1x1", InvertibleConv1x1, (4, 3, 3)),
    BlockCase("conv1x1_flat", InvertibleConv1x1, (5,)),
    BlockCase("conv1x1_lu", InvertibleConv1x1LU, (4, 3, 3)),
    BlockCase("conv1x1_lu_flat", InvertibleConv1x1LU, (5,)),
    BlockCase("coupling_additive", CouplingBlock, (4, 4, 4),
              kwargs={"subnet_constructor": CONV, "transform": "additive"}),
    BlockCase("coupling_sigmoid", CouplingBlock, (4, 4, 4),
              kwargs={"subnet_constructor": CONV, "transform": "sigmoid_affine"}),
    BlockCase("coupling_soft_clamp_odd", CouplingBlock, (5, 4, 4),
              kwargs={"subnet_constructor": CONV, "transform": {"map": "soft_clamp_affine", "clamp": 1.5}}),
    BlockCase("coupling_sigmoid_conditional", CouplingBlock, (4, 4, 4), [(2, 4, 4)],
              kwargs={"subnet_constructor": CONV, "transform": "sigmoid_affine"}),
    BlockCase("coupling_sigmoid_floored_conditional", CouplingBlock, (4, 4, 4), [(2, 4, 4)],
              kwargs={"subnet_constructor": CONV, "transform": {"map": "sigmoid_affine", "min_scale": 0.2}}),
    BlockCase("coupling_additive_conditional", CouplingBlock, (4, 4, 4), [(2, 4, 4), (1, 4, 4)],
              kwargs={"subnet_constructor": CONV, "transform": "additive"}),
    BlockCase("coupling_two_sided_conditional", CouplingBlock, (4, 4, 4), [(2, 4, 4)],
              kwargs={"subnet_constructor": CONV, "transform": {"map": "soft_clamp_affine", "clamp": 2.0},
                      "two_sided": True}),
    BlockCase("coupling_fc", CouplingBlock, (6,),
              kwargs={"subnet_constructor": FC, "transform": {"map": "soft_clamp_affine", "clamp": 2.0}}),
    BlockCase("coupling_fc_two_sided_conditional", CouplingBlock, (6,), [(3,)],
              kwargs={"subnet_constructor": FC, "transform": {"map": "soft_clamp_affine", "clamp": 2.0},
                      "two_sided": True}),
    BlockCase("coupling_exp_affine", CouplingBlock, (5, 4, 4),
              kwargs={"subnet_constructor": CONV, "transform": ExpAffine()}),
    BlockCase("coupling_exp_affine_two_sided_conditional", CouplingBlock, (6,), [(3,)],
              kwargs={"subnet_constructor": FC, "transform": ExpAffine(), "two_sided": True}),
    BlockCase("coupling_spline", CouplingBlock, (4, 4, 4),
              kwargs={"subnet_constructor": CONV, "transform": "rational_quadratic_spline"}),
    BlockCase("coupling_spline_tails_conditional", CouplingBlock, (4, 4, 4), [(2, 4, 4)],  # a third in the tails
              kwargs={"subnet_constructor": CONV,
                      "transform": {"map": "rational_quadratic_spline", "bins": 4, "bound": 1.0}}),
    BlockCase("coupling_spline_fc_two_sided_conditional", CouplingBlock, (6,), [(3,)],
              kwargs={"subnet_constructor": FC, "transform": {"map": "rational_quadratic_spline", "bound": 1.5},
                      "two_sided": True}),
    BlockCase("coupling_logistic_mixture", CouplingBlock, (4, 4, 4),
              kwargs={"subnet_constructor": CONV, "transform": "logistic_mixture_cdf"}),
    BlockCase("coupling_logistic_mixture_conditional", CouplingBlock, (4, 4, 4), [(2, 4, 4)],
              kwargs={"subnet_constructor": CONV, "transform": {"map": "logistic_mixture_cdf", "components": 2}}),
    BlockCase("coupling_logistic_mixture_fc_two_sided_conditional", CouplingBlock, (6,), [(3,)],
              kwargs={"subnet_constructor": FC, "transform": "logistic_mixture_cdf", "two_sided": True}),
    BlockCase("coupling_vit_attention", CouplingBlock, (4, 4, 4),
              kwargs={"subnet_constructor": vit_attention(8), "transform": "sigmoid_affine"}),
    BlockCase("coupling_gated_attention_conditional", CouplingBlock, (4, 4, 4), [(2, 4, 4)],
              kwargs={"subnet_constructor": gated_attention(8), "transform": "sigmoid_affine"}),
    BlockCase("squeeze", Squeeze, (2, 4, 4)),
    BlockCase("haar", HaarDownsampling, (2, 4, 4)),
    BlockCase("haar_by_wavelet_rebalanced", HaarDownsampling, (2, 4, 4),
              kwargs={"order_by_wavelet": True, "rebalance": 0.5}),
    BlockCase("orthogonal_permutation", OrthogonalPermutation, (5, 3, 3), kwargs={"seed": 4}),
    BlockCase("orthogonal_permutation_flat", OrthogonalPermutation, (7,), kwargs={"seed": 4}),
    BlockCase("channel_reverse", ChannelPermutation, (4, 2, 2), kwargs={"kind": "reverse"}),
    BlockCase("channel_shuffle", ChannelPermutation, (6, 2, 2), kwargs={"kind": "shuffle", "seed": 2}),
    BlockCase("split_learned_prior", Split, (4, 3, 3)),
    BlockCase("split_plain", Split, (5, 3, 3), kwargs={"learned_prior": False}),
    BlockCase("split_class_conditional", Split, (4, 3, 3), [(3,)]),
    BlockCase("split_flat", Split, (6,)),
    BlockCase("learned_prior", LearnedPrior, (4, 2, 2)),
    BlockCase("learned_prior_class_conditional", LearnedPrior, (4, 2, 2), [(3,)]),
    BlockCase("class_prior_only", LearnedPrior, (3,), [(2,)], kwargs={"learn_top": False}),
    BlockCase("asinh_tails", AsinhTails, (2, 3, 3)),
    BlockCase("asinh_tails_flat", AsinhTails, (5,)),
    BlockCase("patchify", Patchify, (2, 4, 6), kwargs={"patch_size": 2}),
    BlockCase("transformer_autoregressive", TransformerAutoregressiveBlock, (4, 3),
              kwargs={"width": 8, "layers": 1}),
    BlockCase("transformer_autoregressive_conditional", TransformerAutoregressiveBlock, (4, 3), [(3,)],
              kwargs={"width": 8, "layers": 1}),
    BlockCase("transformer_autoregressive_reversed", TransformerAutoregressiveBlock, (4, 3),
              kwargs={"width": 8, "layers": 1, "reverse_order": True}),
]
CONDITIONAL_CASES = [case for case in BLOCK_CASES if case.condition_shapes]
by_name: Callable[[BlockCase], str] = lambda case: case.name  # noqa: E731


@pytest.fixture(params=BLOCK_CASES, ids=by_name)
def case(request) -> BlockCase:
    return request.param


def test_round_trip_both_ways(case):
    block = case.build()
    x, conditions = case.inputs()
    outputs, _ = call(block, [x], conditions, rev=False)
    (x_back,), _ = call(block, list(outputs), conditions, rev=True)
    assert (x_back - x).abs().max() <= 1e-10
    latents = [torch.randn_like(o) for o in outputs]
    (x_from_latents,), _ = call(block, latents, conditions, rev=True)
    latents_back, _ = call(block, [x_from_latents], conditions, rev=False)
    assert max_abs_difference(latents_back, latents) <= 1e-10


def test_log_det_matches_brute_force_jacobian(case):
    block = case.build()
    x, conditions = case.inputs()

    def per_sample(c_index_from: torch.Tensor, rev: bool):
        def fn(inputs):
            return call(block, inputs, [c[c_index_from] for c in conditions], rev=rev)[0]
        return fn

    outputs, log_det = call(block, [x], conditions, rev=False)
    assert log_det.shape == (BATCH,)
    for b in range(BATCH):
        index = torch.tensor([b])
        expected = brute_force_log_det(per_sample(index, rev=False), [x[index]])
        assert torch.allclose(log_det[b], expected[0], rtol=0, atol=1e-8)
    _, log_det_rev = call(block, list(outputs), conditions, rev=True)
    assert log_det_rev.shape == (BATCH,)
    assert torch.allclose(log_det_rev, -log_det, rtol=0, atol=1e-10)
    for b in range(BATCH):
        index = torch.tensor([b])
        expected = brute_force_log_det(per_sample(index, rev=True), [o[index] for o in outputs])
        assert torch.allclose(log_det_rev[b], expected[0], rtol=0, atol=1e-8)


def test_log_det_is_not_trivially_zero_for_volume_changing_blocks(case):
    volume_preserving = (Squeeze, HaarDownsampling, OrthogonalPermutation, ChannelPermutation, Patchify)
    block = case.build()
    x, conditions = case.inputs()
    _, log_det = call(block, [x], conditions, rev=False)
    is_zero = bool(torch.all(log_det.abs() < 1e-12))
    additive = isinstance(block, CouplingBlock) and isinstance(block.transform, Additive)
    plain_split = case.kwargs.get("learned_prior") is False
    rebalanced = case.kwargs.get("rebalance", 1.0) != 1.0
    expect_zero = (isinstance(block, volume_preserving) and not rebalanced) or additive or plain_split
    assert is_zero == expect_zero


def test_inputs_are_not_modified(case):
    block = case.build()
    x, conditions = case.inputs()
    x_copy, conditions_copy = x.clone(), [c.clone() for c in conditions]
    outputs, _ = call(block, [x], conditions, rev=False)
    outputs_copy = [o.clone() for o in outputs]
    call(block, list(outputs), conditions, rev=True)
    assert torch.equal(x, x_copy)
    assert all(torch.equal(a, b) for a, b in zip(conditions, conditions_copy, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(outputs, outputs_copy, strict=True))


def test_every_parameter_gets_a_gradient(case):
    block = case.build()
    x, conditions = case.inputs()
    x.requires_grad_(True)
    outputs, log_det = call(block, [x], conditions, rev=False)
    loss = sum(o.pow(2).sum() for o in outputs) - log_det.sum()
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, parameter in block.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_state_dict_round_trip(case):
    block = case.build(seed=0)
    fresh = case.build(seed=5)
    x, conditions = case.inputs()
    fresh.load_state_dict(block.state_dict())
    expected, expected_log_det = call(block, [x], conditions, rev=False)
    actual, actual_log_det = call(fresh, [x], conditions, rev=False)
    assert max_abs_difference(actual, expected) == 0
    assert torch.equal(actual_log_det, expected_log_det)


@pytest.mark.parametrize("case", CONDITIONAL_CASES, ids=by_name)
def test_condition_changes_the_output(case):
    block = case.build()
    x, conditions = case.inputs(seed=1)
    _, other_conditions = case.inputs(seed=2)
    outputs, _ = call(block, [x], conditions, rev=False)
    other_outputs, _ = call(block, [x], other_conditions, rev=False)
    assert max_abs_difference(outputs, other_outputs) > 1e-3


def test_output_dims_match_outputs(case):
    block = case.build()
    x, conditions = case.inputs()
    outputs, _ = call(block, [x], conditions, rev=False)
    declared = block.output_dims([case.input_shape])
    assert [tuple(o.shape[1:]) for o in outputs] == [tuple(d) for d in declared]
    assert sum(math.prod(d) for d in declared) == math.prod(case.input_shape)


def test_bf16_autocast_keeps_the_invertible_path_and_log_det_in_float32(case):
    """Under ``--precision bf16`` only the subnets and prior networks run in bfloat16; what maps x to z (1x1
    convolutions, wavelets, scales, shifts) and the log-det stay float32, so the block still inverts to
    float32 precision and its log-det is not rounded to bf16's 3 significant digits."""
    block = case.build().float()
    x, conditions = case.inputs()
    x, conditions = x.float(), [c.float() for c in conditions]
    expected, expected_log_det = call(block, [x], conditions, rev=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs, log_det = call(block, [x], conditions, rev=False)
        (x_back,), log_det_rev = call(block, list(outputs), conditions, rev=True)
    assert all(o.dtype == torch.float32 for o in outputs) and log_det.dtype == log_det_rev.dtype == torch.float32
    assert (x_back - x).abs().max() <= 1e-5
    assert torch.allclose(log_det_rev, -log_det, rtol=1e-6, atol=1e-5)
    runs_a_network = any(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in block.modules())
    if runs_a_network:  # bf16 is in effect there (the speed-up is not silently lost), with bf16-sized errors
        assert 0 < max_abs_difference(outputs, expected) <= 0.1
    else:
        assert max_abs_difference(outputs, expected) == 0 and torch.equal(log_det, expected_log_det)


def test_asinh_subnet_inputs_feed_the_same_layers_asinh_of_the_input():
    torch.manual_seed(0)
    squashed, raw = fc_subnet(8, asinh_inputs=True)(5, 3), fc_subnet(8)(5, 3)
    for layer in raw:
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.normal_(layer.weight)
    with torch.no_grad():
        for mine, theirs in zip(squashed.parameters(), raw.parameters(), strict=True):
            mine.copy_(theirs)
    x = torch.tensor([[0.0, 1.0, -3.0, 1000.0, 0.5]])
    torch.testing.assert_close(squashed(x), raw(torch.asinh(x)))
    assert not torch.allclose(squashed(x), raw(x))  # a value of 1000 reaches the layers as 7.6, not 1000
