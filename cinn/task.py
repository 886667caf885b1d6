"""The task kernel: the commands every task has — ``train``, ``eval``, ``check``, ``sample``, ``serve`` (a page in
the browser), ``bench``, ``upgrade``, ``export`` — with their arguments, resume rules, device and seed handling,
written once.

A task is a subclass of :class:`Task` that declares what is its own: its config class, its data, its
model spec, its objective, what its figures show, and any extra commands. ``python -m tasks.X`` is then

    if __name__ == "__main__":
        MyTask().run()

Every model a task trains is written in the self-describing checkpoint format of
:mod:`cinn.engine.checkpoint`, so :func:`cinn.load` rebuilds it without the task.

Example (a task of its own, ``tasks/glow.py`` is the full version of this):
    >>> from dataclasses import dataclass, field
    >>> from cinn.data import load_dataset
    >>> from cinn.engine import DequantizedImages, TrainConfig
    >>> from cinn.models import build_glow
    >>> from cinn.models.registry import model_spec
    >>> @dataclass
    ... class TinyConfig:
    ...     run_dir: str = "runs/tiny"
    ...     train: TrainConfig = field(default_factory=TrainConfig)
    >>> class TinyGlow(Task):
    ...     name, config_class = "tiny", TinyConfig
    ...     def train_data(self, config):
    ...         return load_dataset("fashion-mnist", None, train=True)
    ...     def eval_data(self, config, data):
    ...         return load_dataset("fashion-mnist", data, train=False), "Fashion-MNIST test split"
    ...     def model_spec(self, config, facts):
    ...         return model_spec(build_glow, input_shape=facts["image_shape"], n_levels=1, steps_per_level=2)
    ...     def objective(self, config, train):
    ...         return DequantizedImages(n_bits=8)
    >>> model, info = TinyGlow().build_model(TinyConfig(), {"image_shape": [1, 8, 8], "n_classes": 0})
    >>> info["model_spec"]["builder"], model.input_shape
    ('build_glow', (1, 8, 8))
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from cinn import cli, web
from cinn.bayes import bayes_rule_accuracy
from cinn.bench import benchmark_training
from cinn.blocks import coupling_map, subnet_constructor
from cinn.check import check_trained
from cinn.config import ConfigError, config_from_dict, config_to_dict, format_config_help, load_config
from cinn.data import TensorImageDataset, is_dataset_name
from cinn.engine import (
    BitsPerDim,
    CheckpointError,
    Objective,
    ProcessGroup,
    Trainer,
    build_optimizer,
    close_process_group,
    evaluate_bits_per_dim,
    init_process_group,
    load_checkpoint,
    model_info,
    per_image_bits_per_dim,
    prepared_batches,
    resolve_device,
    save_checkpoint,
    trained_weights,
)
from cinn.engine.checkpoint import (
    rebuild_model,
    require_entries,
    require_task,
)
from cinn.engine.hooks import Samples
from cinn.engine.run import RunDirectory, check_batch_size, require_resumable, resumed_config
from cinn.engine.train_config import MAX_SEED
from cinn.models import Flow, VariationallyDequantizedFlow, build_tarflow, build_variationally_dequantized
from cinn.models.registry import MAX_BLOCKS, MAX_IMAGE_SIZE, build_from_spec, model_spec
from cinn.viz import save_grid, writing
from cinn.web import PageContext, Workspace, open_gradio

C = TypeVar("C")


EXPORTED_ENTRIES = ("task", "config", "model_spec", "conventions", "cinn_version", "step")
"""The entries of a checkpoint that ``export`` keeps, with the trained weights."""


@dataclass
class ImageDataConfig:
    """The ``data:`` section of a task on image datasets (a task subclasses it to add its own settings)."""

    dataset: str = "fashion-mnist"
    """a registered dataset (cinn.data.DATASETS: mnist, fashion-mnist, cifar10, ...) or a folder of images (then
    image_size and channels apply)"""
    root: str | None = None
    """where the named dataset lives (default: torchvision's download folder, Debian's package)"""
    image_size: int = 32
    """side of the square a folder's images are resized and cropped to"""
    channels: int = 3
    """channels of a folder's images: 3 (RGB) or 1 (grey)"""
    n_bits: int = 8
    """bits per colour channel the images are quantised to (1-8)"""
    validation_images: int = 0
    """hold the last N training images out of training and evaluate on them (a validation split to tune on, the
    test split untouched); 0: train on all training images, evaluate on the test split"""

    def validate(self) -> None:
        if self.validation_images < 0:
            raise ConfigError(f"data.validation_images must be 0 or more, got {self.validation_images}")
        if not 1 <= self.n_bits <= 8:
            raise ConfigError(f"data.n_bits must be between 1 and 8, got {self.n_bits}")
        if not 1 <= self.image_size <= MAX_IMAGE_SIZE or self.channels not in (1, 3):
            raise ConfigError(f"data.image_size must be from 1 to {MAX_IMAGE_SIZE} and data.channels 1 or 3, got "
                              f"{self.image_size} and {self.channels}")


@dataclass
class CinnModelConfig:
    """The ``model:`` settings of a multi-scale conditional INN (:func:`~cinn.models.build_cinn`), which a
    task's model section extends."""

    n_levels: int = 3
    """scales: Haar downsampling, couplings, permutations, a split"""
    blocks_per_level: int = 4
    """conditional soft-clamp couplings per scale"""
    hidden_channels: int = 64
    """width of the coupling subnets"""
    coupling: dict[str, Any] = field(default_factory=lambda: {"map": "soft_clamp_affine", "clamp": 1.5})
    """the couplings' element-wise map and its options (a registered coupling map, cinn.blocks.COUPLING_MAPS)"""
    subnet: str = "cinn_conv"
    """the couplings' subnets (a registered subnet, cinn.blocks.SUBNETS)"""
    split_prior: bool = False
    """predict each split-off latent's Gaussian from the kept channels"""
    actnorm: bool = False
    """a data-initialised ActNorm before every coupling (not in the paper)"""

    def validate(self) -> None:
        if self.n_levels < 1 or self.blocks_per_level < 1 or self.hidden_channels < 1:
            raise ConfigError("model.n_levels, model.blocks_per_level and model.hidden_channels must be positive")
        check_coupling_and_subnet(self.coupling, self.subnet)
        if self.n_levels * self.blocks_per_level > MAX_BLOCKS:
            raise ConfigError(f"model.n_levels x model.blocks_per_level must be at most {MAX_BLOCKS} couplings, "
                              f"got {self.n_levels} x {self.blocks_per_level}")


def write_per_image(path: Path, bits_per_dim: Tensor) -> None:
    """Write each image's bits/dim to the CSV file ``path`` (``image,bits_per_dim``, full float64 precision),
    atomically.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "bpd.csv"; write_per_image(path, torch.tensor([3.25, 4.0]))
        >>> path.read_text().splitlines()
        ['image,bits_per_dim', '0,3.25', '1,4.0']
    """
    rows = "".join(f"{index},{value!r}\n" for index, value in enumerate(bits_per_dim.double().tolist()))
    temporary = path.with_name(f".{path.name}.tmp")
    with writing(path):
        temporary.write_text("image,bits_per_dim\n" + rows)
        os.replace(temporary, path)


def split_description(data: ImageDataConfig) -> str:
    """What an evaluation split is, for the lines that report on it.

    Example:
        >>> split_description(ImageDataConfig(dataset="mnist", validation_images=5000))
        'mnist, 8-bit, validation split (the last 5000 training images)'
    """
    if not data.validation_images:
        return f"{data.dataset}, {data.n_bits}-bit"
    return (f"{data.dataset}, {data.n_bits}-bit, validation split (the last {data.validation_images} training "
            "images)")


def validation_split(training_images: Dataset, count: int, train: bool) -> Dataset:
    """The training images but the last ``count`` (``train=True``), or those last ``count`` (``train=False``): a
    validation split that leaves the test split untouched (``data.validation_images``).

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> images = TensorDataset(torch.arange(10))
        >>> len(validation_split(images, 3, train=True)), validation_split(images, 3, train=False)[0]
        (7, (tensor(7),))
        >>> digits = TensorImageDataset(torch.zeros(10, 1, 2, 2, dtype=torch.uint8), torch.arange(10), 10)
        >>> validation_split(digits, 3, train=False).num_classes
        10
    """
    if not 0 < count < len(training_images):
        raise ConfigError(f"data.validation_images must be from 1 to {len(training_images) - 1} (the training "
                          f"split holds {len(training_images)} images), got {count}")
    kept = len(training_images) - count
    part = slice(0, kept) if train else slice(kept, None)
    if isinstance(training_images, TensorImageDataset):  # stays one, with its classes and attributes
        return TensorImageDataset(training_images.images[part], training_images.labels[part],
                                  training_images.num_classes, training_images.classes)
    subset = Subset(training_images, range(len(training_images))[part])
    subset.num_classes = getattr(training_images, "num_classes", 0)
    return subset


def data_split(data: ImageDataConfig, load: Callable[[bool], Dataset], train: bool) -> Dataset:
    """A task's training split (``train=True``) or evaluation split, where ``load(training)`` gives the dataset's
    training or test split: the evaluation split is the test split, or with ``data.validation_images`` the last
    training images, which the training split then leaves out (:func:`validation_split`).

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> def load(training):
        ...     return TensorDataset(torch.arange(10 if training else 4))
        >>> len(data_split(ImageDataConfig(), load, train=False))
        4
        >>> len(data_split(ImageDataConfig(validation_images=3), load, train=False))
        3
    """
    if not data.validation_images:
        return load(train)
    return validation_split(load(True), data.validation_images, train)


@dataclass
class TarflowConfig:
    """The ``model.tarflow:`` settings of a TarFlow (:func:`~cinn.models.build_tarflow`), the model of a task whose
    ``model.architecture`` is ``tarflow``."""

    patch_size: int = 4
    """side of the square patches cut into tokens (it must divide the image size)"""
    width: int = 128
    """channels of the causal transformers"""
    n_blocks: int = 4
    """autoregressive flow blocks, the token order reversed in every second one"""
    layers_per_block: int = 4
    """transformer layers in each block"""
    heads: int | None = None
    """attention heads (null: heads of 64 channels or fewer)"""
    clamp: float = 2.0
    """soft bound on each block's log-scale"""

    def validate(self) -> None:
        if min(self.patch_size, self.width, self.n_blocks, self.layers_per_block) < 1 or self.clamp <= 0:
            raise ConfigError("model.tarflow.patch_size, width, n_blocks, layers_per_block and clamp must be "
                              "positive")
        if self.heads is not None and (self.heads < 1 or self.width % self.heads):
            raise ConfigError(f"model.tarflow.heads must divide model.tarflow.width {self.width}, got "
                              f"{self.heads}")
        if self.n_blocks * self.layers_per_block > MAX_BLOCKS:
            raise ConfigError(f"model.tarflow.n_blocks x layers_per_block must be at most {MAX_BLOCKS} "
                              f"transformer layers, got {self.n_blocks} x {self.layers_per_block}")

    def spec(self, image_shape: Sequence[int], n_classes: int) -> dict[str, Any]:
        """The model spec of this TarFlow for images of ``image_shape`` (class-conditional with ``n_classes > 0``).

        Example:
            >>> TarflowConfig(width=64).spec([1, 28, 28], 10)["arguments"]["width"]
            64
        """
        image_size = tuple(image_shape)[1:]
        if any(side % self.patch_size for side in image_size):
            raise ConfigError(f"model.tarflow.patch_size {self.patch_size} does not divide the image size "
                              f"{'x'.join(map(str, image_size))}; use a divisor of both sides")
        return model_spec(build_tarflow, input_shape=image_shape, patch_size=self.patch_size, width=self.width,
                          n_blocks=self.n_blocks, layers_per_block=self.layers_per_block, heads=self.heads,
                          n_classes=n_classes, clamp=self.clamp)


@dataclass
class DequantizationConfig:
    """The ``model.dequantization:`` settings: the noise that fills each quantisation bin during training and
    evaluation (:mod:`cinn.models.dequantization`)."""

    kind: Literal["uniform", "variational"] = "uniform"
    """uniform: the standard bound; variational: noise from a conditional flow q(u | x) trained with the model
    (Flow++), and the reported bits/dim is that variational bound"""
    blocks: int = 4
    """variational: couplings of the dequantiser's flow"""
    hidden_channels: int = 32
    """variational: width of the dequantiser's coupling subnets"""

    def validate(self) -> None:
        if self.blocks < 1 or self.hidden_channels < 1:
            raise ConfigError("model.dequantization.blocks and hidden_channels must be positive")

    def wrap(self, spec: dict[str, Any], n_bits: int) -> dict[str, Any]:
        """``spec``, variationally dequantised for ``n_bits`` images when ``kind`` is variational.

        Example:
            >>> flow = TarflowConfig(width=16).spec([1, 8, 8], 0)
            >>> DequantizationConfig("variational").wrap(flow, 5)["builder"]
            'build_variationally_dequantized'
        """
        if self.kind == "uniform":
            return spec
        return model_spec(build_variationally_dequantized, flow=spec, n_bits=n_bits, blocks_per_level=self.blocks,
                          hidden_channels=self.hidden_channels)


def check_coupling_and_subnet(coupling: dict[str, Any], subnet: str | Sequence[str] | None) -> None:
    """``model.coupling`` must name a registered coupling map with options it takes, and ``model.subnet`` a
    registered subnet, or a list of them (None: the model has no choice of subnet); else a one-line
    :class:`ConfigError`.

    Example:
        >>> check_coupling_and_subnet({"map": "additive", "clamp": 1.0}, "glow_conv")
        Traceback (most recent call last):
        cinn.config.ConfigError: model.coupling: coupling map 'additive' takes no options, not clamp
    """
    subnets = [] if subnet is None else [subnet] if isinstance(subnet, str) else subnet
    for key, check in (("coupling", lambda: coupling_map(coupling)),
                       ("subnet", lambda: [subnet_constructor(name, 1) for name in subnets])):
        try:
            check()
        except ValueError as error:
            raise ConfigError(f"model.{key}: {error}") from None


@dataclass
class TrainedRun(Generic[C]):
    """A checkpoint opened by its task: the run's config, the trained model (eval mode, on ``device``),
    the data conventions and the raw checkpoint dict."""

    config: C
    model: nn.Module
    conventions: dict[str, Any]
    state: dict[str, Any]
    device: torch.device


@dataclass
class Command:
    """An extra command of a task: ``add_arguments(parser)`` declares its options (``--checkpoint``,
    ``--device`` and ``--seed`` come with every command that opens a checkpoint), ``run(args)`` runs it."""

    name: str
    help: str
    run: Callable[[argparse.Namespace], None]
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    opens_checkpoint: bool = True


def data_facts(train_set: Dataset) -> dict[str, Any]:
    """What the model spec may depend on in the data: the shape of one image and the number of classes."""
    image, _ = train_set[0]
    return {"image_shape": list(image.shape), "n_classes": int(getattr(train_set, "num_classes", 0))}


def first_items(dataset: Dataset, limit: int | None) -> Dataset:
    """The first ``limit`` items of ``dataset`` (all of it when ``limit`` is None or not smaller), what ``eval
    --limit`` evaluates.

    Example:
        >>> len(first_items(list(range(10)), 3)), len(first_items(list(range(10)), 30))
        (3, 10)
    """
    return dataset if limit is None or limit >= len(dataset) else Subset(dataset, range(limit))


class Task(ABC, Generic[C]):
    """One command-line task. Subclasses set the class attributes and implement the methods marked
    *required*; the others have defaults that fit a model of images."""

    name: ClassVar[str]
    """The task's name: checkpoints record it, ``python -m tasks.<name>`` runs it."""
    config_class: ClassVar[type]
    """The task's config dataclass: sections ``data``, ``model``, ``train`` (a TrainConfig), ..."""
    description: ClassVar[str] = ""
    data_option: ClassVar[tuple[str, str]] = ("--data-root", "where the data lives, if not where it was in "
                                                             "training")
    """The option of ``eval`` and ``check`` that points at other held-out data (see :meth:`eval_data`)."""
    eval_batch_size: ClassVar[int] = 256
    check_limit: ClassVar[int | None] = 1000
    train_shortcuts: ClassVar[dict[str, tuple[str, str]]] = {}
    """Train options that stand for a config key, e.g. ``{"--data": ("data.path", "a folder of photos")}``."""
    benchmarks: ClassVar[bool] = False
    """Whether the task offers ``bench`` (training and sampling speed of its model)."""
    pretrained: ClassVar[Path | None] = None
    """The model shipped with cinn that commands use when no ``--checkpoint`` is given (None: none)."""
    sample_count: ClassVar[int] = 64
    sample_count_help: ClassVar[str] = "samples per grid"
    max_sample_count: ClassVar[int] = 1024
    """The most ``sample --n`` accepts: the samples of a grid are drawn in one batch, so memory grows with it."""
    sample_temperatures: ClassVar[tuple[float, ...]] = (0.5, 0.7, 0.8, 1.0)

    # ------------------------------------------------------------------ declared by the task (required)
    @abstractmethod
    def train_data(self, config: C) -> Dataset:
        """*Required.* The training set: items ``(uint8 image, label)``."""

    @abstractmethod
    def eval_data(self, config: C, data: str | None) -> tuple[Dataset, str]:
        """*Required.* The held-out set (from ``data`` when given, the task's data option) and what it is."""

    @abstractmethod
    def model_spec(self, config: C, facts: dict[str, Any]) -> dict[str, Any]:
        """*Required.* The spec (:func:`~cinn.models.registry.model_spec`) of the model for ``config``;
        ``facts`` are :func:`data_facts` of the training set."""

    @abstractmethod
    def objective(self, config: C, train: bool) -> Objective:
        """*Required.* Images → model inputs; ``train=False``: the objective whose bits/dim is reported."""

    # ------------------------------------------------------------------ declared by the task (optional)
    def conventions(self, config: C, facts: dict[str, Any]) -> dict[str, Any]:
        """What a user of the trained model must know about its data; stored in the checkpoint."""
        return dict(facts)

    def figure(self, model: nn.Module, config: C, conventions: dict[str, Any], eval_set: Dataset,
               device: torch.device) -> Tensor | None:
        """Images ``(N, C, H, W)`` in [0, 1] for the run's sample grids; a task that does not override this
        has none."""
        return None

    def sample_images(self, model: nn.Module, conventions: dict[str, Any], n: int, temperature: float,
                      generator: torch.Generator) -> tuple[Tensor, int] | None:
        """``(images, images per grid row)`` for the ``sample`` command, or None if the task has none."""
        return None

    def page(self, run: TrainedRun[C], context: PageContext) -> Any:
        """The task's page in the browser for ``serve``: a ``gradio.Blocks`` built with ``context.gradio`` and the
        helpers of :mod:`cinn.web`; a task that does not override this has no ``serve``."""
        return None

    def training_data(self, config: C) -> str:
        """What the model of ``config`` was trained on, in a few words (the pages say it)."""
        data = getattr(config, "data", None)
        return str(getattr(data, "dataset", "its task's data"))

    def describe_bits_per_dim(self, result: BitsPerDim, run: TrainedRun[C], where: str) -> str:
        """The line ``eval`` prints for the held-out bits/dim."""
        split = "validation" if getattr(getattr(run.config, "data", None), "validation_images", 0) else "test"
        noise = ("variational dequantisation, a variational bound (one draw of q(u | x) per image)"
                 if getattr(run.model, "variational_bound", False) else "uniform dequantisation")
        return f"{split} bits/dim: {result.summary()}; {where}, {noise}"

    def report(self, run: TrainedRun[C], eval_set: Dataset, args: argparse.Namespace,
               bits_per_dim: Tensor) -> None:
        """Further ``eval`` output after the bits/dim line; measures of the held-out images evaluate those of
        ``first_items(eval_set, args.limit)``, as the bits/dim did, whose per-image values are ``bits_per_dim``
        (in order)."""

    def add_eval_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Options of the task's own ``eval`` output (see :meth:`report`)."""

    def check_eval_arguments(self, args: argparse.Namespace) -> None:
        """Refuse (one-line errors) the task's own ``eval`` options that :meth:`report` could not use, before
        ``eval`` does any work: a file to read that is not what it should be, a path that cannot be written."""

    def after_training(self, trainer: Trainer, config: C, eval_set: Dataset) -> None:
        """What the main process does once training ends (e.g. a figure of held-out results)."""

    def data_folders(self, config: C) -> list[tuple[str, Path]]:
        """The folders of images ``train`` reads, each with the setting that names it (a run directory inside
        one is refused: its figures would become data). By default ``data.dataset`` when it is a folder, not a
        dataset's name."""
        dataset = getattr(getattr(config, "data", None), "dataset", None)
        if not isinstance(dataset, str) or is_dataset_name(dataset):
            return []
        folder = Path(dataset).expanduser()
        return [("data.dataset", folder)] if folder.is_dir() else []

    def commands(self) -> list[Command]:
        """The task's own commands beyond the kernel's."""
        return []

    # ------------------------------------------------------------------ kernel
    def build_model(self, config: C, facts: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
        """The untrained model for ``config`` (seeded with ``train.seed``) and the checkpoint entries that
        describe it."""
        spec = self.model_spec(config, facts)
        torch.manual_seed(config.train.seed)
        try:
            model = build_from_spec(spec)
        except ValueError as error:
            raise ConfigError(f"impossible model for this data: {error}") from None
        return model, model_info(spec, self.conventions(config, facts))

    def open(self, checkpoint: Path, device: torch.device) -> TrainedRun[C]:
        """A checkpoint of this task with its config and trained model (EMA weights when kept); weights that
        are not finite are a :class:`CheckpointError` (of :func:`~cinn.engine.checkpoint.rebuild_model`, which
        every command that opens a model goes through)."""
        state = self.read_state(checkpoint, device)
        require_entries(state, ("conventions",), checkpoint)
        try:
            config = config_from_dict(self.config_class, state["config"])
        except ConfigError as error:
            raise CheckpointError(f"checkpoint {checkpoint} holds a config this task cannot use ({error}); use "
                                  "another checkpoint") from None
        model = rebuild_model(state, checkpoint, device)
        return TrainedRun(config, model, state["conventions"], state, device)

    def read_state(self, checkpoint: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
        """A checkpoint of this task as a dict (files of an earlier readable format upgraded in memory)."""
        state = load_checkpoint(checkpoint, map_location=device)
        require_task(state.get("task"), self.name, checkpoint)
        require_entries(state, ("config",), checkpoint)
        return state

    def train(self, args: argparse.Namespace, overrides: Sequence[str]) -> None:
        for option, (key, _) in self.train_shortcuts.items():
            value = getattr(args, option.lstrip("-").replace("-", "_"))
            if value is not None:
                overrides = [*overrides, f"--{key}={value}"]
        config = resumed_config(self.config_class, args.config, overrides, self.name, resume=args.resume,
                                force=args.force)
        for setting, folder in self.data_folders(config):
            cli.refuse_output_among_inputs(Path(config.run_dir), folder, "run_dir", setting)
        group = init_process_group(config.train.device)
        try:
            with RunDirectory(config, args.resume, args.overwrite, group.is_main) as run_directory:
                self._train_in(run_directory, config, group, args.resume)
        finally:
            close_process_group(group)

    def _train_in(self, run_directory: RunDirectory, config: C, group: ProcessGroup, resume: bool) -> None:
        """Train ``config``'s run in ``run_directory``, created once the data and model are ready."""
        train_set = self.train_data(config)
        check_batch_size(config.train.batch_size, len(train_set))
        eval_set, _ = self.eval_data(config, None)
        model, info = self.build_model(config, data_facts(train_set))
        if resume:
            require_resumable(model, config.run_dir)
        run_dir = run_directory.create()
        objective = self.objective(config, train=False)

        def evaluate(trained: nn.Module) -> float:
            return evaluate_bits_per_dim(trained, eval_set, objective, batch_size=self.eval_batch_size,
                                         device=group.device, limit=config.train.eval_images,
                                         progress=False).mean

        def sample(trained: nn.Module) -> Tensor:
            return self.figure(trained, config, info["conventions"], eval_set, group.device)

        hooks = [run_directory.hook(config)]
        if type(self).figure is not Task.figure:
            hooks.append(Samples(sample, config.train.sample_every))
        trainer = Trainer(model, config.train, run_dir, train_set, self.objective(config, train=True),
                          task=self.name, task_config=config_to_dict(config), model_info=info,
                          evaluate=evaluate if config.train.eval_every else None, hooks=hooks, group=group)
        trainer.fit(resume=resume)
        if group.is_main:
            self.after_training(trainer, config, eval_set)

    def evaluate(self, args: argparse.Namespace) -> None:
        if args.per_image is not None:
            cli.writable_file(args.per_image, "--per-image")
        self.check_eval_arguments(args)
        run = self.open(args.checkpoint, resolve_device(args.device))
        eval_set, where = self.eval_data(run.config, args.data)
        if args.limit is not None and args.limit < len(eval_set):
            where = f"{where}; only the first {args.limit} (--limit)"
        objective = self.objective(run.config, train=False)
        per_image = per_image_bits_per_dim(run.model, eval_set, objective, batch_size=args.batch_size,
                                           seed=args.seed, device=run.device, limit=args.limit)
        print(self.describe_bits_per_dim(BitsPerDim.of(per_image), run, where))
        if args.per_image is not None:
            write_per_image(args.per_image, per_image)
        if args.bits_only:
            return
        if getattr(objective, "class_conditional", False):  # the condition is the image's class
            n_classes = run.conventions["n_classes"]
            batches = prepared_batches(eval_set, objective, batch_size=args.batch_size, seed=args.seed,
                                       device=run.device, limit=args.limit, description="Bayes' rule")
            accuracy = bayes_rule_accuracy(run.model, batches, n_classes)
            print(f"Bayes-rule accuracy, argmax_y log p(x | y) over the {n_classes} classes with equal priors: "
                  f"{accuracy.summary()}")
        self.report(run, eval_set, args, per_image)

    def check(self, args: argparse.Namespace) -> None:
        run = self.open(args.checkpoint, resolve_device(args.device))
        if isinstance(run.model, VariationallyDequantizedFlow):  # its flow is what must invert
            run = dataclasses.replace(run, model=run.model.flow)
        if not isinstance(run.model, Flow):
            raise ConfigError(f"{args.checkpoint} holds a {type(run.model).__name__}, which is not invertible; "
                              "check applies to invertible models")
        eval_set, where = self.eval_data(run.config, args.data)
        print(f"{where}:")
        batches = prepared_batches(eval_set, self.objective(run.config, train=False), batch_size=args.batch_size,
                                   seed=args.seed, device=run.device, limit=args.limit, description="check")
        check_trained(run.model, batches, args.checkpoint)

    def sample(self, args: argparse.Namespace) -> None:
        run = self.open(args.checkpoint, resolve_device(args.device))
        out = Path(args.out or Path(args.checkpoint).parent / "samples")
        single_file = out.suffix == ".png" and len(args.temperatures) == 1
        (cli.writable_file if single_file else cli.writable_folder)(out, "--out")
        for temperature in args.temperatures:
            generator = torch.Generator(run.device).manual_seed(args.seed)
            with torch.no_grad():
                images, nrow = self.sample_images(run.model, run.conventions, args.n, temperature, generator)
            path = out if single_file else out / f"temperature_{temperature:.2f}.png"
            print(f"T={temperature}: {save_grid(images, path, nrow=nrow)}")

    def serve(self, args: argparse.Namespace) -> None:
        with Workspace() as workspace:
            gradio = open_gradio(workspace)
            run = self.open(args.checkpoint, resolve_device(args.device))
            context = PageContext(gradio, workspace, args.checkpoint, self.about(run, args.checkpoint), args.seed)
            web.serve(self.page(run, context), args.host, args.port, f"the {self.name} page of {args.checkpoint}")

    def about(self, run: TrainedRun[C], checkpoint: Path) -> str:
        """One line on what ``checkpoint`` holds: which model, how far trained, on what."""
        shipped = (" (the pretrained model shipped with cinn; docs/COLORIZATION.md describes its training photos)"
                   if checkpoint == self.pretrained else "")
        parameters = sum(parameter.numel() for parameter in run.model.parameters())
        builder = run.state["model_spec"]["builder"]
        return (f"{checkpoint}{shipped}: {builder}, {parameters:,} parameters, step {run.state['step']}, "
                f"trained on {self.training_data(run.config)}")

    def bench(self, args: argparse.Namespace, overrides: Sequence[str]) -> None:
        config = load_config(self.config_class, args.config, overrides)
        device = resolve_device(config.train.device, "train.device")
        facts = data_facts(self.train_data(config)) if args.shape is None else {"image_shape": list(args.shape),
                                                                                 "n_classes": 0}
        model, _ = self.build_model(config, facts)
        train = config.train
        report = benchmark_training(model, tuple(facts["image_shape"]), batch_size=train.batch_size,
                                    steps=args.steps, device=device, precision=train.precision,
                                    compile=train.compile, backprop=train.backprop, sample_batch=args.sample_batch,
                                    retain_memory=train.retain_freed_memory,
                                    optimizer=lambda parameters: build_optimizer(parameters, train))
        print(report.format())
        if args.record is not None:
            report.append_to(args.record, command=f"python -m tasks.{self.name} " + " ".join(sys.argv[1:]))
            print(f"recorded in {args.record}")

    def check_new_file(self, args: argparse.Namespace, command: str) -> None:
        """The ``--out`` of ``command`` (``upgrade``, ``export``) must be a new file: not its ``--checkpoint``, and
        an existing file only with ``--overwrite``."""
        cli.writable_file(args.out, "--out")
        if args.out.resolve() == Path(args.checkpoint).expanduser().resolve():
            raise ConfigError(f"{command} writes a new file; give --out another path than --checkpoint")
        cli.refuse_to_replace(args.out, args.overwrite)

    def upgrade(self, args: argparse.Namespace) -> None:
        self.check_new_file(args, "upgrade")
        state = self.read_state(args.checkpoint)
        rebuild_model(state, args.checkpoint)  # the upgraded file must rebuild its model
        save_checkpoint(state, args.out)
        print(f"{args.out}: {args.checkpoint} in the current checkpoint format (cinn.load reads it)")

    def export(self, args: argparse.Namespace) -> None:
        self.check_new_file(args, "export")
        state = self.read_state(args.checkpoint)
        require_entries(state, EXPORTED_ENTRIES, args.checkpoint)
        weights = {key: value.float() if value.is_floating_point() else value
                   for key, value in trained_weights(state).items()}
        step = state["best"]["step"] if state.get("best") is not None else state["step"]  # of the kept weights
        exported = {**{key: state[key] for key in EXPORTED_ENTRIES}, "step": step, "model": weights, "ema": None}
        rebuild_model(exported, args.checkpoint)  # what is exported must rebuild its model, before it is written
        save_checkpoint(exported, args.out)
        size = args.out.stat().st_size / 2**20
        print(f"{args.out}: the trained weights of {args.checkpoint} (step {step}) and their model spec, "
              f"no optimiser state: {size:.1f} MiB; cinn.load reads it")

    # ------------------------------------------------------------------ command line
    def parser(self) -> argparse.ArgumentParser:
        """The task's command line: the kernel's commands, then the task's own."""
        root = cli.OneLineArgumentParser(prog=f"python -m tasks.{self.name}", description=self.description,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
        commands = root.add_subparsers(dest="command", required=True)
        train = commands.add_parser("train", help="train a model (config overrides: --section.key=value)",
                                    formatter_class=argparse.RawDescriptionHelpFormatter,
                                    epilog="config keys (set in --config YAML or as --section.key=value):\n"
                                           + format_config_help(self.config_class))
        cli.add_train_arguments(train)
        for option, (_, help_text) in self.train_shortcuts.items():
            train.add_argument(option, help=help_text)
        evaluate = commands.add_parser("eval", help="held-out bits/dim with its standard error, and the "
                                                    "task's own measures")
        check = commands.add_parser("check", help="is the trained model still invertible on held-out data?")
        for command, limit in ((evaluate, None), (check, self.check_limit)):
            command.add_argument(self.data_option[0], dest="data", help=self.data_option[1])
            command.add_argument("--batch-size", type=cli.positive_int, default=self.eval_batch_size)
            command.add_argument("--limit", type=cli.positive_int, default=limit,
                                 help="use only the first N held-out images")
        evaluate.add_argument("--bits-only", action="store_true",
                              help="print the bits/dim alone (to compare runs quickly: no Bayes-rule accuracy, no "
                                   "task measures)")
        evaluate.add_argument("--per-image", type=Path, metavar="CSV",
                              help="also write each held-out image's bits/dim to CSV (image,bits_per_dim; in the "
                                   "held-out set's order): paired comparisons of models, the worst images")
        self.add_eval_arguments(evaluate)
        upgrade = commands.add_parser("upgrade", help="rewrite a checkpoint of an earlier cinn in the current "
                                                      "format")
        upgrade.add_argument("--out", type=Path, required=True, help="the upgraded checkpoint to write")
        upgrade.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
        export = commands.add_parser("export", help="write the trained model alone (weights and model spec, no "
                                                    "optimiser state) to ship or share")
        export.add_argument("--out", type=Path, required=True, help="the file to write")
        export.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
        opening = [evaluate, check, upgrade, export]
        if type(self).sample_images is not Task.sample_images:
            sample = commands.add_parser("sample", help="grids of samples at one or more temperatures")
            sample.add_argument("--n", type=cli.int_in_range(1, self.max_sample_count), default=self.sample_count,
                                help=f"{self.sample_count_help}, 1 to {self.max_sample_count}")
            sample.add_argument("--temperatures", type=cli.temperature, nargs="+",
                                default=list(self.sample_temperatures),
                                help=f"one grid per temperature, each from 0 to {cli.MAX_TEMPERATURE:g}")
            sample.add_argument("--out", type=Path, help="output folder or .png file (default: samples/ of the "
                                                         "run)")
            opening.append(sample)
        if type(self).page is not Task.page:
            serve = commands.add_parser("serve", help="a page in the browser to try the trained model (needs the "
                                                      "demo extra: pip install -e \".[demo]\")")
            serve.add_argument("--host", default="127.0.0.1",
                               help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every "
                                    "network it is on)")
            serve.add_argument("--port", type=cli.int_in_range(0, 65535), default=7860,
                               help="port to listen on (0: any free one; the address is printed)")
            opening.append(serve)
        for extra in self.commands():
            command = commands.add_parser(extra.name, help=extra.help)
            extra.add_arguments(command)
            if extra.opens_checkpoint:
                opening.append(command)
        for command in opening:
            if self.pretrained is None or command in (upgrade, export):
                command.add_argument("--checkpoint", type=Path, required=True)
            else:
                command.add_argument("--checkpoint", type=Path, default=self.pretrained,
                                     help="a checkpoint of this task (default: the pretrained model shipped with "
                                          "cinn)")
            command.add_argument("--device", default="auto")
            command.add_argument("--seed", type=cli.int_in_range(0, MAX_SEED), default=0)
        if self.benchmarks:
            bench = commands.add_parser("bench", help="training and sampling img/s, peak memory, GFLOP/s")
            bench.add_argument("--config", type=Path)
            bench.add_argument("--steps", type=cli.positive_int, default=10)
            bench.add_argument("--shape", type=cli.positive_int, nargs=3,
                               help="input shape C H W (default: the dataset's)")
            bench.add_argument("--sample-batch", type=cli.positive_int, default=64)
            bench.add_argument("--record", type=Path, metavar="FILE", help="append the result to FILE (Markdown)")
        return root

    def main(self, argv: Sequence[str] | None = None) -> int:
        """Parse ``argv`` and run its command; config overrides are accepted by ``train`` and ``bench`` only."""
        parser = self.parser()
        args, overrides = parser.parse_known_args(argv)
        with_overrides = {"train": self.train, "bench": self.bench}
        plain = {"eval": self.evaluate, "check": self.check, "sample": self.sample, "serve": self.serve,
                 "upgrade": self.upgrade, "export": self.export,
                 **{extra.name: extra.run for extra in self.commands()}}
        if args.command in with_overrides:
            with_overrides[args.command](args, overrides)
        elif overrides:
            parser.error(f"unrecognised arguments: {' '.join(overrides)}")
        else:
            plain[args.command](args)
        return 0

    def run(self, argv: Sequence[str] | None = None) -> None:
        """``main`` with user errors as one line on stderr (what ``python -m tasks.X`` runs)."""
        cli.run_command(self.main, argv)
