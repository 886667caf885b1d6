"""Where a training step of cinn's Glow spends its time: torch.profiler's table of operators, and the casts.

The Glow paper's CIFAR-10 architecture at ``--steps-per-level`` K (default 8, as in ``train_vs_peer.py``), batch
16, one training step as the engine runs it (forward under the precision's autocast, bits/dim loss, backward,
fused Adam) in the layout the engine would choose. Prints the operators with the most self time, then how many
dtype conversions (``aten::_to_copy``) and convolutions of each input dtype one step runs — under
``--precision bf16`` a float32 convolution is one that autocast left in float32.

    python benchmarks/profile_step.py --precision bf16 --steps 3
    python benchmarks/profile_step.py --device cuda --precision bf16 --steps-per-level 32 --batch-size 512

On CUDA the table is sorted by GPU time, the layout is channels_last (as the engine has it there) and the line
at the end gives the fraction of the GPU's measured bf16 matrix rate that the step reached.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from contextlib import nullcontext

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from cinn import build_glow
from cinn.bench import matmul_gflops
from cinn.engine import TrainConfig, build_optimizer
from cinn.engine.allocator import retain_freed_memory
from cinn.engine.layout import settle_by_timing
from cinn.machine import cpu_description


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--steps-per-level", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="profiled steps (after 2 unprofiled ones)")
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    device = torch.device(args.device)
    if device.type == "cpu":
        retain_freed_memory()
    else:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # as the engine does
    torch.manual_seed(0)
    x = torch.rand(args.batch_size, 3, 32, 32, device=device)
    model = build_glow((3, 32, 32), n_levels=3, steps_per_level=args.steps_per_level, hidden_channels=512)
    model = model.to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.precision == "bf16" else nullcontext()

    def loss_of(flow) -> torch.Tensor:
        with autocast:
            log_prob = flow.log_prob(x)
        return -log_prob.float().mean()

    with torch.no_grad():
        model.log_prob(x)  # data-dependent ActNorm initialisation
    if device.type == "cpu":
        layout = settle_by_timing(model, lambda flow: loss_of(flow).backward(), tuple(x.shape), args.precision,
                                  "standard").describe()
    else:
        model.use_memory_format(torch.channels_last)
        layout = "layout channels_last"
    optimizer = build_optimizer(list(model.parameters()), TrainConfig(optimizer="adam", lr=1e-5))

    def step() -> None:
        loss = loss_of(model)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    synchronize(device)
    start = time.perf_counter()
    with profile(activities=activities, record_shapes=True) as profiler:
        for _ in range(args.steps):
            step()
        synchronize(device)
    seconds = (time.perf_counter() - start) / args.steps
    machine = (f"{torch.cuda.get_device_name(device)}" if device.type == "cuda"
               else f"{cpu_description()}, {torch.get_num_threads()} threads")
    print(f"{machine}, torch {torch.__version__}; K={args.steps_per_level} L=3 width 512, "
          f"batch {args.batch_size}, {args.precision}, {layout}")
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(profiler.key_averages().table(sort_by=sort_by, row_limit=args.rows))
    events = profiler.events()
    casts = sum(1 for event in events if event.name == "aten::_to_copy")
    convolutions = Counter(str(event.input_dtypes[0]) if getattr(event, "input_dtypes", None) else "?"
                           for event in events if event.name == "aten::convolution")
    total_ms = sum(event.self_cpu_time_total for event in profiler.key_averages()) / 1000 / args.steps
    print(f"per step: {total_ms:.0f} ms of operator self time, {casts / args.steps:.0f} dtype conversions "
          f"(aten::_to_copy), convolutions by input dtype: "
          + ", ".join(f"{dtype} {count / args.steps:.0f}" for dtype, count in convolutions.items()))
    flops = FlopCounterMode(display=False)
    with flops:
        step()
    achieved = flops.get_total_flops() / seconds / 1e12
    peak = matmul_gflops(device, torch.bfloat16, max_size=8192 if device.type == "cuda" else 2048) / 1e3
    print(f"step (profiled) {seconds * 1e3:.1f} ms = {args.batch_size / seconds:.0f} img/s, "
          f"{achieved:.2f} TFLOP/s = {achieved / peak:.1%} of the measured bf16 matrix rate ({peak:.1f} TFLOP/s)")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
