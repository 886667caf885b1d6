"""Colourisation with a conditional INN in CIE Lab: learn p(ab | L), then colourise any photo.

    python -m tasks.colorize train                      # scikit-image's bundled photos, one held out
    python -m tasks.colorize train --data PHOTOS/       # any folder of photos; a validation split is held out
    python -m tasks.colorize train --data places365     # torchvision's Places365 scenes (downloaded if possible)
    python -m tasks.colorize colorize --checkpoint runs/colorize/checkpoint.pt --input PHOTO_OR_FOLDER \\
        --samples 8 --temperature 0.8 --out colorized/
    python -m tasks.colorize eval --checkpoint runs/colorize/checkpoint.pt [--data PHOTOS/]
    python -m tasks.colorize check --checkpoint runs/colorize/checkpoint.pt

The model sees photos at one scale: shorter side ``data.image_size`` pixels; it trains on random
``data.crop_size`` crops and colourises whole photos at that scale, upsampling its ab to the photo's
full resolution and keeping the photo's own L. ``--model.architecture=regressor`` trains the
deterministic L2 baseline (same condition network, a regression head). Any config field can be
overridden (``train --help`` lists them): ``--train.max_minutes=30 --model.hidden_channels=96``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, Subset
from torchvision.transforms import functional as TF
from torchvision.utils import make_grid

from cinn import cli
from cinn.cli import (
    MAX_TEMPERATURE,
    int_in_range,
    matplotlib_formats,
    positive_int,
    refuse_output_among_inputs,
    writable_folder,
    writable_image,
    writing_alone,
)
from cinn.colorization import (
    MAX_SAMPLES,
    PRETRAINED_COLORIZER,
    Colorizer,
    LabColorization,
    colorization_model_spec,
    colorizer_for,
    colour_conventions,
    colour_photos,
    grey_version,
    photo_paths,
    rmse_summary,
    sample_metrics,
    size_multiple,
    tag_table,
)
from cinn.config import ConfigError
from cinn.data import (
    SKIMAGE_PHOTOS,
    DataError,
    ImageFolderDataset,
    TaggedPhotos,
    cache_in_memory,
    is_dataset_name,
    load_dataset,
    open_image,
    skimage_photo,
    split_dataset,
    square_photos,
)
from cinn.data.images import MAX_ASPECT_RATIO, MAX_PIXELS
from cinn.engine import TrainConfig, resolve_device
from cinn.models.registry import MAX_WIDTH
from cinn.task import MAX_IMAGE_SIZE, CinnModelConfig, Command, Task, TrainedRun, first_items
from cinn.viz import save_grid, save_image_table, writing
from cinn.web import CACHE_SECONDS, PageContext, PageError, answered, page_seed, uploaded_image

TABLE_PHOTOS, TABLE_SAMPLES = 4, 6  # held-out photos and colourings shown in the figures of a run
CONTACT_HEIGHT = 256  # pixels of each picture on a contact sheet
SAMPLES_LIMIT = f"1 to {MAX_SAMPLES}, drawn in one batch, so memory grows with their number"
PAGE_SAMPLES = 16  # the most colourings the page draws at once
PAGE_EXAMPLES = ("astronaut", "chelsea", "coffee", "motorcycle", "rocket")  # scikit-image photos on the page


@dataclass
class DataConfig:
    path: str | None = None
    """a folder of photos, a registered dataset of colour photos (cinn.data.DATASETS, e.g. places365:
    torchvision's Places365, 256x256 scenes, its val split held out), or null for scikit-image's bundled photos
    with holdout held out"""
    root: str | None = None
    """where a registered dataset lives or is downloaded to (places365's default: ./data)"""
    holdout: str = "chelsea"
    """the scikit-image photo held out for validation (when path is null)"""
    val_fraction: float = 0.125
    """fraction of a folder's photos held out for validation (seeded by train.seed)"""
    image_size: int = 128
    """photos are resized so the shorter side is this, and centre-cropped square"""
    crop_size: int = 64
    """training takes random crops of this size"""
    ab_downsample: int = 2
    """ab is modelled at 1/this of L's resolution (the paper: 4, ab 64x64 from L 256x256)"""
    flip: bool = True
    """random horizontal flips in training"""
    crops_per_photo: int = 16
    """random crops of every training photo per epoch"""
    noise: Literal["uniform", "gaussian"] = "uniform"
    """uniform dequantisation of ab in integer Lab units (a bound) or gaussian (training only)"""
    gaussian_std: float = 0.5
    """standard deviation of the gaussian training noise, Lab units"""
    cache: bool = True
    """hold a folder's decoded photos in memory"""

    def validate(self) -> None:
        if self.path is None and self.holdout not in SKIMAGE_PHOTOS:
            raise ConfigError(f"data.holdout must be one of scikit-image's photos ({', '.join(SKIMAGE_PHOTOS)}), "
                              f"got {self.holdout!r}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"data.val_fraction must lie strictly between 0 and 1, got {self.val_fraction}")
        if self.image_size > MAX_IMAGE_SIZE:
            raise ConfigError(f"data.image_size must be at most {MAX_IMAGE_SIZE}, got {self.image_size}")
        if self.crop_size < 1 or self.image_size < self.crop_size:
            raise ConfigError(f"data.crop_size ({self.crop_size}) must be positive and at most data.image_size "
                              f"({self.image_size})")
        if self.crops_per_photo < 1 or self.gaussian_std <= 0:
            raise ConfigError("data.crops_per_photo and data.gaussian_std must be positive")
        if self.ab_downsample < 1 or self.ab_downsample & (self.ab_downsample - 1):
            raise ConfigError(f"data.ab_downsample must be a power of two (1, 2, 4, ...), got "
                              f"{self.ab_downsample}")


@dataclass
class ModelConfig(CinnModelConfig):
    architecture: Literal["cinn", "regressor"] = "cinn"
    """cinn, or the L2 regression baseline (same condition network, an upsampling head)"""
    condition_channels: list[int] | None = None
    """features of the condition network on L per level (default 32, 64, 128, ...)"""
    global_features: int = 0
    """> 0: the condition network also sees the whole photo, a vector of this many numbers that offsets every
    level's features (Iizuka et al. 2016); 0: local features only"""

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.global_features <= MAX_WIDTH:
            raise ConfigError(f"model.global_features must lie in 0..{MAX_WIDTH}, got {self.global_features}")
        if self.condition_channels is not None and len(self.condition_channels) != self.n_levels:
            raise ConfigError(f"model.condition_channels needs one width per level ({self.n_levels}), got "
                              f"{self.condition_channels}")


@dataclass
class EvalConfig:
    samples: int = 8
    """colourings per photo: best-of-N RMSE and diversity"""
    temperature: float = 0.8
    """sampling temperature of eval and figures"""

    def validate(self) -> None:
        if not 1 <= self.samples <= MAX_SAMPLES:
            raise ConfigError(f"eval.samples must be from 1 to {MAX_SAMPLES}, got {self.samples}")
        if not 0 <= self.temperature <= MAX_TEMPERATURE:
            raise ConfigError(f"eval.temperature must be from 0 to {MAX_TEMPERATURE:g}, got {self.temperature}")


@dataclass
class ColorizeConfig:
    run_dir: str = "runs/colorize"
    """folder of the run: checkpoint, config, metrics, figures"""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=1700, max_minutes=15, batch_size=16, optimizer="adam", lr=1e-3, weight_decay=1e-5,
        warmup_steps=100, lr_decay="cosine", init_batch_size=64, eval_every=100, eval_images=16, keep="best",
        sample_every=1000, checkpoint_every=250))
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        multiple = size_multiple(self.model.n_levels, self.data.ab_downsample)
        for name in ("crop_size", "image_size"):
            if getattr(self.data, name) % multiple:
                raise ConfigError(f"data.{name} ({getattr(self.data, name)}) must be a multiple of "
                                  f"2^model.n_levels · data.ab_downsample = {multiple}")


class ColorizeTask(Task[ColorizeConfig]):
    name, config_class, description = "colorize", ColorizeConfig, __doc__
    data_option = ("--data", "held-out photos: a folder (photos in sub-folders are also judged per sub-folder) "
                             "or a CSV photo list with the columns folder,photo,tag (also judged per tag); "
                             "default: the run's validation photos")
    eval_batch_size, check_limit, pretrained = 8, None, PRETRAINED_COLORIZER
    train_shortcuts: ClassVar = {"--data": ("data.path", "a folder of photos (default: scikit-image's photos)")}

    def __init__(self) -> None:
        self._photos: dict[tuple[str, int], tuple[Dataset, Dataset]] = {}

    def photos(self, config: ColorizeConfig) -> tuple[Dataset, Dataset]:
        """``(train, validation)`` photos as ``image_size`` squares: scikit-image's photos without the held-out
        one and that one, or a seeded split of the folder ``data.path`` (read once per config)."""
        key = (repr(config.data), config.train.seed)
        if key not in self._photos:
            self._photos[key] = self.read_photos(config)
        return self._photos[key]

    def read_photos(self, config: ColorizeConfig) -> tuple[Dataset, Dataset]:
        data = config.data
        if data.path is None:
            names = [name for name in SKIMAGE_PHOTOS if name != data.holdout]
            return (square_photos([skimage_photo(name) for name in names], data.image_size),
                    square_photos([skimage_photo(data.holdout)], data.image_size))
        if is_dataset_name(data.path):
            splits = tuple(load_dataset(data.path, data.root, train, data.image_size) for train in (True, False))
            if splits[0][0][0].shape[0] != 3:
                raise DataError(f"{data.path} holds grey images; colourisation needs colour photos: set data.path "
                                "to a folder of colour photos or a dataset of them, such as places365")
            return splits
        photos = ImageFolderDataset(data.path, data.image_size, channels=3, min_size=data.crop_size,
                                    setting="data.crop_size")
        if data.cache:
            photos = colour_photos(cache_in_memory(photos), [str(path) for path in photos.paths])
        return split_dataset(photos, data.val_fraction, config.train.seed)

    def data_folders(self, config) -> list[tuple[str, Path]]:
        path = config.data.path
        if path is None or is_dataset_name(path) or not Path(path).is_dir():
            return []
        return [("data.path", Path(path))]

    def train_data(self, config):
        """Each training photo listed ``crops_per_photo`` times (the objective crops each listing at random)."""
        photos, held_out = self.photos(config)
        print(f"training on {len(photos)} photos, {len(held_out)} held out for validation")
        return Subset(photos, list(range(len(photos))) * config.data.crops_per_photo)

    def eval_data(self, config, data):
        if data is not None:
            options = {"image_size": config.data.image_size, "channels": 3, "min_size": config.data.crop_size,
                       "setting": "data.crop_size"}
            if Path(data).suffix.lower() == ".csv" and not Path(data).is_dir():
                photos = TaggedPhotos.from_list(data, **options)
                where = f"the {len(photos)} photos listed in {data}"
            else:
                photos = TaggedPhotos.from_folder(data, **options)
                where = f"all {len(photos)} photos in {data}"
        else:
            path = config.data.path
            if path is not None and not is_dataset_name(path) and not Path(path).is_dir():
                raise DataError(f"the photos this model was trained on ({config.data.path}) are not on this "
                                "machine, nor its validation photos; pass --data FOLDER of photos to evaluate on")
            photos = self.photos(config)[1]
            where = f"the run's {len(photos)} held-out photo(s)"
        size = config.data.image_size
        return photos, f"{where}, each resized to shorter side {size} and centre-cropped to {size}x{size}"

    def model_spec(self, config, facts) -> dict[str, Any]:
        return colorization_model_spec(**asdict(config.model), crop_size=config.data.crop_size,
                                       ab_downsample=config.data.ab_downsample, seed=config.train.seed)

    def conventions(self, config, facts) -> dict[str, Any]:
        return colour_conventions(config.data.image_size, config.model.n_levels, config.data.ab_downsample)

    def objective(self, config, train) -> LabColorization:
        data = config.data
        if not train:  # whole held-out squares, uniform dequantisation: the NLL is a bound on the discrete ab
            return LabColorization(ab_downsample=data.ab_downsample)
        return LabColorization(data.crop_size, data.ab_downsample, flip=data.flip, noise=data.noise,
                               gaussian_std=data.gaussian_std)

    def describe_bits_per_dim(self, result, config, where) -> str:
        return (f"{where}:\n  NLL in bits per ab dimension (ab rounded to integer Lab units, uniform "
                f"dequantisation): {result.summary()}")

    def colouring_table(self, colorizer: Colorizer, photos: Dataset, temperatures: Sequence[float],
                        samples: int = TABLE_SAMPLES, count: int = TABLE_PHOTOS) -> tuple[Tensor, list[str]]:
        """Per photo (the first ``count``): its grey version, the truth and ``samples`` colourings at each
        temperature — ``(photos, 2 + samples · temperatures, 3, H, W)`` uint8 — and the column titles."""
        rows = []
        for index in range(min(count, len(photos))):
            photo = photos[index][0]
            colourings = [colorizer.colorize(photo, samples, t, seed=index).cpu() for t in temperatures]
            rows.append(torch.cat([grey_version(photo)[None], photo[None], *colourings]))
        titles = [f"sample {k + 1} (T={t})" for t in temperatures for k in range(samples)]
        return torch.stack(rows), ["grey input", "ground truth", *titles]

    def figure(self, model, config, conventions, eval_set, device) -> Tensor:
        colorizer = colorizer_for(model, conventions, device)
        table, _ = self.colouring_table(colorizer, eval_set, [config.eval.temperature])
        return make_grid(table.flatten(0, 1).float() / 255, nrow=table.shape[1])[None]

    def after_training(self, trainer, config, eval_set) -> None:
        colorizer = colorizer_for(trainer.kept_model(), trainer.model_info["conventions"], trainer.device)
        table, titles = self.colouring_table(colorizer, eval_set, [config.eval.temperature])
        path = save_image_table(table, titles, trainer.run_dir / "heldout.png")
        print(f"held-out colourisations: {path}; learning curve: {trainer.run_dir / 'learning_curve.png'}")

    def add_eval_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--samples", type=int_in_range(1, MAX_SAMPLES),
                            help=f"colourings per photo for best-of-N, {SAMPLES_LIMIT} (default: eval.samples)")
        parser.add_argument("--temperature", type=cli.temperature,
                            help=f"sampling temperature, 0 to {MAX_TEMPERATURE:g} (default: eval.temperature)")

    def report(self, run: TrainedRun[ColorizeConfig], eval_set, args, bits_per_dim) -> None:
        samples = run.config.eval.samples if args.samples is None else args.samples
        temperature = run.config.eval.temperature if args.temperature is None else args.temperature
        metrics = sample_metrics(run.model, first_items(eval_set, args.limit),
                                 ab_downsample=run.conventions["ab_downsample"], n_samples=samples,
                                 temperature=temperature, seed=args.seed, device=run.device)
        print(f"  best-of-{samples} RMSE of ab at T={temperature}: {rmse_summary(metrics.best_rmse)} Lab units "
              f"(predicting ab = 0: {rmse_summary(metrics.grey_rmse)})")
        print(f"  sample diversity: {rmse_summary(metrics.diversity)} Lab units (per-pixel std of ab across "
              "samples)")
        print(f"  the cINN paper's best-of-{samples} error: {rmse_summary(metrics.paper_error)} (100 x RMSE of "
              "8-bit RGB in [0, 1], per-value minimum over the samples; the paper at T=1: cINN 3.53, cGAN 9.75)")
        print(f"  colourfulness (Hasler & Süsstrunk): samples {rmse_summary(metrics.sample_colourfulness)}, "
              f"true photos {rmse_summary(metrics.true_colourfulness)}")
        tags = getattr(eval_set, "tags", [])[:len(bits_per_dim)]
        if any(tags):
            print(f"per tag (mean ± standard error over its photos; best-of-{samples} at T={temperature}; Lab "
                  "units):")
            print("\n".join(tag_table(tags, bits_per_dim, metrics)))

    def training_data(self, config) -> str:
        return config.data.path or "scikit-image's bundled photos"

    def page(self, run: TrainedRun[ColorizeConfig], context: PageContext) -> Any:
        """Upload a photo (or pick a bundled one), choose colourings, temperature and seed: the grey input and the
        colourings at the photo's full resolution (PNG, each downloadable from the gallery)."""
        gr, colorizer = context.gradio, colorizer_for(run.model, run.conventions, run.device)
        examples = context.workspace.root / "examples"  # kept as long as the server runs
        examples.mkdir()
        for name in PAGE_EXAMPLES:
            skimage_photo(name).convert("L").save(examples / f"{name}.png")

        def colourise(upload: str | None, samples: float, temperature: float, seed: float) -> tuple[Any, ...]:
            name, photo = Path(upload or "").name, uploaded_image(upload)
            start = time.perf_counter()
            try:
                colourings = colorizer.colorize(TF.pil_to_tensor(photo), int(samples), float(temperature),
                                                page_seed(seed))
            except ValueError as error:
                raise PageError(f"{name}: {error}") from None
            seconds = time.perf_counter() - start
            folder, stem = context.workspace.request_folder(), Path(name).stem
            grey = folder / f"{stem}_grey.png"
            photo.convert("L").save(grey, compress_level=1)
            files = [folder / f"{stem}_colouring{index}.png" for index in range(1, len(colourings) + 1)]
            for file, colouring in zip(files, colourings, strict=True):
                Image.fromarray(colouring.permute(1, 2, 0).numpy()).save(file, compress_level=1)
            return (str(grey), [(str(file), f"colouring {k}") for k, file in enumerate(files, 1)],
                    f"{len(files)} colourings of {name} ({photo.width}x{photo.height}) at T={temperature:g}, seed "
                    f"{page_seed(seed)}, in {seconds:.2f} s of model time")

        with gr.Blocks(title="cinn: colourise a photo", delete_cache=(CACHE_SECONDS, CACHE_SECONDS),
                       analytics_enabled=False) as page:
            gr.Markdown(f"## Colourise a photo\nModel: {context.about}. A grey photo gets colours; a colour "
                        "photo is made grey first. Each colouring keeps the photo's own lightness at its full "
                        "resolution.")
            with gr.Row():
                with gr.Column():
                    upload = gr.File(label="photo (PNG, JPEG, ...)", file_types=["image"], elem_id="photo")
                    gr.Examples([[str(examples / f"{name}.png")] for name in PAGE_EXAMPLES], inputs=upload,
                                label="or one of scikit-image's photos, in grey")
                    samples = gr.Slider(1, PAGE_SAMPLES, value=8, step=1, label="colourings", elem_id="samples")
                    temperature = gr.Slider(0, 1.5, value=0.8, step=0.05, label="temperature (0: the mode)",
                                            elem_id="temperature")
                    seed = gr.Number(context.seed, precision=0, label="seed", elem_id="seed")
                    button = gr.Button("Colourise", variant="primary", elem_id="colourise")
                with gr.Column():
                    status = gr.Markdown(elem_id="status")
                    grey = gr.Image(label="grey input", type="filepath", format="png", interactive=False,
                                    elem_id="grey")
                    gallery = gr.Gallery(label="colourings (full resolution: open one, then download)",
                                         format="png", columns=4, elem_id="colourings")
            button.click(answered(colourise, outputs=2), [upload, samples, temperature, seed],
                         [grey, gallery, status])
        return page

    def commands(self) -> list[Command]:
        def arguments(parser: argparse.ArgumentParser) -> None:
            parser.add_argument("--input", type=Path, required=True,
                                help=f"a photo or a folder of photos (each at most {MAX_PIXELS / 1e6:.0f} "
                                     f"megapixels, sides at most {MAX_ASPECT_RATIO}:1; memory grows with the "
                                     "photo's pixels)")
            parser.add_argument("--samples", type=int_in_range(1, MAX_SAMPLES), default=8,
                                help=f"colourings per photo, {SAMPLES_LIMIT}; for more, run again with another "
                                     "--seed")
            parser.add_argument("--temperature", type=cli.temperature, default=0.8,
                                help=f"sampling temperature, 0 to {MAX_TEMPERATURE:g} (0: every colouring the "
                                     "same, from the mode of the latent)")
            parser.add_argument("--out", type=Path, default=Path("colorized"),
                                help="output folder: NAME_EXT_sample1.png ... and NAME_EXT_contact.png per "
                                     "photo (sub/photo.jpg of a folder gives sub/photo_jpg_sample1.png, ...)")
            parser.add_argument("--overwrite", action="store_true",
                                help="replace outputs that exist already (without it, colorize refuses to start)")

        def table_arguments(parser: argparse.ArgumentParser) -> None:
            parser.add_argument("--input", type=Path, required=True,
                                help="a folder of colour photos or a CSV photo list (folder,photo,tag)")
            parser.add_argument("--tags", nargs="+", metavar="TAG",
                                help="only the photos with these tags (a list's tags, or a folder's sub-folders)")
            parser.add_argument("--photos", type=positive_int, default=10, help="rows: the first N photos")
            parser.add_argument("--samples", type=int_in_range(1, MAX_SAMPLES), default=TABLE_SAMPLES,
                                help=f"colourings per temperature, {SAMPLES_LIMIT}")
            parser.add_argument("--temperatures", type=cli.temperature, nargs="+", default=[0.8],
                                help=f"one set of columns per temperature, each from 0 to {MAX_TEMPERATURE:g}")
            parser.add_argument("--out", type=Path, default=Path("colorized/table.png"))

        return [Command("colorize", "colourise a photo or a folder of photos", self.colorize, arguments),
                Command("table", "a figure: grey input, truth and colourings of held-out colour photos, one row "
                                 "per photo", self.table, table_arguments)]

    def table(self, args: argparse.Namespace) -> None:
        writable_image(args.out, "--out", matplotlib_formats())
        refuse_output_among_inputs(args.out, args.input, "--out", "--input")
        run = self.open(args.checkpoint, resolve_device(args.device))
        photos, where = self.eval_data(run.config, str(args.input))
        if args.tags:
            chosen = [index for index, tag in enumerate(photos.tags) if tag in args.tags]
            if not chosen:
                raise DataError(f"no photo of {args.input} has the tag(s) {', '.join(args.tags)}; its tags: "
                                f"{', '.join(sorted(set(photos.tags))) or 'none (no sub-folders)'}")
            photos, where = Subset(photos, chosen), f"{where}, those tagged {', '.join(args.tags)}"
        table, titles = self.colouring_table(colorizer_for(run.model, run.conventions, run.device), photos,
                                             args.temperatures, args.samples, args.photos)
        print(f"{save_image_table(table, titles, args.out)}: {len(table)} of {where}")

    def colorize(self, args: argparse.Namespace) -> None:
        writable_folder(args.out, "--out")
        if args.input.is_dir():
            refuse_output_among_inputs(args.out, args.input, "--out", "--input")
        run = self.open(args.checkpoint, resolve_device(args.device))
        colorizer = colorizer_for(run.model, run.conventions, run.device)
        paths = photo_paths(args.input)
        outputs = {path: colorize_outputs(args.out / output_stem(path, args.input), args.samples)
                   for path in paths}
        args.out.mkdir(parents=True, exist_ok=True)
        with writing_alone(args.out, "--out", "colorize"):
            refuse_to_overwrite([file for files in outputs.values() for file in files], args.overwrite)
            self.write_colourings(colorizer, outputs, args)

    def write_colourings(self, colorizer: Colorizer, outputs: dict[Path, list[Path]],
                         args: argparse.Namespace) -> None:
        """Each photo's colourings and contact sheet, to the files ``outputs`` names."""
        for path, (contact, *sample_files) in outputs.items():
            contact.parent.mkdir(parents=True, exist_ok=True)
            photo = TF.pil_to_tensor(open_image(path))
            start = time.perf_counter()
            try:
                colourings = colorizer.colorize(photo, args.samples, args.temperature, args.seed)
            except ValueError as error:  # a photo too small, too large or too thin to colourise
                raise DataError(f"{path}: {error}") from None
            seconds = time.perf_counter() - start
            thumbnails = []
            for index, image in enumerate([grey_version(photo), *colourings]):
                picture = Image.fromarray(image.permute(1, 2, 0).numpy())
                if index > 0:
                    with writing(sample_files[index - 1]):
                        picture.save(sample_files[index - 1], compress_level=1)
                width = max(1, round(picture.width * CONTACT_HEIGHT / picture.height))
                thumbnails.append(TF.pil_to_tensor(picture.resize((width, CONTACT_HEIGHT), Image.BICUBIC,
                                                                  reducing_gap=2.0)))
            sheet = save_grid(torch.stack(thumbnails).float() / 255, contact,
                              nrow=math.ceil(math.sqrt(len(thumbnails))))
            colourings_made = f"{args.samples} colouring{'s' if args.samples > 1 else ''}"
            print(f"{path}: {photo.shape[2]}x{photo.shape[1]}, {colourings_made} at T={args.temperature} in "
                  f"{seconds:.2f} s; contact sheet (grey input first) {sheet}")


def output_stem(photo: Path, source: Path) -> Path:
    """Where the outputs of ``photo`` go, relative to the output folder and without their endings: its path
    below the input folder ``source`` with the extension kept in the name (``sub/photo.jpg`` →
    ``sub/photo_jpg``), so photo.jpg, photo.png and sub/photo.jpg never share outputs."""
    relative = photo.relative_to(source) if source.is_dir() else Path(photo.name)
    extension = relative.suffix.removeprefix(".")
    return relative.with_name(f"{relative.stem}_{extension}" if extension else relative.name)


def colorize_outputs(stem: Path, samples: int) -> list[Path]:
    """The files ``colorize`` writes for one photo: its contact sheet, then one PNG per colouring."""
    return [stem.with_name(f"{stem.name}_contact.png"),
            *(stem.with_name(f"{stem.name}_sample{index}.png") for index in range(1, samples + 1))]


def refuse_to_overwrite(files: Sequence[Path], overwrite: bool) -> None:
    """Outputs that exist already are a one-line :class:`ConfigError` unless ``--overwrite`` was given."""
    existing = [file for file in files if file.exists()]
    if existing and not overwrite:
        raise ConfigError(f"{existing[0]} already exists ({len(existing)} of the {len(files)} outputs do); pass "
                          "--overwrite to replace them or choose another --out")


main = ColorizeTask().main

if __name__ == "__main__":
    ColorizeTask().run()
