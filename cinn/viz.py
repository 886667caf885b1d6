"""Pictures: image grids, titled image tables and learning curves."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor
from torchvision.utils import save_image


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Let an :class:`OSError` of the writes in the block (a full disk, a file-size limit) name ``path`` when it
    names no file (image writers report the failed write alone).

    Example:
        >>> with writing("grid.png"):
        ...     raise OSError(28, "No space left on device")
        Traceback (most recent call last):
        OSError: [Errno 28] No space left on device: 'grid.png'
    """
    try:
        yield
    except OSError as error:
        if error.filename is not None or error.errno is None:
            raise
        raise OSError(error.errno, error.strerror, str(path)) from error


def save_grid(images: Tensor, path: str | Path, nrow: int = 8) -> Path:
    """Save images ``(N, C, H, W)`` with values in ``[0, 1]`` (clamped) as one PNG grid."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with writing(path):
        save_image(images.detach().float().clamp(0, 1).cpu(), path, nrow=nrow, padding=2, pad_value=1.0)
    return path


def save_image_table(images: Tensor, column_titles: list[str], path: str | Path,
                     row_titles: list[str] | None = None, cell_inches: float = 2.0) -> Path:
    """Save a table of images ``(rows, cols, 3, H, W)`` (uint8, or float in ``[0, 1]``) with a title
    over each column (and optionally beside each row) as one PNG.

    Example:
        >>> save_image_table(torch.rand(2, 3, 3, 32, 32), ["input", "truth", "sample"], "table.png")
        PosixPath('table.png')
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows, cols, _, height, width = images.shape
    pixels = images.detach().cpu()
    pixels = pixels.float() / 255 if pixels.dtype == torch.uint8 else pixels.float().clamp(0, 1)
    figure = Figure(figsize=(cell_inches * cols, cell_inches * rows * height / width + 0.4))
    axes = figure.subplots(rows, cols, squeeze=False)
    for row in range(rows):
        for col in range(cols):
            axis = axes[row][col]
            axis.imshow(pixels[row, col].permute(1, 2, 0).numpy())
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(column_titles[col], fontsize=9)
            if col == 0 and row_titles is not None:
                axis.set_ylabel(row_titles[row], fontsize=9)
    figure.tight_layout()
    with writing(path):
        figure.savefig(path, dpi=100)
    return path


def read_metrics(csv_path: str | Path) -> dict[str, list[float]]:
    """Columns of a metrics CSV as float lists (empty cells are skipped per column)."""
    columns: dict[str, list[float]] = {}
    steps: dict[str, list[float]] = {}
    with open(csv_path, newline="") as file:
        for row in csv.DictReader(file):
            for key, value in row.items():
                if key != "step" and value not in ("", None):
                    columns.setdefault(key, []).append(float(value))
                    steps.setdefault(key, []).append(float(row["step"]))
    return {**columns, **{f"{key}@step": value for key, value in steps.items()}}


def plot_learning_curve(csv_path: str | Path, png_path: str | Path, title: str = "") -> Path:
    """Plot training (and, when logged, evaluation) bits/dim against step from a metrics CSV."""
    metrics = read_metrics(csv_path)
    # A bare Figure (no pyplot): no GUI backend is touched, so this works headless and in notebooks alike.
    figure = Figure(figsize=(7, 4.2))
    axis = figure.subplots()
    for key, label in (("train_bpd", "train (running mean)"), ("eval_bpd", "held-out")):
        if key in metrics:
            axis.plot(metrics[f"{key}@step"], metrics[key], label=label, marker="o" if key == "eval_bpd" else None)
    axis.set_xlabel("step")
    axis.set_ylabel("bits / dim")
    values = sorted(value for value in metrics.get("train_bpd", []) if math.isfinite(value))  # NaN: all skipped
    if values:
        axis.set_ylim(values[0] - 0.1, values[int(0.9 * (len(values) - 1))] + 0.3)
    axis.grid(alpha=0.3)
    axis.legend()
    axis.set_title(title)
    figure.tight_layout()
    png_path = Path(png_path)
    with writing(png_path):
        figure.savefig(png_path, dpi=120)
    return png_path
