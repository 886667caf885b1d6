"""Properties of the spline and logistic-mixture coupling maps beyond the generic block contract: where the
spline is the identity, monotonicity, exact inversion at its knots and bounds, element-wise log-dets, the
mixture's bisection accuracy and cost, implicit gradients, and their options as specs."""

from __future__ import annotations

import math

import pytest
import torch

from cinn.blocks import (
    CouplingMap,
    LogisticMixtureCdf,
    RationalQuadraticSpline,
    coupling_map,
    map_spec,
)

SPLINE = RationalQuadraticSpline(bins=5, bound=2.0)
MIXTURE = LogisticMixtureCdf(components=3)


def random_params(transform: CouplingMap, x: torch.Tensor, scale: float = 1.5, seed: int = 0) -> torch.Tensor:
    """Parameters of one channel per element of ``x`` (shape ``(N, C)``), large enough to bend the map."""
    generator = torch.Generator().manual_seed(seed)
    shape = (x.shape[0], transform.params_per_channel * x.shape[1])
    return scale * torch.randn(shape, generator=generator, dtype=torch.float64).to(x.dtype)


def column(values) -> torch.Tensor:
    """``values`` as ``(N, 1)`` float64: one sample per value, so a per-sample log-det is a per-element one."""
    return torch.as_tensor(values, dtype=torch.float64).reshape(-1, 1)


def test_spline_with_zero_params_is_the_identity_to_rounding():
    x = torch.linspace(-3, 3, 600, dtype=torch.float64).view(3, 1, 10, 20)
    params = torch.zeros(3, SPLINE.params_per_channel, 10, 20, dtype=torch.float64)
    y, log_det = SPLINE.forward(x, params)
    x_back, log_det_rev = SPLINE.inverse(x, params)
    assert (y - x).abs().max() <= 4e-16 * 3 and (x_back - x).abs().max() <= 4e-16 * 3
    assert log_det.abs().max() <= 1e-13 and log_det_rev.abs().max() <= 1e-13


def test_spline_is_the_identity_outside_its_bound():
    x = column([-1e6, -7.0, -2.0 - 1e-12, 2.0 + 1e-12, 3.5, 1e6])
    params = random_params(SPLINE, x, scale=3.0)
    y, log_det = SPLINE.forward(x, params)
    x_back, log_det_rev = SPLINE.inverse(x, params)
    assert torch.equal(y, x) and torch.equal(x_back, x)
    assert torch.equal(log_det, torch.zeros(6, dtype=torch.float64)) and torch.equal(log_det_rev, log_det)
    inside = column([-1.0, 0.5])  # ... where the same parameters do change the values
    assert (SPLINE.forward(inside, params[:2])[0] - inside).abs().min() > 1e-3


@pytest.mark.parametrize("seed", range(3))
def test_spline_is_increasing_and_continuous_at_its_bounds(seed):
    x = torch.linspace(-2.5, 2.5, 5001, dtype=torch.float64).view(1, 1, -1).expand(4, 1, -1)
    channel_params = random_params(SPLINE, column([0.0] * 4), scale=3.0, seed=seed)
    y, _ = SPLINE.forward(x, channel_params.view(4, -1, 1).expand(-1, -1, x.shape[-1]))
    assert (y.diff(dim=-1) > 0).all()
    assert (y - x)[..., :500].abs().max() == 0 and (y - x)[..., -500:].abs().max() == 0  # |x| > 2: tails
    edges = torch.tensor([-2.0, 2.0], dtype=torch.float64).view(1, 1, 2).expand(4, 1, 2)
    near = edges * (1 - 1e-9)  # 2e-9 inside: a slope ≠ 1 at the edge would move it by ~1e-9, a curvature by ~1e-13
    at_edges, _ = SPLINE.forward(edges, channel_params.view(4, -1, 1).expand(-1, -1, 2))
    near_edges, _ = SPLINE.forward(near, channel_params.view(4, -1, 1).expand(-1, -1, 2))
    assert torch.equal(at_edges, edges) and (near_edges - near).abs().max() < 1e-11


def test_spline_round_trips_at_its_knots_and_bounds_in_float64():
    generator = torch.Generator().manual_seed(1)
    params = random_params(SPLINE, column([0.0]), scale=3.0).repeat(40, 1)
    raw = params.view(40, SPLINE.params_per_channel, 1).movedim(1, -1)
    x_knots = SPLINE._knots(raw[0, ..., :5], SPLINE.min_bin_width).flatten()
    y_knots = SPLINE._knots(raw[0, ..., 5:10], SPLINE.min_bin_height).flatten()
    bound = torch.tensor([2.0], dtype=torch.float64)
    edges = torch.cat([bound.nextafter(bound + 1), bound, bound.nextafter(bound - 1), bound - 1e-13])
    special = torch.cat([x_knots, y_knots, edges, -edges])
    uniform = torch.rand(40 - len(special), generator=generator, dtype=torch.float64)
    values = column(torch.cat([special, 5 * uniform - 2.5]))
    y, log_det = SPLINE.forward(values, params)
    x_back, log_det_back = SPLINE.inverse(y, params)
    # the parameters squeeze 3.8 of x into 0.008 of y (slope 1e-5): inverting loses 5 digits there
    assert (x_back - values).abs().max() <= 1e-10 and (log_det_back + log_det).abs().max() <= 1e-10
    x_from_y, _ = SPLINE.inverse(values, params)
    assert (SPLINE.forward(x_from_y, params)[0] - values).abs().max() <= 1e-12
    assert (SPLINE.forward(column(x_knots), params[:6])[0] - column(y_knots)).abs().max() <= 1e-12


@pytest.mark.parametrize("transform", [SPLINE, MIXTURE], ids=["spline", "mixture"])
def test_log_det_is_the_log_derivative_of_each_element_both_ways(transform):
    x = column(torch.linspace(-3, 3, 61, dtype=torch.float64)).requires_grad_()
    params = random_params(transform, x)
    y, log_det = transform.forward(x, params)
    (derivative,) = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(log_det, derivative.log().flatten(), rtol=0, atol=1e-10)
    step = 1e-6
    ahead, behind = transform.forward(x + step, params)[0], transform.forward(x - step, params)[0]
    finite_difference = (ahead - behind) / (2 * step)
    assert torch.allclose(derivative, finite_difference, rtol=1e-5, atol=0)
    y = y.detach().requires_grad_()
    x_back, log_det_rev = transform.inverse(y, params)
    (derivative_rev,) = torch.autograd.grad(x_back.sum(), y)
    assert torch.allclose(log_det_rev, derivative_rev.log().flatten(), rtol=0, atol=1e-10)


@pytest.mark.parametrize("transform", [SPLINE, MIXTURE], ids=["spline", "mixture"])
def test_gradients_of_both_directions_match_finite_differences(transform):
    x = column(torch.linspace(-2.7, 2.7, 7, dtype=torch.float64)).view(1, 7).requires_grad_()
    params = random_params(transform, x).requires_grad_()
    assert torch.autograd.gradcheck(transform.forward, (x, params))
    y = transform.forward(x, params)[0].detach().requires_grad_()
    assert torch.autograd.gradcheck(transform.inverse, (y, params))  # the mixture: implicit gradients


def count_calls(monkeypatch, name: str) -> list[int]:
    """A counter of the calls to ``LogisticMixtureCdf.name``, a method or static method."""
    calls = [0]
    original = LogisticMixtureCdf.__dict__[name]
    function = original.__func__ if isinstance(original, staticmethod) else original

    def counted(*arguments):
        calls[0] += 1
        return function(*arguments)

    monkeypatch.setattr(LogisticMixtureCdf, name, staticmethod(counted) if isinstance(original, staticmethod)
                        else counted)
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mixture_inverse_costs_the_bisection_steps_its_docstring_states(dtype, monkeypatch):
    """Zero params put the components at the offsets ±0.25, ±0.75 with unit scales: every bracket is
    ``[L − 0.75, L + 0.75]``, 1.5 wide, so ``n = ⌈log₂(1.5/ε)⌉``: 21 in float32, 50 in float64."""
    mixture = LogisticMixtureCdf(components=4)
    epsilon = mixture.tolerance * torch.finfo(dtype).eps / torch.finfo(torch.float32).eps
    steps = math.ceil(math.log2(1.5 / epsilon))
    assert steps == {torch.float32: 21, torch.float64: 50}[dtype]
    y = torch.linspace(-6, 6, 50, dtype=dtype).view(2, 1, 5, 5)
    params = torch.zeros(2, 14, 5, 5, dtype=dtype)
    bisection_steps, map_evaluations = count_calls(monkeypatch, "_log_tail"), count_calls(monkeypatch, "_log_cdfs")
    with torch.no_grad():
        x, _ = mixture.inverse(y, params)
    assert bisection_steps[0] == steps and map_evaluations[0] == 1  # then the log-det at the root
    assert (mixture.forward(x, params)[0] - y).abs().max() <= 2 * epsilon  # here ∂y/∂x ≤ 1 / min s = 1
    bisection_steps[0] = 0
    LogisticMixtureCdf(components=4, max_iterations=5).inverse(y, params)
    assert bisection_steps[0] == 5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mixture_inverse_meets_its_tolerance(dtype):
    exact = column(torch.linspace(-4, 4, 401, dtype=torch.float64))
    params = random_params(MIXTURE, exact)
    y, log_derivative = MIXTURE.forward(exact, params)
    coarse = LogisticMixtureCdf(components=3, tolerance=1e-3)  # ε far above rounding: the bisection alone
    with torch.no_grad():
        x, _ = coarse.inverse(y.to(dtype), params.to(dtype))
        x_default, _ = MIXTURE.inverse(y.to(dtype), params.to(dtype))
    assert x.dtype == x_default.dtype == dtype
    error = (x.double() - exact).abs()
    assert error.max() <= 0.501 * coarse.resolution(dtype) and error.max() >= coarse.resolution(dtype) / 8
    # the default ε: ε/2, plus y's rounding in dtype (of the terms that sum to y), over the slope ∂y/∂x
    rounding = 4 * torch.finfo(dtype).eps * (y.abs() + 8) / log_derivative.exp().view(-1, 1)
    assert ((x_default.double() - exact).abs() <= MIXTURE.resolution(dtype) / 2 + rounding).all()


def test_maps_are_chosen_by_name_with_their_options():
    assert coupling_map({"map": "rational_quadratic_spline", "bins": 4}) == RationalQuadraticSpline(bins=4)
    assert coupling_map("logistic_mixture_cdf") == LogisticMixtureCdf()
    spec = {"map": "logistic_mixture_cdf", "components": 2, "tolerance": 1e-5, "max_iterations": 40}
    assert map_spec(coupling_map(spec)) == spec
    assert coupling_map({"map": "rational_quadratic_spline", "bins": 4}).params_per_channel == 11
    assert LogisticMixtureCdf(components=2).params_per_channel == 8


@pytest.mark.parametrize("spec, message", [
    ({"bins": 0}, "bins must be a positive integer, got 0"),
    ({"bins": 2.5}, "bins must be a positive integer, got 2.5"),
    ({"bound": -1.0}, "bound must be positive, got -1.0"),
    ({"bins": 4, "min_bin_width": 0.25}, "min_bin_width must be in [0, 1/bins) = [0, 0.25), got 0.25"),
    ({"min_bin_height": -0.1}, "min_bin_height must be in [0, 1/bins)"),
    ({"min_derivative": 1.0}, "min_derivative must be in [0, 1), got 1.0"),
    ({"knots": 3}, "takes bins, bound, min_bin_width, min_bin_height, min_derivative, not knots"),
])
def test_bad_spline_options_are_one_line_errors(spec, message):
    with pytest.raises(ValueError) as error:
        coupling_map({"map": "rational_quadratic_spline", **spec})
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("spec, message", [
    ({"components": 0}, "components must be a positive integer, got 0"),
    ({"max_iterations": 0}, "max_iterations must be a positive integer, got 0"),
    ({"tolerance": 0.0}, "tolerance must be positive, got 0.0"),
    ({"bins": 3}, "takes components, tolerance, max_iterations, not bins"),
])
def test_bad_mixture_options_are_one_line_errors(spec, message):
    with pytest.raises(ValueError) as error:
        coupling_map({"map": "logistic_mixture_cdf", **spec})
    assert message in str(error.value) and "\n" not in str(error.value)
