"""Why a class-conditional model's worst test images cost what they cost: per-image test bits/dim, and for the
worst images (and the median one) what sets them apart.

    python benchmarks/fc_cinn_outliers.py --checkpoint RUN/checkpoint.pt [--limit 10000] [--worst 5] [--show 6574]

Over the first ``--limit`` test images (uniform dequantisation, noise seed 0, as ``eval``): the median and
worst bits/dim and how many images exceed twice the median. Then one row per image, the worst ones, those of
``--show`` (test image indices, e.g. another model's worst) and the median one:

- ``rare ink``: its inked pixels (value ≥ 128 of 255) that fewer than 1 in 1,000 training images ink;
- ``subnet input``: the largest magnitude any coupling's subnet receives for it, and ``first layer reads``
  what the subnet's first linear layer reads (the same, unless ``model.subnet_inputs=asinh``);
- ``|ε| > 3``: the fraction of its latent dimensions beyond three standard deviations of the prior.

For the FC cINN on MNIST this shows why the worst digits lose (BENCHMARKS.md, "Why the FC model ignored its
labels"): the couplings scale near-blank background pixels by large factors, so a digit with ink where
almost no training digit has any reaches the later subnets as huge values, and its whole latent goes astray.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from cinn import cli
from cinn.blocks import CouplingBlock
from cinn.config import ConfigError
from cinn.data import collate_images
from cinn.engine import prepared_batches, resolve_device
from cinn.experiment import int_list
from cinn.models.flow import log_prob_from_latents
from tasks.mnist import ClassConditionalTask

RARE = 1e-3  # a pixel is rarely inked if fewer than this fraction of the training images ink it


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a tasks.mnist checkpoint")
    parser.add_argument("--limit", type=cli.int_in_range(1), default=10000,
                        help="the first N test images (default 10000)")
    parser.add_argument("--worst", type=cli.int_in_range(0), default=5,
                        help="rows for the N worst images (default 5)")
    parser.add_argument("--show", type=int_list(0), default=[], help="rows also for these test image indices")
    parser.add_argument("--data-root", help="where the data lives, if not where it was in training")
    parser.add_argument("--device", default="cpu")
    return parser


def ink_frequency(dataset) -> Tensor:
    """Per pixel, the fraction of ``dataset``'s 8-bit images with ink there (value ≥ 128), ``(C, H, W)``."""
    inked, count = None, 0
    for images, _ in DataLoader(dataset, batch_size=1000, collate_fn=collate_images):
        batch = (images >= 128).sum(0)
        inked = batch if inked is None else inked + batch
        count += len(images)
    return inked.float() / count


class SubnetInputs:
    """Forward pre-hooks on every coupling subnet and its first linear layer: per image, the largest magnitude
    each receives, maximised over all couplings of one forward pass."""

    def __init__(self, model: nn.Module):
        self.received: Tensor | None = None
        self.read: Tensor | None = None
        for block in model.modules():
            if isinstance(block, CouplingBlock):
                for subnet in (block.subnet_b, block.subnet_a):
                    if subnet is None:
                        continue
                    first_linear = next(layer for layer in subnet.modules() if isinstance(layer, nn.Linear))
                    subnet.register_forward_pre_hook(self.hook("received"))
                    first_linear.register_forward_pre_hook(self.hook("read"))

    def hook(self, name: str):
        def record(_module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            largest = inputs[0].detach().flatten(1).abs().amax(1)
            current = getattr(self, name)
            setattr(self, name, largest if current is None else torch.maximum(current, largest))
        return record

    def take(self) -> tuple[Tensor, Tensor]:
        received, read = self.received, self.read
        self.received = self.read = None
        return received, read


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    task, device = ClassConditionalTask(), resolve_device(args.device)
    trained = task.open(args.checkpoint, device)
    model, config = trained.model.eval(), trained.config
    test_set, _ = task.eval_data(config, args.data_root)
    evaluated = min(args.limit, len(test_set))
    if any(index >= evaluated for index in args.show):
        raise ConfigError(f"--show {max(args.show)}: only the first {evaluated} test images are evaluated")
    train_set = task.split(config, train=True, root=args.data_root)
    objective = task.objective(config, train=False)
    frequency = ink_frequency(train_set).to(device)
    probe = SubnetInputs(model)
    rows: dict[str, list[Tensor]] = {key: [] for key in ("bits", "rare", "received", "read", "tails", "label")}
    with torch.no_grad():
        for x, labels in prepared_batches(test_set, objective, batch_size=task.eval_batch_size, device=device,
                                          limit=args.limit):
            latents, log_det = model.transform(x, labels)
            rows["bits"].append(objective.bits_per_dim(log_prob_from_latents(latents, log_det), x).double().cpu())
            received, read = probe.take()
            rows["received"].append(received.cpu())
            rows["read"].append(read.cpu())
            epsilon = torch.cat([z.flatten(1) for z in latents], 1)
            rows["tails"].append((epsilon.abs() > 3).float().mean(1).cpu())
            rows["rare"].append(((x >= 0.5) & (frequency < RARE)).flatten(1).sum(1).cpu())  # x̃ ≥ 0.5: value ≥ 128
            rows["label"].append(labels.cpu())
    table = {key: torch.cat(values) for key, values in rows.items()}
    bits = table["bits"]
    median = bits.median().item()
    print(f"{args.checkpoint}: {len(bits)} test images, median {median:.4f} bits/dim, mean {bits.mean():.4f}, "
          f"worst {bits.max():.4f} ({bits.max() / median:.2f}x the median), "
          f"{int((bits > 2 * median).sum())} above 2x the median")
    order = bits.argsort(descending=True)
    median_index = (bits - median).abs().argmin()
    print("| test image | label | bits/dim (x median) | rare ink (pixels) | subnet input | first layer reads "
          "| \\|ε\\| > 3 |\n|---|---|---|---|---|---|---|")
    for name, index in [*((f"worst {rank + 1}", order[rank]) for rank in range(min(args.worst, len(bits)))),
                        *(("shown", torch.tensor(index)) for index in args.show), ("median", median_index)]:
        print(f"| {name}: {int(index)} | {int(table['label'][index])} | {bits[index]:.3f} "
              f"({bits[index] / median:.2f}x) | {int(table['rare'][index])} | {table['received'][index]:.4g} | "
              f"{table['read'][index]:.4g} | {table['tails'][index]:.1%} |")
    return 0


if __name__ == "__main__":
    cli.run_command(main)
