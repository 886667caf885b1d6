"""The one training loop every task uses. It knows a model only through :class:`DensityModel`:
``model(x, c) = log p(x | c)``."""

from __future__ import annotations

import copy
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset

from cinn.data import collate_images
from cinn.engine.allocator import retain_freed_memory
from cinn.engine.checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint, save_checkpoint
from cinn.engine.distributed import ProcessGroup
from cinn.engine.hooks import Hook
from cinn.engine.metrics import METRICS_NAME, MetricsWindow, MetricsWriter, StepResult
from cinn.engine.model_support import model_support
from cinn.engine.objective import Objective
from cinn.engine.schedule import BatchSchedule, learning_rate_factor, step_seed
from cinn.engine.train_config import TrainConfig, build_optimizer
from cinn.engine.warm_start import parameter_groups, warm_start
from cinn.progress import Progress
from cinn.viz import plot_learning_curve

STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


class DensityModel(Protocol):
    """What the engine trains: a module whose call ``model(x, c)`` is ``log p(x | c)`` in nats, shape
    ``(B,)`` — a :class:`~cinn.models.Flow`, a :class:`~cinn.models.GaussianRegressor`, or your own."""

    def __call__(self, x: Tensor, c: Any) -> Tensor: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...

    def to(self, *args: Any, **kwargs: Any) -> Any: ...


class NonFiniteTrainingError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient."""


class NonFiniteSteps:
    """Steps skipped as non-finite, counted on the device so that no step waits for it: how many since the
    last :meth:`read`, the longest run of consecutive ones, and the last one's number.

    Example:
        >>> counts = NonFiniteSteps(torch.device("cpu"))
        >>> for step, finite in enumerate([True, False, False, True, False]):
        ...     counts.count(torch.tensor(finite), step)
        >>> counts.read()
        (3, 2, 4)
        >>> counts.read()  # nothing new; the run that ended the last window goes on
        (0, 1, 4)
    """

    def __init__(self, device: torch.device):
        self.state = torch.tensor([0, 0, 0, -1], device=device)  # skipped, current run, longest run, last

    def count(self, finite: Tensor, step: int) -> None:
        bad = (~finite).long()
        skipped, run, longest, last = self.state.unbind()
        run = (run + 1) * bad
        self.state = torch.stack([skipped + bad, run, torch.maximum(longest, run),
                                  torch.where(finite, last, step)])

    def read(self) -> tuple[int, int, int]:
        """``(skipped, longest run, last skipped step)`` since the last read; the current run carries on."""
        skipped, run, longest, last = self.state.tolist()
        self.state = torch.tensor([0, run, run, last], device=self.state.device)
        return skipped, longest, last


class Trainer:
    """Maximum-likelihood training of a :class:`DensityModel`, with everything a run needs.

    A run directory holds ``checkpoint.pt`` (model, EMA, optimiser, scheduler, step, RNG states, the
    task's full config and ``model_info``: the model spec and data conventions that let
    :func:`cinn.load` rebuild the model from the file alone), ``metrics.csv`` with TensorBoard logs and
    ``learning_curve.png``; ``hooks`` add the rest (sample figures; see :mod:`cinn.engine.hooks`). Every
    ``eval_every`` steps ``evaluate(model)`` gives the held-out bits/dim (with ``train.keep=best`` the best
    evaluation's weights are kept). Each step's randomness (batch order, dequantisation noise) is a pure
    function of ``(seed, step)``, so ``fit(resume=True)`` after a kill continues exactly as an uninterrupted
    run would. Ctrl-C, SIGTERM and SIGHUP finish the current step, write a checkpoint and end the run cleanly.
    Under ``torchrun`` every rank prepares the same global batch and trains on its slice through
    DistributedDataParallel; rank 0 writes all files. What a flow needs beyond that (its memory layout,
    ``train.backprop=inversion``) is chosen before the loop (:mod:`cinn.engine.model_support`); the model
    itself is not changed.

    Example:
        >>> import tempfile
        >>> from cinn import build_glow
        >>> from cinn.data import TensorImageDataset
        >>> from cinn.engine import DequantizedImages
        >>> images = torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8)
        >>> data = TensorImageDataset(images, torch.zeros(32, dtype=torch.int64))
        >>> model = build_glow((1, 8, 8), n_levels=1, steps_per_level=1, hidden_channels=8)
        >>> config = TrainConfig(steps=2, batch_size=8, init_batch_size=16, warmup_steps=1, log_every=1)
        >>> trainer = Trainer(model, config, tempfile.mkdtemp(), data, DequantizedImages(n_bits=5),
        ...                   task="demo", task_config={}, progress=False)
        >>> sorted(trainer.fit())[:2]  # doctest: +ELLIPSIS
        layout ...
        ['elapsed_s', 'grad_norm']
    """

    def __init__(self, model: DensityModel, config: TrainConfig, run_dir: str | Path, train_set: Dataset,
                 objective: Objective, *, task: str, task_config: dict[str, Any],
                 model_info: dict[str, Any] | None = None, evaluate: Callable[[nn.Module], float] | None = None,
                 hooks: Sequence[Hook] = (), group: ProcessGroup | None = None, progress: bool = True):
        self.config = config
        self.group = group or ProcessGroup(device=torch.device("cpu"))
        self.device = self.group.device
        self.model = model.to(self.device)
        self.support = model_support(self.model)
        self.run_dir = Path(run_dir)
        self.train_set, self.objective, self.evaluate = train_set, objective, evaluate
        self.task, self.task_config, self.model_info = task, task_config, model_info or {}
        self.hooks = list(hooks)
        self.progress = progress and self.is_main
        if config.retain_freed_memory and self.device.type == "cpu":
            retain_freed_memory()
        if config.flush_denormals and self.device.type == "cpu":
            torch.set_flush_denormal(True)
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(parameter_groups(model, config.lr, config.lr_scale), config)
        self.ema: AveragedModel | None = None
        self.best: dict[str, Any] | None = None
        self.step = 0
        self.elapsed_before = 0.0
        self._session_start = time.monotonic()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: learning_rate_factor(step, config.warmup_steps, config.steps,
                                                              config.lr_decay, self._time_fraction()))
        self._stop_signal: str | None = None
        self.non_finite = NonFiniteSteps(self.device)
        self._skips_on_device = bool(self.optimizer.defaults.get("fused"))
        self._progress: Progress | None = None
        if self.device.type == "cuda":
            tf32 = use_tf32(config.tf32)
            if self.is_main:
                self._say(tf32)

    @property
    def is_main(self) -> bool:
        return self.group.is_main

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_NAME

    @property
    def eval_model(self) -> DensityModel:
        """The model used for evaluation and samples: the EMA weights when enabled."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def elapsed_seconds(self) -> float:
        """Training time of the whole run (all sessions) so far."""
        return self.elapsed_before + time.monotonic() - self._session_start

    @property
    def learning_rate(self) -> float:
        return self.scheduler.get_last_lr()[0]

    # ----------------------------------------------------------------------------------- loop
    def fit(self, resume: bool = False) -> dict[str, float]:
        """Train until ``config.steps`` (or ``max_minutes``, or a stop signal); return the last metrics row."""
        self.begin(resume)
        train_model, autocast = self._training_model(), self._autocast()
        for hook in self.hooks:  # first: a run directory's start replaces the files of the run it overwrites
            hook.on_start(self)
        window, metrics = MetricsWindow(), MetricsWriter(self.run_dir, self.step, enabled=self.is_main)
        row: dict[str, float] = {}
        pending: dict[str, float] = {}  # evaluations and hook values waiting for the next row
        with metrics, self._stop_on_signals(), self._progress_line() as progress:
            for images, labels in self._loader():
                result = self.train_step(train_model, autocast, images, labels)
                window.add(result)
                if self.evaluate is not None and self._due(self.config.eval_every) and self.is_main:
                    pending["eval_bpd"] = self.evaluate_and_keep_best()
                for hook in self.hooks:
                    pending.update(hook.on_step(self, result) or {})
                if self._due(self.config.log_every) or self.step == self.config.steps:
                    row, pending = {**window.row(self.learning_rate, self.elapsed_seconds), **pending}, {}
                    metrics.write(self.step, row)
                stop = self._stop_signal is not None or self._out_of_time()
                last = stop or self.step == self.config.steps
                if last or self._due(self.config.checkpoint_every) or self._due(self.config.log_every):
                    self._check_non_finite()
                progress.update(1, **({"bpd": f"{row['train_bpd']:.3f}"} if row else {}))
                if last or self._due(self.config.checkpoint_every):
                    self.save(final=last)
                    metrics.flush()
                if stop:
                    self._say(f"{self._stop_reason()} at step {self.step}; checkpoint written to "
                              f"{self.checkpoint_path}")
                    break
        for hook in self.hooks:
            hook.on_end(self)
        self.finish()
        return row

    def train_step(self, train_model: nn.Module, autocast: AbstractContextManager, images: Tensor,
                   labels: Tensor) -> StepResult:
        """One optimiser step on a batch. A step whose loss or gradient is not finite changes nothing (it is
        counted towards ``max_nonfinite_steps``; its result has ``finite`` false). The loss, gradient norm
        and that decision stay on the device: with Adam/AdamW (fused) nothing waits for the device within
        the step, and the counts are read every ``log_every`` steps (:meth:`_check_non_finite`); other
        optimisers cannot skip on the device and read the decision once per step."""
        generator = torch.Generator(self.device).manual_seed(step_seed(self.config.seed, self.step))
        x, c = self.objective.prepare(images.to(self.device, non_blocking=True),
                                      labels.to(self.device, non_blocking=True), generator)
        x, c = self._shard(x), self._shard(c)
        with autocast:
            log_prob = train_model(x, c)
        loss = self.objective.bits_per_dim(log_prob.float(), x).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters, self.config.grad_clip or math.inf)
        loss = self._global_mean(loss.detach())
        finite = torch.isfinite(loss) & torch.isfinite(grad_norm)
        self.non_finite.count(finite, self.step)
        self.step += 1
        if self._skips_on_device:
            self.optimizer.found_inf = (~finite).float()  # the fused kernel leaves everything as it was
            self.optimizer.step()
        elif finite.item():
            self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return StepResult(loss, grad_norm, finite, len(images))

    def evaluate_and_keep_best(self) -> float:
        """The held-out bits/dim of :attr:`eval_model` now; with ``train.keep=best`` its weights are kept (in
        the checkpoint's ``best`` entry) when it is the lowest so far."""
        value = self.evaluate(self.eval_model)
        self.model.train()
        better = self.best is None or value < self.best["eval_bpd"]
        if self.config.keep == "best" and math.isfinite(value) and better:
            weights = {key: tensor.detach().clone() for key, tensor in self.eval_model.state_dict().items()}
            self.best = {"step": self.step, "eval_bpd": value, "model": weights}
        return value

    # ----------------------------------------------------------------------------------- before and after
    def begin(self, resume: bool) -> None:
        """Restore the run from its checkpoint (``resume``), or initialise the model from the first batch;
        then settle the model's memory layout, before the optimiser's first step."""
        if resume:
            self.restore(load_checkpoint(self.checkpoint_path, map_location=self.device))
            self.settle_layout(None, None)
        else:
            if self.config.init_from:
                count = warm_start(self.model, self.config.init_from, self.config.init_modules)
                if self.is_main:
                    self._say(f"started {', '.join(self.config.init_modules)} from {self.config.init_from} "
                              f"({count:,} weights)")
            self.settle_layout(*self.initialize())
        self._session_start = time.monotonic()
        self.model.train()

    def finish(self) -> None:
        """Draw the learning curve and say which weights the checkpoint gives to users (``train.keep``)."""
        path = self.run_dir / METRICS_NAME
        if not self.is_main:
            return
        if path.exists():
            plot_learning_curve(path, self.run_dir / "learning_curve.png",
                                title=f"{self.task}: {self.run_dir.name}")
        if self.config.keep == "best":
            print(f"kept the weights of step {self.best['step']}, the best held-out evaluation "
                  f"({self.best['eval_bpd']:.4f} bits/dim; train.keep=best)" if self.best is not None else
                  "train.keep=best, but no evaluation has run yet: the last step's weights are kept")

    @torch.no_grad()
    def initialize(self) -> tuple[Tensor, Any]:
        """Data-dependent init (ActNorm) from one seeded batch, identical on every rank; returns the batch
        (model-space ``x, c``)."""
        size = min(self.config.init_batch_size, len(self.train_set))
        generator = torch.Generator().manual_seed(step_seed(self.config.seed, 0, stream=3))
        indices = torch.randperm(len(self.train_set), generator=generator)[:size].tolist()
        images, labels = collate_images([self.train_set[i] for i in indices])
        noise = torch.Generator(self.device).manual_seed(step_seed(self.config.seed, 0, stream=4))
        x, c = self.objective.prepare(images.to(self.device), labels.to(self.device), noise)
        self.model.train()
        self.model(x, c)
        self._make_ema()
        return x, c

    def settle_layout(self, x: Tensor | None, c: Any) -> None:
        """Choose the model's memory layout (:meth:`~cinn.engine.model_support.ModelSupport.settle_layout`) by
        timing training steps on the first ``batch_size`` of the init batch ``x, c``; ``x`` None when resuming a
        run that recorded none."""
        where = None
        if self.device.type != "cpu" or self.group.distributed:
            where = f"{self.device.type}{', distributed' if self.group.distributed else ''}"
        loss, shape = None, ()
        if x is not None:
            x, c = _first(x, self.config.batch_size), _first(c, self.config.batch_size)
            autocast = self._autocast()

            def loss(model: nn.Module) -> Tensor:
                with autocast:
                    log_prob = model(x, c)
                return self.objective.bits_per_dim(log_prob.float(), x).mean()

            shape = tuple(x.shape)
        line = self.support.settle_layout(loss, shape, precision=self.config.precision,
                                          backprop=self.config.backprop, where=where)
        if line is not None and self.is_main:
            self._say(line)

    # ----------------------------------------------------------------------------------- state
    def _make_ema(self) -> None:
        if self.config.ema_decay is not None:
            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(self.config.ema_decay))

    def state(self) -> dict[str, Any]:
        """Everything needed to rebuild the model and to continue the run exactly."""
        return {
            **self.model_info,
            "task": self.task,
            "config": self.task_config,
            "step": self.step,
            "elapsed_seconds": self.elapsed_seconds,
            "model": self.model.state_dict(),
            "layout": self.support.layout,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "best": self.best,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {"torch": torch.random.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        }

    def save(self, final: bool = False) -> None:
        """Write the checkpoint (main process). A failed write (a full disk, say) leaves the previous
        checkpoint intact; training goes on and tries again at the next checkpoint, unless this was the
        ``final`` one, which is a :class:`CheckpointError`."""
        if not self.is_main:
            return
        try:
            save_checkpoint(self.state(), self.checkpoint_path)
        except OSError as error:
            message = (f"could not write {self.checkpoint_path} at step {self.step} ({error.strerror or error}); "
                       "the previous checkpoint is intact")
            if final and not self.checkpoint_path.exists():
                raise CheckpointError(f"could not write {self.checkpoint_path} at step {self.step} "
                                      f"({error.strerror or error}), nor any checkpoint before it; free space, "
                                      "then train again") from None
            if final:
                raise CheckpointError(f"{message}; free space, then train --resume from it") from None
            self._say(f"warning: {message}; training goes on and tries again at the next checkpoint")

    def restore(self, state: dict[str, Any]) -> None:
        self.support.restore_layout(state.get("layout"))  # before the optimiser's state
        self.model.load_state_dict(state["model"])
        self._make_ema()
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.random.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.step = state["step"]
        self.elapsed_before = state["elapsed_seconds"]
        self.best = state.get("best")

    def kept_model(self) -> DensityModel:
        """The model with the weights the checkpoint gives to users (see ``train.keep``), in eval mode."""
        if self.best is None:
            return self.eval_model.eval()
        model = copy.deepcopy(self.eval_model)
        model.load_state_dict(self.best["model"])
        return model.eval()

    # ----------------------------------------------------------------------------------- helpers
    def _due(self, every: int | None) -> bool:
        """Whether the step just done is one of every ``every``-th (never when ``every`` is 0 or None)."""
        return bool(every) and self.step % every == 0

    def _loader(self) -> DataLoader:
        """The batches from the current step on (:class:`BatchSchedule`)."""
        schedule = BatchSchedule(len(self.train_set), self.config.batch_size, self.config.steps, self.config.seed,
                                 self.step)
        return DataLoader(self.train_set, batch_sampler=schedule, collate_fn=collate_images,
                          num_workers=self.config.num_workers, pin_memory=self.device.type == "cuda")

    @contextmanager
    def _progress_line(self) -> Iterator[Progress]:
        budget = None if self.config.max_minutes is None else 60 * self.config.max_minutes
        with Progress(self.task, total=self.config.steps, initial=self.step, unit="steps", time_budget_s=budget,
                      elapsed_s=self.elapsed_before, enabled=self.progress) as self._progress:
            yield self._progress
        self._progress = None

    def _stop_reason(self) -> str:
        return {None: "time budget reached", "SIGINT": "interrupted"}.get(self._stop_signal,
                                                                          f"stopped by {self._stop_signal}")

    def _check_non_finite(self) -> None:
        """Read the non-finite counts (one wait for the device): say which steps were skipped, and stop
        when ``max_nonfinite_steps`` came in a row."""
        skipped, longest, last = self.non_finite.read()
        if not skipped:
            return
        self._say(f"step {last}: non-finite loss or gradient, step skipped"
                  + (f" ({skipped} steps skipped since the last report)" if skipped > 1 else ""))
        if longest >= self.config.max_nonfinite_steps:
            raise NonFiniteTrainingError(
                f"{longest} consecutive steps had a non-finite loss or gradient; stopped "
                f"at step {last}. The last good checkpoint is {self.checkpoint_path}; lower "
                "train.lr or set train.grad_clip, then resume.")

    def _training_model(self) -> nn.Module:
        """What the step calls: the model, wrapped for backprop by inversion, DDP and torch.compile as asked."""
        model = self.support.training_module(self.config.backprop)
        if self.group.distributed:
            model = DistributedDataParallel(model)
        return torch.compile(model, mode=self.config.compile_mode) if self.config.compile else model

    def _autocast(self) -> AbstractContextManager:
        if self.config.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _say(self, message: str) -> None:
        if self._progress is not None:
            self._progress.write(message, stream=sys.stdout)
        else:
            print(message)

    def _shard(self, value: Any) -> Any:
        if value is None or not self.group.distributed:
            return value
        if isinstance(value, (list, tuple)):
            return type(value)(self._shard(v) for v in value)
        return value.chunk(self.group.world_size)[self.group.rank]

    def _global_mean(self, value: Tensor) -> Tensor:
        if self.group.distributed:
            value = value.clone()
            torch.distributed.all_reduce(value)
            value /= self.group.world_size
        return value

    def _time_fraction(self) -> float | None:
        """The share of the time budget spent, which the learning-rate decay follows with ``lr_decay_over: time``
        (rank 0's, for every process); None when the decay runs over steps."""
        if self.config.lr_decay_over != "time" or self.config.max_minutes is None:
            return None
        fraction = torch.tensor([self.elapsed_seconds / (60 * self.config.max_minutes)], dtype=torch.float64)
        if self.group.distributed:
            fraction = fraction.to(self.device)
            torch.distributed.broadcast(fraction, src=0)
        return float(fraction.item())

    def _out_of_time(self) -> bool:
        if self.config.max_minutes is None:
            return False
        out = self.elapsed_seconds >= 60 * self.config.max_minutes
        if self.group.distributed:
            flag = torch.tensor([float(out)], device=self.device)
            torch.distributed.broadcast(flag, src=0)
            out = bool(flag.item())
        return out

    @contextmanager
    def _stop_on_signals(self) -> Iterator[None]:
        """Ctrl-C, SIGTERM (schedulers, ``timeout``, container stops) and SIGHUP (a closed terminal) finish
        the current step, write a checkpoint and end training cleanly."""
        def request_stop(signum: int, frame: Any) -> None:
            self._stop_signal = signal.Signals(signum).name

        previous = {}
        try:
            for name in STOP_SIGNALS:
                if hasattr(signal, name):
                    previous[name] = signal.signal(getattr(signal, name), request_stop)
        except ValueError:  # not the main thread: signals stay with the caller
            pass
        try:
            yield
        finally:
            for name, handler in previous.items():
                signal.signal(getattr(signal, name), handler)


def use_tf32(enabled: bool) -> str:
    """Let CUDA run float32 matrix products and convolutions in TF32 (or not); returns the log line.

    Example:
        >>> use_tf32(True)
        'float32 matrix products and convolutions run in TF32 on CUDA (train.tf32=false for full float32)'
    """
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    return ("float32 matrix products and convolutions run in TF32 on CUDA (train.tf32=false for full float32)"
            if enabled else "float32 matrix products and convolutions in full float32 (train.tf32=false)")


def _first(value: Any, n: int) -> Any:
    """The first ``n`` rows of a batch tensor, or of each tensor in a list or tuple (None stays None)."""
    if isinstance(value, (list, tuple)):
        return type(value)(_first(v, n) for v in value)
    return value[:n] if isinstance(value, Tensor) else value
