"""Likelihood conventions: quantisation, uniform dequantisation, and bits/dim on analytic cases."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from cinn.engine.evaluate import BitsPerDim
from cinn.likelihood import bin_centers, bits_per_dim, dequantize, n_bins, quantize
from cinn.models import Flow


def test_quantize_to_fewer_bits():
    x = torch.arange(256) / 255
    assert torch.equal(quantize(x, 8), torch.arange(256).float())
    levels = quantize(x, 5)
    assert levels.min() == 0 and levels.max() == 31
    assert torch.equal(torch.unique(levels), torch.arange(32).float())
    assert torch.all(torch.bincount(levels.long()) == 8)


def test_dequantized_values_stay_in_their_bin():
    levels = quantize(torch.rand(10_000), 5)
    x = dequantize(levels, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.floor(x * 32), levels)
    assert torch.equal(torch.floor(bin_centers(levels, 5) * 32), levels)


def test_n_bits_out_of_range():
    with pytest.raises(ValueError, match="n_bits"):
        n_bins(9)


@pytest.mark.parametrize("n_bits", [1, 5, 8])
def test_uniform_density_costs_exactly_n_bits(n_bits):
    assert torch.allclose(bits_per_dim(torch.tensor(0.0), 100, n_bits), torch.tensor(float(n_bits)))


def test_identity_flow_bits_per_dim_matches_closed_form():
    """Identity flow with a standard-normal prior: E_u[−log N((k+u)/n)] has a closed form per dimension,
    0.5·(k² + k + 1/3)/n² + 0.5·log 2π, and the bound must lie above the exact discrete code length."""
    n_bits, m = 3, 6
    bins = n_bins(n_bits)
    model = Flow((m,)).double()
    levels = torch.tensor([[0.0, 1.0, 2.0, 5.0, 7.0, 3.0]], dtype=torch.float64)
    expected_nll = (0.5 * (levels**2 + levels + 1 / 3) / bins**2 + 0.5 * math.log(2 * math.pi)).sum()
    expected = (expected_nll + m * math.log(bins)) / (m * math.log(2))

    generator = torch.Generator().manual_seed(0)
    draws = 100_000
    x = dequantize(levels.expand(draws, m), n_bits, generator)
    estimate = bits_per_dim(-model.log_prob(x), m, n_bits)
    assert abs(estimate.mean().item() - expected.item()) < 4 * estimate.std().item() / math.sqrt(draws)

    normal = Normal(0.0, 1.0)
    cell_mass = normal.cdf((levels + 1) / bins) - normal.cdf(levels / bins)
    exact_bits = -torch.log2(cell_mass).sum() / m
    assert expected > exact_bits
    assert expected - exact_bits < 0.01  # the Jensen gap is small for narrow bins


def test_bits_per_dim_summary_has_no_standard_error_for_one_image():
    assert BitsPerDim(3.3235, float("nan"), 1, 3.3235, 3.3235).summary() == "3.3235 (1 image)"
    summary = BitsPerDim(4.0, 0.5, 10, 3.9, 9.1).summary()
    assert summary.startswith("4.0000 ± 0.5000 (standard error, 10 images; median 3.9000") and "nan" not in summary
