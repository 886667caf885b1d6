"""Colourisation with a conditional INN in CIE Lab: learn p(ab | L), then colourise any photo.

    python -m tasks.colorize train                      # scikit-image's bundled photos, one held out
    python -m tasks.colorize train --data PHOTOS/       # any folder of photos; a validation split is held out
    python -m tasks.colorize colorize --checkpoint runs/colorize/checkpoint.pt --input PHOTO_OR_FOLDER \\
        --samples 8 --temperature 0.8 --out colorized/
    python -m tasks.colorize eval --checkpoint runs/colorize/checkpoint.pt [--data PHOTOS/]
    python -m tasks.colorize check --checkpoint runs/colorize/checkpoint.pt

The model sees photos at one scale: shorter side ``data.image_size`` pixels; it trains on random
``data.crop_size`` crops and colourises whole photos at that scale, upsampling its ab to the photo's
full resolution and keeping the photo's own L. ``--model.architecture=regressor`` trains the
deterministic L2 baseline (same condition network, a regression head). Any config field can be
overridden: ``--train.max_minutes=30 --model.hidden_channels=96``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image
from torch.utils.data import Dataset, Subset
from torchvision.transforms import functional as TF
from torchvision.utils import make_grid

from cinn import cli
from cinn.cli import add_train_arguments, dispatch, run_command, train_config
from cinn.colorization import (
    Colorizer,
    LabColorization,
    build_colorization_model,
    grey_version,
    load_colorizer,
    rmse_summary,
    sample_metrics,
    size_multiple,
)
from cinn.config import ConfigError, config_to_dict
from cinn.data import (
    IMAGE_EXTENSIONS,
    SKIMAGE_PHOTOS,
    DataError,
    ImageFolderDataset,
    TensorImageDataset,
    cache_in_memory,
    open_image,
    skimage_photo,
    split_dataset,
    square_photos,
)
from cinn.engine import (
    TrainConfig,
    Trainer,
    close_process_group,
    evaluate_bits_per_dim,
    init_process_group,
    prepared_batches,
    resolve_device,
)
from cinn.viz import save_grid, save_image_table

TASK = "colorize"
TABLE_PHOTOS = 4  # held-out photos shown in the figures written during and after training
TABLE_SAMPLES = 6
CONTACT_HEIGHT = 256  # pixels of each picture on a contact sheet


@dataclass
class DataConfig:
    """``path``: a folder of photos, or null for scikit-image's bundled photos with ``holdout`` held out.

    Photos are resized so the shorter side is ``image_size`` and centre-cropped square; training takes
    random ``crop_size`` crops (and flips). ab is modelled at 1/``ab_downsample`` of L's resolution (the
    paper: 4, ab 64x64 from L 256x256). ``noise``: ``uniform`` dequantisation of ab in integer Lab
    units (a valid bound) or ``gaussian`` (σ = ``gaussian_std`` Lab units; training only, evaluation is
    always uniform). An epoch takes ``crops_per_photo`` random crops of every training photo. ``cache``
    holds the decoded photos in memory (small sets); ``val_fraction`` of a folder is held out for
    validation.
    """

    path: str | None = None
    holdout: str = "chelsea"
    val_fraction: float = 0.125
    image_size: int = 128
    crop_size: int = 64
    ab_downsample: int = 2
    flip: bool = True
    crops_per_photo: int = 16
    noise: Literal["uniform", "gaussian"] = "uniform"
    gaussian_std: float = 0.5
    cache: bool = True

    def validate(self) -> None:
        if self.path is None and self.holdout not in SKIMAGE_PHOTOS:
            raise ConfigError(f"data.holdout must be one of scikit-image's photos ({', '.join(SKIMAGE_PHOTOS)}), "
                              f"got {self.holdout!r}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"data.val_fraction must lie strictly between 0 and 1, got {self.val_fraction}")
        if self.crop_size < 1 or self.image_size < self.crop_size:
            raise ConfigError(f"data.crop_size ({self.crop_size}) must be positive and at most data.image_size "
                              f"({self.image_size})")
        if self.crops_per_photo < 1:
            raise ConfigError(f"data.crops_per_photo must be positive, got {self.crops_per_photo}")
        if self.gaussian_std <= 0:
            raise ConfigError(f"data.gaussian_std must be positive, got {self.gaussian_std}")
        if self.ab_downsample < 1 or self.ab_downsample & (self.ab_downsample - 1):
            raise ConfigError(f"data.ab_downsample must be a power of two (1, 2, 4, ...), got "
                              f"{self.ab_downsample}")


@dataclass
class ModelConfig:
    """``cinn``: ``n_levels`` × [Haar → ``blocks_per_level`` conditional soft-clamp couplings of width
    ``hidden_channels`` → orthogonal permutations] with splits, fed by a condition network on L with
    ``condition_channels`` features per level (default 32, 64, 128, ...). ``regressor``: the same
    condition network plus an upsampling head, trained with L2 (the deterministic baseline)."""

    architecture: Literal["cinn", "regressor"] = "cinn"
    n_levels: int = 3
    blocks_per_level: int = 4
    hidden_channels: int = 64
    condition_channels: list[int] | None = None
    clamp: float = 1.5
    split_prior: bool = False
    actnorm: bool = False

    def validate(self) -> None:
        if self.n_levels < 1 or self.blocks_per_level < 1 or self.hidden_channels < 1:
            raise ConfigError("model.n_levels, model.blocks_per_level and model.hidden_channels must be positive")
        if self.condition_channels is not None and len(self.condition_channels) != self.n_levels:
            raise ConfigError(f"model.condition_channels needs one width per level ({self.n_levels}), got "
                              f"{self.condition_channels}")
        if self.clamp <= 0:
            raise ConfigError(f"model.clamp must be positive, got {self.clamp}")


@dataclass
class EvalConfig:
    """Best-of-``samples`` RMSE and diversity of samples drawn at ``temperature``."""

    samples: int = 8
    temperature: float = 0.8


@dataclass
class ColorizeConfig:
    run_dir: str = "runs/colorize"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=100_000, max_minutes=13, batch_size=16, optimizer="adam", lr=1e-3, weight_decay=1e-5,
        warmup_steps=100, init_batch_size=64, eval_every=250, eval_images=16, sample_every=1000,
        checkpoint_every=250))
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        multiple = self.size_multiple
        for name in ("crop_size", "image_size"):
            if getattr(self.data, name) % multiple:
                raise ConfigError(f"data.{name} ({getattr(self.data, name)}) must be a multiple of "
                                  f"2^model.n_levels · data.ab_downsample = {multiple}")

    @property
    def size_multiple(self) -> int:
        return size_multiple(self.model.n_levels, self.data.ab_downsample)


def model_spec(config: ColorizeConfig) -> dict[str, Any]:
    """The arguments of :func:`~cinn.colorization.build_colorization_model`; stored in the checkpoint."""
    return {**asdict(config.model), "crop_size": config.data.crop_size, "ab_downsample": config.data.ab_downsample,
            "seed": config.train.seed}


def build_model(config: ColorizeConfig):
    torch.manual_seed(config.train.seed)
    return build_colorization_model(**model_spec(config))


def train_objective(config: ColorizeConfig) -> LabColorization:
    data = config.data
    return LabColorization(data.crop_size, data.ab_downsample, flip=data.flip, noise=data.noise,
                           gaussian_std=data.gaussian_std)


def eval_objective(config: ColorizeConfig) -> LabColorization:
    """Whole held-out squares, uniform dequantisation: the reported NLL is a bound on the discrete ab."""
    return LabColorization(ab_downsample=config.data.ab_downsample)


def reject_grey_photos(dataset: TensorImageDataset, names: Sequence[str]) -> None:
    """A DataError naming the photos whose three channels are equal: they hold no colour to learn."""
    images = dataset.images.int()
    spread = (images.amax(1) - images.amin(1)).flatten(1).amax(1)
    grey = [name for name, value in zip(names, spread.tolist(), strict=True) if value <= 2]
    if grey:
        shown = ", ".join(grey[:3]) + (", ..." if len(grey) > 3 else "")
        raise DataError(f"{len(grey)} of the {len(names)} training photos are greyscale ({shown}); "
                        "colourisation learns from colour photos, remove them")


def load_photos(config: ColorizeConfig) -> tuple[Dataset, Dataset]:
    """``(train, validation)`` photos as ``image_size`` squares: scikit-image's photos without the held-out
    one and that one, or a seeded split of the folder ``data.path``. Each training photo is listed
    ``crops_per_photo`` times (the objective crops each listing at random)."""
    data = config.data
    if data.path is None:
        names = [name for name in SKIMAGE_PHOTOS if name != data.holdout]
        train_set, val_set = (square_photos([skimage_photo(name) for name in names], data.image_size),
                              square_photos([skimage_photo(data.holdout)], data.image_size))
    else:
        train_set, val_set = load_folder(config)
    return Subset(train_set, list(range(len(train_set))) * data.crops_per_photo), val_set


def load_folder(config: ColorizeConfig) -> tuple[Dataset, Dataset]:
    data = config.data
    folder = ImageFolderDataset(data.path, data.image_size, channels=3, min_size=data.crop_size,
                                setting="data.crop_size")
    photos: Dataset = folder
    if data.cache:
        photos = cache_in_memory(folder)
        reject_grey_photos(photos, [str(path) for path in folder.paths])
    return split_dataset(photos, data.val_fraction, config.train.seed)


def load_trained(checkpoint: Path, device: torch.device) -> tuple[ColorizeConfig, Any]:
    return cli.load_trained(checkpoint, TASK, ColorizeConfig,
                            lambda config, state: build_colorization_model(**state["model_spec"]), device)


def colouring_table(colorizer: Colorizer, photos: Dataset, n_samples: int, temperature: float,
                    seed: int = 0) -> torch.Tensor:
    """Per photo: its grey version (L only), the truth, and ``n_samples`` colourings —
    ``(photos, 2 + n_samples, 3, H, W)`` uint8."""
    rows = []
    for index in range(min(TABLE_PHOTOS, len(photos))):
        photo = photos[index][0]
        samples = colorizer.colorize(photo, n_samples, temperature, seed=seed + index)
        rows.append(torch.cat([grey_version(photo)[None], photo[None], samples.cpu()]))
    return torch.stack(rows)


def table_titles(n_samples: int, temperature: float) -> list[str]:
    return ["grey input", "ground truth", *(f"sample {k + 1} (T={temperature})" for k in range(n_samples))]


# ------------------------------------------------------------------------------------------ commands
def train(args: argparse.Namespace, overrides: Sequence[str]) -> None:
    if args.data is not None:
        overrides = [*overrides, f"--data.path={args.data}"]
    config = train_config(ColorizeConfig, args, overrides, TASK)
    group = init_process_group(config.train.device)
    try:
        train_set, val_set = load_photos(config)
        model = build_model(config)
        run_dir = cli.start_run_dir(config, group.is_main)
        def sample_fn(trained) -> torch.Tensor:
            colorizer = Colorizer(trained, config.data.image_size, config.size_multiple, config.data.ab_downsample,
                                  group.device)
            table = colouring_table(colorizer, val_set, TABLE_SAMPLES, config.eval.temperature)
            return make_grid(table.flatten(0, 1).float() / 255, nrow=table.shape[1])[None]

        def eval_fn(trained) -> float:
            return evaluate_bits_per_dim(trained, val_set, eval_objective(config), batch_size=8,
                                         device=group.device, limit=config.train.eval_images, progress=False)[0]

        trainer = Trainer(model, config.train, run_dir, train_set, train_objective(config), task=TASK,
                          task_config=config_to_dict(config), group=group, sample_fn=sample_fn, eval_fn=eval_fn,
                          extra_state={"model_spec": model_spec(config), "shorter_side": config.data.image_size})
        trainer.fit(resume=args.resume)
        if group.is_main:
            colorizer = Colorizer(trainer.eval_model.eval(), config.data.image_size, config.size_multiple,
                                  config.data.ab_downsample, group.device)
            table = colouring_table(colorizer, val_set, TABLE_SAMPLES, config.eval.temperature)
            path = save_image_table(table, table_titles(TABLE_SAMPLES, config.eval.temperature),
                                    run_dir / "heldout.png")
            print(f"held-out colourisations: {path}; learning curve: {run_dir / 'learning_curve.png'}")
    finally:
        close_process_group(group)


def photo_paths(source: Path) -> list[Path]:
    if source.is_dir():
        paths = sorted(path for path in source.rglob("*") if path.suffix.lower() in IMAGE_EXTENSIONS)
        if not paths:
            raise DataError(f"folder {source} contains no photos ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        return paths
    if not source.exists():
        raise DataError(f"input {source} does not exist; pass a photo or a folder of photos")
    return [source]


def colorize(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    colorizer = load_colorizer(args.checkpoint, device)
    paths = photo_paths(args.input)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in paths:
        photo = TF.pil_to_tensor(open_image(path))
        start = time.perf_counter()
        colourings = colorizer.colorize(photo, args.samples, args.temperature, args.seed)
        seconds = time.perf_counter() - start
        thumbnails = []
        for index, image in enumerate([grey_version(photo), *colourings]):
            picture = Image.fromarray(image.permute(1, 2, 0).numpy())
            if index > 0:
                picture.save(args.out / f"{path.stem}_sample{index}.png", compress_level=1)
            scale = CONTACT_HEIGHT / picture.height
            thumbnail = picture.resize((max(1, round(picture.width * scale)), CONTACT_HEIGHT), Image.BICUBIC,
                                       reducing_gap=2.0)
            thumbnails.append(TF.pil_to_tensor(thumbnail))
        sheet = save_grid(torch.stack(thumbnails).float() / 255, args.out / f"{path.stem}_contact.png",
                          nrow=math.ceil(math.sqrt(len(thumbnails))))
        print(f"{path}: {photo.shape[2]}x{photo.shape[1]}, {args.samples} colourings at T={args.temperature} in "
              f"{seconds:.2f} s; contact sheet (grey input first) {sheet}")


def held_out_photos(config: ColorizeConfig, folder: str | None) -> tuple[Dataset, str]:
    """The photos to evaluate on (all of ``folder``, or the run's validation photos) and their description."""
    if folder is not None:
        photos = ImageFolderDataset(folder, config.data.image_size, channels=3, min_size=config.data.crop_size,
                                    setting="data.crop_size")
        return photos, f"all {len(photos)} photos in {folder}"
    _, photos = load_photos(config)
    return photos, f"the run's {len(photos)} held-out photo(s)"


def evaluate(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    config, model = load_trained(args.checkpoint, device)
    photos, where = held_out_photos(config, args.data)
    size = config.data.image_size
    result = evaluate_bits_per_dim(model, photos, eval_objective(config), batch_size=8, seed=args.seed,
                                   device=device)
    print(f"{where}, each resized to shorter side {size} and centre-cropped to {size}x{size}:")
    print(f"  NLL in bits per ab dimension (ab rounded to integer Lab units, uniform dequantisation): "
          f"{result.summary()}")
    samples = args.samples or config.eval.samples
    temperature = config.eval.temperature if args.temperature is None else args.temperature
    metrics = sample_metrics(model, photos, ab_downsample=config.data.ab_downsample, n_samples=samples,
                             temperature=temperature, seed=args.seed, device=device)
    print(f"  best-of-{samples} RMSE of ab at T={temperature}: {rmse_summary(metrics.best_rmse)} Lab units "
          f"(predicting ab = 0: {rmse_summary(metrics.grey_rmse)})")
    print(f"  sample diversity: {rmse_summary(metrics.diversity)} Lab units (per-pixel std of ab across samples)")


def check(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    config, model = load_trained(args.checkpoint, device)
    if config.model.architecture != "cinn":
        raise ConfigError(f"{args.checkpoint} holds the {config.model.architecture} baseline, which is not "
                          "invertible; check applies to cINN checkpoints")
    photos, where = held_out_photos(config, args.data)
    print(f"{where}:")
    cli.check_trained(model, prepared_batches(photos, eval_objective(config), batch_size=8, seed=args.seed,
                                              device=device, description="check"), args.checkpoint)


# ------------------------------------------------------------------------------------------ parsing
def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m tasks.colorize", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = root.add_subparsers(dest="command", required=True)
    train_parser = commands.add_parser("train", help="train a colourisation cINN (or the L2 baseline)")
    add_train_arguments(train_parser)
    train_parser.add_argument("--data", help="a folder of photos (default: scikit-image's bundled photos)")
    colorize_parser = commands.add_parser("colorize", help="colourise a photo or a folder of photos")
    colorize_parser.add_argument("--input", type=Path, required=True, help="a photo or a folder of photos")
    colorize_parser.add_argument("--samples", type=int, default=8)
    colorize_parser.add_argument("--temperature", type=float, default=0.8)
    colorize_parser.add_argument("--out", type=Path, default=Path("colorized"))
    eval_parser = commands.add_parser("eval", help="held-out NLL, best-of-N RMSE and diversity")
    check_parser = commands.add_parser("check", help="is the trained cINN still invertible on held-out photos?")
    for command in (eval_parser, check_parser):
        command.add_argument("--data", help="a folder of held-out photos (default: the run's validation photos)")
    eval_parser.add_argument("--samples", type=int, help="colourings per photo, best-of-N (default: eval.samples)")
    eval_parser.add_argument("--temperature", type=float, help="sampling temperature (default: eval.temperature)")
    for command in (colorize_parser, eval_parser, check_parser):
        command.add_argument("--checkpoint", type=Path, required=True)
        command.add_argument("--device", default="auto")
        command.add_argument("--seed", type=int, default=0)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch(parser(), argv, {"train": train}, {"colorize": colorize, "eval": evaluate, "check": check})


if __name__ == "__main__":
    run_command(main)
