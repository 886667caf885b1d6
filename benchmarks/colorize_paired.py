"""NLL and best-of-N ab RMSE of colourisation models on the same photos and sample draws, compared photo by photo.

A mean over 10 photos carries a standard error of about 1 Lab unit, so two models' means say little on their
own; the same photos and the same sample draws make a paired comparison. For every checkpoint (``default``: the
pretrained model shipped with cinn) each photo's NLL (bits per ab dimension, as ``eval`` computes it: uniform
dequantisation, noise seed 0) and its best-of-N RMSE (:func:`cinn.colorization.metrics.sample_metrics`,
averaged over the draw seeds) are computed; then each model's mean over the photos, and the first model
against each other one: the mean per-photo difference ± its standard error and on how many photos the first
model is lower. ``--data`` is a folder or a CSV photo list (``folder,photo,tag``); with tags, every tag is also
compared on its own photos. Without ``--data``: the runs' own validation photos, for runs that share their data
settings (and so their validation split), as the runs of an ablation do.

    python benchmarks/colorize_paired.py --data benchmarks/colorize_heldout.csv \\
        --checkpoints NEW.pt default --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor

from cinn.colorization.metrics import sample_metrics
from cinn.colorization.model import PRETRAINED_COLORIZER
from cinn.data.tagged import tag_groups
from cinn.engine import per_image_bits_per_dim, resolve_device
from tasks.colorize import ColorizeTask


def per_photo(checkpoint: Path, data: str | None, seeds: list[int], samples: int, temperature: float,
              device: torch.device) -> tuple[Tensor, Tensor, list[str], dict]:
    """Each photo's NLL and best-of-``samples`` ab RMSE (the mean over the draws ``seeds``), its tag, and the
    run's data settings."""
    task = ColorizeTask()
    run = task.open(checkpoint, device)
    photos, _ = task.eval_data(run.config, data)
    nll = per_image_bits_per_dim(run.model, photos, task.objective(run.config, train=False),
                                 batch_size=task.eval_batch_size, device=device)
    draws = [sample_metrics(run.model, photos, ab_downsample=run.conventions["ab_downsample"], n_samples=samples,
                            temperature=temperature, seed=seed, device=device).best_rmse for seed in seeds]
    return (nll.float(), torch.stack(draws).mean(0), list(getattr(photos, "tags", [""] * len(photos))),
            asdict(run.config.data))


def mean_and_error(values: Tensor) -> str:
    spread = values.std().item() / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return f"{values.mean().item():.3f} ± {spread:.3f}"


def compare(names: list[str], measures: list[Tensor], what: str, photos: list[int]) -> list[str]:
    """Lines: each model's mean of ``what`` over ``photos``, then the first model minus each other one."""
    chosen = torch.tensor(photos)
    lines = [f"  {what}:"]
    for name, values in zip(names, measures, strict=True):
        lines.append(f"    {name}: {mean_and_error(values[chosen])}")
    for name, values in zip(names[1:], measures[1:], strict=True):
        difference = (measures[0] - values)[chosen]
        lines.append(f"    {names[0]} − {name}: {mean_and_error(difference)} (paired); lower on "
                     f"{int((difference < 0).sum())} of {len(difference)} photos")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="colour photos none of the models saw: a folder or a CSV photo list "
                                       "(default: the runs' own validation photos)")
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
        results = [per_photo(path, args.data, seeds, args.samples, args.temperature, device) for path in paths]
    if args.data is None and any(settings != results[0][3] for *_, settings in results):
        sys.exit("the runs' data settings differ, so their validation photos may too; pass --data")
    tags = results[0][2]
    groups = {"all photos": list(range(len(tags)))}
    if any(tags):
        groups.update(tag_groups(tags))
    for group, photos in groups.items():
        print(f"{group} ({len(photos)}):")
        print("\n".join(compare(args.checkpoints, [nll for nll, *_ in results], "NLL, bits per ab dim", photos)))
        print("\n".join(compare(args.checkpoints, [rmse for _, rmse, *_ in results],
                                f"best-of-{args.samples} ab RMSE at T={args.temperature}, Lab units, mean of "
                                f"draws {seeds}", photos)))


if __name__ == "__main__":
    main()
