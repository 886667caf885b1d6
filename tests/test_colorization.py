"""Lab conventions, the colourisation objective, the L2 baseline, metrics and the Colorizer."""

from __future__ import annotations

import math

import pytest
import torch
from invertibility import perturb_

from cinn.color import (
    AB_SCALE,
    ab_bits_per_dim,
    denormalize_ab,
    dequantize_ab,
    lab_to_rgb,
    normalize_ab,
    rgb_to_lab,
)
from cinn.colorization import (
    Colorizer,
    LabColorization,
    build_colorization_model,
    downsample_ab,
    full_resolution,
    grey_version,
    lightness_of,
    resize_rows,
    sample_metrics,
    working_size,
)
from cinn.data import TensorImageDataset
from cinn.models import build_regressor, standard_normal_log_prob


def photos(n: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Smooth random colour photos, uint8 (n, 3, size, size)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=generator)
    return (torch.nn.functional.interpolate(coarse, size=size, mode="bilinear") * 255).round().to(torch.uint8)


def test_lab_round_trip_returns_the_8bit_colours():
    rgb = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(lab_to_rgb(rgb_to_lab(rgb)), rgb)


def test_lab_of_known_colours():
    white_black_red = torch.tensor([[255, 0, 255], [255, 0, 0], [255, 0, 0]], dtype=torch.uint8).view(1, 3, 1, 3)
    white, black, red = rgb_to_lab(white_black_red)[0, :, 0].T  # (L, a, b) of each pixel
    assert torch.allclose(white, torch.tensor([100.0, 0.0, 0.0]), atol=0.01)
    assert torch.allclose(black, torch.zeros(3), atol=0.01)
    assert torch.allclose(red, torch.tensor([53.24, 80.09, 67.20]), atol=0.01)  # sRGB red, D65


@pytest.mark.parametrize("kind", ["every 5th sRGB colour", "random floats", "real photos"])
def test_lab_conversion_in_torch_equals_scikit_image(kind):
    """rgb_to_lab runs in torch (on the batch's device); scikit-image's rgb2lab in float64 is the reference."""
    import numpy as np
    from skimage import color, data

    if kind == "every 5th sRGB colour":
        values = torch.arange(0, 256, 5, dtype=torch.uint8)
        rgb = torch.stack(torch.meshgrid(values, values, values, indexing="ij")).reshape(1, 3, -1, len(values))
    elif kind == "random floats":
        rgb = torch.rand(3, 3, 17, 19, generator=torch.Generator().manual_seed(0))
    else:
        photos = [torch.from_numpy(photo()[:256, :256]) for photo in (data.astronaut, data.coffee)]
        rgb = torch.stack(photos).permute(0, 3, 1, 2).contiguous()
    scaled = rgb.double().numpy() / (255 if rgb.dtype == torch.uint8 else 1)
    expected = np.moveaxis(color.rgb2lab(np.moveaxis(scaled, 1, -1), channel_axis=-1), -1, 1)
    lab = rgb_to_lab(rgb)
    assert lab.dtype == torch.float32 and lab.shape == rgb.shape
    assert np.abs(lab.double().numpy() - expected).max() < 1e-3


def test_ab_dequantisation_stays_in_the_unit_bin():
    ab = torch.randn(10_000) * 30
    noisy = dequantize_ab(ab, torch.Generator().manual_seed(0))
    assert ((noisy - torch.round(ab)).abs() <= 0.5).all()
    assert abs((noisy - torch.round(ab)).mean()) < 0.01  # centred: uniform on [-1/2, 1/2)


def test_ab_bits_per_dim_is_the_negative_log2_density_in_lab_units():
    """A standard normal in network units is N(0, AB_SCALE²) in Lab units: both routes must agree."""
    ab_n = torch.randn(5, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    nll_network_units = -standard_normal_log_prob(ab_n)
    ab = denormalize_ab(ab_n)
    nll_lab_units = -(standard_normal_log_prob(ab / AB_SCALE) - ab[0].numel() * math.log(AB_SCALE))
    expected = nll_lab_units / (ab[0].numel() * math.log(2))
    assert torch.allclose(ab_bits_per_dim(nll_network_units, 18), expected)
    assert torch.allclose(normalize_ab(ab), ab_n)


def test_objective_crops_flips_and_downsamples_deterministically():
    images = photos(3, size=16)
    objective = LabColorization(crop_size=8, ab_downsample=2, flip=True)
    x, c = objective.prepare(images, torch.zeros(3), torch.Generator().manual_seed(5))
    again_x, again_c = objective.prepare(images, torch.zeros(3), torch.Generator().manual_seed(5))
    assert x.shape == (3, 2, 4, 4) and c.shape == (3, 1, 8, 8)
    assert torch.equal(x, again_x) and torch.equal(c, again_c)
    assert c.min() >= -1 and c.max() <= 1
    # every condition is a crop of its photo's normalised L, possibly mirrored
    lightness = (rgb_to_lab(images)[:, :1] - 50) / 50
    for index in range(3):
        windows = lightness[index, 0].unfold(0, 8, 1).unfold(1, 8, 1).flatten(0, 1)
        found = [(windows - crop).abs().amax((1, 2)).min() for crop in (c[index, 0], c[index, 0].flip(-1))]
        assert min(found) < 1e-5


def test_objective_ab_lies_in_the_unit_bin_of_the_rounded_block_mean():
    images = photos(2, size=8)
    x, _ = LabColorization(ab_downsample=2).prepare(images, torch.zeros(2), torch.Generator().manual_seed(0))
    block_mean = downsample_ab(rgb_to_lab(images)[:, 1:], 2)
    assert x.shape == (2, 2, 4, 4)
    assert ((denormalize_ab(x) - torch.round(block_mean)).abs() <= 0.5 + 1e-4).all()


def test_objective_flip_happens_for_some_and_not_all():
    image = photos(1, size=8).expand(64, -1, -1, -1)
    objective = LabColorization(flip=True)
    flipped = objective.augment(image, torch.Generator().manual_seed(0))
    mirrored = (flipped == image.flip(-1)).flatten(1).all(1)
    assert 10 < mirrored.sum() < 54


def test_objective_rejects_a_crop_larger_than_the_photos():
    with pytest.raises(ValueError, match="crop size"):
        LabColorization(crop_size=32).prepare(photos(1, 16), torch.zeros(1), torch.Generator())


def test_regressor_log_prob_is_a_gaussian_around_its_prediction():
    torch.manual_seed(0)
    model = perturb_(build_regressor((2, 8, 8), (1, 16, 16), n_levels=2, condition_channels=(4, 8)).double(),
                     scale=0.05)
    x, c = torch.randn(3, 2, 8, 8, dtype=torch.float64), torch.randn(3, 1, 16, 16, dtype=torch.float64)
    sigma = model.log_scale.exp()
    expected = torch.distributions.Normal(model.predict(c), sigma).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(model.log_prob(x, c), expected)
    assert torch.equal(model.sample(3, c), model.predict(c))


def test_regressor_training_step_is_l2_regression():
    """The gradient of −log_prob w.r.t. the prediction is (x̂ − x)/σ², the L2 gradient up to a constant."""
    model = build_regressor((2, 8, 8), (1, 8, 8), n_levels=2, condition_channels=(4, 8)).double()
    x, c = torch.randn(2, 2, 8, 8, dtype=torch.float64), torch.randn(2, 1, 8, 8, dtype=torch.float64)
    prediction = model.predict(c).detach().requires_grad_()
    residual = (x - prediction) * torch.exp(-model.log_scale)
    nll = -(standard_normal_log_prob(residual) - model.log_scale * x[0].numel()).sum()
    (gradient,) = torch.autograd.grad(nll, prediction)
    assert torch.allclose(gradient, (prediction - x) / model.log_scale.exp() ** 2)


@pytest.mark.parametrize("architecture", ["cinn", "regressor"])
def test_colorizer_keeps_the_photo_size_and_its_lightness(architecture):
    torch.manual_seed(0)
    model = build_colorization_model(architecture, 16, 2, n_levels=2, blocks_per_level=1, hidden_channels=8,
                                     condition_channels=[4, 8]).eval()
    photo = photos(1, size=40)[0, :, :37, :]  # odd, non-square size
    colorizer = Colorizer(model, shorter_side=16, multiple=8, ab_downsample=2)
    colourings = colorizer.colorize(photo, n_samples=3, temperature=0.1)  # untrained: keep ab in gamut
    assert colourings.shape == (3, 3, 37, 40) and colourings.dtype == torch.uint8
    lightness = rgb_to_lab(photo[None])[:, 0]
    assert (rgb_to_lab(colourings)[:, 0] - lightness).abs().mean() < 1.0  # only 8-bit rounding moves L


def test_cinn_colourings_differ_and_are_reproducible():
    torch.manual_seed(0)
    model = build_colorization_model("cinn", 16, 2, n_levels=2, blocks_per_level=1, hidden_channels=8,
                                     condition_channels=[4, 8])
    perturb_(model, scale=0.2)
    colorizer = Colorizer(model.eval(), shorter_side=16, multiple=8, ab_downsample=2)
    grey = photos(1, size=16)[0].float().mean(0, keepdim=True).expand(3, -1, -1).round().to(torch.uint8)
    first = colorizer.colorize(grey, n_samples=2, seed=3)
    assert not torch.equal(first[0], first[1])
    assert torch.equal(first, colorizer.colorize(grey, n_samples=2, seed=3))


class TruthModel(torch.nn.Module):
    """Returns the true ab (for metrics tests): the perfect deterministic colouriser of one photo."""

    def __init__(self, truth: torch.Tensor, noise: float = 0.0):
        super().__init__()
        self.truth, self.noise = truth, noise

    def sample(self, n, c, temperature=1.0, generator=None, spatial_size=None):
        noise = torch.randn((n, *self.truth.shape[1:]), generator=generator)
        return self.truth.expand(n, -1, -1, -1) + self.noise * noise


def test_sample_metrics_of_a_perfect_and_a_noisy_model():
    images = photos(1, size=8)
    truth = normalize_ab(downsample_ab(rgb_to_lab(images)[:, 1:], 2))
    dataset = TensorImageDataset(images, torch.zeros(1, dtype=torch.int64))
    perfect = sample_metrics(TruthModel(truth), dataset, ab_downsample=2, n_samples=4)
    assert perfect.best_rmse.item() < 1e-4 and perfect.diversity.item() < 1e-4
    assert torch.allclose(perfect.grey_rmse, denormalize_ab(truth).pow(2).mean().sqrt(), atol=1e-4)
    noisy = sample_metrics(TruthModel(truth, noise=0.1), dataset, ab_downsample=2, n_samples=16)
    assert 0.5 * 0.1 * AB_SCALE < noisy.diversity.item() < 1.5 * 0.1 * AB_SCALE  # std of the noise, Lab units
    assert noisy.best_rmse.item() > 0


def test_working_size_keeps_the_scale_and_the_multiples():
    assert working_size(768, 1024, shorter_side=128, multiple=16) == (128, 176)
    assert working_size(1024, 768, shorter_side=128, multiple=16) == (176, 128)
    assert working_size(5, 3000, shorter_side=64, multiple=16) == (64, 38400)
    assert working_size(10, 10, shorter_side=4, multiple=16) == (16, 16)


@pytest.mark.parametrize("height, rows", [(37, (0, 37)), (37, (5, 9)), (5, (0, 5)), (64, (60, 64))])
def test_resizing_some_rows_equals_resizing_all(height, rows):
    image = torch.randn(2, 2, 7, 11)
    full = torch.nn.functional.interpolate(image, size=(height, 11), mode="bilinear", align_corners=False)
    assert torch.allclose(resize_rows(image, height, *rows), full[..., rows[0]:rows[1], :], atol=1e-6)


def test_strips_do_not_change_the_colourings(monkeypatch):
    torch.manual_seed(0)
    model = build_colorization_model("cinn", 16, 2, n_levels=2, blocks_per_level=1, hidden_channels=8,
                                     condition_channels=[4, 8]).eval()
    colorizer = Colorizer(perturb_(model, scale=0.1), shorter_side=16, multiple=8, ab_downsample=2)
    photo = photos(1, size=48)[0, :, :45, :]
    whole = colorizer.colorize(photo, n_samples=2, temperature=0.3)
    monkeypatch.setattr(full_resolution, "STRIP_PIXELS", 100)  # two rows per strip
    assert torch.equal(colorizer.colorize(photo, n_samples=2, temperature=0.3), whole)
    assert torch.equal(lightness_of(photo), rgb_to_lab(photo[None])[:, :1])


def test_grey_version_keeps_lightness_and_drops_colour():
    photo = photos(1, size=24)[0, :, :, :21]
    grey = grey_version(photo)
    assert grey.shape == photo.shape and grey.dtype == torch.uint8
    lab = rgb_to_lab(grey[None])[0]
    assert (lab[1:].abs() < 1.0).all()
    assert (lab[0] - rgb_to_lab(photo[None])[0, 0]).abs().max() < 0.5
    assert (grey.int().amax(0) - grey.int().amin(0)).max() <= 1  # neutral: R, G, B equal up to rounding
