"""The ablation table of Glow variants from their per-image test bits/dim: each seed's mean ± standard error,
the mean over seeds, and the paired difference from the baseline variant.

Each run ``VARIANT_sSEED`` of ``--runs`` has been evaluated with ``python -m tasks.glow eval --checkpoint
RUNS/VARIANT_sSEED/checkpoint.pt --per-image RUNS/VARIANT_sSEED.csv`` (the same test images in the same order,
noise seed 0). A variant's per-image bits/dim are averaged over its seeds; its difference from the baseline is
the mean over images of (variant − baseline) with the standard error of that mean, so the spread of the images'
own difficulty cancels (a paired comparison).

    python benchmarks/glow_ablation_report.py --runs runs/ablation --baseline base \\
        --variants base const mixture spline attention vardeq mix
"""

from __future__ import annotations

import argparse
import csv
import math
import re
from pathlib import Path

import torch
from torch import Tensor


def read_per_image(path: Path) -> Tensor:
    """The ``bits_per_dim`` column of an ``eval --per-image`` CSV file, in image order: ``(N,)`` float64."""
    with path.open(newline="") as stream:
        return torch.tensor([float(row["bits_per_dim"]) for row in csv.DictReader(stream)], dtype=torch.float64)


def seeds_of(runs: Path, variant: str) -> dict[int, Tensor]:
    """The per-image bits/dim of each seed of ``variant`` found in ``runs`` (``VARIANT_sSEED.csv``)."""
    pattern = re.compile(rf"{re.escape(variant)}_s(\d+)\.csv")
    found = {int(match.group(1)): read_per_image(path) for path in sorted(runs.glob(f"{variant}_s*.csv"))
             if (match := pattern.fullmatch(path.name))}
    return dict(sorted(found.items()))


def mean_and_error(values: Tensor, digits: int = 3) -> str:
    """``mean ± standard error`` of ``values``.

    Example:
        >>> mean_and_error(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
        '2.000 ± 0.577'
    """
    return f"{values.mean().item():.{digits}f} ± {values.std().item() / math.sqrt(len(values)):.{digits}f}"


def table(runs: Path, variants: list[str], baseline: str) -> list[str]:
    """The Markdown lines of the ablation table (variants without any evaluated seed are left out)."""
    found = {variant: seeds for variant in variants if (seeds := seeds_of(runs, variant))}
    if baseline not in found:
        raise SystemExit(f"no evaluated run of the baseline {baseline!r} in {runs} ({baseline}_s0.csv, ...)")
    reference = torch.stack(list(found[baseline].values())).mean(0)
    lines = [f"| variant | seeds | test bits/dim per seed (± s.e.) | mean over seeds | − {baseline} (paired, "
             "± s.e.) |", "|---|---|---|---|---|"]
    for variant, seeds in found.items():
        averaged = torch.stack(list(seeds.values())).mean(0)
        if len(averaged) != len(reference):
            raise SystemExit(f"{variant} was evaluated on {len(averaged)} images, {baseline} on {len(reference)}")
        per_seed = "; ".join(f"{seed}: {mean_and_error(values)}" for seed, values in seeds.items())
        difference = "—" if variant == baseline else mean_and_error(averaged - reference, digits=4)
        lines.append(f"| {variant} | {len(seeds)} | {per_seed} | {averaged.mean().item():.3f} | {difference} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, required=True, help="the folder of the runs and their CSV files")
    parser.add_argument("--variants", nargs="+", required=True, help="the variants, in the table's order")
    parser.add_argument("--baseline", required=True, help="the variant the others are compared with")
    args = parser.parse_args()
    print("\n".join(table(args.runs, args.variants, args.baseline)))


if __name__ == "__main__":
    main()
