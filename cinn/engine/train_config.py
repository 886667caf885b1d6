"""The ``train:`` section every task config shares, and the optimiser it selects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from cinn.config import ConfigError
from cinn.engine.distributed import check_device_name
from cinn.models.flow import Backprop

MAX_SEED = 2**63 - 1
"""The largest seed: the seeds of steps are taken modulo it, and torch's generators take no more."""


@dataclass
class TrainConfig:
    """Optimisation settings shared by every task (the ``train:`` section of a task config).

    Example:
        >>> TrainConfig(steps=100, lr=5e-4).batch_size
        64
    """

    steps: int = 10_000
    """training steps; the run ends at this step (or at max_minutes)"""
    max_minutes: float | None = None
    """time budget in minutes (training time only, summed over resumes); null: no budget"""
    batch_size: int = 64
    """images per step (the global batch under torchrun)"""
    optimizer: Literal["adam", "adamw", "adamax"] = "adamax"
    """optimiser (Adam and AdamW use torch's fused kernel)"""
    lr: float = 1e-3
    """peak learning rate (reached after warmup_steps)"""
    weight_decay: float = 0.0
    """L2 penalty (adam, adamax) or decoupled weight decay (adamw)"""
    warmup_steps: int = 200
    """steps of linear learning-rate warm-up from 0"""
    lr_decay: Literal["none", "linear", "cosine"] = "none"
    """learning-rate decay after warm-up, down to 0 at the last step"""
    lr_decay_over: Literal["steps", "time"] = "steps"
    """what the decay runs over: steps (to 0 at train.steps), or time (to 0 at train.steps or at the end of
    train.max_minutes, whichever comes first: a run its time budget stops ends its decay too)"""
    grad_clip: float | None = 50.0
    """clip the gradient's global norm to this; null (or 0): no clipping"""
    ema_decay: float | None = None
    """keep an exponential moving average of the weights with this decay (evaluated and sampled from)"""
    init_batch_size: int = 512
    """images of the one batch that initialises ActNorm layers from data"""
    max_nonfinite_steps: int = 20
    """consecutive steps with a non-finite loss or gradient (each skipped) before training stops"""
    log_every: int = 50
    """steps between rows of metrics.csv and TensorBoard"""
    eval_every: int = 0
    """steps between evaluations on held-out data (0: none during training)"""
    eval_images: int = 1000
    """held-out images per evaluation during training"""
    keep: Literal["last", "best"] = "last"
    """the weights the checkpoint gives to eval, sampling and cinn.load: the last step's, or those of the
    evaluation with the lowest held-out bits/dim (needs eval_every); resuming always continues from the last"""
    sample_every: int = 1000
    """steps between sample figures in samples/ (0: only at the end)"""
    checkpoint_every: int = 500
    """steps between checkpoints (one is also written at the end and on Ctrl-C)"""
    seed: int = 0
    """seed of initialisation, batch order and dequantisation noise"""
    precision: Literal["fp32", "bf16"] = "fp32"
    """bf16: networks that compute parameters run under bfloat16 autocast; the x → z path stays float32"""
    compile: bool = False
    """run the model through torch.compile"""
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    """torch.compile's mode (reduce-overhead adds CUDA graphs)"""
    tf32: bool = True
    """CUDA: float32 matrix products and convolutions in TF32 (10-bit mantissa inputs, float32 sums);
    said in the log. The x → z path's own float64 steps are unaffected"""
    backprop: Backprop = "standard"
    """inversion: reconstruct activations in the backward pass instead of storing them (same gradients)"""
    retain_freed_memory: bool = True
    """keep freed CPU memory for reuse instead of returning it to the OS each step (CPU only)"""
    flush_denormals: bool = True
    """treat subnormal floats (below 1.2e-38) as zero on the CPU, where arithmetic on them is slow once Adam's
    moments and the gradients hold many (process-wide, CPU only; BENCHMARKS.md, "Subnormal floats")"""
    lr_scale: dict[str, Any] = field(default_factory=dict)
    """learning-rate multipliers by module name, e.g. {condition_net: 0.1}: that module trains at 0.1 x lr"""
    init_from: str | None = None
    """a checkpoint whose trained weights start the modules train.init_modules names (a new run, not a resume)"""
    init_modules: list[str] = field(default_factory=list)
    """the modules train.init_from starts, e.g. [condition_net] (a condition network pre-trained as a
    regressor); names and shapes must match"""
    device: str = "auto"
    """auto (CUDA when available), cpu, cuda, cuda:N"""
    num_workers: int = 0
    """data-loading worker processes"""

    def validate(self) -> None:
        for name in ("steps", "batch_size", "init_batch_size", "log_every", "checkpoint_every",
                     "max_nonfinite_steps"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be positive, got {self.lr}")
        for name in ("weight_decay", "warmup_steps", "eval_every", "sample_every", "num_workers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must not be negative, got {getattr(self, name)}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"train.seed must be from 0 to 2**63 - 1, got {self.seed}")
        if self.grad_clip is not None and self.grad_clip < 0:
            raise ConfigError(f"train.grad_clip must not be negative (it would flip the gradient; null or 0: no "
                              f"clipping), got {self.grad_clip}")
        if self.eval_every > 0 and self.eval_images < 1:
            raise ConfigError(f"train.eval_images must be positive when train.eval_every is set, got "
                              f"{self.eval_images}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ConfigError(f"train.ema_decay must lie in (0, 1), got {self.ema_decay}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ConfigError(f"train.max_minutes must be positive, got {self.max_minutes}")
        if self.lr_decay_over == "time" and self.max_minutes is None:
            raise ConfigError("train.lr_decay_over=time decays over the time budget; set train.max_minutes")
        if self.keep == "best" and self.eval_every <= 0:
            raise ConfigError("train.keep=best needs evaluations to choose from; set train.eval_every")
        check_device_name(self.device, "train.device")
        for name, scale in self.lr_scale.items():
            if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < float("inf"):
                raise ConfigError(f"train.lr_scale.{name} must be a positive number, got {scale!r}")
        if bool(self.init_from) != bool(self.init_modules):
            raise ConfigError("train.init_from and train.init_modules go together: the checkpoint and the modules "
                              "it starts")
        if self.compile and self.backprop == "inversion":
            raise ConfigError("train.compile cannot trace backprop by inversion (train.backprop=inversion); "
                              "choose one")


def build_optimizer(parameters: list[nn.Parameter] | list[dict[str, Any]],
                    config: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimiser of ``parameters`` (or of parameter groups with their own ``lr``,
    :func:`~cinn.engine.warm_start.parameter_groups`); Adam and AdamW use torch's fused kernel (one pass over
    all parameters rather than a loop over them; BENCHMARKS.md, "Training speed against the standard PyTorch
    Glow", has its speed).

    Example:
        >>> build_optimizer(list(nn.Linear(2, 2).parameters()), TrainConfig(optimizer="adam")).defaults["lr"]
        0.001
    """
    if config.optimizer == "adamax":
        return torch.optim.Adamax(parameters, lr=config.lr, weight_decay=config.weight_decay, foreach=True)
    optimizer = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[config.optimizer]
    return optimizer(parameters, lr=config.lr, weight_decay=config.weight_decay, fused=True)
