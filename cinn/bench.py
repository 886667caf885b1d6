"""Speed and memory measurements: training and sampling throughput, peak memory, achieved GFLOP/s."""

from __future__ import annotations

import datetime
import platform
import resource
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from cinn.engine.allocator import retain_freed_memory
from cinn.engine.layout import settle_by_timing
from cinn.likelihood import bits_per_dim
from cinn.machine import cpu_description
from cinn.models.flow import Backprop, Flow
from cinn.models.inverted_backprop import with_backprop


def matmul_gflops(device: torch.device, dtype: torch.dtype = torch.float32, max_size: int = 2048,
                  min_seconds: float = 0.05, repeats: int = 3) -> float:
    """Measured dense matmul rate ``2·n³ / t`` in GFLOP/s (best of ``repeats``): the machine's yardstick.

    ``n`` doubles from 128 until one product takes ``min_seconds`` or ``n`` reaches ``max_size``, so a dtype
    the hardware emulates slowly (bf16 on a CPU without bf16 units: ~1 GFLOP/s) costs a second, not minutes.
    """
    size = 128
    while True:
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        best = float("inf")
        for _ in range(repeats + 1):
            _synchronize(device)
            start = time.perf_counter()
            a @ b
            _synchronize(device)
            best = min(best, time.perf_counter() - start)
        if best >= min_seconds or size >= max_size:
            return 2 * size**3 / best / 1e9
        size *= 2


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch, or the process's peak resident set size on the CPU (MiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def saved_for_backward_mb(model: nn.Module, *inputs: Any) -> float:
    """MiB of tensors autograd keeps from one forward pass ``model(*inputs)`` for the backward pass: the
    activation memory of training, parameters excluded, each storage counted once."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = model(*inputs)
    del output
    return sum(storages.values()) / 2**20


@dataclass
class BenchReport:
    description: str
    device: str
    batch_size: int
    train_images_per_s: float
    sample_images_per_s: float
    peak_memory_mb: float
    saved_activations_mb: float
    train_gflop_per_image: float
    train_gflops: float
    matmul_fp32_gflops: float
    matmul_bf16_gflops: float

    def format(self) -> str:
        bf16 = (f"{self.train_gflops / self.matmul_bf16_gflops:.0%} of bf16 matmul "
                f"({self.matmul_bf16_gflops:.0f} GFLOP/s)" if self.matmul_bf16_gflops >= self.matmul_fp32_gflops
                else f"bf16 matmul {self.matmul_bf16_gflops:.0f} GFLOP/s, slower than fp32: no bf16 units")
        return (f"{self.description} on {self.device}, batch {self.batch_size}\n"
                f"  training: {self.train_images_per_s:.1f} img/s, {self.train_gflop_per_image:.2f} GFLOP/img, "
                f"{self.train_gflops:.1f} GFLOP/s = {self.train_gflops / self.matmul_fp32_gflops:.0%} of fp32 "
                f"matmul ({self.matmul_fp32_gflops:.0f} GFLOP/s), {bf16}\n"
                f"  sampling: {self.sample_images_per_s:.1f} img/s\n"
                f"  peak memory: {self.peak_memory_mb:.0f} MiB; activations kept for backward: "
                f"{self.saved_activations_mb:.0f} MiB")

    def append_to(self, path: Path, command: str) -> None:
        """Append this report to the Markdown file ``path``, dated, with the command that produced it and the
        machine's CPU and vector-unit flags (:func:`cpu_description`)."""
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        with open(path, "a") as file:
            file.write(f"\n### bench {stamp} — {platform.node() or 'this machine'}, {cpu_description()}\n\n"
                       f"`{command}`\n\n```\n{self.format()}\n```\n")


def benchmark_training(model: Flow, image_shape: tuple[int, ...], *, batch_size: int, steps: int,
                       device: torch.device, precision: str = "fp32", compile: bool = False,
                       backprop: Backprop = "standard", sample_batch: int = 64,
                       warmup_steps: int = 2, retain_memory: bool = False,
                       optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer] | None = None
                       ) -> BenchReport:
    """Time ``steps`` training steps (forward, bits/dim loss, backward, optimiser step) on random data,
    count their FLOPs, and time sampling ``sample_batch`` images. ``optimizer`` builds the optimiser from
    the parameters (default: Adamax, lr 1e-4; the tasks pass the engine's, as configured).
    ``backprop="inversion"`` trains with backprop by inversion (:mod:`cinn.models.inverted_backprop`).
    ``retain_memory=True`` applies :func:`~cinn.engine.allocator.retain_freed_memory` on the CPU, as the
    training engine does with ``train.retain_freed_memory``."""
    if retain_memory and device.type == "cpu":
        retain_freed_memory()
    model = model.to(device).train()
    x = torch.rand(batch_size, *image_shape, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    dims = x[0].numel()
    condition = (torch.arange(batch_size, device=device) % model.condition_shapes[0][0]
                 if model.condition_shapes else None)
    with torch.no_grad():
        model.log_prob(x, condition)  # data-dependent init
    if not model.layout_settled:  # as the training engine settles it (cinn.engine.layout)
        def backward(flow: Flow) -> None:
            with autocast:
                log_prob = with_backprop(flow, backprop)(x, condition)
            bits_per_dim(-log_prob.float(), dims).mean().backward()

        settle_by_timing(model, backward, tuple(x.shape), precision, backprop)
    trained = with_backprop(model, backprop)
    parameters = list(model.parameters())
    optimizer = (optimizer or (lambda params: torch.optim.Adamax(params, lr=1e-4)))(parameters)
    forward = torch.compile(trained) if compile else trained

    def step(log_prob_of: Callable[..., Tensor]) -> None:
        with autocast:
            log_prob = log_prob_of(x, condition)
        loss = bits_per_dim(-log_prob.float(), dims).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup_steps):
        step(forward)
    with autocast:
        saved_activations_mb = saved_for_backward_mb(trained, x, condition)
    # The model's FLOPs under standard backprop (not inversion's recomputation, whose backward the counter's
    # module hooks cannot follow), so GFLOP/s compares like with like.
    flop_counter = FlopCounterMode(display=False)
    with flop_counter:
        step(forward if backprop == "standard" else model)
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step(forward)
    _synchronize(device)
    train_seconds = time.perf_counter() - start

    model.eval()
    samples_condition = (torch.arange(sample_batch, device=device) % model.condition_shapes[0][0]
                         if model.condition_shapes else None)
    model.sample(sample_batch, samples_condition)
    _synchronize(device)
    start = time.perf_counter()
    model.sample(sample_batch, samples_condition)
    _synchronize(device)
    sample_seconds = time.perf_counter() - start

    gflop_per_image = flop_counter.get_total_flops() / batch_size / 1e9
    images_per_s = steps * batch_size / train_seconds
    return BenchReport(
        description=f"{type(model).__name__} {tuple(image_shape)}, {sum(p.numel() for p in model.parameters()):,} "
                    f"parameters, {precision}, {model.layout}{', compiled' if compile else ''}"
                    f"{', backprop by inversion' if backprop == 'inversion' else ''}",
        device=(torch.cuda.get_device_name(device) if device.type == "cuda"
                else f"{cpu_description()}, {torch.get_num_threads()} threads"),
        batch_size=batch_size,
        train_images_per_s=images_per_s,
        sample_images_per_s=sample_batch / sample_seconds,
        peak_memory_mb=peak_memory_mb(device),
        saved_activations_mb=saved_activations_mb,
        train_gflop_per_image=gflop_per_image,
        train_gflops=gflop_per_image * images_per_s,
        matmul_fp32_gflops=matmul_gflops(device, torch.float32),
        matmul_bf16_gflops=matmul_gflops(device, torch.bfloat16),
    )
