"""Unconditional (or class-conditional) Glow on images: train, eval, check, sample, interpolate, bench.

    python -m tasks.glow train --config configs/glow/fashion_mnist.yaml
    python -m tasks.glow eval --checkpoint runs/glow_fashion_mnist/checkpoint.pt
    python -m tasks.glow check --checkpoint runs/glow_fashion_mnist/checkpoint.pt
    python -m tasks.glow sample --checkpoint runs/glow_fashion_mnist/checkpoint.pt
    python -m tasks.glow interpolate --checkpoint runs/glow_fashion_mnist/checkpoint.pt
    python -m tasks.glow bench --config configs/glow/fashion_mnist.yaml

Any config field can be overridden (``train --help`` lists them): ``--train.lr=5e-4 --model.hidden_channels=128``.
Multi-process: ``torchrun --nproc_per_node=N -m tasks.glow train ...``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from cinn.cli import int_in_range, positive_int
from cinn.config import ConfigError
from cinn.data import load_dataset
from cinn.engine import DequantizedImages, TrainConfig, resolve_device
from cinn.latent import interpolate_latents
from cinn.models import build_glow
from cinn.models.registry import model_spec
from cinn.task import Command, ImageDataConfig, Task
from cinn.viz import save_grid


@dataclass
class ModelConfig:
    n_levels: int = 2
    """scales: each squeezes 2x2 pixels into channels and (but the last) splits half the channels off"""
    steps_per_level: int = 8
    """flow steps per scale: ActNorm, channel mixing, coupling"""
    hidden_channels: int = 128
    """width of the coupling subnets"""
    coupling: Literal["affine", "additive"] = "affine"
    """element-wise map of the couplings"""
    min_scale: float = 0.0
    """floor of the affine coupling's scale (0 is Glow's σ(h + 2); bounds the inverse's gain by 1/min_scale)"""
    permutation: Literal["lu", "plain", "reverse", "shuffle"] = "lu"
    """channel mixing: learned 1x1 convolution (LU or plain), reversal or a fixed shuffle"""
    learn_top_prior: bool = True
    """learn the mean and scale of the last latent's Gaussian"""
    split_prior: bool = True
    """predict each split-off latent's Gaussian from the kept channels"""
    class_conditional: bool = False
    """condition the priors on the image's class (needs a labelled dataset)"""
    channels_last: bool | None = None
    """memory layout: true NHWC, false NCHW, null timed on this machine when training starts (cached)"""

    def validate(self) -> None:
        if self.n_levels < 1 or self.steps_per_level < 1 or self.hidden_channels < 1:
            raise ConfigError("model.n_levels, model.steps_per_level and model.hidden_channels must be positive")


@dataclass
class GlowConfig:
    run_dir: str = "runs/glow"
    """folder of the run: checkpoint, config, metrics, figures"""
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def class_cycle(model: nn.Module, n_classes: int, n: int, device: torch.device) -> Tensor | None:
    """Labels cycling through the ``n_classes`` classes for a class-conditional model, else None."""
    return torch.arange(n, device=device) % n_classes if model.condition_shapes else None


class GlowTask(Task[GlowConfig]):
    name, config_class, description, benchmarks = "glow", GlowConfig, __doc__, True

    def train_data(self, config: GlowConfig, root: str | None = None):
        data = config.data
        return load_dataset(data.dataset, root or data.root, train=True, image_size=data.image_size,
                            channels=data.channels)

    def eval_data(self, config: GlowConfig, data: str | None):
        settings = config.data
        test_set = load_dataset(settings.dataset, data or settings.root, train=False,
                                image_size=settings.image_size, channels=settings.channels)
        return test_set, f"{settings.dataset}, {settings.n_bits}-bit"

    def model_spec(self, config: GlowConfig, facts: dict[str, Any]) -> dict[str, Any]:
        model = config.model
        if model.class_conditional and facts["n_classes"] < 2:
            raise ConfigError(f"model.class_conditional needs a labelled dataset; {config.data.dataset} has none")
        return model_spec(build_glow, input_shape=facts["image_shape"], n_levels=model.n_levels,
                          steps_per_level=model.steps_per_level, hidden_channels=model.hidden_channels,
                          coupling=model.coupling, min_scale=model.min_scale, permutation=model.permutation,
                          learn_top_prior=model.learn_top_prior, split_prior=model.split_prior,
                          n_classes=facts["n_classes"] if model.class_conditional else 0, seed=config.train.seed,
                          channels_last=model.channels_last)

    def conventions(self, config: GlowConfig, facts: dict[str, Any]) -> dict[str, Any]:
        return {**facts, "n_bits": config.data.n_bits, "dataset": config.data.dataset}

    def objective(self, config: GlowConfig, train: bool) -> DequantizedImages:
        return DequantizedImages(config.data.n_bits, class_conditional=config.model.class_conditional)

    def figure(self, model, config, conventions, eval_set, device) -> Tensor:
        generator = torch.Generator(device).manual_seed(config.train.seed)
        return self.sample_images(model, conventions, 64, 0.7, generator)[0]

    def sample_images(self, model, conventions, n, temperature, generator) -> tuple[Tensor, int]:
        labels = class_cycle(model, conventions["n_classes"], n, generator.device)
        return model.sample(n, labels, temperature, generator), int(n**0.5)

    def commands(self) -> list[Command]:
        def arguments(parser: argparse.ArgumentParser) -> None:
            parser.add_argument("--data-root", dest="data", help="where the data lives, if not where it was")
            parser.add_argument("--pairs", type=positive_int, default=4, help="interpolations (rows)")
            parser.add_argument("--steps", type=int_in_range(2), default=8, help="images per interpolation, ends "
                                                                                  "included")
            parser.add_argument("--out", type=Path, help="output PNG (default: next to the checkpoint)")

        return [Command("interpolate", "latent interpolations between encoded test images", self.interpolate,
                        arguments)]

    def interpolate(self, args: argparse.Namespace) -> None:
        run = self.open(args.checkpoint, resolve_device(args.device))
        test_set, _ = self.eval_data(run.config, args.data)
        chosen = torch.randperm(len(test_set), generator=torch.Generator().manual_seed(args.seed))
        objective, rows = self.objective(run.config, train=False), []
        with torch.no_grad():
            for first, second in chosen[:2 * args.pairs].view(-1, 2).tolist():
                images, labels = zip(test_set[first], test_set[second], strict=True)
                x, c = objective.prepare(torch.stack(images).to(run.device), torch.stack(labels).to(run.device),
                                         torch.Generator(run.device).manual_seed(args.seed))
                latents = run.model.encode(x, c)
                path = interpolate_latents([z[:1] for z in latents], [z[1:] for z in latents], args.steps)
                rows.append(run.model.decode(path, None if c is None else c[:1].expand(args.steps)))
        out = save_grid(torch.cat(rows), args.out or Path(args.checkpoint).parent / "interpolation.png",
                        nrow=args.steps)
        print(f"{args.pairs} interpolations of {args.steps} steps: {out}")


main = GlowTask().main

if __name__ == "__main__":
    GlowTask().run()
