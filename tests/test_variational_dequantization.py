"""Variational dequantisation (cinn/models/dequantization.py): log q is the exact density of the noise it draws,
the bound it gives is never below the exact discrete likelihood and tightens as q trains, and the tasks train,
evaluate, check and reload it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from mnist_fixture import write_mnist_fixture

import cinn
from cinn.blocks import ActNorm
from cinn.cli import run_command
from cinn.engine import DequantizedImages, load_checkpoint
from cinn.models import Flow, VariationalDequantizer, VariationallyDequantizedFlow, build_glow
from cinn.models.dequantization import build_variationally_dequantized
from cinn.models.registry import build_from_spec, model_spec
from tasks import glow, mnist

ROOT = Path(__file__).resolve().parents[1]
VARIATIONAL = ["--model.dequantization.kind=variational", "--model.dequantization.blocks=1",
               "--model.dequantization.hidden_channels=8"]


def perturbed(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return module


def test_log_q_is_the_density_of_the_noise_it_draws():
    """Brute force: log q(u | k) = log N(ε) − log|det ∂u/∂ε| over the map ε → u, float64, perturbed weights."""
    torch.manual_seed(0)
    dequantizer = perturbed(VariationalDequantizer((1, 2, 2), n_bits=3, blocks=2, hidden_channels=8)).double()
    k = torch.tensor([0.0, 3.0, 5.0, 7.0], dtype=torch.float64).view(1, 1, 2, 2)
    u0 = torch.tensor([0.1, 0.45, 0.8, 0.97], dtype=torch.float64).view(1, 1, 2, 2)
    x, log_q = dequantizer((k + u0) / 8)

    def noise(eps: torch.Tensor) -> torch.Tensor:
        uniform = torch.special.ndtr(eps.view(1, 1, 2, 2))
        return (dequantizer((k + uniform) / 8)[0] * 8 - k).flatten()

    eps = torch.special.ndtri(u0).flatten()
    jacobian = torch.autograd.functional.jacobian(noise, eps)
    expected = -0.5 * (eps**2).sum() - 2 * math.log(2 * math.pi) - torch.linalg.slogdet(jacobian).logabsdet
    assert torch.allclose(log_q, expected.view(1), atol=1e-8)
    assert torch.equal((x * 8).floor(), k)  # every value stays in its bin


def sharp_gaussian(n_bits: int) -> tuple[Flow, torch.Tensor]:
    """A flow whose density is N(x; ½, 1/64) per pixel, and the exact log P(k) of each bin per pixel (nats)."""
    flow = Flow((1, 2, 2))
    flow.append(ActNorm)
    norm = flow.blocks[0]
    with torch.no_grad():
        norm.bias.fill_(-0.5)
        norm.log_scale.fill_(math.log(8.0))
        norm.initialized.fill_(True)
    edges = torch.linspace(0, 1, 2**n_bits + 1, dtype=torch.float64)
    cdf = torch.special.ndtr(8 * (edges - 0.5))
    return flow.requires_grad_(False), (cdf[1:] - cdf[:-1]).log()


def gap_to_exact(model, images: torch.Tensor, exact: torch.Tensor, draws: int, seed: int) -> tuple[float, float]:
    """The bits/dim bound minus the exact bits/dim, per image averaged over ``draws`` dequantisations: the mean
    over the images and its standard error."""
    objective = DequantizedImages(n_bits=2)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bits = torch.stack([objective.bits_per_dim(model.log_prob(objective.prepare(images, images, generator)[0]),
                                                   images) for _ in range(draws)]).double().mean(0)
    gaps = bits - exact
    return gaps.mean().item(), gaps.std().item() / math.sqrt(len(gaps))


def test_the_bound_is_never_below_the_exact_likelihood_and_tightens_as_q_trains():
    torch.manual_seed(0)
    flow, log_bin_mass = sharp_gaussian(n_bits=2)
    levels = torch.randint(0, 4, (64, 1, 2, 2))
    images = (levels * 255 // 3).to(torch.uint8)  # quantised to 2 bits, they are the levels again
    exact = -log_bin_mass[levels].flatten(1).sum(1) / (4 * math.log(2))  # bits/dim of P(k), per image
    model = VariationallyDequantizedFlow(flow, n_bits=2, blocks=2, hidden_channels=16)
    uniform, uniform_error = gap_to_exact(flow, images, exact, draws=20, seed=1)
    before, before_error = gap_to_exact(model, images, exact, draws=20, seed=1)
    assert uniform > 0.1 and uniform > 10 * uniform_error  # a sharp density: uniform noise gives a loose bound
    assert before > -3 * before_error

    optimizer = torch.optim.Adam(model.dequantizer.parameters(), lr=1e-2)
    objective, generator = DequantizedImages(n_bits=2), torch.Generator().manual_seed(2)
    for _ in range(150):
        x, _ = objective.prepare(images, images, generator)
        loss = objective.bits_per_dim(model.log_prob(x), x).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after, after_error = gap_to_exact(model, images, exact, draws=20, seed=3)
    assert after > -3 * after_error  # still a bound
    assert after < 0.5 * min(before, uniform)  # and a much tighter one than uniform noise gives


def test_backprop_by_inversion_gives_the_same_loss_and_gradients():
    torch.manual_seed(0)
    spec = model_spec(build_glow, input_shape=(1, 4, 4), n_levels=1, steps_per_level=2, hidden_channels=8)
    model = perturbed(build_variationally_dequantized(spec, n_bits=5, blocks_per_level=1, hidden_channels=8))
    x = torch.rand(3, 1, 4, 4)
    model.flow.log_prob(x)  # ActNorm's data initialisation, once
    from cinn.engine.model_support import model_support

    gradients = []
    for backprop in ("standard", "inversion"):
        model.zero_grad()
        loss = -model_support(model).training_module(backprop)(x).mean()
        loss.backward()
        gradients.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (standard, standard_grads), (inverted, inverted_grads) = gradients
    assert torch.allclose(standard, inverted, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(standard_grads, inverted_grads, strict=True))


def test_a_spec_dequantised_twice_or_too_large_inside_is_refused_before_anything_is_built():
    tarflow = model_spec(cinn.build_tarflow, input_shape=(1, 4, 4), patch_size=2, width=8, n_blocks=1,
                         layers_per_block=1)
    twice = model_spec(build_variationally_dequantized, flow=model_spec(build_variationally_dequantized,
                                                                          flow=tarflow))
    with pytest.raises(ValueError, match="nested more than 5 deep"):  # a flow is dequantised once
        build_from_spec(twice)
    spec = model_spec(build_glow, input_shape=(1, 4, 4), n_levels=1, steps_per_level=1, hidden_channels=8)
    huge = model_spec(build_variationally_dequantized, flow={**spec, "arguments": {**spec["arguments"],
                                                                                    "steps_per_level": 5000}})
    with pytest.raises(ValueError, match="more than the 1024 allowed"):
        build_from_spec(huge)


def test_the_glow_task_trains_evaluates_checks_and_reloads_a_dequantised_flow(tmp_path, capsys):
    data_root = write_mnist_fixture(tmp_path / "mnist", n_train=48, n_test=16)
    run_dir = tmp_path / "run"
    train = ["train", "--config", str(ROOT / "configs/glow/tiny.yaml"), "--data.dataset=mnist", "--data.root",
             str(data_root), "--run_dir", str(run_dir), *VARIATIONAL]
    assert glow.main(train) == 0
    assert load_checkpoint(run_dir / "checkpoint.pt")["model_spec"]["builder"] == "build_variationally_dequantized"
    capsys.readouterr()
    assert glow.main(["eval", "--checkpoint", str(run_dir / "checkpoint.pt")]) == 0
    assert glow.main(["check", "--checkpoint", str(run_dir / "checkpoint.pt")]) == 0
    out = capsys.readouterr().out
    assert "variational dequantisation, a variational bound (one draw of q(u | x) per image)" in out
    assert "check passed" in out
    model = cinn.load(run_dir / "checkpoint.pt")
    assert isinstance(model, VariationallyDequantizedFlow) and model.sample(2).shape == (2, 1, 28, 28)
    assert glow.main([*train, "--run_dir", str(tmp_path / "inversion"), "--train.backprop=inversion"]) == 0


def test_the_class_conditional_task_dequantises_variationally_but_not_with_gaussian_noise(tmp_path, capsys):
    data_root = write_mnist_fixture(tmp_path / "mnist", n_train=48, n_test=16)
    train = ["train", "--config", str(ROOT / "configs/mnist/tiny.yaml"), "--data.root", str(data_root),
             "--run_dir", str(tmp_path / "run"), *VARIATIONAL]
    assert mnist.main(train) == 0
    model = cinn.load(tmp_path / "run" / "checkpoint.pt")
    assert isinstance(model, VariationallyDequantizedFlow)
    assert model.sample(3, torch.tensor([0, 1, 2])).shape == (3, 1, 28, 28)
    with pytest.raises(SystemExit) as exit_info:
        run_command(mnist.main, [*train, "--run_dir", str(tmp_path / "noise"), "--data.train_noise=gaussian"])
    assert exit_info.value.code == 2
    assert "data.train_noise=gaussian replaces that noise: choose one" in capsys.readouterr().err
