"""Unconditional (or class-conditional) Glow on images: train, eval, sample, interpolate, bench.

    python -m tasks.glow train --config configs/glow/fashion_mnist.yaml
    python -m tasks.glow eval --checkpoint runs/glow_fashion_mnist/checkpoint.pt
    python -m tasks.glow check --checkpoint runs/glow_fashion_mnist/checkpoint.pt
    python -m tasks.glow sample --checkpoint runs/glow_fashion_mnist/checkpoint.pt
    python -m tasks.glow interpolate --checkpoint runs/glow_fashion_mnist/checkpoint.pt
    python -m tasks.glow bench --config configs/glow/fashion_mnist.yaml

Any config field can be overridden: ``--train.lr=5e-4 --model.hidden_channels=128``.
Multi-process: ``torchrun --nproc_per_node=N -m tasks.glow train ...``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from cinn import cli
from cinn.bench import benchmark_training
from cinn.cli import add_train_arguments, dispatch, run_command, train_config
from cinn.config import ConfigError, config_to_dict, load_config
from cinn.data import load_dataset
from cinn.engine import (
    DequantizedImages,
    TrainConfig,
    Trainer,
    build_optimizer,
    close_process_group,
    evaluate_bits_per_dim,
    init_process_group,
    prepared_batches,
    resolve_device,
)
from cinn.latent import interpolate_latents
from cinn.models import Flow, build_glow
from cinn.viz import save_grid

TASK = "glow"


@dataclass
class DataConfig:
    """``dataset``: mnist | fashion-mnist | cifar10 | a folder of images (then ``image_size``, ``channels``)."""

    dataset: str = "fashion-mnist"
    root: str | None = None
    image_size: int = 32
    channels: int = 3
    n_bits: int = 8

    def validate(self) -> None:
        if not 1 <= self.n_bits <= 8:
            raise ConfigError(f"data.n_bits must be between 1 and 8, got {self.n_bits}")


@dataclass
class ModelConfig:
    """``min_scale``: floor of the affine coupling's scale (0 is Glow's ``σ(h + 2)``; see ``CouplingBlock``).
    ``channels_last``: parameters and activations NHWC (faster on the CPU; see ``build_glow``)."""

    n_levels: int = 2
    steps_per_level: int = 8
    hidden_channels: int = 128
    coupling: Literal["affine", "additive"] = "affine"
    min_scale: float = 0.0
    permutation: Literal["lu", "plain", "reverse", "shuffle"] = "lu"
    learn_top_prior: bool = True
    split_prior: bool = True
    class_conditional: bool = False
    channels_last: bool = True


@dataclass
class GlowConfig:
    run_dir: str = "runs/glow"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def load_split(config: GlowConfig, train: bool, root: str | None = None):
    data = config.data
    return load_dataset(data.dataset, root or data.root, train=train, image_size=data.image_size,
                        channels=data.channels)


def build_model(config: GlowConfig, input_shape: Sequence[int], num_classes: int) -> Flow:
    model = config.model
    if model.class_conditional and num_classes < 2:
        raise ConfigError(f"model.class_conditional needs a labelled dataset; {config.data.dataset} has none")
    torch.manual_seed(config.train.seed)
    try:
        return build_glow(input_shape, n_levels=model.n_levels, steps_per_level=model.steps_per_level,
                          hidden_channels=model.hidden_channels, coupling=model.coupling,
                          min_scale=model.min_scale,
                          permutation=model.permutation, learn_top_prior=model.learn_top_prior,
                          split_prior=model.split_prior, n_classes=num_classes if model.class_conditional else 0,
                          seed=config.train.seed, channels_last=model.channels_last)
    except ValueError as error:
        raise ConfigError(f"impossible model for {config.data.dataset}: {error}") from None


def sample_condition(model: Flow, n: int, device: torch.device) -> torch.Tensor | None:
    """Labels cycling through the classes for a class-conditional model, else None."""
    if not model.condition_shapes:
        return None
    return torch.arange(n, device=device) % model.condition_shapes[0][0]


def load_trained(checkpoint: Path, device: torch.device) -> tuple[GlowConfig, Flow]:
    """Rebuild the model of a checkpoint from its own config (EMA weights when the run kept them)."""
    def rebuild(config: GlowConfig, state: dict) -> Flow:
        return build_model(config, state["input_shape"], state["num_classes"])

    return cli.load_trained(checkpoint, TASK, GlowConfig, rebuild, device)


def _input_shape(config: GlowConfig) -> tuple[int, ...]:
    image, _ = load_split(config, train=False)[0]
    return tuple(image.shape)


# ------------------------------------------------------------------------------------------ commands
def train(args: argparse.Namespace, overrides: Sequence[str]) -> None:
    config = train_config(GlowConfig, args, overrides, TASK)
    group = init_process_group(config.train.device)
    try:
        train_set = load_split(config, train=True)
        test_set = load_split(config, train=False)
        image, _ = train_set[0]
        num_classes = getattr(train_set, "num_classes", 0)
        model = build_model(config, tuple(image.shape), num_classes)
        objective = DequantizedImages(config.data.n_bits, class_conditional=config.model.class_conditional)
        run_dir = cli.start_run_dir(config, group.is_main)

        def sample_fn(flow: Flow) -> torch.Tensor:
            generator = torch.Generator(group.device).manual_seed(config.train.seed)
            return flow.sample(64, sample_condition(flow, 64, group.device), temperature=0.7, generator=generator)

        def eval_fn(flow: Flow) -> float:
            return evaluate_bits_per_dim(flow, test_set, objective, device=group.device,
                                         limit=config.train.eval_images, progress=False)[0]

        trainer = Trainer(model, config.train, run_dir, train_set, objective, task=TASK,
                          task_config=config_to_dict(config), group=group, sample_fn=sample_fn, eval_fn=eval_fn,
                          extra_state={"input_shape": list(model.input_shape),
                                       "num_classes": num_classes if config.model.class_conditional else 0})
        trainer.fit(resume=args.resume)
    finally:
        close_process_group(group)


def evaluate(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    config, model = load_trained(args.checkpoint, device)
    test_set = load_split(config, train=False, root=args.data_root)
    objective = DequantizedImages(config.data.n_bits, class_conditional=config.model.class_conditional)
    result = evaluate_bits_per_dim(model, test_set, objective, batch_size=args.batch_size, seed=args.seed,
                                   device=device, limit=args.limit)
    print(f"test bits/dim: {result.summary()}; {config.data.dataset}, {config.data.n_bits}-bit, uniform "
          "dequantisation")


def check(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    config, model = load_trained(args.checkpoint, device)
    test_set = load_split(config, train=False, root=args.data_root)
    objective = DequantizedImages(config.data.n_bits, class_conditional=config.model.class_conditional)
    cli.check_trained(model, prepared_batches(test_set, objective, batch_size=args.batch_size, seed=args.seed,
                                              device=device, limit=args.limit, description="check"),
                      args.checkpoint)


def sample(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    _, model = load_trained(args.checkpoint, device)
    out = Path(args.out or Path(args.checkpoint).parent / "samples")
    for temperature in args.temperatures:
        generator = torch.Generator(device).manual_seed(args.seed)
        images = model.sample(args.n, sample_condition(model, args.n, device), temperature, generator)
        path = save_grid(images, out / f"temperature_{temperature:.2f}.png", nrow=int(args.n**0.5))
        print(f"T={temperature}: {path}")


def interpolate(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    config, model = load_trained(args.checkpoint, device)
    test_set = load_split(config, train=False, root=args.data_root)
    generator = torch.Generator().manual_seed(args.seed)
    chosen = torch.randperm(len(test_set), generator=generator)[:2 * args.pairs].tolist()
    objective = DequantizedImages(config.data.n_bits, class_conditional=config.model.class_conditional)
    rows = []
    with torch.no_grad():
        for first, second in zip(chosen[::2], chosen[1::2], strict=True):
            images, labels = zip(test_set[first], test_set[second], strict=True)
            x, c = objective.prepare(torch.stack(images).to(device), torch.stack(labels).to(device),
                                     torch.Generator(device).manual_seed(args.seed))
            latents = model.encode(x, c)
            path = interpolate_latents([z[:1] for z in latents], [z[1:] for z in latents], args.steps)
            rows.append(model.decode(path, None if c is None else c[:1].expand(args.steps)))
    out = save_grid(torch.cat(rows), args.out or Path(args.checkpoint).parent / "interpolation.png",
                    nrow=args.steps)
    print(f"{args.pairs} interpolations of {args.steps} steps: {out}")


def bench(args: argparse.Namespace, overrides: Sequence[str]) -> None:
    config = load_config(GlowConfig, args.config, overrides)
    device = resolve_device(config.train.device)
    image_shape = _input_shape(config) if args.shape is None else tuple(args.shape)
    model = build_model(config, image_shape, 0)
    report = benchmark_training(model, image_shape, batch_size=config.train.batch_size, steps=args.steps,
                                device=device, precision=config.train.precision, compile=config.train.compile,
                                backprop=config.train.backprop, sample_batch=args.sample_batch,
                                retain_memory=config.train.retain_freed_memory,
                                optimizer=lambda parameters: build_optimizer(parameters, config.train))
    print(report.format())
    if args.record:
        report.append_to(Path("BENCHMARKS.md"), command="python -m tasks.glow " + " ".join(sys.argv[1:]))


# ------------------------------------------------------------------------------------------ parsing
def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m tasks.glow", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = root.add_subparsers(dest="command", required=True)

    train_parser = commands.add_parser("train", help="train a Glow (config overrides: --section.key=value)")
    add_train_arguments(train_parser)

    for name, help_text in (("eval", "test-split bits/dim with its standard error"),
                            ("check", "is the trained model still invertible on test images?"),
                            ("sample", "sample grids at several temperatures"),
                            ("interpolate", "latent interpolations between encoded test images")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--checkpoint", type=Path, required=True)
        command.add_argument("--device", default="auto")
        command.add_argument("--seed", type=int, default=0)
        if name in ("eval", "check", "interpolate"):
            command.add_argument("--data-root", help="where the data lives, if not where it was for training")
        if name in ("eval", "check"):
            command.add_argument("--batch-size", type=int, default=256)
            command.add_argument("--limit", type=int, default=None if name == "eval" else 1000,
                                 help="use only the first N test images")
        if name == "sample":
            command.add_argument("--n", type=int, default=64)
            command.add_argument("--temperatures", type=float, nargs="+", default=[0.5, 0.7, 0.8, 1.0])
            command.add_argument("--out", type=Path, help="output folder (default: next to the checkpoint)")
        if name == "interpolate":
            command.add_argument("--pairs", type=int, default=4)
            command.add_argument("--steps", type=int, default=8)
            command.add_argument("--out", type=Path, help="output PNG (default: next to the checkpoint)")

    bench_parser = commands.add_parser("bench", help="training/sampling img/s, peak memory, GFLOP/s")
    bench_parser.add_argument("--config", type=Path)
    bench_parser.add_argument("--steps", type=int, default=10)
    bench_parser.add_argument("--shape", type=int, nargs=3, help="input shape C H W (default: the dataset's)")
    bench_parser.add_argument("--sample-batch", type=int, default=64)
    bench_parser.add_argument("--record", action="store_true", help="append the result to BENCHMARKS.md")
    return root


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch(parser(), argv, {"train": train, "bench": bench},
                    {"eval": evaluate, "check": check, "sample": sample, "interpolate": interpolate})


if __name__ == "__main__":
    run_command(main)
