r"""Is a trained flow still invertible? Reconstruction error, log-det consistency, LU conditioning.

Training can push a flow towards numerical non-invertibility (exploding coupling scales, an LU 1x1
convolution with a diagonal entry ``|s| → 0``). :func:`check_invertibility` measures, on real data, in
the model's own dtype (float32 for trained models):

- reconstruction error ``|f⁻¹(f(x)) − x|``: the largest absolute error in each image, then its max
  and mean over images;
- log-det consistency: ``|log|det J_f(x)| + log|det J_{f⁻¹}(f(x))||``, which is 0 in exact arithmetic;
- the smallest ``|s|`` of every :class:`~cinn.blocks.InvertibleConv1x1LU` (``W``'s determinant is
  ``±Π s``, so a tiny ``|s|`` means a nearly singular ``W``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from cinn.blocks import InvertibleConv1x1LU
from cinn.models.flow import Condition, Flow

RECONSTRUCTION_TOLERANCE = 1e-3


class InvertibilityError(RuntimeError):
    """A trained model failed ``check``: it no longer inverts its own output within tolerance."""


@dataclass
class InvertibilityReport:
    """What :func:`check_invertibility` measured; ``passed`` compares the worst error with ``tolerance``."""

    images: int
    max_error: float
    mean_error: float
    max_log_det_gap: float
    lu_smallest_scales: dict[str, float] = field(default_factory=dict)
    tolerance: float = RECONSTRUCTION_TOLERANCE

    @property
    def passed(self) -> bool:
        return self.max_error <= self.tolerance

    def lines(self) -> list[str]:
        """The report as lines for a terminal."""
        lines = [f"reconstruction |f⁻¹(f(x)) − x| over {self.images} held-out images: max {self.max_error:.3g}, "
                 f"mean of per-image max {self.mean_error:.3g} (tolerance {self.tolerance:g})",
                 f"log-det consistency |log det J_f + log det J_f⁻¹|: max {self.max_log_det_gap:.3g} nats"]
        if self.lu_smallest_scales:
            worst = min(self.lu_smallest_scales, key=self.lu_smallest_scales.get)
            lines.append(f"LU 1x1 convolutions: {len(self.lu_smallest_scales)}, smallest |s| "
                         f"{self.lu_smallest_scales[worst]:.3g} (in {worst})")
            lines += [f"  {name}: {value:.3g}" for name, value in self.lu_smallest_scales.items()]
        return lines


@torch.no_grad()
def check_invertibility(model: Flow, batches: Iterable[tuple[Tensor, Condition]],
                        tolerance: float = RECONSTRUCTION_TOLERANCE) -> InvertibilityReport:
    """Run ``x → f(x) → f⁻¹(f(x))`` on every batch ``(x, c)`` and report (see the module docstring).

    Example:
        >>> from cinn.models import build_glow
        >>> model = build_glow((1, 8, 8), n_levels=2, steps_per_level=2, hidden_channels=8)
        >>> report = check_invertibility(model.eval(), [(torch.rand(4, 1, 8, 8), None)])
        >>> report.images, report.passed, report.max_error < 1e-5, len(report.lu_smallest_scales)
        (4, True, True, 4)
    """
    per_image_errors, log_det_gaps = [], []
    for x, c in batches:
        latents, log_det = model.transform(x, c)
        reconstruction, reverse_log_det = model.inverse(latents, c)
        per_image_errors.append((reconstruction - x).abs().flatten(1).amax(1).double().cpu())
        log_det_gaps.append((log_det + reverse_log_det).abs().double().cpu())
    if not per_image_errors:
        raise ValueError("check_invertibility needs at least one batch of data")
    errors, gaps = torch.cat(per_image_errors), torch.cat(log_det_gaps)
    scales = {name: module.log_s.detach().exp().min().item() for name, module in model.named_modules()
              if isinstance(module, InvertibleConv1x1LU)}
    return InvertibilityReport(len(errors), errors.max().item(), errors.mean().item(), gaps.max().item(), scales,
                               tolerance)


def check_trained(model: Flow, batches: Iterable[tuple[Tensor, Condition]], checkpoint: str | Path) -> None:
    """Print :func:`check_invertibility` of ``model`` on ``batches`` and raise :class:`InvertibilityError` when
    its reconstruction error exceeds the tolerance (the verdict of the tasks' ``check`` command)."""
    report = check_invertibility(model, batches)
    for line in report.lines():
        print(line)
    if not report.passed:
        raise InvertibilityError(f"{checkpoint} failed the invertibility check: the reconstruction error "
                                 f"{report.max_error:.3g} exceeds {report.tolerance:g}; the model is numerically "
                                 "unstable (look at the smallest |s| above, lower the learning rate or clamp "
                                 "harder, and retrain or go back to an earlier checkpoint)")
    print(f"check passed: {checkpoint} inverts its own output within {report.tolerance:g}")
