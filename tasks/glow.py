"""Unconditional (or class-conditional) Glow on images: train, eval, check, sample, interpolate, manipulate, bench.

    python -m tasks.glow train --config configs/glow/fashion_mnist.yaml
    python -m tasks.glow eval --checkpoint runs/glow_fashion_mnist/checkpoint.pt
    python -m tasks.glow check --checkpoint runs/glow_fashion_mnist/checkpoint.pt
    python -m tasks.glow sample --checkpoint runs/glow_fashion_mnist/checkpoint.pt
    python -m tasks.glow interpolate --checkpoint runs/glow_fashion_mnist/checkpoint.pt
    python -m tasks.glow manipulate --checkpoint runs/glow_fashion_mnist/checkpoint.pt --attribute sneaker \
        --against "ankle boot" --scales -2,-1,0,1,2
    python -m tasks.glow bench --config configs/glow/fashion_mnist.yaml

Any config field can be overridden (``train --help`` lists them): ``--train.lr=5e-4 --model.hidden_channels=128``.
Multi-process: ``torchrun --nproc_per_node=N -m tasks.glow train ...``.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from cinn.blocks import map_spec
from cinn.cli import int_in_range, pillow_formats, positive_int, writable_image
from cinn.config import ConfigError
from cinn.data import BinaryAttributes, DataError, dataset_attributes, load_dataset
from cinn.engine import DequantizedImages, Objective, TrainConfig, prepared_batches, resolve_device
from cinn.latent import AttributeDirection, attribute_direction, interpolate_latents, manipulate
from cinn.models import build_glow
from cinn.models.flow import Condition
from cinn.models.glow import level_subnets
from cinn.models.registry import model_spec
from cinn.task import (
    MAX_BLOCKS,
    Command,
    DequantizationConfig,
    ImageDataConfig,
    TarflowConfig,
    Task,
    TrainedRun,
    check_coupling_and_subnet,
    data_split,
    split_description,
)
from cinn.viz import save_grid
from cinn.web import (
    CACHE_SECONDS,
    PageContext,
    PageError,
    answered,
    held_out_index,
    page_grid,
    page_seed,
    square_upload,
)

GLOW_ONLY = ("n_levels", "steps_per_level", "hidden_channels", "coupling", "subnet", "permutation",
             "learn_top_prior", "split_prior", "channels_last")
"""The ``model:`` settings of the glow architecture, which a TarFlow (``model.architecture: tarflow``) leaves at
their defaults."""


@dataclass
class ModelConfig:
    architecture: Literal["glow", "tarflow"] = "glow"
    """glow: multi-scale couplings (Kingma & Dhariwal 2018); tarflow: causal transformer flows over patch tokens
    (Zhai et al. 2024; model.tarflow)"""
    n_levels: int = 2
    """scales: each squeezes 2x2 pixels into channels and (but the last) splits half the channels off"""
    steps_per_level: int = 8
    """flow steps per scale: ActNorm, channel mixing, coupling"""
    hidden_channels: int = 128
    """width of the coupling subnets"""
    coupling: dict[str, Any] = field(default_factory=lambda: {"map": "sigmoid_affine", "min_scale": 0.0})
    """the couplings' element-wise map and its options (a registered coupling map, cinn.blocks.COUPLING_MAPS);
    sigmoid_affine's min_scale floors Glow's σ(h + 2) and bounds the inverse's gain by 1/min_scale"""
    subnet: str | list[str] = "glow_conv"
    """the couplings' subnets (a registered subnet, cinn.blocks.SUBNETS), or a list of one per level (finest
    first)"""
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
    tarflow: TarflowConfig = field(default_factory=TarflowConfig)
    """tarflow: the transformer flow's settings"""
    dequantization: DequantizationConfig = field(default_factory=DequantizationConfig)
    """the noise inside each quantisation bin: uniform, or learned (variational)"""

    def validate(self) -> None:
        defaults = ModelConfig()
        if self.architecture == "tarflow":
            changed = [f"model.{name}" for name in GLOW_ONLY if getattr(self, name) != getattr(defaults, name)]
        else:
            changed = ["model.tarflow"] if self.tarflow != defaults.tarflow else []
        if changed:
            other = "glow" if self.architecture == "tarflow" else "tarflow"
            raise ConfigError(f"{', '.join(changed)}: only the {other} architecture has this; "
                              f"model.architecture is {self.architecture}")
        if self.n_levels < 1 or self.steps_per_level < 1 or self.hidden_channels < 1:
            raise ConfigError("model.n_levels, model.steps_per_level and model.hidden_channels must be positive")
        check_coupling_and_subnet(self.coupling, self.subnet)
        try:
            level_subnets(self.subnet, self.n_levels)
        except ValueError as error:
            raise ConfigError(f"model.{error}") from None
        if self.n_levels * self.steps_per_level > MAX_BLOCKS:
            raise ConfigError(f"model.n_levels x model.steps_per_level must be at most {MAX_BLOCKS} flow steps, "
                              f"got {self.n_levels} x {self.steps_per_level}")


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


MAX_SCALES = 32
EVERY_CLASS, ALL_OTHERS = "every class in turn", "all other images"  # choices of the page's class menus
PAGE_DIRECTION_IMAGES = 2000  # training images the page encodes for an attribute's direction


def scale_list(text: str) -> list[float]:
    """An argparse ``type`` for 1 to ``MAX_SCALES`` comma-separated finite numbers, e.g. ``-2,-1,0,1,2``."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not 1 <= len(values) <= MAX_SCALES or not all(math.isfinite(value) for value in values):
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_SCALES} comma-separated finite numbers such as "
                                         f"-2,-1,0,1,2, got {text!r}")
    return values


def file_slug(name: str) -> str:
    """``name`` as a piece of a file name: ``"T-shirt/top"`` → ``"t_shirt_top"``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def labelled(dataset: Dataset, name: str) -> BinaryAttributes:
    """The classes or attributes of a split of the run's data ``name``; none is a :class:`DataError`."""
    attributes = dataset_attributes(dataset)
    if attributes is None:
        raise DataError(f"this model was trained on {name}, which has no classes or attributes to take a "
                        "direction from; manipulate needs a run on labelled data (mnist, fashion-mnist, cifar10 "
                        "or celeba)")
    return attributes


def groups(attributes: BinaryAttributes, attribute: str, against: str | None) -> tuple[Tensor, Tensor]:
    """The masks ``(with, without)`` of ``attribute`` (against ``against``); a bad name is a ConfigError."""
    try:
        return attributes.contrast(attribute, against)
    except ValueError as error:
        raise ConfigError(f"--attribute/--against: {error}") from None


@dataclass
class Direction:
    """An attribute's latent direction (``found``) with what it contrasts — ``name`` against ``other`` (None: all
    other images), ``without`` in words — and the test split with the indices of its images without it."""

    found: AttributeDirection
    name: str
    other: str | None
    without: str
    test_set: Dataset
    test_pool: Tensor


def prepared_inputs(dataset: Dataset, indices: Tensor, objective: Objective, batch_size: int, seed: int,
                    device: torch.device) -> tuple[Tensor, Condition]:
    """Model inputs ``(x, c)`` of the items ``indices`` of ``dataset``, in that order."""
    batches = list(prepared_batches(Subset(dataset, indices.tolist()), objective, batch_size=batch_size, seed=seed,
                                    device=device, progress=False))
    conditions = [c for _, c in batches]
    return torch.cat([x for x, _ in batches]), None if conditions[0] is None else torch.cat(conditions)


class GlowTask(Task[GlowConfig]):
    name, config_class, description, benchmarks = "glow", GlowConfig, __doc__, True

    def split(self, config: GlowConfig, train: bool, root: str | None = None):
        """The training split (``train=True``) or the evaluation split (:func:`~cinn.task.data_split`)."""
        data = config.data
        return data_split(data, lambda training: load_dataset(data.dataset, root or data.root, train=training,
                                                              image_size=data.image_size, channels=data.channels),
                          train)

    def train_data(self, config: GlowConfig, root: str | None = None):
        return self.split(config, train=True, root=root)

    def eval_data(self, config: GlowConfig, data: str | None):
        return self.split(config, train=False, root=data), split_description(config.data)

    def model_spec(self, config: GlowConfig, facts: dict[str, Any]) -> dict[str, Any]:
        model = config.model
        if model.class_conditional and facts["n_classes"] < 2:
            raise ConfigError(f"model.class_conditional needs a labelled dataset; {config.data.dataset} has none")
        return model.dequantization.wrap(self.flow_spec(config, facts), config.data.n_bits)

    def flow_spec(self, config: GlowConfig, facts: dict[str, Any]) -> dict[str, Any]:
        """The spec of the flow itself (before any variational dequantisation)."""
        model = config.model
        n_classes = facts["n_classes"] if model.class_conditional else 0
        if model.architecture == "tarflow":
            return model.tarflow.spec(facts["image_shape"], n_classes)
        return model_spec(build_glow, input_shape=facts["image_shape"], n_levels=model.n_levels,
                          steps_per_level=model.steps_per_level, hidden_channels=model.hidden_channels,
                          coupling=map_spec(model.coupling), subnet=model.subnet, permutation=model.permutation,
                          learn_top_prior=model.learn_top_prior, split_prior=model.split_prior,
                          n_classes=n_classes, seed=config.train.seed,
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
            parser.add_argument("--steps", type=int_in_range(2, 64), default=8,
                                help="images per interpolation, ends included, 2 to 64")
            parser.add_argument("--out", type=Path, help="output PNG (default: next to the checkpoint)")

        def manipulate_arguments(parser: argparse.ArgumentParser) -> None:
            # argparse takes "-2,-1,0" for an option (its pattern for negative numbers knows "-2" and "-.5" only);
            # this parser has no option that looks like a number, so any token starting "-<digit>" is a value
            parser._negative_number_matcher = re.compile(r"^-\.?\d")
            parser.add_argument("--attribute", required=True,
                                help="what to add: a class (name or index) or a CelebA attribute (e.g. Smiling)")
            parser.add_argument("--against", help="contrast with this class or attribute instead of all the other "
                                                  "images")
            parser.add_argument("--scales", type=scale_list, default=[-2.0, -1.0, 0.0, 1.0, 2.0],
                                help="multiples of the direction, comma-separated (columns; 0 reconstructs), "
                                     "default -2,-1,0,1,2")
            parser.add_argument("--images", type=positive_int, default=8,
                                help="test images (rows), from the side without the attribute (default 8)")
            parser.add_argument("--limit", type=positive_int, default=10_000,
                                help="training images encoded for the direction, a random choice (default 10000)")
            parser.add_argument("--batch-size", type=positive_int, default=256)
            parser.add_argument("--data-root", dest="data", help="where the data lives, if not where it was")
            parser.add_argument("--out", type=Path,
                                help="output PNG (default: manipulation_<attribute>.png next to the checkpoint)")

        return [Command("interpolate", "latent interpolations between encoded test images", self.interpolate,
                        arguments),
                Command("manipulate", "add or remove an attribute by moving test images along the latent "
                        "direction mean(with) − mean(without) of the training split (Glow's Figure 6)",
                        self.manipulate, manipulate_arguments)]

    def interpolation(self, run: TrainedRun[GlowConfig], images: Tensor, labels: Tensor, steps: int,
                      seed: int) -> Tensor:
        """``steps`` images ``(steps, C, H, W)`` from ``images[0]`` to ``images[1]`` (uint8 ``(2, C, H, W)``,
        classes ``labels``), ends included: their dequantised latents joined by a straight line on every scale,
        decoded under the first image's condition."""
        x, c = self.objective(run.config, train=False).prepare(images.to(run.device), labels.to(run.device),
                                                               torch.Generator(run.device).manual_seed(seed))
        with torch.no_grad():
            latents = run.model.encode(x, c)
            path = interpolate_latents([z[:1] for z in latents], [z[1:] for z in latents], steps)
            return run.model.decode(path, None if c is None else c[:1].expand(steps))

    def interpolate(self, args: argparse.Namespace) -> None:
        out = writable_image(args.out or Path(args.checkpoint).parent / "interpolation.png", "--out",
                             pillow_formats())
        run = self.open(args.checkpoint, resolve_device(args.device))
        test_set, _ = self.eval_data(run.config, args.data)
        if 2 * args.pairs > len(test_set):
            raise ConfigError(f"--pairs {args.pairs} needs {2 * args.pairs} test images, and the test split has "
                              f"{len(test_set)}; ask for at most {len(test_set) // 2}")
        chosen = torch.randperm(len(test_set), generator=torch.Generator().manual_seed(args.seed))
        rows = [self.interpolation(run, *map(torch.stack, zip(test_set[first], test_set[second], strict=True)),
                                   args.steps, args.seed)
                for first, second in chosen[:2 * args.pairs].view(-1, 2).tolist()]
        out = save_grid(torch.cat(rows), out, nrow=args.steps)
        print(f"{args.pairs} interpolations of {args.steps} steps: {out}")

    def direction(self, run: TrainedRun[GlowConfig], attribute: str, against: str | None, limit: int,
                  generator: torch.Generator, batch_size: int, data: str | None = None) -> Direction:
        """The latent direction of ``attribute`` (against ``against``, else all other images) from at most
        ``limit`` training images drawn with ``generator``, and the test images without it; a side with no image is
        a :class:`ConfigError`."""
        dataset = run.config.data.dataset
        train_set, test_set = self.train_data(run.config, data), self.eval_data(run.config, data)[0]
        attributes = labelled(train_set, dataset)
        with_train, without_train = groups(attributes, attribute, against)
        _, without_test = groups(labelled(test_set, dataset), attribute, against)
        name = attributes.names[attributes.index(attribute)]
        other = None if against is None else attributes.names[attributes.index(against)]
        without = f"without {name!r}" if other is None else f"with {other!r}"
        candidates = torch.nonzero(with_train | without_train).squeeze(1)
        chosen = candidates[torch.randperm(len(candidates), generator=generator)[:limit]].sort().values
        has = with_train[chosen]
        for count, side in ((int(has.sum()), f"with {name!r}"), (int((~has).sum()), without)):
            if count == 0:
                cut = f" among the {len(chosen)} of --limit" if len(chosen) < len(candidates) else ""
                raise ConfigError(f"{dataset} has no training image {side}{cut}, so there is no direction to "
                                  "take; choose another --attribute or --against")
        test_pool = torch.nonzero(without_test).squeeze(1)
        if len(test_pool) == 0:
            raise ConfigError(f"{dataset} has no test image {without}, so there is nothing to add {name!r} to; "
                              "choose another --attribute or --against")
        x, c = prepared_inputs(train_set, chosen, self.objective(run.config, train=False), batch_size,
                               int(generator.initial_seed()), run.device)
        found = attribute_direction(run.model, x, has.to(run.device), condition=c, batch_size=batch_size)
        return Direction(found, name, other, without, test_set, test_pool)

    def manipulate(self, args: argparse.Namespace) -> None:
        if args.out is not None:
            writable_image(args.out, "--out", pillow_formats())
        run = self.open(args.checkpoint, resolve_device(args.device))
        generator = torch.Generator().manual_seed(args.seed)
        direction = self.direction(run, args.attribute, args.against, args.limit, generator, args.batch_size,
                                   args.data)
        found, name, other, without = direction.found, direction.name, direction.other, direction.without
        shown = direction.test_pool[torch.randperm(len(direction.test_pool), generator=generator)[:args.images]]
        slug = file_slug(name) + ("" if other is None else f"_vs_{file_slug(other)}")
        out = writable_image(args.out or Path(args.checkpoint).parent / f"manipulation_{slug}.png", "--out",
                             pillow_formats())
        x, c = prepared_inputs(direction.test_set, shown, self.objective(run.config, train=False), args.batch_size,
                               args.seed, run.device)
        images = manipulate(run.model, x, found.direction, args.scales, condition=c)
        save_grid(images.flatten(0, 1), out, nrow=len(args.scales))
        typical = math.sqrt(run.model.latent_dims)
        print(f"direction {name!r} − {'the rest' if other is None else repr(other)}: norm {found.norm:.2f} (a "
              f"standard-normal latent's is about {typical:.1f}), the mean latent of {found.count_with} training "
              f"images with {name!r} minus that of {found.count_without} {without}")
        scales = ", ".join(f"{scale:g}" for scale in args.scales)
        print(f"{len(shown)} test images {without} (rows) at scales {scales} (columns; 0 reconstructs, positive "
              f"adds {name!r}): {out}")


    def page(self, run: TrainedRun[GlowConfig], context: PageContext) -> Any:
        """Samples at a temperature (of a chosen class, for a class-conditional model); the interpolation between
        two uploaded or test images; for a model of labelled data, test images moved along an attribute's
        direction by a chosen scale (what ``manipulate`` computes)."""
        gr, model, n_classes = context.gradio, run.model, run.conventions["n_classes"]
        try:
            test_set, _ = self.eval_data(run.config, None)
            names = list(labelled(test_set, run.config.data.dataset).names)
        except DataError:  # the page then has samples and uploads only
            test_set, names = None, [str(k) for k in range(n_classes)]
        conditional, shape = bool(model.condition_shapes), tuple(run.conventions["image_shape"])
        directions: dict[tuple[str, str | None], Direction] = {}

        def label_of(choice: str | None) -> int:
            return names.index(choice) if choice in names else 0

        def samples(count: float, temperature: float, choice: str | None, seed: float) -> tuple[Any, ...]:
            count, generator = int(count), torch.Generator(run.device).manual_seed(page_seed(seed))
            labels = (class_cycle(model, n_classes, count, run.device) if choice in (None, EVERY_CLASS) or
                      not conditional else torch.full((count,), label_of(choice), device=run.device))
            with torch.no_grad():
                images = model.sample(count, labels, float(temperature), generator)
            folder = context.workspace.request_folder()
            path = page_grid(images, folder / "samples.png", nrow=math.ceil(count**0.5))
            return str(path), f"{count} samples at T={temperature:g}, seed {page_seed(seed)}"

        def image_and_label(upload: str | None, index: float | None,
                            choice: str | None) -> tuple[Tensor, int, str]:
            if upload is not None:
                return square_upload(upload, shape), label_of(choice), Path(upload).name
            if test_set is None:
                raise PageError("the test images are not on this machine: upload two images")
            index = held_out_index(index, len(test_set))
            image, label = test_set[index]
            return image, int(label), f"test image {index}"

        def interpolate(upload_a: str | None, index_a: float, upload_b: str | None, index_b: float, steps: float,
                        choice: str | None, seed: float) -> tuple[Any, ...]:
            (a, label_a, first), (b, label_b, second) = (image_and_label(upload_a, index_a, choice),
                                                         image_and_label(upload_b, index_b, choice))
            images = self.interpolation(run, torch.stack([a, b]), torch.tensor([label_a, label_b]), int(steps),
                                        page_seed(seed))
            path = page_grid(images, context.workspace.request_folder() / "interpolation.png", nrow=int(steps))
            return str(path), f"{int(steps)} images from {first} to {second}, ends included"

        def move(attribute: str, against: str, scale: float, count: float, seed: float) -> tuple[Any, ...]:
            key = (attribute, None if against == ALL_OTHERS else against)
            if key not in directions:
                directions[key] = self.direction(run, *key, PAGE_DIRECTION_IMAGES,
                                                 torch.Generator().manual_seed(0), batch_size=256)
            direction = directions[key]
            generator = torch.Generator().manual_seed(page_seed(seed))
            shown = direction.test_pool[torch.randperm(len(direction.test_pool), generator=generator)[:int(count)]]
            x, c = prepared_inputs(direction.test_set, shown, self.objective(run.config, train=False), 256,
                                   page_seed(seed), run.device)
            images = manipulate(model, x, direction.found.direction, [0.0, float(scale)], condition=c)
            path = page_grid(images.flatten(0, 1), context.workspace.request_folder() / "moved.png", nrow=2)
            return str(path), (f"{len(shown)} test images {direction.without}: reconstructed (left) and moved by "
                               f"{float(scale):g} × the direction {direction.name!r} − "
                               f"{'the rest' if direction.other is None else repr(direction.other)} (right), from "
                               f"{direction.found.count_with + direction.found.count_without} training images")

        with gr.Blocks(title="cinn: Glow", delete_cache=(CACHE_SECONDS, CACHE_SECONDS),
                       analytics_enabled=False) as page:
            gr.Markdown(f"## Glow\nModel: {context.about}.")
            status = gr.Markdown(elem_id="status")
            seed = gr.Number(context.seed, precision=0, label="seed", elem_id="seed")
            class_choices = [EVERY_CLASS, *names] if conditional else [EVERY_CLASS]
            with gr.Tab("Samples"):
                count = gr.Slider(1, 64, value=16, step=1, label="samples", elem_id="count")
                temperature = gr.Slider(0, 1.5, value=0.7, step=0.05, label="temperature", elem_id="temperature")
                label = gr.Dropdown(class_choices, value=EVERY_CLASS, label="class", visible=conditional)
                sample_button = gr.Button("Sample", variant="primary", elem_id="sample")
                sample_image = gr.Image(label="samples", type="filepath", format="png", elem_id="samples",
                                        interactive=False)
            with gr.Tab("Interpolate"):
                with gr.Row():
                    upload_a = gr.File(label="first image (or a test image's number below)", file_types=["image"],
                                       elem_id="first_image")
                    upload_b = gr.File(label="second image (or a test image's number below)", file_types=["image"])
                with gr.Row():
                    index_a = gr.Number(0, precision=0, label="first test image")
                    index_b = gr.Number(1, precision=0, label="second test image")
                steps = gr.Slider(2, 16, value=8, step=1, label="images, ends included")
                upload_label = gr.Dropdown(names or [EVERY_CLASS], value=(names or [EVERY_CLASS])[0],
                                           visible=conditional, label="class of the uploaded images")
                interpolate_button = gr.Button("Interpolate", variant="primary", elem_id="interpolate")
                interpolation = gr.Image(label="interpolation", type="filepath", format="png",
                                         elem_id="interpolation", interactive=False)
            if test_set is not None and len(names) > 1:
                with gr.Tab("Attribute"):
                    attribute = gr.Dropdown(names, value=names[-1], label="add")
                    against = gr.Dropdown([ALL_OTHERS, *names], value=ALL_OTHERS, label="against")
                    scale = gr.Slider(-3, 3, value=1, step=0.25, label="scale (0: the reconstruction)")
                    shown = gr.Slider(1, 16, value=6, step=1, label="test images")
                    move_button = gr.Button("Move", variant="primary", elem_id="move")
                    moved = gr.Image(label="moved", type="filepath", format="png", elem_id="moved",
                                     interactive=False)
                move_button.click(answered(move, outputs=1), [attribute, against, scale, shown, seed],
                                  [moved, status])
            sample_button.click(answered(samples, outputs=1), [count, temperature, label, seed],
                                [sample_image, status])
            interpolate_button.click(answered(interpolate, outputs=1),
                                     [upload_a, index_a, upload_b, index_b, steps, upload_label, seed],
                                     [interpolation, status])
        return page


main = GlowTask().main

if __name__ == "__main__":
    GlowTask().run()
