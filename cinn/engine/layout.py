"""The memory layout a flow trains in, chosen by timing both on this machine.

Which layout a CPU's convolutions run faster depends on the CPU, the precision and the model, and no rule of
CPU features predicts it (BENCHMARKS.md, "Memory layout", has the measurements: channels_last wins on some CPUs
and precisions, NCHW on others). So a flow built with ``channels_last=None`` is measured instead: a few
forward and backward passes of each layout on copies of the model, the first training batch, with the run's
precision and backprop, alternating; NCHW is kept only when it is :data:`MARGIN` faster, so that noise does not
flip the choice. The result is cached per CPU, thread count, torch version, model and batch
(``~/.cache/cinn/layouts.json``, or ``$XDG_CACHE_HOME/cinn``), so runs on one machine agree; the layout is
stored in the checkpoint and a resumed run keeps it. The layout changes no result beyond float rounding
(``tests/test_layout.py``: the same ``log_prob`` to 1e-6).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from cinn.machine import cpu_description
from cinn.models import Flow

LAYOUTS = {"channels_last": torch.channels_last, "nchw": torch.contiguous_format}
MARGIN = 0.03
"""NCHW must be this much faster (relative step time) to be chosen over channels_last."""


@dataclass(frozen=True)
class LayoutChoice:
    """The layout chosen and why: ``seconds`` holds the median step time measured per layout (empty when the
    choice came from the cache)."""

    layout: str
    source: str
    seconds: dict[str, float]

    def describe(self) -> str:
        """One line for the training log.

        Example:
            >>> LayoutChoice("nchw", "timed", {"channels_last": 0.69, "nchw": 0.505}).describe()
            'layout nchw (timed: channels_last 0.690 s, nchw 0.505 s per step)'
        """
        if not self.seconds:
            return f"layout {self.layout} ({self.source})"
        times = ", ".join(f"{name} {seconds:.3f} s" for name, seconds in self.seconds.items())
        return f"layout {self.layout} ({self.source}: {times} per step)"


def faster_layout(seconds: dict[str, float], margin: float = MARGIN) -> str:
    """``"nchw"`` when its step time is below channels_last's by more than ``margin``, else ``"channels_last"``.

    Example:
        >>> faster_layout({"channels_last": 0.690, "nchw": 0.505})
        'nchw'
        >>> faster_layout({"channels_last": 1.0, "nchw": 0.98})  # within the margin
        'channels_last'
    """
    return "nchw" if seconds["nchw"] < (1 - margin) * seconds["channels_last"] else "channels_last"


def time_layouts(model: Flow, step: Callable[[Flow], None], rounds: int = 3) -> dict[str, float]:
    """Median seconds of ``step(copy)`` for a copy of ``model`` in each layout, after one warm-up step each,
    the layouts taking turns. ``model`` itself and the global random state are left as they were."""
    copies = {name: copy.deepcopy(model).use_memory_format(memory_format)
              for name, memory_format in LAYOUTS.items()}
    times: dict[str, list[float]] = {name: [] for name in copies}
    with torch.random.fork_rng(devices=[]):
        for flow in copies.values():
            step(flow)
        for _ in range(rounds):
            for name, flow in copies.items():
                start = time.perf_counter()
                step(flow)
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def choose_layout(model: Flow, step: Callable[[Flow], None], key: str, cache: Path | None = None) -> LayoutChoice:
    """The layout to train ``model`` in on this CPU: from the cache under ``key`` (see :func:`layout_key`), or
    timed (:func:`time_layouts`) and then cached. ``cache=None`` uses :func:`cache_path`."""
    cache = cache or cache_path()
    known = _read_cache(cache)
    if key in known and known[key] in LAYOUTS:
        return LayoutChoice(known[key], f"cached in {cache}", {})
    seconds = time_layouts(model, step)
    choice = LayoutChoice(faster_layout(seconds), "timed", seconds)
    _write_cache(cache, {**known, key: choice.layout})
    return choice


def settle_by_timing(model: Flow, step: Callable[[Flow], None], batch_shape: tuple[int, ...], precision: str,
                     backprop: str) -> LayoutChoice:
    """Put ``model`` in the layout :func:`choose_layout` picks for this batch shape, precision and backprop
    (``step(flow)``: one forward and backward pass of ``flow`` as training runs it); returns the choice."""
    choice = choose_layout(model, step, layout_key(model, batch_shape, precision, backprop))
    model.use_memory_format(LAYOUTS[choice.layout])
    return choice


def layout_key(model: Flow, batch_shape: tuple[int, ...], precision: str, backprop: str) -> str:
    """What the choice depends on: the CPU and its vector units, threads, torch, the model's parameter shapes,
    the batch, precision and backprop."""
    shapes = ",".join(f"{name}:{tuple(p.shape)}" for name, p in model.named_parameters())
    model_hash = hashlib.sha256(shapes.encode()).hexdigest()[:16]
    return (f"{cpu_description()}|threads={torch.get_num_threads()}|torch={torch.__version__}|"
            f"model={model_hash}|batch={tuple(batch_shape)}|{precision}|{backprop}")


def cache_path() -> Path:
    """``$XDG_CACHE_HOME/cinn/layouts.json`` (``~/.cache`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cinn" / "layouts.json"


def _read_cache(path: Path) -> dict[str, str]:
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in values.items() if isinstance(v, str)} if isinstance(values, dict) else {}


def _write_cache(path: Path, values: dict[str, str]) -> None:
    """Best effort and atomic: a cache that cannot be written only means timing again next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(json.dumps(values, indent=1, sort_keys=True))
        os.replace(temporary, path)
    except OSError:
        pass
