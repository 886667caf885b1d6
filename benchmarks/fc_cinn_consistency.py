"""The cINN paper's fully connected MNIST model: does it learn its labels? Class consistency and test bits/dim
against the number of training images, for recipes that differ in one thing at a time.

    python benchmarks/fc_cinn_consistency.py --jobs 2
    python benchmarks/fc_cinn_consistency.py --dataset mnist --variants paper,fc.yaml --jobs 2
    python benchmarks/fc_cinn_consistency.py --dataset tiny --data-root DIR --images 64 --test-images 8  # plumbing

Every variant trains configs/mnist/fc.yaml (the paper's model: 24 × [hard random permutation → conditional
affine coupling with one hidden layer of 512], soft clamp 0.5) with the overrides of its recipe (``VARIANTS``),
each adding one change to the one before: ``paper`` is the optimiser the config first had (Adam 1e-4, batch
512), ``fast`` Adam 5e-4 with batch 64 (the official code's learning rate, more updates per image),
``class-prior`` adds a learned per-class Gaussian prior (``model.class_affine=latent``: per class, a mean and a
scale of every latent dimension), ``heavy-tails`` heavy tails (``model.heavy_tails=true``: ``v = asinh(u)``
after the couplings, before the class prior), and ``fc.yaml`` asinh subnet inputs
(``model.subnet_inputs=asinh``: every coupling's subnet sees ``asinh`` of its input half), which is the shipped
config. Runs are compared at equal numbers of training images (``--images``; a run's step is images ÷ its batch
size), once per seed of ``--seeds``; each is trained with no time budget, so the results do not depend on the
machine's speed, and resumed from one evaluation to the next (:mod:`cinn.experiment`; the configs' learning
rate is constant after warm-up).

Each evaluation is the task's ``eval`` on the first ``--test-images`` test images: test bits/dim (mean, median
and worst image; uniform dequantisation, noise seed 0) and class consistency, the fraction of 100 samples per
label at temperature 0.8 (the config's ``eval``) that a classifier trained on the training split (3 epochs,
cached in ``--out``) assigns to their label.

Written to ``--out``: ``consistency_vs_images.png`` (class consistency and test bits/dim against training
images, one curve per variant, the band the range over seeds), ``results.md`` (the last evaluation of each
variant) and ``results.json`` (every number). The same command continues an interrupted experiment.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from cinn import cli
from cinn.config import ConfigError, load_config
from cinn.engine import evaluate_bits_per_dim, resolve_device
from cinn.experiment import (
    Evaluate,
    Experiment,
    Run,
    check_step,
    int_list,
    refuse_stretching_schedule,
    train_and_evaluate,
    variant_list,
)
from cinn.machine import cpu_description
from tasks.mnist import ClassConditionalTask, MnistConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/mnist/fc.yaml"
DATASETS = {"fashion-mnist": "fashion-mnist", "mnist": "mnist", "tiny": "mnist"}
"""``--dataset`` → the config's ``data.dataset``; ``tiny`` is MNIST's layout with a tiny model (for tests)."""
TINY_MODEL = ("--model.n_blocks=2", "--model.hidden_features=8", "--train.warmup_steps=1",
              "--eval.samples_per_class=2", "--eval.classifier_epochs=1")
TINY_BATCH = 8


@dataclass(frozen=True)
class Recipe:
    label: str
    overrides: tuple[str, ...]
    batch_size: int


VARIANTS = {
    "paper": Recipe("Adam 1e-4, batch 512 (the paper's model as first shipped)",
                    ("--train.lr=0.0001", "--model.class_affine=none", "--model.heavy_tails=false",
                     "--model.subnet_inputs=raw"), 512),
    "fast": Recipe("Adam 5e-4, batch 64",
                   ("--train.lr=0.0005", "--model.class_affine=none", "--model.heavy_tails=false",
                    "--model.subnet_inputs=raw"), 64),
    "class-prior": Recipe("Adam 5e-4, batch 64, learned class prior",
                          ("--train.lr=0.0005", "--model.class_affine=latent", "--model.heavy_tails=false",
                           "--model.subnet_inputs=raw"), 64),
    "heavy-tails": Recipe("Adam 5e-4, batch 64, learned class prior, heavy tails",
                          ("--train.lr=0.0005", "--model.class_affine=latent", "--model.heavy_tails=true",
                           "--model.subnet_inputs=raw"), 64),
    "fc.yaml": Recipe("Adam 5e-4, batch 64, learned class prior, heavy tails, asinh subnet inputs (fc.yaml)",
                      ("--train.lr=0.0005", "--model.class_affine=latent", "--model.heavy_tails=true",
                       "--model.subnet_inputs=asinh"), 64),
}
"""Each adds one change to the one before; every override is given, so a recipe stays what it says when fc.yaml
changes."""
COLOURS = {"paper": "tab:red", "fast": "tab:orange", "class-prior": "tab:purple", "heavy-tails": "tab:green",
           "fc.yaml": "tab:blue"}
DEFAULT_IMAGES = "96000,192000,384000,768000"


def parser() -> argparse.ArgumentParser:
    parser = cli.OneLineArgumentParser(prog="python benchmarks/fc_cinn_consistency.py", description=__doc__,
                                       formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=DATASETS, default="fashion-mnist", help="default fashion-mnist")
    parser.add_argument("--variants", type=variant_list(list(VARIANTS)), default=",".join(VARIANTS),
                        help=f"comma-separated (default {','.join(VARIANTS)})")
    parser.add_argument("--seeds", type=int_list(0), default="0", help="comma-separated (default 0)")
    parser.add_argument("--images", type=int_list(1), default=DEFAULT_IMAGES,
                        help=f"comma-separated numbers of training images to evaluate at, the last the budget "
                             f"(default {DEFAULT_IMAGES})")
    parser.add_argument("--test-images", type=cli.positive_int, default=2000,
                        help="evaluate on the first N test images (default 2000; 10000: the whole split)")
    parser.add_argument("--jobs", type=cli.positive_int, help="runs trained at a time (default: the CPU cores)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    parser.add_argument("--data-root", help="where the dataset lives (default: the config's data.root)")
    parser.add_argument("--out", type=Path, help="output folder (default runs/fc_cinn_consistency_<dataset>)")
    return parser


def make_run(variant: str, seed: int, images: Sequence[int], dataset: str) -> Run:
    """``variant`` with ``seed`` evaluated at ``images`` (each rounded down to a whole step, at least one)."""
    recipe, tiny = VARIANTS[variant], dataset == "tiny"
    batch_size = TINY_BATCH if tiny else recipe.batch_size
    steps = sorted({max(1, count // batch_size) for count in images})
    return Run(f"{variant}-seed{seed}", (f"--data.dataset={DATASETS[dataset]}", *recipe.overrides,
                                         f"--train.batch_size={batch_size}", f"--train.seed={seed}",
                                         *(TINY_MODEL if tiny else ())), tuple(steps))


def evaluator(out: Path, data_root: str | None, test_images: int, device: torch.device) -> Evaluate:
    """The task's ``eval`` of a run's checkpoint: bits/dim on the first ``test_images`` test images and class
    consistency judged by the classifier cached in ``out`` (one per dataset, trained on first use)."""
    task, training_classifier = ClassConditionalTask(), threading.Lock()

    def evaluate(run: Run, checkpoint: Path, step: int) -> dict[str, Any]:
        trained = task.open(checkpoint, device)
        check_step(checkpoint, trained.state["step"], step)
        test_set, _ = task.eval_data(trained.config, data_root)
        objective = task.objective(trained.config, train=False)
        bits = evaluate_bits_per_dim(trained.model, test_set, objective, batch_size=task.eval_batch_size,
                                     device=device, limit=test_images, progress=False)
        cache = out / f"classifier_{trained.config.data.dataset}.pt"
        with training_classifier:  # the first evaluation trains it, the others (other threads) wait and read it
            classifier, accuracy = task.judging_classifier(trained, test_set, cache, data_root, seed=0)
        consistency, per_class = task.consistency(trained, classifier, seed=0)
        return {"images": step * trained.config.train.batch_size, **bits._asdict(), "consistency": consistency,
                "per_class": per_class.tolist(), "classifier_accuracy": accuracy}

    return evaluate


def summarize(records: list[dict[str, Any]], variants: list[str]) -> list[dict[str, Any]]:
    """Per variant: at every evaluation its images, the mean and range over seeds of consistency and test
    bits/dim, and the worst image's bits/dim over the median's (the worst seed)."""
    summary = []
    for variant in variants:
        runs = [record for record in records if record["variant"] == variant]
        curve = []
        for index, evaluation in enumerate(runs[0]["evaluations"]):
            at = [run["evaluations"][index] for run in runs]
            point = {"images": evaluation["images"], "step": evaluation["step"]}
            for key in ("consistency", "mean", "median"):
                values = [entry[key] for entry in at]
                point[key] = {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}
            point["worst_over_median"] = max(entry["worst"] / entry["median"] for entry in at)
            curve.append(point)
        summary.append({"variant": variant, "label": VARIANTS[variant].label, "curve": curve, "final": curve[-1]})
    return summary


def plot(summary: list[dict[str, Any]], path: Path, title: str) -> None:
    figure = Figure(figsize=(10, 4.2 + 0.25 * len(summary)))
    axes = figure.subplots(1, 2)
    for entry in summary:
        images = [point["images"] / 1000 for point in entry["curve"]]
        colour = COLOURS[entry["variant"]]
        for axis, key, scale in ((axes[0], "consistency", 100), (axes[1], "mean", 1)):
            axis.plot(images, [point[key]["mean"] * scale for point in entry["curve"]], color=colour, marker="o",
                      markersize=3, label=f"{entry['variant']}: {entry['label']}")
            axis.fill_between(images, [point[key]["min"] * scale for point in entry["curve"]],
                              [point[key]["max"] * scale for point in entry["curve"]], color=colour, alpha=0.15,
                              linewidth=0)
    axes[0].set_ylabel("class consistency at T=0.8 (%)")
    axes[1].set_ylabel("test bits/dim")
    for axis in axes:
        axis.set_xlabel("training images (thousands)")
        axis.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=1, fontsize=7, frameon=False)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout(rect=(0, 0.06 * len(labels), 1, 1))  # room below the axes for the legend's rows
    figure.savefig(path, dpi=130)


def table(summary: list[dict[str, Any]]) -> list[str]:
    lines = ["| variant | recipe | training images (steps) | class consistency | test bits/dim (median) | "
             "worst image / median |", "|---|---|---|---|---|---|"]
    for entry in summary:
        final = entry["final"]
        lines.append(f"| {entry['variant']} | {entry['label']} | {final['images']:,} ({final['step']:,}) | "
                     f"{final['consistency']['mean']:.1%} | {final['mean']['mean']:.3f} "
                     f"({final['median']['mean']:.3f}) | {final['worst_over_median']:.2f} |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    overrides = [] if args.data_root is None else [f"--data.root={args.data_root}"]
    config = load_config(MnistConfig, CONFIG, overrides)
    refuse_stretching_schedule(CONFIG, config.train.lr_decay)
    images = args.images
    out = args.out or Path(f"runs/fc_cinn_consistency_{args.dataset}")
    experiment = Experiment("mnist", CONFIG, out, args.device, args.data_root)
    device = resolve_device(args.device)
    torch.set_num_threads(1)  # the evaluations, one run per thread
    variants = {make_run(variant, seed, images, args.dataset): (variant, seed)
                for variant in args.variants for seed in args.seeds}
    for run in variants:
        if len(run.eval_at) < len(images):
            raise ConfigError(f"--images {','.join(map(str, images))}: two of them are the same step of "
                              f"{run.name}; give numbers further apart")
    jobs = args.jobs or (os.cpu_count() or 1)
    print(f"runs: {len(variants)} ({','.join(args.variants)} x seeds {','.join(map(str, args.seeds))}) of "
          f"{CONFIG.name} on {args.dataset}, evaluated at {','.join(map(str, images))} training images on "
          f"{args.test_images} test images, in {out}", flush=True)

    def header(run: Run) -> dict[str, Any]:
        variant, seed = variants[run]
        return {"variant": variant, "seed": seed, "dataset": args.dataset, "test_images": args.test_images}

    def report(run: Run, evaluation: dict[str, Any]) -> str:
        return (f"{evaluation['images']:,} images, class consistency {evaluation['consistency']:.1%}, "
                f"{evaluation['mean']:.4f} test bits/dim (median {evaluation['median']:.4f}, worst "
                f"{evaluation['worst']:.4f})")

    evaluate = evaluator(out, args.data_root, args.test_images, device)
    records = train_and_evaluate(experiment, list(variants), evaluate, header,
                                 {"dataset": "--dataset", "test_images": "--test-images"}, jobs, report)
    arguments = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "benchmarks/fc_cinn_consistency.py", *arguments])
    print("\n".join(write_results(out, args.dataset, list(records.values()), args.variants, args.seeds, command)))
    return 0


def write_results(out: Path, dataset: str, records: list[dict[str, Any]], variants: list[str], seeds: list[int],
                  command: str) -> list[str]:
    summary = summarize(records, variants)
    machine = cpu_description()
    count = records[0]["evaluations"][-1]["count"]
    spread = f"seed {seeds[0]}" if len(seeds) == 1 else f"band: range over seeds {','.join(map(str, seeds))}"
    title = (f"FC cINN (configs/mnist/fc.yaml) on {dataset}: class consistency and test bits/dim ({count} test "
             f"images); {spread}")
    out.mkdir(parents=True, exist_ok=True)
    plot(summary, out / "consistency_vs_images.png", title)
    markdown = [f"# {title}", "", f"    {command}", "", f"Machine: {machine}, torch {torch.__version__}.", "",
                *table(summary), "", "![class consistency and test bits/dim](consistency_vs_images.png)"]
    (out / "results.md").write_text("\n".join(markdown) + "\n")
    (out / "results.json").write_text(json.dumps({
        "command": command, "machine": machine, "torch": torch.__version__, "dataset": dataset, "seeds": seeds,
        "variants": variants, "summary": summary, "runs": records}, indent=1))
    return [title, *table(summary), f"machine: {machine}", command,
            f"written: {out / 'results.md'}, {out / 'results.json'}, {out / 'consistency_vs_images.png'}"]


if __name__ == "__main__":
    cli.run_command(main)
