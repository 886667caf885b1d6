"""Latent tools: flattening, PCA (against a known covariance), walks, style transfer."""

from __future__ import annotations

import pytest
import torch

from cinn import build_cinn, build_cinn_fc
from cinn.latent import LatentPCA, flatten_latents, interpolate_latents, transfer_style, unflatten_latents


def test_flatten_and_unflatten_are_inverse():
    latents = [torch.randn(3, 2, 4, 4), torch.randn(3, 8, 2, 2)]
    flat = flatten_latents(latents)
    assert flat.shape == (3, 64)
    back = unflatten_latents(flat, [(2, 4, 4), (8, 2, 2)])
    assert all(torch.equal(a, b) for a, b in zip(latents, back, strict=True))
    with pytest.raises(ValueError, match="expected a"):
        unflatten_latents(flat[:, :10], [(2, 4, 4), (8, 2, 2)])


def test_interpolation_ends_at_both_latents():
    start, end = [torch.zeros(1, 2)], [torch.ones(1, 2)]
    path = interpolate_latents(start, end, steps=5)[0]
    assert torch.equal(path[0], start[0][0]) and torch.equal(path[-1], end[0][0])
    assert torch.allclose(path[2], torch.full((2,), 0.5))


def test_pca_recovers_known_axes_and_whitens():
    generator = torch.Generator().manual_seed(0)
    rotation, _ = torch.linalg.qr(torch.randn(5, 5, generator=generator, dtype=torch.float64))
    scales = torch.tensor([5.0, 3.0, 1.0, 0.5, 0.1], dtype=torch.float64)
    data = 2.0 + (torch.randn(20000, 5, generator=generator, dtype=torch.float64) * scales) @ rotation.T
    pca = LatentPCA.fit(data, k=3)
    assert pca.components.shape == (3, 5)
    assert torch.allclose(pca.std, scales[:3], rtol=0.03)
    for axis in range(3):  # the same line as the true axis, either direction
        assert abs(torch.dot(pca.components[axis], rotation[:, axis])) > 0.999
    whitened = pca.whiten(data)
    assert torch.allclose(whitened.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(whitened.std(0), torch.ones(3, dtype=torch.float64), atol=1e-10)
    full = LatentPCA.fit(data)
    assert torch.allclose(full.unwhiten(full.whiten(data[:10])), data[:10], atol=1e-10)


def test_pca_walk_moves_along_one_axis_in_std_units():
    data = torch.randn(500, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    pca = LatentPCA.fit(data, k=4)
    walk = pca.walk(axis=1, values=torch.tensor([-2.0, 0.0, 3.0]))
    coordinates = pca.whiten(walk)
    expected = torch.zeros(3, 4, dtype=torch.float64)
    expected[:, 1] = torch.tensor([-2.0, 0.0, 3.0])
    assert torch.allclose(coordinates, expected, atol=1e-10)
    with pytest.raises(ValueError, match="out of range"):
        pca.walk(axis=4, values=torch.zeros(1))


@pytest.mark.parametrize("build", [
    lambda: build_cinn_fc((1, 4, 4), 3, n_blocks=2, hidden_features=8),
    lambda: build_cinn((1, 4, 4), (3,), n_levels=1, blocks_per_level=2, hidden_channels=4),
], ids=["fc", "conv"])
def test_style_transfer_to_the_own_label_reconstructs_and_other_labels_differ(build):
    torch.manual_seed(0)
    model = build().double()
    for parameter in model.parameters():  # leave the identity init, so labels matter
        parameter.data.add_(0.1 * torch.randn_like(parameter))
    x = torch.rand(4, 1, 4, 4, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0])
    out = transfer_style(model, x, labels, [torch.full_like(labels, k) for k in range(3)])
    assert out.shape == (4, 3, 1, 4, 4)
    own = out[torch.arange(4), labels]
    assert torch.allclose(own, x, atol=1e-10)
    assert (out[:, 0] - out[:, 1]).abs().max() > 1e-3
