"""Full models (Glow, conv cINN, FC cINN), with and without conditions: round trip, log-det vs the
brute-force Jacobian in both directions, conditions matter, sampling and the model interface."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from invertibility import brute_force_log_det, max_abs_difference, perturb_

from cinn import build_cinn, build_cinn_fc, build_glow, build_tarflow
from cinn.blocks import Additive, CouplingBlock, SigmoidAffine, SoftClampAffine
from cinn.models import Flow, standard_normal_log_prob

BATCH = 2


@dataclass
class ModelCase:
    name: str
    build: Callable[[], Flow]
    condition: Callable[[torch.Generator], torch.Tensor] | None = None

    def model(self) -> Flow:
        torch.manual_seed(0)
        flow = self.build().double()
        with torch.no_grad():
            x, c = self.inputs(seed=7)
            flow.log_prob(x, c)  # data-dependent ActNorm init
        return perturb_(flow, scale=0.05)

    def inputs(self, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
        generator = torch.Generator().manual_seed(seed)
        x = torch.rand((BATCH, *self.input_shape), generator=generator, dtype=torch.float64)
        return x, (self.condition(generator) if self.condition else None)

    def __post_init__(self):
        self.input_shape = self.build().input_shape


def labels(n_classes: int) -> Callable[[torch.Generator], torch.Tensor]:
    return lambda generator: torch.randint(n_classes, (BATCH,), generator=generator)


def image(*shape: int) -> Callable[[torch.Generator], torch.Tensor]:
    return lambda generator: torch.randn((BATCH, *shape), generator=generator, dtype=torch.float64)


TINY_GLOW = {"n_levels": 2, "steps_per_level": 2, "hidden_channels": 8}
TINY_TARFLOW = {"patch_size": 4, "width": 8, "n_blocks": 2, "layers_per_block": 1}
MODEL_CASES = [
    ModelCase("glow_affine_lu", lambda: build_glow((3, 4, 4), **TINY_GLOW)),
    ModelCase("glow_additive_plain", lambda: build_glow((2, 4, 4), **TINY_GLOW, coupling="additive",
                                                        permutation="plain")),
    ModelCase("glow_reverse_no_learned_priors", lambda: build_glow(
        (1, 4, 4), **TINY_GLOW, permutation="reverse", learn_top_prior=False, split_prior=False)),
    ModelCase("glow_shuffle_three_levels", lambda: build_glow((1, 8, 8), n_levels=3, steps_per_level=1,
                                                              hidden_channels=8, permutation="shuffle")),
    ModelCase("glow_soft_clamp_coupling_map", lambda: build_glow((1, 4, 4), **TINY_GLOW,
                                                                 coupling=SoftClampAffine(clamp=1.0))),
    ModelCase("glow_rational_quadratic_spline", lambda: build_glow((1, 4, 4), **TINY_GLOW,
                                                                   coupling="rational_quadratic_spline")),
    # 8x8: from 4x4 the second level's ActNorm would initialise on one pixel per sample and scale by hundreds
    ModelCase("glow_logistic_mixture_cdf", lambda: build_glow((1, 8, 8), **TINY_GLOW, coupling={
        "map": "logistic_mixture_cdf", "components": 2})),
    ModelCase("glow_vit_attention_subnet", lambda: build_glow((1, 8, 8), **TINY_GLOW, subnet="vit_attention")),
    ModelCase("glow_attention_on_the_coarse_level", lambda: build_glow((1, 8, 8), **TINY_GLOW,
                                                                       subnet=["glow_conv", "vit_attention"])),
    ModelCase("glow_class_conditional", lambda: build_glow((1, 4, 4), **TINY_GLOW, n_classes=3), labels(3)),
    ModelCase("cinn_conv_image_condition", lambda: build_cinn(
        (2, 8, 8), (1, 8, 8), n_levels=2, blocks_per_level=2, hidden_channels=8, condition_channels=(4, 4)),
        image(1, 8, 8)),
    ModelCase("cinn_global_condition_features", lambda: build_cinn(
        (2, 8, 8), (1, 8, 8), n_levels=2, blocks_per_level=2, hidden_channels=8, condition_channels=(4, 4),
        global_features=4), image(1, 8, 8)),
    ModelCase("cinn_conv_condition_at_twice_the_resolution", lambda: build_cinn(
        (2, 4, 4), (1, 8, 8), n_levels=2, blocks_per_level=1, hidden_channels=8, condition_channels=(4, 4)),
        image(1, 8, 8)),
    ModelCase("cinn_conv_label_condition_split_prior", lambda: build_cinn(
        (1, 8, 8), (3,), n_levels=2, blocks_per_level=1, hidden_channels=8, condition_channels=(2, 3),
        split_prior=True), labels(3)),
    ModelCase("cinn_conv_label_condition_actnorm", lambda: build_cinn(
        (1, 8, 8), (3,), n_levels=2, blocks_per_level=1, hidden_channels=8, condition_channels=(2, 3),
        actnorm=True), labels(3)),
    ModelCase("cinn_fc", lambda: build_cinn_fc((1, 4, 4), 3, n_blocks=3, hidden_features=8), labels(3)),
    ModelCase("cinn_fc_actnorm", lambda: build_cinn_fc((1, 4, 4), 3, n_blocks=2, hidden_features=8,
                                                       actnorm=True), labels(3)),
    ModelCase("cinn_fc_orthogonal_permutation", lambda: build_cinn_fc((1, 4, 4), 3, n_blocks=2, hidden_features=8,
                                                                      permutation="orthogonal"), labels(3)),
    ModelCase("cinn_fc_class_affine_input", lambda: build_cinn_fc((1, 4, 4), 3, n_blocks=2, hidden_features=8,
                                                                  class_affine="input"), labels(3)),
    ModelCase("cinn_fc_class_affine_latent", lambda: build_cinn_fc((1, 4, 4), 3, n_blocks=2, hidden_features=8,
                                                                   class_affine="latent"), labels(3)),
    ModelCase("cinn_fc_class_prior_heavy_tails", lambda: build_cinn_fc(
        (1, 4, 4), 3, n_blocks=2, hidden_features=8, class_affine="latent", heavy_tails=True), labels(3)),
    ModelCase("cinn_fc_asinh_subnet_inputs", lambda: build_cinn_fc(  # configs/mnist/fc.yaml's model
        (1, 4, 4), 3, n_blocks=2, hidden_features=8, class_affine="latent", heavy_tails=True,
        subnet_inputs="asinh"), labels(3)),
    ModelCase("tarflow", lambda: build_tarflow((1, 8, 8), **TINY_TARFLOW)),
    ModelCase("tarflow_class_conditional", lambda: build_tarflow((1, 8, 8), **TINY_TARFLOW, n_classes=3),
              labels(3)),
]
CONDITIONAL_MODELS = [case for case in MODEL_CASES if case.condition]
by_name = lambda case: case.name  # noqa: E731


@pytest.fixture(params=MODEL_CASES, ids=by_name)
def case(request) -> ModelCase:
    return request.param


def test_round_trip_both_ways(case):
    model = case.model()
    x, c = case.inputs()
    assert (model.decode(model.encode(x, c), c) - x).abs().max() <= 1e-10
    latents = model.sample_latents(BATCH, generator=torch.Generator().manual_seed(3))
    assert max_abs_difference(model.encode(model.decode(latents, c), c), latents) <= 1e-10


def test_log_det_matches_brute_force_jacobian_both_directions(case):
    model = case.model()
    x, c = case.inputs()
    latents, log_det = model.transform(x, c)
    _, log_det_rev = model.inverse(latents, c)
    assert log_det.shape == (BATCH,)
    assert torch.allclose(log_det_rev, -log_det, rtol=0, atol=1e-10)
    for b in range(BATCH):
        c_b = None if c is None else c[b:b + 1]
        forward = brute_force_log_det(lambda inputs, c_b=c_b: model.encode(inputs[0], c_b), [x[b:b + 1]])
        reverse = brute_force_log_det(lambda inputs, c_b=c_b: [model.decode(inputs, c_b)],
                                      [z[b:b + 1] for z in latents])
        assert torch.allclose(log_det[b], forward[0], rtol=0, atol=1e-8)
        assert torch.allclose(log_det_rev[b], reverse[0], rtol=0, atol=1e-8)


def test_log_prob_is_standard_normal_latents_plus_log_det(case):
    model = case.model()
    x, c = case.inputs()
    latents, log_det = model.transform(x, c)
    expected = sum(standard_normal_log_prob(z) for z in latents) + log_det
    assert torch.allclose(model.log_prob(x, c), expected, rtol=0, atol=1e-12)
    assert torch.allclose(model(x, c), expected, rtol=0, atol=1e-12)
    assert sum(z[0].numel() for z in latents) == model.latent_dims


def test_bf16_autocast_model_inverts_to_float32_precision_with_a_float32_likelihood(case):
    """``--precision bf16``: the subnets run in bfloat16, everything on the path x → z in float32."""
    model = case.model().float()
    x, c = case.inputs()
    x, c = x.float(), (c.float() if c is not None and c.is_floating_point() else c)
    expected = model.log_prob(x, c)
    float32_error = (model.decode(model.encode(x, c), c) - x).abs().max()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        log_prob = model.log_prob(x, c)
        latents = model.encode(x, c)
        x_back = model.decode(latents, c)
    assert log_prob.dtype == torch.float32 and all(z.dtype == torch.float32 for z in latents)
    # A subnet input one float32 rounding away from a bf16 rounding boundary can flip (which inputs do depends on
    # the CPU's bf16 kernels): almost every element inverts within 10x float32's error, and none by more than a
    # bf16 rounding (2^-8 relative) of the input.
    error = (x_back - x).abs()
    assert (error > max(1e-4, 10 * float32_error)).float().mean() <= 0.05
    assert error.max() <= 2**-8 * x.abs().max()
    assert 0 < (log_prob - expected).abs().max() <= 0.01 * expected.abs().max()


@pytest.mark.parametrize("case", CONDITIONAL_MODELS, ids=by_name)
def test_condition_changes_log_prob_and_samples(case):
    model = case.model()
    x, c = case.inputs(seed=1)
    _, other = case.inputs(seed=2)
    if torch.equal(c, other):
        other = (c + 1) % 3 if not c.is_floating_point() else c + 1
    assert (model.log_prob(x, c) - model.log_prob(x, other)).abs().max() > 1e-6
    latents = model.sample_latents(BATCH, generator=torch.Generator().manual_seed(0))
    assert (model.decode(latents, c) - model.decode(latents, other)).abs().max() > 1e-6


@pytest.mark.parametrize("case", CONDITIONAL_MODELS, ids=by_name)
def test_conditional_model_requires_a_condition(case):
    model = case.model()
    x, _ = case.inputs()
    with pytest.raises(ValueError, match="conditional"):
        model.log_prob(x)


def test_fc_cinn_refuses_unknown_subnet_inputs():
    with pytest.raises(ValueError, match="unknown subnet_inputs 'tanh'; use 'raw' or 'asinh'"):
        build_cinn_fc((1, 4, 4), 3, n_blocks=2, hidden_features=8, subnet_inputs="tanh")


def test_unconditional_model_rejects_a_condition():
    model = build_glow((1, 4, 4), **TINY_GLOW)
    with pytest.raises(ValueError, match="unconditional"):
        model.log_prob(torch.rand(2, 1, 4, 4), torch.zeros(2))


def test_temperature_zero_decodes_the_prior_mean(case):
    model = case.model()
    _, c = case.inputs()
    zeros = [torch.zeros(BATCH, *shape, dtype=torch.float64) for shape in model.latent_shapes]
    samples = model.sample(BATCH, c, temperature=0.0)
    assert torch.equal(samples, model.decode(zeros, c))
    assert samples.shape == (BATCH, *model.input_shape)


def test_temperature_scales_the_latents():
    model = build_glow((1, 4, 4), **TINY_GLOW).double()
    cold = model.sample_latents(500, temperature=0.5, generator=torch.Generator().manual_seed(0))
    warm = model.sample_latents(500, temperature=1.0, generator=torch.Generator().manual_seed(0))
    for a, b in zip(cold, warm, strict=True):
        assert torch.allclose(a, 0.5 * b)


def test_learned_top_prior_mean_is_the_temperature_zero_sample():
    model = build_glow((1, 4, 4), n_levels=1, steps_per_level=0, hidden_channels=8, n_classes=2).double()
    perturb_(model)
    prior = model.blocks[-1]
    label = torch.tensor([1])
    offset = prior.class_term(torch.nn.functional.one_hot(label, 2).double())
    mean = prior.mean + offset[:, :4, None, None]
    sample = model.sample(1, label, temperature=0.0)
    assert torch.allclose(sample, torch.nn.functional.pixel_shuffle(mean, 2), rtol=0, atol=1e-12)


def test_zero_initialised_cinn_starts_as_an_orthogonal_map():
    """With zero-initialised subnets and plain splits, a fresh cINN only rotates: log_det = 0, norms kept."""
    model = build_cinn((2, 8, 8), (1, 8, 8), n_levels=2, blocks_per_level=2, hidden_channels=8).double()
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    latents, log_det = model.transform(x, torch.randn(2, 1, 8, 8, dtype=torch.float64))
    assert log_det.abs().max() < 1e-12
    norms = torch.cat([z.flatten(1) for z in latents], 1).norm(dim=1)
    assert torch.allclose(norms, x.flatten(1).norm(dim=1), atol=1e-12)


def test_glow_latent_shapes_follow_the_multiscale_layout():
    model = build_glow((3, 32, 32), n_levels=3, steps_per_level=1, hidden_channels=8)
    assert model.latent_shapes == [(6, 16, 16), (12, 8, 8), (48, 4, 4)]
    latents = model.encode(torch.rand(2, 3, 32, 32))
    assert [tuple(z.shape[1:]) for z in latents] == model.latent_shapes


def test_paper_cifar_glow_parameter_count():
    """K=32, L=3, width 512, affine, LU, learned top prior.

    rosinality/glow-pytorch counts 44,095,536 for this configuration. Its top prior is a 48→96
    3x3 zero conv applied to a zero tensor (41,664 parameters, of which only the 192 bias and
    scale entries matter); ours is a learned mean and log-scale per element (2·48·4·4 = 1,536).
    Everything else has the same shapes: 44,095,536 − 41,664 + 1,536 = 44,055,408.
    """
    model = build_glow((3, 32, 32), n_levels=3, steps_per_level=32, hidden_channels=512,
                       coupling="sigmoid_affine", permutation="lu", learn_top_prior=True)
    count = sum(p.numel() for p in model.parameters())
    assert count == 44_055_408
    assert abs(count - 44.1e6) / 44.1e6 < 0.01


@pytest.mark.parametrize("build, by_name, by_object", [
    (lambda **kw: build_glow((1, 8, 8), **TINY_GLOW, **kw),
     {"coupling": {"map": "sigmoid_affine", "min_scale": 0.5}}, {"coupling": SigmoidAffine(min_scale=0.5)}),
    (lambda **kw: build_glow((1, 8, 8), **TINY_GLOW, **kw), {"coupling": "additive"}, {"coupling": Additive()}),
    (lambda **kw: build_cinn((2, 8, 8), (1, 8, 8), n_levels=2, blocks_per_level=1, hidden_channels=8, **kw),
     {"coupling": {"map": "soft_clamp_affine", "clamp": 0.8}}, {"coupling": SoftClampAffine(clamp=0.8)}),
    (lambda **kw: build_cinn_fc((1, 4, 4), 3, n_blocks=2, hidden_features=8, **kw),
     {"coupling": {"map": "soft_clamp_affine", "clamp": 0.8}}, {"coupling": SoftClampAffine(clamp=0.8)}),
], ids=["glow_affine", "glow_additive", "cinn", "cinn_fc"])
def test_builders_take_the_coupling_by_name_or_as_a_map(build, by_name, by_object):
    torch.manual_seed(0)
    named = build(**by_name)
    torch.manual_seed(0)
    mapped = build(**by_object)
    assert mapped.state_dict().keys() == named.state_dict().keys()
    assert all(torch.equal(mapped.state_dict()[k], v) for k, v in named.state_dict().items())
    for model in (named, mapped):
        maps = [block.transform for block in model.blocks if isinstance(block, CouplingBlock)]
        assert maps and all(m == by_object["coupling"] for m in maps)


@pytest.mark.parametrize("shape, levels", [((3, 30, 30), 2), ((3, 32, 32), 6), ((3, 32), 1)])
def test_impossible_glow_shapes_are_rejected(shape, levels):
    with pytest.raises(ValueError, match=r"divisible|shape"):
        build_glow(shape, n_levels=levels, steps_per_level=1, hidden_channels=8)


@pytest.mark.parametrize("condition_size", [12, 4])
def test_cinn_condition_size_must_be_the_input_size_times_a_power_of_two(condition_size):
    with pytest.raises(ValueError, match="condition image size"):
        build_cinn((2, 8, 8), (1, condition_size, condition_size), n_levels=2)


def test_convolutional_cinn_runs_invertibly_at_another_size():
    torch.manual_seed(0)
    model = perturb_(build_cinn((2, 8, 8), (1, 16, 16), n_levels=2, blocks_per_level=1, hidden_channels=8,
                                condition_channels=(4, 4)).double(), scale=0.05)
    assert model.latent_shapes_at((8, 16)) == [(4, 4, 8), (16, 2, 4)]
    condition = torch.randn(BATCH, 1, 16, 32, dtype=torch.float64)
    samples = model.sample(BATCH, condition, temperature=1.0, spatial_size=(8, 16))
    assert samples.shape == (BATCH, 2, 8, 16)
    latents, log_det = model.transform(samples, condition)
    assert [tuple(z.shape[1:]) for z in latents] == model.latent_shapes_at((8, 16))
    x, reverse_log_det = model.inverse(latents, condition)
    assert max_abs_difference([x], [samples]) < 1e-10
    assert torch.allclose(log_det, -reverse_log_det, atol=1e-10)
    with pytest.raises(ValueError, match="does not divide"):
        model.latent_shapes_at((6, 8))


def test_out_of_range_labels_are_rejected():
    model = build_cinn_fc((1, 4, 4), 3, n_blocks=1, hidden_features=8)
    with pytest.raises(ValueError, match="labels must lie"):
        model.log_prob(torch.rand(2, 1, 4, 4), torch.tensor([0, 3]))


def test_conv_builders_store_parameters_channels_last():
    """The CPU runs the convolutions faster on NHWC (BENCHMARKS.md, sampling and training sections)."""
    models = [build_glow((1, 8, 8), n_levels=2, steps_per_level=1, hidden_channels=8),
              build_cinn((2, 8, 8), (1, 8, 8), n_levels=2, blocks_per_level=1, hidden_channels=8)]
    for model in models:
        weights = [p for p in model.parameters() if p.dim() == 4 and p.shape[-1] > 1]
        assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
        assert not all(p.is_contiguous() for p in weights)


def test_glow_channels_last_false_keeps_parameters_contiguous():
    glow = build_glow((1, 8, 8), n_levels=2, steps_per_level=1, hidden_channels=8, channels_last=False)
    assert all(p.is_contiguous() for p in glow.parameters())


def _conv_layouts_during_a_training_step(model: Flow, x: torch.Tensor, c: torch.Tensor | None = None) -> set[str]:
    """The memory layouts of every 3x3 convolution's input and output gradient in a forward/backward pass."""
    def layout(t: torch.Tensor) -> str:  # a channel slice of an NHWC tensor counts as NHWC
        return "nhwc" if t.stride(1) == 1 or t.shape[1] == 1 else "nchw"

    seen: set[str] = set()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
    hooks = [h for conv in convs for h in (
        conv.register_forward_hook(lambda _m, inputs, _out: seen.add(f"input {layout(inputs[0])}")),
        conv.register_full_backward_hook(lambda _m, _gin, gout: seen.add(f"grad {layout(gout[0])}")))]
    (-model.log_prob(x, c).mean()).backward()
    for hook in hooks:
        hook.remove()
    return seen


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # the condition net's input needs no gradient
def test_channels_last_models_never_convert_layouts_in_training():
    """A channels_last flow runs its activations NHWC too: a convolution fed an NCHW input or gradient
    converts it first (with NHWC weights only, the CIFAR Glow trained slower than NCHW)."""
    torch.manual_seed(0)
    glow = build_glow((3, 8, 8), n_levels=2, steps_per_level=2, hidden_channels=8)
    x = torch.rand(2, 3, 8, 8)
    assert _conv_layouts_during_a_training_step(glow, x) == {"input nhwc", "grad nhwc"}
    cinn = build_cinn((2, 8, 8), (1, 8, 8), n_levels=2, blocks_per_level=1, hidden_channels=8)
    assert _conv_layouts_during_a_training_step(cinn, torch.rand(2, 2, 8, 8), torch.rand(2, 1, 8, 8)) == {
        "input nhwc", "grad nhwc"}
    assert glow.sample(2).is_contiguous()


@pytest.mark.parametrize("subnet", ["vit_attention", "gated_attention"])
def test_attention_subnets_keep_a_channels_last_flow_nhwc_in_training(subnet):
    """Tokens are an NHWC map's view, and no gate's backward hands a convolution an NCHW gradient."""
    torch.manual_seed(0)
    glow = build_glow((3, 8, 8), n_levels=2, steps_per_level=1, hidden_channels=8, subnet=subnet)
    assert _conv_layouts_during_a_training_step(glow, torch.rand(2, 3, 8, 8)) == {"input nhwc", "grad nhwc"}
