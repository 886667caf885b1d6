"""What bf16 autocast does to a trained Glow's likelihood and invertibility, on the same test images.

Evaluates one checkpoint twice on the same test images and dequantisation noise, in float32 and under bf16
autocast (``train.precision=bf16``: subnets in bfloat16, the x → z path and log-dets in float32), and prints
both bits/dim, their paired difference (mean ± standard error over images) and the largest round-trip error
``|f⁻¹(f(x)) − x|`` under bf16. Runs anywhere; on a CPU without bf16 units (bf16 emulated) it is several
times slower than float32.

    python benchmarks/bf16_likelihood.py --checkpoint runs/glow_fashion_mnist/checkpoint.pt --limit 2000
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from cinn.engine import prepared_batches, resolve_device
from tasks.glow import GlowTask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=2000, help="the first N test images")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    device = resolve_device(args.device)
    task = GlowTask()
    run = task.open(args.checkpoint, device)
    config, model = run.config, run.model
    objective = task.objective(config, train=False)
    fp32, bf16, round_trip = [], [], 0.0
    with torch.no_grad():
        for x, c in prepared_batches(task.eval_data(config, None)[0], objective, batch_size=args.batch_size,
                                     device=device, limit=args.limit):
            fp32.append(objective.bits_per_dim(model.log_prob(x, c), x).double())
            with torch.autocast(device.type, dtype=torch.bfloat16):
                bf16.append(objective.bits_per_dim(model.log_prob(x, c), x).double())
                round_trip = max(round_trip, (model.decode(model.encode(x, c), c) - x).abs().max().item())
    fp32_all, bf16_all = torch.cat(fp32), torch.cat(bf16)
    difference = bf16_all - fp32_all
    print(f"{len(fp32_all)} test images of {config.data.dataset}")
    print(f"  float32 bits/dim {fp32_all.mean():.4f}, bf16 autocast {bf16_all.mean():.4f}: "
          f"difference {difference.mean():+.5f} ± {difference.std() / math.sqrt(len(difference)):.5f} "
          f"(largest per image {difference.abs().max():.4f})")
    print(f"  largest |f⁻¹(f(x)) − x| under bf16 autocast: {round_trip:.3g}")


if __name__ == "__main__":
    main()
