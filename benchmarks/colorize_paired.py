"""Best-of-N ab RMSE of colourisation models on the same photos and sample draws, compared photo by photo.

A mean over 10 photos carries a standard error of about 1 Lab unit, so two models' means say little on their
own; the same photos and the same sample draws make a paired comparison. For every checkpoint (``default``: the
pretrained model shipped with cinn) and every draw seed, each photo's best-of-N RMSE
(:func:`cinn.colorization.metrics.sample_metrics`, as ``eval`` computes it) is averaged over the draws; then
each model's mean over the photos, and the first model against each other one: the mean per-photo
difference ± its standard error and on how many photos the first model is lower.

    python benchmarks/colorize_paired.py --data data/sun_hays_heldout \\
        --checkpoints default runs/colorize_sun_hays80/checkpoint.pt --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from cinn.colorization.metrics import sample_metrics
from cinn.colorization.model import PRETRAINED_COLORIZER
from cinn.engine import resolve_device
from tasks.colorize import ColorizeTask


def per_photo_rmse(checkpoint: Path, data: str, seeds: list[int], samples: int, temperature: float,
                   device: torch.device) -> torch.Tensor:
    """Each photo's best-of-``samples`` ab RMSE, averaged over the draws ``seeds``: ``(photos,)``."""
    task = ColorizeTask()
    run = task.open(checkpoint, device)
    photos, _ = task.eval_data(run.config, data)
    draws = [sample_metrics(run.model, photos, ab_downsample=run.conventions["ab_downsample"], n_samples=samples,
                            temperature=temperature, seed=seed, device=device).best_rmse for seed in seeds]
    return torch.stack(draws).mean(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a folder of colour photos none of the models saw")
    parser.add_argument("--checkpoints", nargs="+", required=True,
                        help="colourisation checkpoints; 'default' is the shipped pretrained model")
    parser.add_argument("--seeds", default="0,1,2", help="sample draws, comma-separated")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    paths = [PRETRAINED_COLORIZER if name == "default" else Path(name) for name in args.checkpoints]
    device = resolve_device(args.device)
    with torch.no_grad():
        rmse = [per_photo_rmse(path, args.data, seeds, args.samples, args.temperature, device) for path in paths]
    print(f"best-of-{args.samples} ab RMSE at T={args.temperature}, Lab units, mean of draws {seeds} per photo, "
          f"{len(rmse[0])} photos:")
    for name, values in zip(args.checkpoints, rmse, strict=True):
        print(f"  {name}: {values.mean():.2f} ± {values.std() / math.sqrt(len(values)):.2f}")
    for name, values in zip(args.checkpoints[1:], rmse[1:], strict=True):
        difference = rmse[0] - values
        print(f"  {args.checkpoints[0]} − {name}: {difference.mean():+.2f} ± "
              f"{difference.std() / math.sqrt(len(difference)):.2f} (paired); lower on "
              f"{int((difference < 0).sum())} of {len(difference)} photos")


if __name__ == "__main__":
    main()
