"""What varies between training runs besides the loop itself, plugged into :meth:`~cinn.engine.Trainer.fit`
as hooks: sample figures, the run directory's start, your own extra logs.

A hook sees the run (:class:`TrainingRun`, read only) at three moments: ``on_start`` (before the first step,
after a resume has been restored), ``on_step`` (after every step, with its
:class:`~cinn.engine.metrics.StepResult`; the values it returns join the next metrics row) and ``on_end``. A
hook never writes the trainer's state: evaluation, keeping the best weights and the metrics rows are the loop's
own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from torch import Tensor, nn

from cinn.engine.metrics import StepResult
from cinn.engine.train_config import TrainConfig
from cinn.viz import save_grid


class TrainingRun(Protocol):
    """What a hook may read of the run: its config, the steps done, where it writes, whether this is the main
    process, and the model that evaluations and samples use (the EMA's weights when the run keeps them)."""

    config: TrainConfig
    step: int
    run_dir: Path
    task: str

    @property
    def is_main(self) -> bool: ...

    @property
    def eval_model(self) -> nn.Module: ...


class Hook:
    """Base class of the trainer's hooks; every method does nothing unless overridden."""

    def on_start(self, run: TrainingRun) -> None:
        """Before the first step of this session (after a resume is restored)."""

    def on_step(self, run: TrainingRun, result: StepResult) -> dict[str, float] | None:
        """After each step (``run.step`` is the number of steps done); values returned join the next metrics
        row (a column of ``metrics.csv`` must exist for them to be written there; TensorBoard takes any)."""
        return None

    def on_end(self, run: TrainingRun) -> None:
        """When training ends (steps done, time budget reached or interrupted)."""


class Samples(Hook):
    """Every ``every`` steps and at the end, ``sample(model) -> images (N, C, H, W)`` in [0, 1] saved as
    the grid ``samples/step_<7-digit step>.png`` of the run directory.

    Example:
        >>> import tempfile, torch
        >>> from types import SimpleNamespace
        >>> run = SimpleNamespace(step=4, run_dir=Path(tempfile.mkdtemp()), is_main=True, eval_model=nn.Identity())
        >>> Samples(lambda model: torch.rand(4, 1, 8, 8), every=2).on_step(run, None)
        >>> sorted(path.name for path in (run.run_dir / "samples").iterdir())
        ['step_0000004.png']
    """

    def __init__(self, sample: Callable[[nn.Module], Tensor], every: int):
        self.sample, self.every = sample, every

    def on_step(self, run: TrainingRun, result: StepResult) -> None:
        if self.every and run.step % self.every == 0:
            self.save(run)

    def on_end(self, run: TrainingRun) -> None:
        self.save(run)

    def save(self, run: TrainingRun) -> None:
        if not run.is_main:
            return
        model = run.eval_model
        images = self.sample(model)
        model.train()
        save_grid(images, run.run_dir / "samples" / f"step_{run.step:07d}.png",
                  nrow=math.ceil(math.sqrt(len(images))))
