"""Class-conditional INN on labelled images (MNIST, Fashion-MNIST, CIFAR-10 or a folder with one sub-folder
per class): train, eval, check, sample, style transfer, latent PCA.

    python -m tasks.mnist train --config configs/mnist/fc.yaml
    python -m tasks.mnist eval --checkpoint runs/mnist_fc/checkpoint.pt
    python -m tasks.mnist sample --checkpoint runs/mnist_fc/checkpoint.pt --temperature 0.8
    python -m tasks.mnist transfer --checkpoint runs/mnist_fc/checkpoint.pt
    python -m tasks.mnist pca --checkpoint runs/mnist_fc/checkpoint.pt --label 7

The model maps an image ``x`` and its label ``y`` to a latent ``z`` that, ideally, holds only the
style: decoding one ``z`` under every label draws the same style in every class (``transfer``).
Any config field can be overridden (``train --help`` lists them): ``--train.lr=2e-4 --model.architecture=conv``.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from cinn.blocks import map_spec
from cinn.classifier import ImageClassifier, cached_classifier, class_consistency, load_classifier_cache
from cinn.cli import (
    MAX_TEMPERATURE,
    float_in_range,
    int_in_range,
    pillow_formats,
    positive_int,
    writable_file,
    writable_image,
)
from cinn.config import ConfigError
from cinn.data import DataError, collate_images, dataset_attributes, load_labelled_dataset
from cinn.engine import DequantizedImages, GaussianNoiseImages, Objective, TrainConfig, resolve_device
from cinn.latent import LatentPCA, flatten_latents, transfer_style, unflatten_latents
from cinn.models import build_cinn, build_cinn_fc
from cinn.models.registry import model_spec
from cinn.task import (
    MAX_BLOCKS,
    CinnModelConfig,
    Command,
    DequantizationConfig,
    ImageDataConfig,
    TarflowConfig,
    Task,
    TrainedRun,
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

MAX_PCA_AXES, MAX_PCA_STEPS = 64, 64  # the walks along all axes are decoded in one batch
MAX_PCA_RANGE = 100.0  # in standard deviations: far beyond it, a walk decodes only overflow


@dataclass
class DataConfig(ImageDataConfig):
    dataset: str = "mnist"
    """mnist | fashion-mnist | cifar10 (torchvision's layout under root) | a folder, one sub-folder per class"""
    test_fraction: float = 0.1
    """fraction of a class folder held out as its test split (seeded by train.seed)"""
    train_noise: Literal["uniform", "gaussian"] = "uniform"
    """training noise: uniform dequantisation (a bound) or bin centres + N(0, gaussian_std²), as the official
    cINN code trains; evaluation is always uniform"""
    gaussian_std: float = 0.08
    """standard deviation of the gaussian training noise"""

    def validate(self) -> None:
        super().validate()
        if self.gaussian_std <= 0:
            raise ConfigError(f"data.gaussian_std must be positive, got {self.gaussian_std}")
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"data.test_fraction must lie strictly between 0 and 1, got {self.test_fraction}")


@dataclass
class ModelConfig(CinnModelConfig):
    """The conv settings are those of :class:`~cinn.task.CinnModelConfig`; coupling and actnorm apply to both."""

    n_levels: int = 2
    """conv: scales (Haar downsampling, couplings, permutations, a split)"""
    architecture: Literal["fc", "conv", "tarflow"] = "fc"
    """fc: the paper's flat model; conv: multi-scale, Haar downsampling, label embeddings as maps; tarflow: causal
    transformer flows over patch tokens (model.tarflow)"""
    n_blocks: int = 24
    """fc: couplings"""
    hidden_features: int = 512
    """fc: width of the coupling subnets"""
    permutation: Literal["shuffle", "orthogonal"] = "shuffle"
    """fc: a hard shuffle (the paper) or orthogonal mixing (robust to outliers, slower to learn)"""
    class_affine: Literal["none", "input", "latent"] = "none"
    """fc: a per-class, per-dimension affine map (zero-initialised) at the input or before the latent"""
    heavy_tails: bool = False
    """fc: v = asinh(u) after the couplings, before a class prior (heavy-tailed latent: bounded cost for inputs
    far from the training data)"""
    subnet_inputs: Literal["raw", "asinh"] = "raw"
    """fc: what the coupling subnets see of their input half: raw, or asinh of it (an unusual pixel, scaled up by
    the couplings, cannot swamp the later subnets)"""
    tarflow: TarflowConfig = field(default_factory=TarflowConfig)
    """tarflow: the transformer flow's settings"""
    dequantization: DequantizationConfig = field(default_factory=DequantizationConfig)
    """the noise inside each quantisation bin: uniform, or learned (variational)"""

    def validate(self) -> None:
        super().validate()
        if self.n_blocks < 1 or self.hidden_features < 1:
            raise ConfigError("model.n_blocks and model.hidden_features must be positive")
        if self.n_blocks > MAX_BLOCKS:
            raise ConfigError(f"model.n_blocks must be at most {MAX_BLOCKS}, got {self.n_blocks}")
        only = {"fc": {"permutation": "shuffle", "class_affine": "none", "heavy_tails": False,
                       "subnet_inputs": "raw"},
                "conv": {"subnet": "cinn_conv"},
                "tarflow": {"tarflow": TarflowConfig()}}
        for other, settings in only.items():
            changed = [f"model.{name}" if name == "tarflow" else f"model.{name}={getattr(self, name)}"
                       for name, default in settings.items()
                       if other != self.architecture and getattr(self, name) != default]
            if changed:
                raise ConfigError(f"{', '.join(changed)}: only the {other} architecture has this; "
                                  f"model.architecture is {self.architecture}")


@dataclass
class EvalConfig:
    temperature: float = 0.8
    """sampling temperature of figures and class consistency"""
    samples_per_class: int = 100
    """samples per label judged by the classifier (class consistency)"""
    classifier_epochs: int = 3
    """epochs of the judging classifier (trained on the training split, cached in the run)"""

    def validate(self) -> None:
        if not 0 <= self.temperature <= MAX_TEMPERATURE:
            raise ConfigError(f"eval.temperature must be from 0 to {MAX_TEMPERATURE:g}, got {self.temperature}")
        if self.samples_per_class < 1 or self.classifier_epochs < 1:
            raise ConfigError("eval.samples_per_class and eval.classifier_epochs must be positive")


@dataclass
class MnistConfig:
    run_dir: str = "runs/mnist"
    """folder of the run: checkpoint, config, metrics, figures"""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(optimizer="adam", lr=1e-4, weight_decay=1e-5,
                                                                   batch_size=512))
    eval: EvalConfig = field(default_factory=EvalConfig)


def class_rows(n_per_class: int, n_classes: int, device: torch.device) -> Tensor:
    """Labels ``0…0, 1…1, …`` (``n_per_class`` each): one grid row per class."""
    return torch.arange(n_classes, device=device).repeat_interleave(n_per_class)


class ClassConditionalTask(Task[MnistConfig]):
    name, config_class, description = "mnist", MnistConfig, __doc__
    sample_count, sample_count_help, sample_temperatures = 10, "samples per class", (0.8,)

    def split(self, config: MnistConfig, train: bool, root: str | None = None):
        """The training split (``train=True``) or the evaluation split (:func:`~cinn.task.data_split`)."""
        data = config.data
        return data_split(data, lambda training: load_labelled_dataset(
            data.dataset, root or data.root, train=training, image_size=data.image_size, channels=data.channels,
            test_fraction=data.test_fraction, seed=config.train.seed), train)

    def train_data(self, config):
        return self.split(config, train=True)

    def eval_data(self, config, data):
        return self.split(config, train=False, root=data), split_description(config.data)

    def model_spec(self, config, facts) -> dict[str, Any]:
        if config.model.dequantization.kind == "variational" and config.data.train_noise == "gaussian":
            raise ConfigError("model.dequantization.kind=variational learns the noise inside each bin; "
                              "data.train_noise=gaussian replaces that noise: choose one")
        return config.model.dequantization.wrap(self.flow_spec(config, facts), config.data.n_bits)

    def flow_spec(self, config, facts) -> dict[str, Any]:
        """The spec of the flow itself (before any variational dequantisation)."""
        model, shape, n_classes = config.model, facts["image_shape"], facts["n_classes"]
        if model.architecture == "tarflow":
            return model.tarflow.spec(shape, n_classes)
        if model.architecture == "fc":
            return model_spec(build_cinn_fc, input_shape=shape, n_classes=n_classes, n_blocks=model.n_blocks,
                              hidden_features=model.hidden_features, coupling=map_spec(model.coupling),
                              actnorm=model.actnorm,
                              permutation=model.permutation, seed=config.train.seed,
                              class_affine=model.class_affine, heavy_tails=model.heavy_tails,
                              subnet_inputs=model.subnet_inputs)
        return model_spec(build_cinn, input_shape=shape, condition_shape=[n_classes], n_levels=model.n_levels,
                          blocks_per_level=model.blocks_per_level, hidden_channels=model.hidden_channels,
                          coupling=map_spec(model.coupling), subnet=model.subnet, split_prior=model.split_prior,
                          actnorm=model.actnorm, seed=config.train.seed)

    def conventions(self, config, facts) -> dict[str, Any]:
        return {**facts, "n_bits": config.data.n_bits, "dataset": config.data.dataset}

    def objective(self, config, train) -> Objective:
        if train and config.data.train_noise == "gaussian":
            return GaussianNoiseImages(config.data.n_bits, config.data.gaussian_std, class_conditional=True)
        return DequantizedImages(config.data.n_bits, class_conditional=True)

    def figure(self, model, config, conventions, eval_set, device) -> Tensor:
        generator = torch.Generator(device).manual_seed(config.train.seed)
        return self.sample_images(model, conventions, 8, config.eval.temperature, generator)[0]

    def sample_images(self, model, conventions, n, temperature, generator) -> tuple[Tensor, int]:
        labels = class_rows(n, conventions["n_classes"], generator.device)
        images = [model.sample(len(chunk), chunk, temperature, generator) for chunk in labels.split(500)]
        return torch.cat(images), n

    def add_eval_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--classifier", type=Path, help="cached classifier file (default: classifier.pt "
                                                            "in the run)")

    def classifier_cache(self, args: argparse.Namespace) -> Path:
        return args.classifier or args.checkpoint.parent / "classifier.pt"

    def check_eval_arguments(self, args: argparse.Namespace) -> None:
        """A file at the cache path must be a classifier cache (else it would be refused only after the bits/dim
        evaluation); a path with nothing there must be writable."""
        cache = self.classifier_cache(args)
        if cache.is_dir() or not cache.exists():
            writable_file(cache, "--classifier")
        else:
            load_classifier_cache(cache)

    def judging_classifier(self, run: TrainedRun[MnistConfig], eval_set, cache: Path, data_root: str | None,
                           seed: int) -> tuple[ImageClassifier, float]:
        """The classifier that judges class consistency (trained on the run's training split, cached at
        ``cache``) and its accuracy on ``eval_set``."""
        config = run.config
        return cached_classifier(cache, self.split(config, train=True, root=data_root), eval_set,
                                 run.conventions["n_classes"], epochs=config.eval.classifier_epochs, seed=seed,
                                 device=run.device)

    def consistency(self, run: TrainedRun[MnistConfig], classifier: ImageClassifier,
                    seed: int) -> tuple[float, Tensor]:
        """Class consistency: the fraction of ``eval.samples_per_class`` samples per label, drawn at
        ``eval.temperature`` (generator seeded with ``seed``), that ``classifier`` assigns to their label; and
        that fraction per label."""
        config, n_classes = run.config, run.conventions["n_classes"]
        generator = torch.Generator(run.device).manual_seed(seed)
        with torch.no_grad():
            samples, _ = self.sample_images(run.model, run.conventions, config.eval.samples_per_class,
                                            config.eval.temperature, generator)
        return class_consistency(classifier, samples, class_rows(config.eval.samples_per_class, n_classes,
                                                                 run.device))

    def report(self, run: TrainedRun[MnistConfig], eval_set, args, bits_per_dim) -> None:
        config = run.config
        classifier, accuracy = self.judging_classifier(run, eval_set, self.classifier_cache(args), args.data,
                                                       args.seed)
        consistency, per_class = self.consistency(run, classifier, args.seed)
        count = config.eval.samples_per_class * run.conventions["n_classes"]
        error = math.sqrt(consistency * (1 - consistency) / count)
        print(f"class consistency: {consistency:.1%} ± {error:.1%} of {count} samples at temperature "
              f"{config.eval.temperature} (classifier test accuracy {accuracy:.1%})")
        print("  per class: " + ", ".join(f"{k}: {value:.0%}" for k, value in enumerate(per_class.tolist())))

    def page(self, run: TrainedRun[MnistConfig], context: PageContext) -> Any:
        """A row of samples per chosen class at a temperature; style transfer of an uploaded or test image: its
        latent decoded under every class."""
        gr, model, n_classes = context.gradio, run.model, run.conventions["n_classes"]
        try:
            test_set, _ = self.eval_data(run.config, None)
        except DataError:  # the page then transfers uploads only
            test_set = None
        attributes = None if test_set is None else dataset_attributes(test_set)
        names = list(attributes.names) if attributes is not None else [str(k) for k in range(n_classes)]
        shape = tuple(run.conventions["image_shape"])

        def samples(chosen: list[str], count: float, temperature: float, seed: float) -> tuple[Any, ...]:
            if not chosen:
                raise PageError("choose at least one class")
            labels = torch.tensor([names.index(name) for name in chosen], device=run.device)
            labels = labels.repeat_interleave(int(count))
            generator = torch.Generator(run.device).manual_seed(page_seed(seed))
            with torch.no_grad():
                images = model.sample(len(labels), labels, float(temperature), generator)
            path = page_grid(images, context.workspace.request_folder() / "samples.png", nrow=int(count))
            return str(path), f"{int(count)} samples of each of {len(chosen)} classes at T={temperature:g}"

        def transfer(upload: str | None, index: float | None, invert: bool, label: str,
                     seed: float) -> tuple[Any, ...]:
            if upload is not None:
                image = square_upload(upload, shape)
                images, labels = (255 - image if invert else image)[None], torch.tensor([names.index(label)])
                x, c = self.objective(run.config, train=False).prepare(
                    images.to(run.device), labels.to(run.device),
                    torch.Generator(run.device).manual_seed(page_seed(seed)))
                source = f"the uploaded image as {label!r}"
            elif test_set is None:
                raise PageError("the test images are not on this machine: upload an image")
            else:
                index = held_out_index(index, len(test_set))
                x, c, labels = self.held_out_inputs(run, test_set, [index], page_seed(seed))
                source = f"test image {index}, a {names[int(labels[0])]!r}"
            with torch.no_grad():
                every_class = [torch.full((1,), k, device=run.device) for k in range(n_classes)]
                moved = transfer_style(model, x, c, every_class)
            path = page_grid(torch.cat([x[:, None], moved], dim=1).flatten(0, 1),
                             context.workspace.request_folder() / "transfer.png", nrow=n_classes + 1)
            return str(path), f"{source}, then its latent decoded under each of the {n_classes} classes"

        with gr.Blocks(title="cinn: class-conditional INN", delete_cache=(CACHE_SECONDS, CACHE_SECONDS),
                       analytics_enabled=False) as page:
            gr.Markdown(f"## Class-conditional INN\nModel: {context.about}.")
            status = gr.Markdown(elem_id="status")
            seed = gr.Number(context.seed, precision=0, label="seed", elem_id="seed")
            with gr.Tab("Samples"):
                chosen = gr.CheckboxGroup(names, value=names, label="classes (a row each)", elem_id="classes")
                count = gr.Slider(1, 16, value=8, step=1, label="samples per class", elem_id="count")
                temperature = gr.Slider(0, 1.5, value=0.8, step=0.05, label="temperature", elem_id="temperature")
                sample_button = gr.Button("Sample", variant="primary", elem_id="sample")
                sample_image = gr.Image(label="samples", type="filepath", format="png", interactive=False,
                                        elem_id="samples")
            with gr.Tab("Style transfer"):
                upload = gr.File(label="an image of one class (or a test image's number below)",
                                 file_types=["image"], elem_id="digit")
                index = gr.Number(0, precision=0, label="test image")
                invert = gr.Checkbox(False, label="invert (dark ink on light paper)")
                label = gr.Dropdown(names, value=names[0], label="class of the uploaded image")
                transfer_button = gr.Button("Transfer", variant="primary", elem_id="transfer")
                transferred = gr.Image(label="the image, then its style in every class", type="filepath",
                                       format="png", interactive=False, elem_id="transferred")
            sample_button.click(answered(samples, outputs=1), [chosen, count, temperature, seed],
                                [sample_image, status])
            transfer_button.click(answered(transfer, outputs=1), [upload, index, invert, label, seed],
                                  [transferred, status])
        return page

    def commands(self) -> list[Command]:
        def transfer_arguments(parser: argparse.ArgumentParser) -> None:
            parser.add_argument("--data-root", dest="data", help="where the data lives, if not where it was")
            parser.add_argument("--n", type=positive_int, default=8, help="test images to transfer")
            parser.add_argument("--out", type=Path, help="output PNG (default: in the run directory)")

        def pca_arguments(parser: argparse.ArgumentParser) -> None:
            transfer_arguments(parser)
            parser.add_argument("--label", type=int_in_range(0), help="one class (default: all)")
            parser.add_argument("--axes", type=int_in_range(1, MAX_PCA_AXES), default=6,
                                help=f"top axes to show, 1 to {MAX_PCA_AXES}")
            parser.add_argument("--steps", type=int_in_range(1, MAX_PCA_STEPS), default=9,
                                help=f"images per axis, 1 to {MAX_PCA_STEPS}")
            parser.add_argument("--range", type=float_in_range(0, MAX_PCA_RANGE, above=True), default=2.5,
                                help=f"walk from -range to +range std, at most {MAX_PCA_RANGE:g}")
            parser.add_argument("--images", type=int_in_range(2), default=5000,
                                help="held-out images to fit the PCA on (at least 2)")

        return [Command("transfer", "style transfer: test images re-decoded under every label", self.transfer,
                        transfer_arguments),
                Command("pca", "images along the principal axes of held-out latents", self.pca, pca_arguments)]

    def held_out_inputs(self, run: TrainedRun, test_set, indices: list[int], seed: int) -> tuple[Tensor, ...]:
        images, labels = collate_images([test_set[i] for i in indices])
        generator = torch.Generator(run.device).manual_seed(seed)
        x, c = self.objective(run.config, train=False).prepare(images.to(run.device), labels.to(run.device),
                                                               generator)
        return x, c, labels.to(run.device)

    def transfer(self, args: argparse.Namespace) -> None:
        out = writable_image(args.out or args.checkpoint.parent / "transfer.png", "--out", pillow_formats())
        run = self.open(args.checkpoint, resolve_device(args.device))
        test_set, _ = self.eval_data(run.config, args.data)
        chosen = torch.randperm(len(test_set), generator=torch.Generator().manual_seed(args.seed))[:args.n]
        x, c, labels = self.held_out_inputs(run, test_set, chosen.tolist(), args.seed)
        n_classes = run.conventions["n_classes"]
        transferred = transfer_style(run.model, x, c, [torch.full_like(labels, k) for k in range(n_classes)])
        grid = save_grid(torch.cat([x[:, None], transferred], dim=1).flatten(0, 1), out, nrow=n_classes + 1)
        print(f"style transfer (each row: a test image, then its latent decoded under every label): {grid}")

    def pca(self, args: argparse.Namespace) -> None:
        run = self.open(args.checkpoint, resolve_device(args.device))
        model, n_classes = run.model, run.conventions["n_classes"]
        if args.label is not None and args.label >= n_classes:
            raise ConfigError(f"--label {args.label} is not a class of this model; its labels are 0 to "
                              f"{n_classes - 1}")
        test_set, _ = self.eval_data(run.config, args.data)
        count = min(args.images, len(test_set))
        if count < 2:
            raise DataError(f"the test split holds {count} image(s) and a PCA needs at least 2; evaluate on more "
                            "data (--data-root, or a larger data.test_fraction of a class folder)")
        with torch.no_grad():
            latents = torch.cat([flatten_latents(model.encode(*self.held_out_inputs(
                run, test_set, list(range(start, min(start + 500, count))), args.seed + start)[:2]))
                for start in range(0, count, 500)])
            axes = LatentPCA.fit(latents, k=args.axes)
            values = torch.linspace(-args.range, args.range, args.steps, device=run.device)
            walks = torch.cat([axes.walk(axis, values) for axis in range(len(axes.std))])
            for label in range(n_classes) if args.label is None else [args.label]:
                images = model.decode(unflatten_latents(walks, model.latent_shapes),
                                      torch.full((len(walks),), label, device=run.device))
                path = save_grid(images, Path(args.out or args.checkpoint.parent / "pca") / f"class_{label}.png",
                                 nrow=args.steps)
                print(f"class {label}: top {len(axes.std)} axes, {args.steps} steps in ±{args.range} std: {path}")
        share = (axes.std**2).sum() / latents.var(0).sum()  # of the total variance of all D dims
        print(f"PCA of {count} held-out latents: the top {len(axes.std)} axes explain {share:.1%} of the "
              f"variance; their std: {', '.join(f'{s:.2f}' for s in axes.std.tolist())}")


main = ClassConditionalTask().main

if __name__ == "__main__":
    ClassConditionalTask().run()
