"""The condition pyramid's global branch: the whole photo reaches every position's features."""

from __future__ import annotations

import pytest
import torch

from cinn.colorization import build_colorization_model
from cinn.models import build_cinn
from cinn.models.condition import ImageConditionPyramid


def trained_like(net: torch.nn.Module) -> torch.nn.Module:
    """``net`` with every parameter perturbed, as training would leave it (zero-initialised layers included)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
    return net


@pytest.mark.parametrize("global_features", [0, 16])
def test_a_far_away_change_reaches_the_features_only_through_the_global_branch(global_features):
    torch.manual_seed(0)
    net = trained_like(ImageConditionPyramid(1, (8, 16), extra_stages=1, global_features=global_features)).eval()
    photo = torch.rand(1, 1, 64, 64)
    changed = photo.clone()
    changed[..., :16, :16] = 1 - changed[..., :16, :16]  # the top-left corner
    with torch.no_grad():
        before, after = net(photo), net(changed)
    far = [(b - a)[..., -2:, -2:].abs().max().item() for b, a in zip(before, after, strict=True)]  # bottom right
    near = (before[0] - after[0])[..., :2, :2].abs().max().item()
    assert near > 1e-3  # the local features see the change
    if global_features:
        assert min(far) > 1e-4
    else:
        assert max(far) == 0  # beyond the receptive field


def test_an_untrained_global_branch_leaves_the_features_as_they_were():
    torch.manual_seed(0)
    local = ImageConditionPyramid(1, (8, 16), global_features=0)
    torch.manual_seed(0)
    with_global = ImageConditionPyramid(1, (8, 16), global_features=16)
    photo = torch.rand(2, 1, 32, 32)
    for a, b in zip(local(photo), with_global(photo), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert with_global(torch.rand(1, 1, 96, 64))[1].shape == (1, 16, 24, 16)  # any size: the vector is a mean


def test_the_colourisation_models_take_a_global_branch():
    cinn = build_colorization_model("cinn", 32, 2, n_levels=2, blocks_per_level=1, hidden_channels=8,
                                    global_features=8)
    regressor = build_colorization_model("regressor", 32, 2, n_levels=2, global_features=8)
    for model in (cinn, regressor):
        assert model.condition_net.global_net is not None
    with pytest.raises(ValueError, match="a class label is global already"):
        build_cinn((1, 8, 8), (10,), n_levels=2, global_features=4)
