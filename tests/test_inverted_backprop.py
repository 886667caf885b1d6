"""Backprop by inversion: the same gradients as standard backprop for every model, and saved activations that
do not grow with depth."""

from __future__ import annotations

import pytest
import torch
from test_models import MODEL_CASES, by_name

from cinn import build_cinn, build_glow
from cinn.bench import benchmark_training, saved_for_backward_mb
from cinn.models import InvertingBackprop, with_backprop
from cinn.models.inverted_backprop import SupportsInvertedBackprop


def gradients(case, backprop: str, bf16: bool = False) -> list[torch.Tensor]:
    """∂L/∂(x, parameters) for a loss that weighs every latent differently and includes the log-det; with
    ``bf16``, of the float32 model run under bf16 autocast."""
    model = case.model()
    x, c = case.inputs()
    if bf16:
        model.float()
        x, c = x.float(), (c.float() if c is not None and c.is_floating_point() else c)
    x.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        latents, log_det = with_backprop(model, backprop).transform(x, c)
    generator = torch.Generator().manual_seed(3)
    loss = -log_det.sum() + sum((torch.randn(z.shape, generator=generator, dtype=z.dtype) * z).sum()
                                + z.pow(2).sum() for z in latents)
    parameters = [p for p in model.parameters() if p.requires_grad]
    return list(torch.autograd.grad(loss, [x, *parameters], allow_unused=True))


@pytest.mark.parametrize("case", MODEL_CASES, ids=by_name)
def test_gradients_equal_standard_backprop(case):
    standard, inverted = gradients(case, "standard"), gradients(case, "inversion")
    assert len(standard) == len(inverted)
    for index, (expected, actual) in enumerate(zip(standard, inverted, strict=True)):
        if expected is None:
            assert actual is None or not actual.any(), f"gradient {index} should be zero"
            continue
        assert actual is not None, f"gradient {index} is missing"
        torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-11, msg=f"gradient {index}")


@pytest.mark.parametrize("case", MODEL_CASES, ids=by_name)
def test_bf16_gradients_equal_standard_bf16_backprop_up_to_rounding(case):
    """Under autocast the backward pass recomputes the bf16 model; a reconstructed subnet input that lands on
    the other side of a bf16 rounding boundary moves the gradients by ~1e-3 in the worst measured case."""
    standard, inverted = gradients(case, "standard", bf16=True), gradients(case, "inversion", bf16=True)
    pairs = [(a, e) for a, e in zip(inverted, standard, strict=True) if e is not None]
    difference = sum((a - e).norm() ** 2 for a, e in pairs) ** 0.5
    assert difference <= 1e-2 * sum(e.norm() ** 2 for _, e in pairs) ** 0.5


@pytest.mark.parametrize("bf16", [False, True])
def test_the_backward_pass_recomputes_in_the_forward_pass_precision(bf16):
    case = next(case for case in MODEL_CASES if case.name == "cinn_conv_image_condition")
    model = case.model().float()
    x, c = case.inputs()
    x, c = x.float().requires_grad_(), c.float()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        log_prob = InvertingBackprop(model).log_prob(x, c)
    dtypes = []
    for layer in model.blocks.modules():
        if isinstance(layer, torch.nn.Conv2d):
            layer.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=not bf16):  # the backward's own context is ignored
        log_prob.sum().backward()
    assert dtypes and set(dtypes) == {torch.bfloat16 if bf16 else torch.float32}


def test_inversion_gradients_reach_the_condition_network():
    case = next(case for case in MODEL_CASES if case.name == "cinn_conv_image_condition")
    model = case.model()
    assert model.condition_net is not None
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    inverted = gradients(case, "inversion")[1:]
    condition_grads = [g for name, g in zip(names, inverted, strict=True) if name.startswith("condition_net")]
    assert condition_grads and all(g is not None and g.abs().sum() > 0 for g in condition_grads)


def saved_mb(steps_per_level: int, backprop: str) -> float:
    torch.manual_seed(0)
    model = build_glow((3, 8, 8), n_levels=2, steps_per_level=steps_per_level, hidden_channels=16)
    x = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        model.log_prob(x)
    return saved_for_backward_mb(with_backprop(model, backprop), x)


def test_saved_activations_do_not_grow_with_depth():
    shallow, deep = saved_mb(2, "inversion"), saved_mb(8, "inversion")
    assert deep == shallow
    standard_deep = saved_mb(8, "standard")
    assert standard_deep > 10 * deep, (standard_deep, deep)


def test_no_graph_is_built_outside_training():
    model = InvertingBackprop(build_glow((1, 4, 4), n_levels=2, steps_per_level=1, hidden_channels=8))
    with torch.no_grad():
        log_prob = model.log_prob(torch.rand(2, 1, 4, 4))
    assert log_prob.grad_fn is None and log_prob.shape == (2,)


@pytest.mark.parametrize("two_sided", [False, True])
def test_the_backward_pass_runs_each_coupling_subnet_once(two_sided):
    torch.manual_seed(0)
    if two_sided:
        model = build_cinn((2, 8, 8), (1, 8, 8), n_levels=2, blocks_per_level=2, hidden_channels=8,
                           condition_channels=(4, 4))
    else:
        model = build_glow((1, 8, 8), n_levels=2, steps_per_level=2, hidden_channels=8)
    subnets = [m for name, m in model.named_modules() if name.endswith(("subnet_a", "subnet_b"))]
    assert any(name.endswith("subnet_a") for name, _ in model.named_modules()) == two_sided
    x = torch.rand(2, *model.input_shape)
    c = torch.randn(2, 1, 8, 8) if two_sided else None
    with torch.no_grad():
        model.log_prob(x, c)
    log_prob = InvertingBackprop(model).log_prob(x, c)
    calls = 0

    def count(*_):
        nonlocal calls
        calls += 1

    handles = [subnet.register_forward_hook(count) for subnet in subnets]
    log_prob.sum().backward()
    for handle in handles:
        handle.remove()
    assert calls == len(subnets)


def test_bench_measures_backprop_by_inversion():
    reports = {}
    for backprop in ("standard", "inversion"):
        torch.manual_seed(0)
        model = build_glow((1, 8, 8), n_levels=2, steps_per_level=4, hidden_channels=8)
        reports[backprop] = benchmark_training(model, (1, 8, 8), batch_size=4, steps=1, device=torch.device("cpu"),
                                               backprop=backprop, sample_batch=2, warmup_steps=1)
    standard, inverted = reports["standard"], reports["inversion"]
    assert "backprop by inversion" in inverted.description and "inversion" not in standard.description
    assert inverted.train_gflop_per_image == pytest.approx(standard.train_gflop_per_image)
    assert inverted.saved_activations_mb < standard.saved_activations_mb / 5


def test_with_backprop_wraps_a_flow_and_leaves_it_untouched():
    case = next(case for case in MODEL_CASES if case.name == "cinn_conv_image_condition")
    model = case.model()
    x, c = case.inputs()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert with_backprop(model, "standard") is model
    inverted = with_backprop(model, "inversion")
    assert isinstance(inverted, InvertingBackprop) and inverted.flow is model
    log_prob = inverted(x, c)
    assert torch.equal(log_prob, inverted.log_prob(x, c)) and log_prob.shape == (x.shape[0],)
    torch.testing.assert_close(log_prob, model.log_prob(x, c), rtol=0, atol=1e-12)
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_backprop_by_inversion_refuses_a_model_that_is_not_a_flow():
    with pytest.raises(ValueError, match="needs an invertible model"):
        with_backprop(torch.nn.Linear(2, 2), "inversion")
    with pytest.raises(ValueError, match="unknown backprop"):
        with_backprop(build_glow((1, 4, 4), n_levels=1, steps_per_level=1, hidden_channels=8), "checkpointing")


def test_couplings_declare_their_own_backward_step_and_other_blocks_do_not():
    model = build_cinn((2, 8, 8), (1, 8, 8), n_levels=2, blocks_per_level=1, hidden_channels=8)
    names = {type(step.block).__name__: isinstance(step.block, SupportsInvertedBackprop) for step in model.steps()}
    fused = {name for name, has_own_step in names.items() if has_own_step}
    generic = set(names) - fused
    assert fused == {"CouplingBlock"} and generic == {"HaarDownsampling", "OrthogonalPermutation", "Split"}
