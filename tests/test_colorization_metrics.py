"""The cINN paper's best-of-n error, colourfulness, and their place in ``sample_metrics``."""

from __future__ import annotations

import math

import torch
from test_colorization import TruthModel

from cinn.color import lab_to_rgb, normalize_ab, rgb_to_lab
from cinn.colorization import (
    build_colorization_model,
    colourfulness,
    downsample_ab,
    paper_best_of_n_error,
    sample_metrics,
)
from cinn.data import TensorImageDataset


def uint8(*rows: tuple[int, int, int]) -> torch.Tensor:
    """One 1×len(rows) uint8 RGB image (1, 3, 1, W) from its pixels."""
    return torch.tensor(rows, dtype=torch.uint8).T[None, :, None, :]


def test_paper_error_takes_the_minimum_per_value_before_the_mean_and_the_root():
    # Colours whose sRGB conversion is exact (clipped to 0 or 1 on every channel):
    # L=100, ab=(-128, 128) → green (0, 255, 0); L=100, ab=(-128, -128) → cyan (0, 255, 255);
    # L=50, ab=(128, 128) → red (255, 0, 0); L=0, ab=0 → black. ab beyond ±128 is clamped to ±128.
    lightness = torch.tensor([[100.0, 100.0], [50.0, 0.0]]).view(2, 1, 1, 2)
    green, cyan, red, black = (-200.0, 200.0), (-128.0, -128.0), (128.0, 128.0), (0.0, 0.0)
    samples = torch.tensor([
        [[green, green], [cyan, cyan]],  # photo 1: sample 1 all green, sample 2 all cyan
        [[red, black], [red, black]],    # photo 2: both samples red, black
    ]).permute(0, 1, 3, 2)[..., None, :]  # (B=2, n=2, 2, 1, W=2)
    truth = torch.cat([uint8((0, 255, 255), (51, 255, 102)), uint8((255, 51, 0), (0, 0, 153))])
    # Photo 1, squared errors in [0, 1] units (51/255 = 0.2, 102/255 = 0.4):
    #   sample 1: pixel A (0, 0, 1),  pixel B (0.04, 0, 0.16)
    #   sample 2: pixel A (0, 0, 0),  pixel B (0.04, 0, 0.36)
    #   minimum per value: A (0, 0, 0), B (0.04, 0, 0.16) → mean 0.2 / 6 → 100 · sqrt(1/30) = 18.257
    #   (the best whole sample, sample 2, would give 100 · sqrt(0.4 / 6) = 25.820).
    # Photo 2: A (0, 0.04, 0), B (0, 0, 0.36) for both samples → 100 · sqrt(0.4 / 6) = 25.820.
    expected = torch.tensor([100 * math.sqrt(1 / 30), 100 * math.sqrt(0.4 / 6)], dtype=torch.float64)
    assert torch.allclose(paper_best_of_n_error(samples, lightness, truth), expected, atol=1e-9)
    assert torch.allclose(paper_best_of_n_error(samples, lightness, truth, scale=1.0), expected / 100, atol=1e-11)


def test_paper_error_truncates_like_the_saved_png_files():
    # White, L=100, ab=0, converts to (1, 0.999995, 1), which plt.imsave stored as (255, 254, 255).
    white = paper_best_of_n_error(torch.zeros(1, 1, 2, 1, 1), torch.full((1, 1, 1, 1), 100.0),
                                  uint8((255, 255, 255)))
    assert torch.allclose(white, torch.tensor([100 / (255 * math.sqrt(3))], dtype=torch.float64), atol=1e-9)


def test_paper_error_upsamples_the_samples_ab_to_the_photo():
    generator = torch.Generator().manual_seed(0)
    lightness = 30 + 40 * torch.rand(2, 1, 4, 6, generator=generator)
    truth = torch.randint(0, 256, (2, 3, 4, 6), generator=generator, dtype=torch.uint8)
    constant = 40 * torch.randn(2, 3, 2, 1, 1, generator=generator)
    assert torch.allclose(paper_best_of_n_error(constant, lightness, truth),
                          paper_best_of_n_error(constant.expand(-1, -1, -1, 4, 6), lightness, truth))
    low = 40 * torch.randn(2, 3, 2, 2, 3, generator=generator)
    more = torch.cat([low, low + 30], dim=1)   # more samples can only lower a per-value minimum
    assert (paper_best_of_n_error(more, lightness, truth) <= paper_best_of_n_error(low, lightness, truth)).all()


def test_colourfulness_of_a_grey_image_is_zero():
    grey = torch.randint(0, 256, (2, 1, 5, 7), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    assert torch.equal(colourfulness(grey.expand(-1, 3, -1, -1)), torch.zeros(2, dtype=torch.float64))


def test_colourfulness_of_a_two_by_two_image_by_hand():
    image = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    image[0, :, 0, 0] = torch.tensor([12, 0, 0])
    # rg = (12, 0, 0, 0): μ = 3, σ² = (81 + 3 · 9) / 4 = 27
    # yb = (6, 0, 0, 0):  μ = 1.5, σ² = (20.25 + 3 · 2.25) / 4 = 6.75
    expected = math.sqrt(27 + 6.75) + 0.3 * math.sqrt(9 + 2.25)   # 6.8157
    assert torch.allclose(colourfulness(image), torch.tensor([expected], dtype=torch.float64), atol=1e-12)


def test_a_more_saturated_image_is_more_colourful():
    generator = torch.Generator().manual_seed(0)
    photo = torch.randint(70, 180, (2, 3, 6, 6), generator=generator, dtype=torch.uint8)
    lab = rgb_to_lab(photo)
    saturated = lab_to_rgb(torch.cat([lab[:, :1], 1.5 * lab[:, 1:]], dim=1))
    assert (colourfulness(saturated) > colourfulness(photo) + 1).all()


def test_sample_metrics_reports_the_paper_error_and_colourfulness():
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(1, 3, 3, 3, generator=generator)
    image = (torch.nn.functional.interpolate(coarse, size=8, mode="bilinear") * 255).round().to(torch.uint8)
    lab = rgb_to_lab(image)
    truth = normalize_ab(downsample_ab(lab[:, 1:], 2))
    dataset = TensorImageDataset(image, torch.zeros(1, dtype=torch.int64))
    perfect = sample_metrics(TruthModel(truth), dataset, ab_downsample=2, n_samples=3)
    assert torch.allclose(perfect.sample_colourfulness, perfect.true_colourfulness)
    expected = paper_best_of_n_error((truth * 110).expand(3, -1, -1, -1)[None], lab[:, :1], image).float()
    assert torch.allclose(perfect.paper_error, expected)
    grey = paper_best_of_n_error(torch.zeros(1, 1, 2, 4, 4), lab[:, :1], image).float()
    assert 0 < perfect.paper_error.item() < grey.item() / 2   # upsampled block means: near, not at, the photo
    full = sample_metrics(TruthModel(normalize_ab(lab[:, 1:])), dataset, n_samples=1)
    assert full.paper_error.item() < 100 / 255   # only the Lab round trip and the truncation to 8 bits remain
    noisy = sample_metrics(TruthModel(truth, noise=0.3), dataset, ab_downsample=2, n_samples=3)
    assert noisy.paper_error.item() > perfect.paper_error.item()
    assert noisy.sample_colourfulness.item() > perfect.sample_colourfulness.item()
    assert torch.equal(noisy.true_colourfulness, perfect.true_colourfulness)


def test_sample_metrics_fields_have_one_value_per_photo():
    model = build_colorization_model("regressor", 16, n_levels=2).eval()
    photos = torch.randint(0, 256, (3, 3, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    metrics = sample_metrics(model, TensorImageDataset(photos, torch.zeros(3, dtype=torch.int64)), n_samples=2)
    for name in ("best_rmse", "grey_rmse", "diversity", "paper_error", "sample_colourfulness",
                 "true_colourfulness"):
        values = getattr(metrics, name)
        assert values.shape == (3,) and torch.isfinite(values).all(), name
