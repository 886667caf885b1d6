"""Regression tests for the FrEIA 0.2 defects cinn works around.

Each test first shows the defect in FrEIA's own module (so the workaround can be dropped when a
newer FrEIA fixes it and the demonstration starts failing), then checks that cinn's block is free
of it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from FrEIA.framework import SequenceINN
from FrEIA.modules import ActNorm as FrEIAActNorm
from FrEIA.modules import HaarDownsampling as FrEIAHaarDownsampling
from FrEIA.modules import PermuteRandom
from invertibility import brute_force_log_det, perturb_

from cinn.blocks import (
    ActNorm,
    CouplingBlock,
    HaarDownsampling,
    InvertibleConv1x1LU,
    OrthogonalPermutation,
    Squeeze,
    conv_subnet,
)


def test_haar_reverse_does_not_modify_the_callers_tensor():
    z = torch.randn(2, 8, 2, 2)
    original = z.clone()
    FrEIAHaarDownsampling([(2, 4, 4)])([z], rev=True)
    assert not torch.equal(z, original), "FrEIA's Haar reverse no longer scales its input in place"

    z = original.clone()
    HaarDownsampling([(2, 4, 4)])([z], rev=True)
    assert torch.equal(z, original)


def test_haar_has_no_parameters_and_a_per_sample_log_det():
    assert len(list(FrEIAHaarDownsampling([(2, 4, 4)]).parameters())) == 1
    _, freia_log_det = FrEIAHaarDownsampling([(2, 4, 4)])([torch.randn(3, 2, 4, 4)])
    assert not torch.is_tensor(freia_log_det)

    haar = HaarDownsampling([(2, 4, 4)])
    assert list(haar.parameters()) == []
    assert "haar_weights" in haar.state_dict()
    _, log_det = haar([torch.randn(3, 2, 4, 4)])
    assert log_det.shape == (3,)


def test_fixed_permutation_does_not_reseed_global_rngs():
    np.random.seed(123)
    PermuteRandom([(4,)], seed=0)
    after_freia = np.random.rand()
    np.random.seed(0)
    np.random.permutation(4)
    assert after_freia == np.random.rand(), "FrEIA's PermuteRandom no longer reseeds numpy's global RNG"

    np.random.seed(123)
    torch.manual_seed(123)
    expected_numpy, expected_torch = np.random.rand(), torch.rand(1)
    np.random.seed(123)
    torch.manual_seed(123)
    OrthogonalPermutation([(4,)], seed=0)
    assert np.random.rand() == expected_numpy
    assert torch.equal(torch.rand(1), expected_torch)


def test_actnorm_initialised_flag_is_persisted():
    # FrEIA keeps the flag as a plain attribute: loading the state of an *uninitialised* layer
    # marks it initialised, so it never initialises and stays the identity map.
    freia = FrEIAActNorm([(2,)])
    freia.load_state_dict(FrEIAActNorm([(2,)]).state_dict())
    assert freia.init_on_next_batch is False
    assert "init_on_next_batch" not in freia.state_dict()

    ours = ActNorm([(2,)])
    ours.load_state_dict(ActNorm([(2,)]).state_dict())
    assert not bool(ours.initialized)
    assert "initialized" in ours.state_dict()


def test_actnorm_reverse_before_init_does_not_initialise_from_latents():
    freia = FrEIAActNorm([(2,)])
    freia([torch.randn(8, 2) * 10], rev=True)
    assert freia.init_on_next_batch is False, "FrEIA's ActNorm no longer initialises in reverse"

    ours = ActNorm([(2,)])
    with pytest.raises(RuntimeError, match="not initialised"):
        ours([torch.randn(8, 2) * 10], rev=True)
    assert not bool(ours.initialized)


def test_cinn_blocks_compose_inside_freia_sequence_inn():
    inn = SequenceINN(2, 4, 4)
    inn.append(HaarDownsampling)
    inn.append(ActNorm)
    inn.append(InvertibleConv1x1LU)
    inn.append(CouplingBlock, cond=0, cond_shape=(3, 2, 2), subnet_constructor=conv_subnet(8),
               transform={"map": "soft_clamp_affine", "clamp": 2.0})
    inn.append(OrthogonalPermutation, seed=1)
    inn.append(Squeeze)
    inn = perturb_(inn.double())
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    c = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    z, log_det = inn(x, c=[c])
    x_back, log_det_rev = inn(z, c=[c], rev=True)
    assert (x_back - x).abs().max() < 1e-10
    assert torch.allclose(log_det_rev, -log_det, atol=1e-10)
    expected = brute_force_log_det(lambda inputs: [inn(inputs[0], c=[c[:1]])[0]], [x[:1]])
    assert torch.allclose(log_det[0], expected[0], atol=1e-8)
