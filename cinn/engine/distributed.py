"""Multi-process training with torch.distributed (launched by ``torchrun``)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from cinn.config import ConfigError, shown

DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")
"""The devices a command or config may name."""


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in the run: ``rank`` of ``world_size`` (1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs and pictures."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def check_device_name(name: str, setting: str) -> None:
    """A device that is not ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` is a :class:`ConfigError` naming the
    ``setting`` it was given to (an option such as ``--device``, or ``train.device``)."""
    if not DEVICE_NAME.fullmatch(name):
        raise ConfigError(f"{setting} must be auto, cpu, cuda or cuda:N, got {shown(name)}")


def resolve_device(name: str, setting: str = "--device") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; otherwise the named device, which must be on this machine
    (else a :class:`ConfigError` naming the ``setting``).

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    check_device_name(name, setting)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    require_available(device, f"{setting} {name!r}", "use cpu or auto")
    return device


def require_available(device: torch.device, what: str, otherwise: str) -> None:
    """A CUDA ``device`` this machine does not have is a :class:`ConfigError`: ``what`` is not available on this
    machine (how many it has), ``otherwise``."""
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count <= (device.index or 0):
            has = f"it has {count} CUDA device(s)" if count else "torch sees no CUDA device on it"
            raise ConfigError(f"{what} is not available on this machine ({has}); {otherwise}")


def init_process_group(device_name: str = "auto") -> ProcessGroup:
    """Join the process group torchrun set up (gloo on CPU, nccl on GPU), or run alone; ``device_name`` is
    the ``train.device`` setting."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name, "train.device")
    if world_size == 1:
        return ProcessGroup(device=device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return ProcessGroup(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)


def close_process_group(group: ProcessGroup) -> None:
    if group.distributed and dist.is_initialized():
        dist.destroy_process_group()
