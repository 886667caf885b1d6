"""Class-conditional INN on MNIST-like digits: train, eval, sample, style transfer, latent PCA.

    python -m tasks.mnist train --config configs/mnist/fc.yaml
    python -m tasks.mnist eval --checkpoint runs/mnist_fc/checkpoint.pt
    python -m tasks.mnist check --checkpoint runs/mnist_fc/checkpoint.pt
    python -m tasks.mnist sample --checkpoint runs/mnist_fc/checkpoint.pt --temperature 0.8
    python -m tasks.mnist transfer --checkpoint runs/mnist_fc/checkpoint.pt
    python -m tasks.mnist pca --checkpoint runs/mnist_fc/checkpoint.pt --label 7

The model maps a digit ``x`` and its label ``y`` to a latent ``z`` that, ideally, holds only the
style: decoding one ``z`` under every label writes the same hand in every class (``transfer``).
Any config field can be overridden: ``--train.lr=2e-4 --model.architecture=conv``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from cinn import cli
from cinn.classifier import cached_classifier, class_consistency
from cinn.cli import add_train_arguments, dispatch, run_command, train_config
from cinn.config import ConfigError, config_to_dict
from cinn.data import load_dataset
from cinn.engine import (
    DequantizedImages,
    GaussianNoiseImages,
    Objective,
    TrainConfig,
    Trainer,
    close_process_group,
    evaluate_bits_per_dim,
    init_process_group,
    prepared_batches,
    resolve_device,
)
from cinn.latent import LatentPCA, flatten_latents, transfer_style, unflatten_latents
from cinn.models import Flow, build_cinn, build_cinn_fc
from cinn.viz import save_grid

TASK = "mnist"
N_CLASSES = 10


@dataclass
class DataConfig:
    """``dataset``: mnist (torchvision's layout under ``root``) or fashion-mnist (also Debian's package).

    ``train_noise``: ``uniform`` dequantisation (a valid discrete bound) or ``gaussian`` (bin centres
    plus N(0, ``gaussian_std``²), as the official cINN code trains); evaluation is always uniform.
    """

    dataset: str = "mnist"
    root: str | None = None
    n_bits: int = 8
    train_noise: Literal["uniform", "gaussian"] = "uniform"
    gaussian_std: float = 0.08

    def validate(self) -> None:
        if self.dataset not in ("mnist", "fashion-mnist"):
            raise ConfigError(f"data.dataset must be mnist or fashion-mnist, got {self.dataset!r}")
        if not 1 <= self.n_bits <= 8:
            raise ConfigError(f"data.n_bits must be between 1 and 8, got {self.n_bits}")
        if self.gaussian_std <= 0:
            raise ConfigError(f"data.gaussian_std must be positive, got {self.gaussian_std}")


@dataclass
class ModelConfig:
    """``fc``: the paper's flat model (``n_blocks`` couplings of width ``hidden_features``);
    ``conv``: multi-scale (``n_levels`` × ``blocks_per_level`` conv couplings of width
    ``hidden_channels``, Haar downsampling, learned label embeddings broadcast as maps). ``actnorm``
    (not in the paper) adds a data-initialised ActNorm before every coupling; ``permutation`` (fc only):
    a hard ``shuffle`` as in the paper, or ``orthogonal`` mixing (robust to outliers, slower to learn)."""

    architecture: Literal["fc", "conv"] = "fc"
    clamp: float = 1.5
    n_blocks: int = 24
    hidden_features: int = 512
    n_levels: int = 2
    blocks_per_level: int = 4
    hidden_channels: int = 64
    split_prior: bool = False
    actnorm: bool = False
    permutation: Literal["shuffle", "orthogonal"] = "shuffle"

    def validate(self) -> None:
        if self.clamp <= 0:
            raise ConfigError(f"model.clamp must be positive, got {self.clamp}")


@dataclass
class EvalConfig:
    """Class consistency: ``samples_per_class`` samples per label at ``temperature``, judged by a CNN
    trained ``classifier_epochs`` epochs on the training split (cached in the run directory)."""

    temperature: float = 0.8
    samples_per_class: int = 100
    classifier_epochs: int = 3


@dataclass
class MnistConfig:
    run_dir: str = "runs/mnist"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(optimizer="adam", lr=1e-4, weight_decay=1e-5,
                                                                   batch_size=512))
    eval: EvalConfig = field(default_factory=EvalConfig)


def load_split(config: MnistConfig, train: bool, root: str | None = None):
    return load_dataset(config.data.dataset, root or config.data.root, train=train)


def build_model(config: MnistConfig, input_shape: Sequence[int]) -> Flow:
    model = config.model
    torch.manual_seed(config.train.seed)
    if model.architecture == "fc":
        return build_cinn_fc(input_shape, N_CLASSES, n_blocks=model.n_blocks,
                             hidden_features=model.hidden_features, clamp=model.clamp, actnorm=model.actnorm,
                             permutation=model.permutation, seed=config.train.seed)
    try:
        return build_cinn(input_shape, (N_CLASSES,), n_levels=model.n_levels,
                          blocks_per_level=model.blocks_per_level, hidden_channels=model.hidden_channels,
                          clamp=model.clamp, split_prior=model.split_prior, actnorm=model.actnorm,
                          seed=config.train.seed)
    except ValueError as error:
        raise ConfigError(f"impossible model for {config.data.dataset}: {error}") from None


def train_objective(config: MnistConfig) -> Objective:
    if config.data.train_noise == "gaussian":
        return GaussianNoiseImages(config.data.n_bits, config.data.gaussian_std, class_conditional=True)
    return DequantizedImages(config.data.n_bits, class_conditional=True)


def eval_objective(config: MnistConfig) -> DequantizedImages:
    """Always uniform dequantisation: the reported bits/dim is a bound on the discrete likelihood."""
    return DequantizedImages(config.data.n_bits, class_conditional=True)


def class_rows(n_per_class: int, device: torch.device) -> torch.Tensor:
    """Labels ``0…0, 1…1, …, 9…9`` (``n_per_class`` each): one grid row per class."""
    return torch.arange(N_CLASSES, device=device).repeat_interleave(n_per_class)


def load_trained(checkpoint: Path, device: torch.device) -> tuple[MnistConfig, Flow]:
    """Rebuild the model of a checkpoint from its own config (EMA weights when the run kept them)."""
    return cli.load_trained(checkpoint, TASK, MnistConfig,
                            lambda config, state: build_model(config, state["input_shape"]), device)


def measure_class_consistency(model: Flow, config: MnistConfig, run_dir: Path, device: torch.device, *,
                              classifier_path: Path | None = None, seed: int = 0,
                              progress: bool = True) -> tuple[float, torch.Tensor, float]:
    """Fraction of class-conditional samples the cached classifier assigns to their label (overall and
    per class), and the classifier's own test accuracy."""
    classifier, accuracy = cached_classifier(classifier_path or run_dir / "classifier.pt",
                                             load_split(config, train=True), load_split(config, train=False),
                                             N_CLASSES, epochs=config.eval.classifier_epochs, seed=seed,
                                             device=device, progress=progress)
    labels = class_rows(config.eval.samples_per_class, device)
    generator = torch.Generator(device).manual_seed(seed)
    with torch.no_grad():
        samples = torch.cat([model.sample(len(chunk), chunk, config.eval.temperature, generator)
                             for chunk in labels.split(500)])
    return (*class_consistency(classifier, samples, labels), accuracy)


# ------------------------------------------------------------------------------------------ commands
def train(args: argparse.Namespace, overrides: Sequence[str]) -> None:
    config = train_config(MnistConfig, args, overrides, TASK)
    group = init_process_group(config.train.device)
    try:
        train_set = load_split(config, train=True)
        test_set = load_split(config, train=False)
        image, _ = train_set[0]
        model = build_model(config, tuple(image.shape))
        run_dir = cli.start_run_dir(config, group.is_main)

        def sample_fn(flow: Flow) -> torch.Tensor:
            generator = torch.Generator(group.device).manual_seed(config.train.seed)
            return flow.sample(80, class_rows(8, group.device), config.eval.temperature, generator)

        def eval_fn(flow: Flow) -> float:
            return evaluate_bits_per_dim(flow, test_set, eval_objective(config), device=group.device,
                                         limit=config.train.eval_images, progress=False)[0]

        trainer = Trainer(model, config.train, run_dir, train_set, train_objective(config), task=TASK,
                          task_config=config_to_dict(config), group=group, sample_fn=sample_fn, eval_fn=eval_fn,
                          extra_state={"input_shape": list(model.input_shape)})
        trainer.fit(resume=args.resume)
    finally:
        close_process_group(group)


def evaluate(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    config, model = load_trained(args.checkpoint, device)
    config.data.root = args.data_root or config.data.root
    test_set = load_split(config, train=False)
    result = evaluate_bits_per_dim(model, test_set, eval_objective(config), batch_size=args.batch_size,
                                   seed=args.seed, device=device, limit=args.limit)
    print(f"test bits/dim: {result.summary()}; {config.data.dataset}, {config.data.n_bits}-bit, uniform "
          "dequantisation")
    consistency, per_class, accuracy = measure_class_consistency(model, config, args.checkpoint.parent, device,
                                                      classifier_path=args.classifier, seed=args.seed)
    count = N_CLASSES * config.eval.samples_per_class
    standard_error = math.sqrt(consistency * (1 - consistency) / count)
    print(f"class consistency: {consistency:.1%} ± {standard_error:.1%} of {count} samples at temperature "
          f"{config.eval.temperature} (classifier test accuracy {accuracy:.1%})")
    print("  per class: " + ", ".join(f"{label}: {value:.0%}" for label, value in enumerate(per_class.tolist())))


def check(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    config, model = load_trained(args.checkpoint, device)
    test_set = load_split(config, train=False, root=args.data_root)
    batches = prepared_batches(test_set, eval_objective(config), batch_size=args.batch_size, seed=args.seed,
                               device=device, limit=args.limit, description="check")
    cli.check_trained(model, batches, args.checkpoint)


def sample(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    _, model = load_trained(args.checkpoint, device)
    generator = torch.Generator(device).manual_seed(args.seed)
    with torch.no_grad():
        images = model.sample(N_CLASSES * args.n, class_rows(args.n, device), args.temperature, generator)
    out = args.out or args.checkpoint.parent / f"samples_temperature_{args.temperature:.2f}.png"
    print(f"{N_CLASSES} x {args.n} samples at T={args.temperature}: {save_grid(images, out, nrow=args.n)}")


def transfer(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    config, model = load_trained(args.checkpoint, device)
    test_set = load_split(config, train=False, root=args.data_root)
    chosen = torch.randperm(len(test_set), generator=torch.Generator().manual_seed(args.seed))[:args.n].tolist()
    images, labels = (torch.stack(items).to(device) for items in zip(*(test_set[i] for i in chosen), strict=True))
    x, c = eval_objective(config).prepare(images, labels, torch.Generator(device).manual_seed(args.seed))
    targets = [torch.full_like(labels, label) for label in range(N_CLASSES)]
    transferred = transfer_style(model, x, c, targets)
    grid = torch.cat([x[:, None], transferred], dim=1).flatten(0, 1)
    out = args.out or args.checkpoint.parent / "transfer.png"
    print(f"style transfer (each row: a test digit, then its latent decoded as 0-9): "
          f"{save_grid(grid, out, nrow=N_CLASSES + 1)}")


def pca(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    config, model = load_trained(args.checkpoint, device)
    test_set = load_split(config, train=False, root=args.data_root)
    objective = eval_objective(config)
    latents = []
    count = min(args.images, len(test_set))
    with torch.no_grad():
        for start in range(0, count, 500):
            end = min(start + 500, count)
            images, labels = test_set.images[start:end], test_set.labels[start:end]
            x, c = objective.prepare(images.to(device), labels.to(device),
                                     torch.Generator(device).manual_seed(args.seed + start))
            latents.append(flatten_latents(model.encode(x, c)))
        latents = torch.cat(latents)
        axes = LatentPCA.fit(latents, k=args.axes)
        values = torch.linspace(-args.range, args.range, args.steps, device=device)
        walks = torch.cat([axes.walk(axis, values) for axis in range(len(axes.std))])
        chosen_labels = range(N_CLASSES) if args.label is None else [args.label]
        out = Path(args.out or args.checkpoint.parent / "pca")
        for label in chosen_labels:
            images = model.decode(unflatten_latents(walks, model.latent_shapes),
                                  torch.full((len(walks),), label, device=device))
            path = save_grid(images, out / f"class_{label}.png", nrow=args.steps)
            print(f"class {label}: top {len(axes.std)} axes, {args.steps} steps in ±{args.range} std: {path}")
    share = (axes.std**2).sum() / latents.var(0).sum()  # of the total variance of all D dims
    print(f"PCA of {count} held-out latents: the top {len(axes.std)} axes explain {share:.1%} of the variance; "
          f"their std: {', '.join(f'{s:.2f}' for s in axes.std.tolist())}")


# ------------------------------------------------------------------------------------------ parsing
def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m tasks.mnist", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = root.add_subparsers(dest="command", required=True)
    add_train_arguments(commands.add_parser("train", help="train a class-conditional INN "
                                                          "(config overrides: --section.key=value)"))
    help_texts = {"eval": "test bits/dim and class consistency of samples",
                  "check": "is the trained model still invertible on test images?",
                  "sample": "a grid with one row of samples per class",
                  "transfer": "style transfer: test digits re-decoded under every label",
                  "pca": "images along the principal axes of held-out latents"}
    for name, help_text in help_texts.items():
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--checkpoint", type=Path, required=True)
        command.add_argument("--device", default="auto")
        command.add_argument("--seed", type=int, default=0)
        if name != "sample":
            command.add_argument("--data-root", help="where the data lives, if not where it was for training")
        if name not in ("eval", "check"):
            command.add_argument("--out", type=Path, help="output file or folder (default: in the run directory)")
    commands.choices["eval"].add_argument("--batch-size", type=int, default=256)
    commands.choices["check"].add_argument("--batch-size", type=int, default=256)
    commands.choices["check"].add_argument("--limit", type=int, default=1000, help="use the first N test images")
    commands.choices["eval"].add_argument("--limit", type=int, help="evaluate only the first N test images")
    commands.choices["eval"].add_argument("--classifier", type=Path,
                                          help="cached classifier file (default: classifier.pt in the run)")
    commands.choices["sample"].add_argument("--n", type=int, default=10, help="samples per class")
    commands.choices["sample"].add_argument("--temperature", type=float, default=0.8)
    commands.choices["transfer"].add_argument("--n", type=int, default=8, help="test digits to transfer")
    pca_parser = commands.choices["pca"]
    pca_parser.add_argument("--label", type=int, choices=range(N_CLASSES), help="one class (default: all ten)")
    pca_parser.add_argument("--axes", type=int, default=6, help="top axes to show")
    pca_parser.add_argument("--steps", type=int, default=9, help="images per axis")
    pca_parser.add_argument("--range", type=float, default=2.5, help="walk from -range to +range std")
    pca_parser.add_argument("--images", type=int, default=5000, help="held-out images to fit the PCA on")
    return root


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch(parser(), argv, {"train": train},
                    {"eval": evaluate, "check": check, "sample": sample, "transfer": transfer, "pca": pca})


if __name__ == "__main__":
    run_command(main)
