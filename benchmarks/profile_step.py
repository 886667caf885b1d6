"""Where a training step of cinn's Glow spends its time: torch.profiler's table of operators, and the casts.

The Glow paper's CIFAR-10 architecture at ``--steps-per-level`` K (default 8, as in ``train_vs_peer.py``), batch
16, one training step as the engine runs it (forward under the precision's autocast, bits/dim loss, backward,
fused Adam) in the layout the engine would choose. Prints the operators with the most self time, then how many
dtype conversions (``aten::_to_copy``) and convolutions of each input dtype one step runs — under
``--precision bf16`` a float32 convolution is one that autocast left in float32.

    python benchmarks/profile_step.py --precision bf16 --steps 3
"""

from __future__ import annotations

import argparse
from collections import Counter
from contextlib import nullcontext

import torch
from torch.profiler import ProfilerActivity, profile

from cinn import build_glow
from cinn.engine import TrainConfig, build_optimizer
from cinn.engine.allocator import retain_freed_memory
from cinn.engine.layout import LAYOUTS, choose_layout, layout_key
from cinn.machine import cpu_description


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--steps-per-level", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="profiled steps (after 2 unprofiled ones)")
    parser.add_argument("--rows", type=int, default=20)
    args = parser.parse_args()

    retain_freed_memory()
    torch.manual_seed(0)
    x = torch.rand(args.batch_size, 3, 32, 32)
    model = build_glow((3, 32, 32), n_levels=3, steps_per_level=args.steps_per_level, hidden_channels=512)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if args.precision == "bf16" else nullcontext()

    def loss_of(flow) -> torch.Tensor:
        with autocast:
            log_prob = flow.log_prob(x)
        return -log_prob.float().mean()

    with torch.no_grad():
        model.log_prob(x)  # data-dependent ActNorm initialisation
    choice = choose_layout(model, lambda flow: loss_of(flow).backward(),
                           layout_key(model, tuple(x.shape), args.precision, "standard"))
    model.use_memory_format(LAYOUTS[choice.layout])
    optimizer = build_optimizer(list(model.parameters()), TrainConfig(optimizer="adam", lr=1e-5))

    def step() -> None:
        loss = loss_of(model)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
        for _ in range(args.steps):
            step()

    print(f"{cpu_description()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"K={args.steps_per_level} L=3 width 512, batch {args.batch_size}, {args.precision}, "
          f"{choice.describe()}")
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    events = profiler.events()
    casts = sum(1 for event in events if event.name == "aten::_to_copy")
    convolutions = Counter(str(event.input_dtypes[0]) if getattr(event, "input_dtypes", None) else "?"
                           for event in events if event.name == "aten::convolution")
    total_ms = sum(event.self_cpu_time_total for event in profiler.key_averages()) / 1000 / args.steps
    print(f"per step: {total_ms:.0f} ms of operator self time, {casts / args.steps:.0f} dtype conversions "
          f"(aten::_to_copy), convolutions by input dtype: "
          + ", ".join(f"{dtype} {count / args.steps:.0f}" for dtype, count in convolutions.items()))


if __name__ == "__main__":
    main()
