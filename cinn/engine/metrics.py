"""A run's metrics: the rows of ``metrics.csv`` (and TensorBoard) that the training loop writes every
``log_every`` steps, and what it sums between two rows."""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter

METRICS_NAME = "metrics.csv"
METRIC_COLUMNS = ["step", "train_bpd", "lr", "grad_norm", "images_per_s", "elapsed_s", "skipped_steps",
                  "eval_bpd"]


@dataclass
class StepResult:
    """One training step, as 0-d tensors on the training device (reading one waits for the device): its loss
    in bits/dim, the gradient norm before clipping, whether both were finite (else the step was skipped),
    and the number of images it trained on."""

    loss: Tensor
    grad_norm: Tensor
    finite: Tensor
    images: int


class MetricsWindow:
    """The steps since the last metrics row, summed on the device so that no step waits for it: the loss of the
    finite steps, their count and the skipped ones; :meth:`row` reads them once and starts a new window.

    Example:
        >>> window = MetricsWindow()
        >>> for loss in (3.0, float("nan"), 1.0):
        ...     value = torch.tensor(loss)
        ...     window.add(StepResult(value, torch.tensor(0.5), torch.isfinite(value), images=8))
        >>> row = window.row(learning_rate=1e-3, elapsed_s=2.0)
        >>> row["train_bpd"], row["skipped_steps"], row["grad_norm"]
        (2.0, 1, 0.5)
    """

    def __init__(self) -> None:
        self.skipped = 0
        self._start()

    def _start(self) -> None:
        self.sums: Tensor | None = None  # [loss of finite steps, finite steps, skipped steps]
        self.grad_norm: Tensor | None = None
        self.images, self.started = 0, time.monotonic()

    def add(self, result: StepResult) -> None:
        finite = result.finite.float()
        sums = torch.stack([torch.where(result.finite, result.loss.float(), 0.0), finite, 1 - finite])
        self.sums = sums if self.sums is None else self.sums + sums
        self.grad_norm, self.images = result.grad_norm, self.images + result.images

    def row(self, learning_rate: float, elapsed_s: float) -> dict[str, float]:
        """The row of the steps since the last one (one wait for the device): mean training bits/dim of the
        finite steps, the last gradient norm, images/s, and the steps skipped in the whole run so far."""
        now = time.monotonic()
        loss_sum, finite_steps, skipped, grad_norm = torch.cat([self.sums, self.grad_norm.reshape(1)]).tolist()
        self.skipped += round(skipped)
        row = {"train_bpd": loss_sum / finite_steps if finite_steps else math.nan, "lr": learning_rate,
               "grad_norm": grad_norm, "images_per_s": self.images / max(now - self.started, 1e-9),
               "elapsed_s": elapsed_s, "skipped_steps": self.skipped}
        self._start()
        return row


def earlier_rows(path: Path, last_step: int) -> list[dict[str, str]]:
    """The rows of the metrics file ``path`` up to ``last_step``, in its columns, to keep on resume. Rows that
    are not a step number and numbers (a damaged or hand-edited file) are dropped with one warning, and so is
    a file that is not CSV at all, since the file is rewritten from the rows kept; a missing file has none."""
    if not path.is_file():
        return []
    try:
        with open(path, newline="", errors="replace") as file:
            rows = [{key: row[key] for key in METRIC_COLUMNS if key in row} for row in csv.DictReader(file)]
    except csv.Error as error:
        print(f"warning: {path} could not be read as CSV ({error}); it is rewritten without its earlier rows")
        return []
    readable = [row for row in rows if is_metrics_row(row)]
    if len(readable) < len(rows):
        print(f"warning: {path}: {len(rows) - len(readable)} row(s) that are not a step number and numbers were "
              "dropped; the file is rewritten from the others")
    return [row for row in readable if int(row["step"]) <= last_step]


def is_metrics_row(row: dict[str, str | None]) -> bool:
    """Whether a row read from ``metrics.csv`` is one: a step number, then numbers or empty cells.

    Example:
        >>> is_metrics_row({"step": "10", "train_bpd": "3.5", "eval_bpd": ""}), is_metrics_row({"step": "x"})
        (True, False)
    """
    return str(row.get("step")).isdigit() and all(is_number(value) for value in row.values() if value)


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class MetricsWriter:
    """Metrics to ``metrics.csv`` (each row on disk as soon as it is written, so a running job can be
    watched) and TensorBoard. On resume, rows after the checkpoint's step are dropped (they belong to the
    interrupted part that is being redone). Does nothing when not ``enabled`` (processes other than the main)."""

    def __init__(self, run_dir: Path, start_step: int, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / METRICS_NAME
        kept = earlier_rows(self.path, start_step) if start_step > 0 else []
        self.file = open(self.path, "w", newline="")  # noqa: SIM115 (kept open for the run)
        self.csv = csv.DictWriter(self.file, fieldnames=METRIC_COLUMNS)
        self.csv.writeheader()
        self.csv.writerows(kept)
        self.tensorboard = SummaryWriter(run_dir / "tensorboard",
                                         purge_step=start_step + 1 if start_step else None)

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.csv.writerow({"step": step, **{k: f"{v:.6g}" for k, v in metrics.items()}})
        self.file.flush()
        for key, value in metrics.items():
            self.tensorboard.add_scalar(key, value, step)

    def flush(self) -> None:
        if self.enabled:
            self.file.flush()
            self.tensorboard.flush()

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            self.tensorboard.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the files, also when training failed (so TensorBoard's writer thread ends before anything else
        happens to the run directory)."""
        self.close()
