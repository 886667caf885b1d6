"""What a training run does besides optimising, plugged into :meth:`~cinn.engine.Trainer.fit` as hooks:
metrics to ``metrics.csv`` and TensorBoard, held-out evaluation, sample figures.

A hook sees the trainer at four moments: ``on_start`` (before the first step, after a resume has been
restored), ``on_step`` (after every step, with its :class:`StepResult`), ``on_checkpoint`` (after each
checkpoint is written) and ``on_end``. Evaluation and sampling run on the main process only, with the
model used for evaluation (the EMA's weights when the run keeps them).
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.utils.tensorboard import SummaryWriter

from cinn.viz import plot_learning_curve, save_grid

if TYPE_CHECKING:
    from cinn.engine.train_config import TrainConfig
    from cinn.engine.trainer import Trainer

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


class Hook:
    """Base class of the trainer's hooks; every method does nothing unless overridden."""

    def on_start(self, trainer: Trainer) -> None:
        """Before the first step of this session (after a resume is restored)."""

    def on_step(self, trainer: Trainer, result: StepResult) -> None:
        """After each step; ``trainer.step`` is the number of steps done."""

    def on_checkpoint(self, trainer: Trainer) -> None:
        """After each checkpoint written."""

    def on_end(self, trainer: Trainer) -> None:
        """When training ends (steps done, time budget reached or interrupted)."""


class Evaluation(Hook):
    """Every ``every`` steps, ``evaluate(model) -> bits/dim`` on held-out data, reported as ``eval_bpd`` in
    the next metrics row."""

    def __init__(self, evaluate: Callable[[nn.Module], float], every: int):
        self.evaluate, self.every = evaluate, every

    def on_step(self, trainer: Trainer, result: StepResult) -> None:
        if self.every and trainer.step % self.every == 0 and trainer.is_main:
            value = self.evaluate(trainer.eval_model)
            trainer.pending_metrics["eval_bpd"] = value
            trainer.record_evaluation(value)
            trainer.model.train()


class Samples(Hook):
    """Every ``every`` steps and at the end, ``sample(model) -> images (N, C, H, W)`` in [0, 1] saved as
    the grid ``samples/step_<7-digit step>.png`` of the run directory."""

    def __init__(self, sample: Callable[[nn.Module], Tensor], every: int):
        self.sample, self.every = sample, every

    def on_step(self, trainer: Trainer, result: StepResult) -> None:
        if self.every and trainer.step % self.every == 0:
            self.save(trainer)

    def on_end(self, trainer: Trainer) -> None:
        self.save(trainer)

    def save(self, trainer: Trainer) -> None:
        if not trainer.is_main:
            return
        images = self.sample(trainer.eval_model)
        trainer.model.train()
        save_grid(images, trainer.run_dir / "samples" / f"step_{trainer.step:07d}.png",
                  nrow=math.ceil(math.sqrt(len(images))))


class MetricsLog(Hook):
    """Every ``every`` steps (and at the last), a row of ``metrics.csv`` and TensorBoard scalars: the mean
    training bits/dim over the steps since the last row, the learning rate, the gradient norm, images/s,
    elapsed training time, skipped steps, and what other hooks left in ``trainer.pending_metrics``. At the
    end, ``learning_curve.png``."""

    def __init__(self, every: int):
        self.every = every
        self.last: dict[str, float] = {}

    def on_start(self, trainer: Trainer) -> None:
        self.writer = MetricsWriter(trainer.run_dir, trainer.step, enabled=trainer.is_main)
        self.sums: Tensor | None = None  # on the device: [loss of finite steps, finite steps, skipped steps]
        self.images, self.window_start, self.skipped = 0, time.monotonic(), 0

    def on_step(self, trainer: Trainer, result: StepResult) -> None:
        finite = result.finite.float()
        step_sums = torch.stack([torch.where(result.finite, result.loss.float(), 0.0), finite, 1 - finite])
        self.sums = step_sums if self.sums is None else self.sums + step_sums
        self.images += result.images
        if trainer.step % self.every and trainer.step != trainer.config.steps:
            return
        now = time.monotonic()
        # the one wait for the device per row
        loss_sum, finite_steps, skipped, grad_norm = torch.cat([self.sums, result.grad_norm.reshape(1)]).tolist()
        self.skipped += round(skipped)
        self.last = {"train_bpd": loss_sum / finite_steps if finite_steps else math.nan,
                     "lr": trainer.learning_rate, "grad_norm": grad_norm,
                     "images_per_s": self.images / max(now - self.window_start, 1e-9),
                     "elapsed_s": trainer.elapsed_seconds, "skipped_steps": self.skipped,
                     **trainer.pending_metrics}
        trainer.pending_metrics.clear()
        self.writer.write(trainer.step, self.last)
        self.sums, self.images, self.window_start = None, 0, now

    def on_checkpoint(self, trainer: Trainer) -> None:
        self.writer.flush()

    def on_end(self, trainer: Trainer) -> None:
        self.writer.close()
        path = trainer.run_dir / METRICS_NAME
        if trainer.is_main and path.exists():
            plot_learning_curve(path, trainer.run_dir / "learning_curve.png",
                                title=f"{trainer.task}: {trainer.run_dir.name}")


def standard_hooks(config: TrainConfig, *, evaluate: Callable[[nn.Module], float] | None = None,
                   sample: Callable[[nn.Module], Tensor] | None = None) -> list[Hook]:
    """The hooks of a task's run as its ``train`` config asks: evaluation every ``eval_every`` steps, the
    metrics log every ``log_every`` steps and sample figures every ``sample_every`` steps.

    Example:
        >>> from cinn.engine import TrainConfig
        >>> [type(hook).__name__ for hook in standard_hooks(TrainConfig(), sample=lambda model: None)]
        ['MetricsLog', 'Samples']
    """
    hooks: Sequence[Hook | None] = (
        Evaluation(evaluate, config.eval_every) if evaluate is not None and config.eval_every else None,
        MetricsLog(config.log_every),
        Samples(sample, config.sample_every) if sample is not None else None)
    return [hook for hook in hooks if hook is not None]


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
    """Whether a row read from ``metrics.csv`` is one: a step number, then numbers or empty cells."""
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
    interrupted part that is being redone)."""

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
