r"""Sample quality of a colourisation model: best-of-n errors (ours in ab, and the cINN paper's in RGB),
the grey baseline's RMSE, diversity, and colourfulness (Hasler & Süsstrunk 2003)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from skimage import color
from torch import Tensor
from torch.utils.data import Dataset

from cinn.color import denormalize_ab, lab_to_rgb, normalize_lightness, rgb_to_lab
from cinn.colorization.colorizer import ColorModel
from cinn.colorization.objective import downsample_ab
from cinn.data import collate_images
from cinn.data.tagged import tag_groups


def paper_best_of_n_error(samples_ab: Tensor, lightness: Tensor, true_rgb: Tensor, *,
                          scale: float = 100.0) -> Tensor:
    r"""The best-of-n error of the cINN paper (Ardizzone et al. 2019: cINN 3.53, VAE-MDN 4.06, CNN 6.77,
    cGAN 9.75 for n = 8 on 5120 ImageNet validation photos), computed as the official code computes it,
    from our Lab tensors.

    **What the official code does** (github.com/vislearn/conditional_INNs, commit 19e316c, folder
    ``colorization_cINN/``). The error is *not* taken on ab: it compares RGB images written to disk.

    * ``eval.py`` 320–373 (``colorize_test_set``) colourises each validation photo: 9 samples at
      temperature 1 (``temperatures.append(1.0)`` line 339, ``t * randn`` line 353), turned into RGB by
      ``data.norm_lab_to_rgb(x_l, ab_gen, filt=JBF_FILTER)`` (line 368, ``JBF_FILTER = True`` line 43)
      and saved by ``show_imgs`` (lines 63–90) as files ``00`` (truth), ``01`` (grey), ``02``–``10``
      (samples) with ``plt.imsave`` (line 90, PNG), one folder per photo (read back below as
      ``images/val_set/%.6i/``).
    * ``data.py`` 27–59 (``norm_lab_to_rgb``): the 64×64 ab (``config.py`` 6–7: L at 256×256, ab at
      1/4 of it) is upsampled to L's size — joint bilateral filter with ``filt=True`` (lines 38–43,
      ``jbf.upsample(L, ab, s_x=6, s_l=0.10)``), bilinear otherwise (line 45) —, joined with the
      full-resolution L, un-normalised to Lab units (lines 49–50, ``offsets``/``scales`` of lines
      19–20, so the network's normalisation plays no part), clamped to ``L ∈ [0, 100]``,
      ``ab ∈ [−128, 128]`` (lines 52–53) and converted by ``skimage.color.lab2rgb`` (line 58; float in
      ``[0, 1]``). ``plt.imsave`` stores it as 8-bit PNG by *truncation*, ``⌊255·x⌋``.
    * ``compare_methods.py`` 51–63 (``err_individual_image``) reads the truth — the 256×256 centre
      crop of the original photo (``gt_img``, line 32; ``data.py`` 97–98), not a Lab round trip and
      not downsampled — and the first 8 samples (files ``02``–``09``, line 20) with ``plt.imread``
      (PNG → float ``k/255``), keeps RGB (``[..., :3]``) and computes, line 60,
      ``err = np.sqrt(np.mean(np.min((imgs - gt_im)**2, axis=0)))``; lines 65–73 average ``err``
      over the 5120 photos (``bootstrap_mean``, lines 9–16: the mean, ± the std of 256 bootstrap
      means). Best-of-1 (line 61) is the same with the first sample only.

    So for photo ``i`` with RGB images ``x^(s) ∈ [0, 1]^{3×H×W}`` (samples) and ``g`` (truth):

        ``e_i = scale · sqrt( 1/(3HW) · Σ_{c,y,x} min_{s=1..n} (x^(s)_{cyx} − g_{cyx})² )``

    — the minimum over samples is taken per pixel *and* channel, before the mean and the square root
    (an oracle that may pick a different sample for every value; always ≤ the per-image best). The
    paper reports ``mean_i e_i``.

    **Units.** The script's ``err`` is in ``[0, 1]`` RGB units (so ≤ 1), yet its result comments
    (lines 79–92: "cinn 3.53 0.04", ...) and the paper show 3.53; we infer that they are
    ``100 · err`` (percent of the 8-bit range), hence ``scale = 100``; ``scale = 1`` gives what the
    script prints. This factor is written nowhere in the code: it is the likely reading, not a certain
    one. The variance comments (lines 94–96) are printed unscaled, cINN 0.00352 in ``[0, 1]²`` units,
    and a single sample's squared error is on average at least that per-pixel variance across samples:
    with 100 the best-of-1 error, 9.52 → ``0.0952² = 0.0091``, is above it; with 255,
    ``(9.52/255)² = 0.0014`` would be 2.5 times below it, possible only for very unequal per-photo
    errors (the mean of their roots is below the root of their mean).

    **Here**: sample ``ab`` (Lab units, any lower resolution) is upsampled bilinearly
    (``align_corners=False``) to the photo's size — the code's ``filt=False`` path (``data.py`` 45);
    the paper's table used the joint bilateral filter, which we do not reproduce — joined with the
    photo's ``L``, clamped, converted by scikit-image (in float64) and truncated to ``⌊255·x⌋/255``
    as the PNG files were; the truth is ``true_rgb / 255``. Even a perfect low-resolution ab scores
    above 0 (upsampling, truncation, the Lab round trip), as it did in the paper.

    Shapes: ``samples_ab (B, n, 2, h, w)``, ``lightness (B, 1, H, W)`` (``L`` in ``[0, 100]``),
    ``true_rgb`` uint8 ``(B, 3, H, W)`` → float64 ``(B,)``.

    Example:
        >>> black = torch.zeros(1, 8, 2, 1, 1), torch.zeros(1, 1, 2, 2)   # 8 samples, L = 0, ab = 0
        >>> paper_best_of_n_error(*black, torch.full((1, 3, 2, 2), 51, dtype=torch.uint8))   # 51/255 = 0.2
        tensor([20.], dtype=torch.float64)
    """
    if samples_ab.dim() != 5 or samples_ab.shape[2] != 2:
        raise ValueError(f"samples_ab must be (B, n, 2, h, w), got {tuple(samples_ab.shape)}")
    batch, n = samples_ab.shape[:2]
    size = lightness.shape[-2:]
    ab = F.interpolate(samples_ab.flatten(0, 1).double().cpu(), size=size, mode="bilinear", align_corners=False)
    lab = torch.cat([lightness.double().cpu().repeat_interleave(n, 0), ab], dim=1)
    samples = _as_saved_png(lab).unflatten(0, (batch, n))
    truth = true_rgb.cpu().double()[:, None] / 255
    return scale * (samples - truth).pow(2).amin(1).flatten(1).mean(1).sqrt()


def _as_saved_png(lab: Tensor) -> Tensor:
    """``(B, 3, H, W)`` Lab → float64 RGB as the official scripts stored and re-read it: Lab clamped
    to ``L ∈ [0, 100]``, ``ab ∈ [−128, 128]``, scikit-image's ``lab2rgb`` (clipped to ``[0, 1]``), then
    ``⌊255·x⌋ / 255`` (``plt.imsave`` truncates; ``plt.imread`` divides by 255)."""
    lab = torch.cat([lab[:, :1].clamp(0.0, 100.0), lab[:, 1:].clamp(-128.0, 128.0)], dim=1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Conversion from CIE-LAB", category=UserWarning)
        rgb = np.stack([color.lab2rgb(image, channel_axis=0) for image in lab.numpy()])
    return torch.from_numpy(np.floor(rgb * 255) / 255)


def colourfulness(rgb_uint8: Tensor) -> Tensor:
    r"""Colourfulness of Hasler & Süsstrunk (2003), "Measuring colourfulness in natural images", per image.

    On sRGB values ``R, G, B ∈ [0, 255]``: ``rg = R − G``, ``yb = ½(R + G) − B`` per pixel, then

        ``M = sqrt(σ_rg² + σ_yb²) + 0.3 · sqrt(μ_rg² + μ_yb²)``

    with means ``μ`` and (population) standard deviations ``σ`` over the pixels of the image.
    ``M = 0`` for a grey image; on the authors' scale about 15 is "slightly", 59 "quite" and 109
    "extremely colourful".

    Shapes: uint8 ``(B, 3, H, W)`` → float64 ``(B,)``.

    Example:
        >>> red = torch.tensor([255, 0, 0], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 2, 2)
        >>> colourfulness(red)   # σ = 0; μ_rg = 255, μ_yb = 127.5: 0.3 · 285.1
        tensor([85.5296], dtype=torch.float64)
    """
    red, green, blue = rgb_uint8.to(torch.float64).flatten(2).unbind(1)
    rg, yb = red - green, 0.5 * (red + green) - blue
    spread = (rg.var(1, correction=0) + yb.var(1, correction=0)).sqrt()
    return spread + 0.3 * (rg.mean(1).square() + yb.mean(1).square()).sqrt()


@dataclass
class SampleMetrics:
    """Per-photo sample quality.

    * ``best_rmse``: ``min_s`` of the RMSE of ab (Lab units) at the model's ab resolution — our metric.
    * ``grey_rmse``: RMSE of the ``ab = 0`` (grey) prediction, Lab units.
    * ``diversity``: per-pixel standard deviation of ab across samples, Lab units.
    * ``paper_error``: the cINN paper's best-of-n error (:func:`paper_best_of_n_error`, percent of the
      RGB range at the photo's resolution; 3.53 for the paper's cINN on ImageNet at n = 8).
    * ``sample_colourfulness``, ``true_colourfulness``: :func:`colourfulness` of the samples (mean over
      the ``n``) and of the truth, both at the model's ab resolution (see :func:`sample_metrics`).

    Shapes: each field ``(N,)`` for ``N`` photos.
    """

    best_rmse: Tensor
    grey_rmse: Tensor
    diversity: Tensor
    paper_error: Tensor
    sample_colourfulness: Tensor
    true_colourfulness: Tensor


@torch.no_grad()
def sample_metrics(model: ColorModel, dataset: Dataset, *, ab_downsample: int = 1, n_samples: int = 8,
                   temperature: float = 1.0, seed: int = 0, device: torch.device | str = "cpu") -> SampleMetrics:
    r"""Colourise every photo of ``dataset`` ``n_samples`` times and compare with its true ab, both at
    the model's ab resolution (1/``ab_downsample`` of the photo's).

    For photo ``i`` with true ``ab`` (``M`` values) and samples ``ab^(s)``:
    ``RMSE_s = sqrt(mean((ab^(s) − ab)²))``; ``best_rmse`` is ``min_s RMSE_s`` (the best whole sample);
    grey is ``sqrt(mean(ab²))``; diversity is the mean over pixels and both channels of the standard
    deviation across samples (0 for a deterministic model).

    ``paper_error`` is :func:`paper_best_of_n_error` of the samples against the photo itself (RGB, at
    the photo's resolution, samples' ab upsampled bilinearly and joined with the photo's ``L``).

    Colourfulness needs RGB at one resolution. We take it at the model's ab resolution, where the
    samples live, from one Lab image: ``L`` averaged over the same ``ab_downsample²`` blocks as the
    true ab, joined with each sample's ab (``sample_colourfulness``, mean over samples) or with the
    true ab (``true_colourfulness``), converted by :func:`cinn.color.lab_to_rgb`. Samples and truth
    thus differ only in ab — neither upsampling nor the full-resolution L's texture enters — and a
    perfect model scores exactly the truth's colourfulness.

    Example:
        >>> from cinn.colorization import build_colorization_model
        >>> model = build_colorization_model("regressor", 16, n_levels=2).eval()
        >>> photos = [(torch.randint(0, 256, (3, 16, 24), dtype=torch.uint8), 0)] * 3
        >>> metrics = sample_metrics(model, photos, n_samples=2)
        >>> metrics.diversity, metrics.paper_error.shape
        (tensor([0., 0., 0.]), torch.Size([3]))
    """
    device = torch.device(device)
    generator = torch.Generator(device).manual_seed(seed)
    rows: list[tuple[Tensor, ...]] = []
    for index in range(len(dataset)):
        image, _ = collate_images([dataset[index]])
        lab = rgb_to_lab(image.to(device))
        truth, lightness = downsample_ab(lab[:, 1:], ab_downsample), normalize_lightness(lab[:, :1])
        samples = denormalize_ab(model.sample(n_samples, lightness.expand(n_samples, -1, -1, -1), temperature,
                                              generator, spatial_size=truth.shape[-2:]))
        rmse = (samples - truth).pow(2).flatten(1).mean(1).sqrt()
        diversity = samples.std(0, unbiased=True).mean() if n_samples > 1 else samples.new_zeros(())
        coarse_lightness = downsample_ab(lab[:, :1], ab_downsample)  # the same block means as the true ab
        sample_rgb = lab_to_rgb(torch.cat([coarse_lightness.expand(n_samples, -1, -1, -1), samples], dim=1))
        true_rgb = lab_to_rgb(torch.cat([coarse_lightness, truth], dim=1))
        rows.append((rmse.min(), truth.pow(2).mean().sqrt(), diversity,
                     paper_best_of_n_error(samples[None], lab[:, :1], image)[0].to(rmse),
                     colourfulness(sample_rgb).mean().to(rmse), colourfulness(true_rgb)[0].to(rmse)))
    return SampleMetrics(*(torch.stack(column).cpu() for column in zip(*rows, strict=True)))


def rmse_summary(values: Tensor) -> str:
    """``mean ± standard error`` of per-photo values, for printing; of one photo, its value alone (one value has
    no spread, and its ``std`` would print ``± nan``).

    Example:
        >>> rmse_summary(torch.tensor([1.0, 2.0, 3.0]))
        '2.00 ± 0.58'
        >>> rmse_summary(torch.tensor([4.0]))
        '4.00'
    """
    if len(values) < 2:
        return f"{values.mean().item():.2f}"
    return f"{values.mean().item():.2f} ± {values.std().item() / math.sqrt(len(values)):.2f}"


def tag_table(tags: list[str], bits_per_dim: Tensor, metrics: SampleMetrics) -> list[str]:
    """Per tag and over all photos: each measure's ``mean ± standard error`` (:func:`rmse_summary`) over the
    photos with that tag, as the lines of a Markdown table; ``tags[i]``, ``bits_per_dim[i]`` and the metrics'
    row ``i`` are photo ``i``'s. An empty tag is shown as ``(none)``.

    Example:
        >>> ones = torch.ones(3)
        >>> lines = tag_table(["people", "animals", "people"], torch.tensor([2.0, 3.0, 4.0]),
        ...                   SampleMetrics(ones, ones, ones, ones, ones, 2 * ones))
        >>> print(lines[2])
        | animals | 1 | 3.00 | 1.00 | 1.00 | 1.00 | 1.00 | 1.00 | 2.00 |
        >>> print(lines[4][:39])
        | all | 3 | 3.00 ± 0.58 | 1.00 ± 0.00 |
    """
    columns = [bits_per_dim.float(), metrics.best_rmse, metrics.grey_rmse, metrics.paper_error, metrics.diversity,
               metrics.sample_colourfulness, metrics.true_colourfulness]
    lines = ["| tag | photos | NLL (bits per ab dim) | best-of-n RMSE | grey RMSE | the paper's best-of-n error | "
             "diversity | colourfulness, samples | colourfulness, truth |", "|---" * 9 + "|"]
    groups = {**tag_groups(tags), "all": list(range(len(tags)))}
    for tag, indices in groups.items():
        chosen = torch.tensor(indices)
        cells = " | ".join(rmse_summary(column[chosen]) for column in columns)
        lines.append(f"| {tag or '(none)'} | {len(indices)} | {cells} |")
    return lines
