"""Glow's permutation ablation (Kingma & Dhariwal 2018, Figure 3): test bits/dim against training steps for three
ways of mixing channels between couplings — reversing their order (RealNVP), a fixed random shuffle and the
learned invertible 1x1 convolution (LU-decomposed) — each with additive and with affine coupling. The paper
found 1x1 conv < shuffle < reverse in NLL, and affine coupling below additive.

    python benchmarks/glow_permutations.py --jobs 2
    python benchmarks/glow_permutations.py --setting cifar10 --data-root data --device cuda --jobs 4
    python benchmarks/glow_permutations.py --setting tiny --test-images 100   # the plumbing, in a minute

Every variant trains the setting's shipped config with only ``model.permutation`` and ``model.coupling``
changed: ``fashion-mnist`` (the default), configs/glow/fashion_mnist.yaml (K=16, L=2, width 64, Adam 2e-3, batch
32; its floor of 0.5 on the affine scale does not apply to additive coupling); ``cifar10``,
configs/glow/cifar10.yaml (the paper's K=32, L=3, width 512, Adamax 1e-3, EMA weights; for a GPU); ``tiny``,
configs/glow/tiny.yaml. Every run trains the same number of steps (``--steps``, with no time budget, so that
the results do not depend on the machine's speed), once per seed of ``--seeds`` (the seed also draws the
shuffles), as ``python -m tasks.glow train`` in a process of its own with OMP_NUM_THREADS=1, ``--jobs`` at a time
(:mod:`cinn.experiment`).
A run is trained to the first step of ``--eval-at``, evaluated, then resumed (``--resume`` with a larger
``train.steps``, a change the task kernel allows) to the next step, and so on. That ends with the same weights
as one run trained straight to the budget: every step's randomness is a function of (seed, step), and the
learning rate is constant after warm-up (these configs set no ``lr_decay``; a decay's schedule stretches with
``train.steps``, so the script refuses a config that sets one). tests/test_glow_permutations.py checks it bit for
bit. Each evaluation is what the task's ``eval`` computes (:func:`~cinn.engine.evaluate_bits_per_dim` with the
task's objective: uniform dequantisation, noise seed 0, bits/dim of :mod:`cinn.likelihood`) on the first
``--test-images`` images of the test split (10000: all of it), with the weights ``eval`` uses (the EMA's where
the config keeps one), in this process with one thread per run.

Written to ``--out``: ``nll_vs_steps.png`` (one curve per variant: the colour is the permutation, solid affine,
dashed additive, the band the range over seeds), ``results.md`` (the last step's bits/dim per variant, lowest
first) and ``results.json`` (every number, each run's evaluations included); the runs are in ``runs/``, their
training logs in ``logs/``. Evaluations already in ``--out`` are not repeated and unfinished runs continue from
their last checkpoint, so the same command continues an interrupted experiment (and may add seeds, variants,
a larger ``--steps`` and evaluation steps beyond those done).

The default budget, 1800 steps evaluated at 360, 720, ..., 1800: 100 steps of the Fashion-MNIST config with
OMP_NUM_THREADS=1 took 0.19 s each on a 2-core AMD EPYC whose cores were both busy with other trainings (so the
figure is pessimistic); each resume costs about 7 CPU-seconds (start-up, data, checkpoint) and each evaluation of
2000 test images about 4.5 s. A run is then about 6.8 CPU-minutes, and the 12 runs (6 variants, seeds 0 and 1)
about 80 CPU-minutes: some 40 minutes with ``--jobs 2`` on 2 cores. The cifar10 default (20,000 steps, four
times its warm-up) was not timed here; choose ``--steps`` for the GPU at hand.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import torch
from matplotlib.figure import Figure

from cinn import cli
from cinn.config import load_config
from cinn.engine import evaluate_bits_per_dim, resolve_device
from cinn.experiment import (
    Evaluate,
    Experiment,
    Run,
    check_step,
    evenly_spaced,
    int_list,
    refuse_stretching_schedule,
    train_and_evaluate,
    variant_list,
)
from cinn.machine import cpu_description
from cinn.models.glow import GlowPermutation
from tasks.glow import GlowConfig, GlowTask

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Setting:
    """What every variant of a setting trains (a task config), for how many steps, and where, by default."""

    config: Path
    steps: int
    out: Path


SETTINGS = {
    "fashion-mnist": Setting(ROOT / "configs/glow/fashion_mnist.yaml", 1800, Path("runs/glow_permutations")),
    "cifar10": Setting(ROOT / "configs/glow/cifar10.yaml", 20_000, Path("runs/glow_permutations_cifar10")),
    "tiny": Setting(ROOT / "configs/glow/tiny.yaml", 2, Path("runs/glow_permutations_tiny")),
}
PERMUTATIONS: tuple[str, ...] = get_args(GlowPermutation)
COUPLING_OVERRIDES = {"affine": "--model.coupling.map=sigmoid_affine",
                      "additive": "--model.coupling={map: additive}"}
"""Each variant's coupling as a config override: the affine one keeps the setting's floor on its scale."""
COUPLINGS: tuple[str, ...] = tuple(COUPLING_OVERRIDES)
PAPER_ORDER = ("lu", "shuffle", "reverse")
"""The permutations from the lowest NLL to the highest in the paper's Figure 3."""
ALLOWED_VARIANTS = [f"{permutation}-{coupling}" for permutation in PERMUTATIONS for coupling in COUPLINGS]
DEFAULT_VARIANTS = ",".join(f"{permutation}-{coupling}" for permutation in reversed(PAPER_ORDER)
                            for coupling in ("additive", "affine"))
LABELS = {"lu": "1x1 conv", "plain": "1x1 conv (plain)", "reverse": "reverse", "shuffle": "shuffle"}
COLOURS = {"reverse": "tab:red", "shuffle": "tab:green", "lu": "tab:blue", "plain": "tab:purple"}
LINE_STYLES = {"affine": "-", "additive": "--"}
EVALUATIONS = 5
"""Evaluation steps spread evenly up to the budget when ``--eval-at`` is not given."""


@dataclass(frozen=True)
class Variant:
    """A way to mix channels and a coupling, trained with one seed."""

    permutation: str
    coupling: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.permutation}-{self.coupling}"

    def run(self, eval_at: Sequence[int]) -> Run:
        overrides = (f"--model.permutation={self.permutation}", COUPLING_OVERRIDES[self.coupling],
                     f"--train.seed={self.seed}")
        return Run(f"{self.name}-seed{self.seed}", overrides, tuple(eval_at))

    def header(self, setting: str, test_images: int) -> dict[str, Any]:
        return {"variant": self.name, "permutation": self.permutation, "coupling": self.coupling,
                "seed": self.seed, "setting": setting, "test_images": test_images}


def parser() -> argparse.ArgumentParser:
    parser = cli.OneLineArgumentParser(prog="python benchmarks/glow_permutations.py", description=__doc__,
                                       formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", choices=SETTINGS, default="fashion-mnist",
                        help="the task config every variant trains (default fashion-mnist)")
    parser.add_argument("--variants", type=variant_list(ALLOWED_VARIANTS), default=DEFAULT_VARIANTS,
                        help=f"comma-separated PERMUTATION-COUPLING (default {DEFAULT_VARIANTS})")
    parser.add_argument("--seeds", type=int_list(0), default="0,1", help="comma-separated (default 0,1)")
    parser.add_argument("--steps", type=cli.positive_int,
                        help="training steps of every run (default: the setting's, 1800 for fashion-mnist)")
    parser.add_argument("--eval-at", type=int_list(1),
                        help=f"comma-separated steps to evaluate at, up to --steps, which is always one "
                             f"(default: {EVALUATIONS} spread evenly)")
    parser.add_argument("--test-images", type=cli.positive_int, default=2000,
                        help="evaluate on the first N test images (default 2000; 10000: the whole split)")
    parser.add_argument("--jobs", type=cli.positive_int,
                        help="runs trained at a time, one thread each (default: the CPU cores, 1 on a GPU)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    parser.add_argument("--data-root", help="where the dataset lives (default: the config's data.root)")
    parser.add_argument("--out", type=Path, help="output folder (default runs/glow_permutations, "
                                                 "runs/glow_permutations_<setting> for the others)")
    return parser


def evaluator(test_images: int, device: torch.device) -> Evaluate:
    """The task's ``eval`` of a run's checkpoint on the first ``test_images`` test images: mean bits/dim, its
    standard error, the count, the median and the worst image."""
    task = GlowTask()

    def evaluate(run: Run, checkpoint: Path, step: int) -> dict[str, Any]:
        trained = task.open(checkpoint, device)
        check_step(checkpoint, trained.state["step"], step)
        test_set, _ = task.eval_data(trained.config, None)
        objective = task.objective(trained.config, train=False)
        return evaluate_bits_per_dim(trained.model, test_set, objective, batch_size=task.eval_batch_size,
                                     device=device, limit=test_images, progress=False)._asdict()

    return evaluate


def summarize(records: list[dict[str, Any]], variants: list[str], eval_at: Sequence[int]) -> list[dict[str, Any]]:
    """Per variant, lowest last-step mean first: its test bits/dim at every step of ``eval_at``, the mean, the
    range over seeds and each seed's."""
    summary = []
    for variant in variants:
        runs = [record for record in records if record["variant"] == variant]
        curve = []
        for step in eval_at:
            by_seed = {record["seed"]: next(evaluation["mean"] for evaluation in record["evaluations"]
                                            if evaluation["step"] == step) for record in runs}
            values = list(by_seed.values())
            curve.append({"step": step, "mean": sum(values) / len(values), "min": min(values), "max": max(values),
                          "by_seed": by_seed})
        summary.append({"variant": variant, "permutation": runs[0]["permutation"], "coupling": runs[0]["coupling"],
                        "test_images": runs[0]["evaluations"][-1]["count"], "curve": curve, "final": curve[-1]})
    return sorted(summary, key=lambda entry: (not math.isfinite(entry["final"]["mean"]), entry["final"]["mean"]))


def ordering(what: str, expected: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Whether the final means of ``expected`` (``(label, final)``, listed from the lowest the paper found to the
    highest) are in the paper's order, and whether their ranges over seeds are apart too."""
    pairs = list(itertools.pairwise(expected))
    agrees = all(lower["mean"] < higher["mean"] for (_, lower), (_, higher) in pairs)
    apart = all(lower["max"] < higher["min"] for (_, lower), (_, higher) in pairs)
    measured = " ".join(f"{label} {final['mean']:.4f}" if index == 0 else
                        f"{'<' if expected[index - 1][1]['mean'] < final['mean'] else '>='} {label} "
                        f"{final['mean']:.4f}" for index, (label, final) in enumerate(expected))
    verdict = (("as in the paper" + (", the ranges over seeds apart" if apart else ", but the ranges over seeds "
                                     "overlap")) if agrees
               else f"not as in the paper ({' < '.join(label for label, _ in expected)})")
    return {"comparison": what, "order": [label for label, _ in expected], "agrees": agrees, "ranges_apart": apart,
            "text": f"{what}: {measured}: {verdict}"}


def paper_orderings(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The paper's orderings that the measured variants can check: per coupling 1x1 conv < shuffle < reverse,
    per permutation affine < additive."""
    final = {entry["variant"]: entry["final"] for entry in summary}
    groups = [(f"{coupling} coupling", [(LABELS[permutation], f"{permutation}-{coupling}")
                                        for permutation in PAPER_ORDER]) for coupling in COUPLINGS]
    groups += [(LABELS[permutation], [(coupling, f"{permutation}-{coupling}")
                                      for coupling in ("affine", "additive")]) for permutation in PERMUTATIONS]
    return [ordering(what, [(label, final[variant]) for label, variant in members])
            for what, members in groups if all(variant in final for _, variant in members)]


def plot(summary: list[dict[str, Any]], path: Path, title: str) -> None:
    figure = Figure(figsize=(7.5, 4.8))
    axis = figure.subplots()
    for entry in sorted(summary, key=lambda entry: (PERMUTATIONS.index(entry["permutation"]), entry["coupling"])):
        colour, steps = COLOURS[entry["permutation"]], [point["step"] for point in entry["curve"]]
        axis.plot(steps, [point["mean"] for point in entry["curve"]], color=colour, marker="o", markersize=3,
                  linestyle=LINE_STYLES[entry["coupling"]], label=f"{LABELS[entry['permutation']]}, "
                                                                  f"{entry['coupling']}")
        axis.fill_between(steps, [point["min"] for point in entry["curve"]],
                          [point["max"] for point in entry["curve"]], color=colour, alpha=0.15, linewidth=0)
    axis.set_xlabel("training steps")
    axis.set_ylabel("test bits/dim")
    axis.set_title(title, fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=130)


def table(summary: list[dict[str, Any]], steps: int) -> list[str]:
    """The Markdown table of the last step's bits/dim, lowest first."""
    lines = [f"| variant | test bits/dim at step {steps}, mean ± half the range over seeds | range | per seed |",
             "|---|---|---|---|"]
    for entry in summary:
        final = entry["final"]
        per_seed = ", ".join(f"{seed}: {value:.4f}" for seed, value in final["by_seed"].items())
        lines.append(f"| {LABELS[entry['permutation']]}, {entry['coupling']} | {final['mean']:.4f} ± "
                     f"{(final['max'] - final['min']) / 2:.4f} | {final['min']:.4f}–{final['max']:.4f} | "
                     f"{per_seed} |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parser()
    args = arguments.parse_args(argv)
    setting = SETTINGS[args.setting]
    steps = args.steps or setting.steps
    if args.eval_at and args.eval_at[-1] > steps:
        arguments.error(f"argument --eval-at: {args.eval_at[-1]} is beyond the budget, --steps {steps}")
    config = load_config(GlowConfig, setting.config,
                         [] if args.data_root is None else [f"--data.root={args.data_root}"])
    refuse_stretching_schedule(setting.config, config.train.lr_decay)
    eval_at = sorted({*(args.eval_at or evenly_spaced(steps, EVALUATIONS)), steps})
    experiment = Experiment("glow", setting.config, args.out or setting.out, args.device, args.data_root)
    device = resolve_device(args.device)
    torch.set_num_threads(1)  # the evaluations, one run per thread
    variants = {Variant(*name.split("-"), seed).run(eval_at): Variant(*name.split("-"), seed)
                for name in args.variants for seed in args.seeds}
    jobs = args.jobs or ((os.cpu_count() or 1) if device.type == "cpu" else 1)
    print(f"runs: {len(variants)} ({','.join(args.variants)} x seeds {','.join(map(str, args.seeds))}) of "
          f"{setting.config.name}, {steps} steps each, test bits/dim of {args.test_images} test images at steps "
          f"{','.join(map(str, eval_at))}, in {experiment.out}", flush=True)
    records = train_and_evaluate(experiment, list(variants), evaluator(args.test_images, device),
                                 lambda run: variants[run].header(args.setting, args.test_images),
                                 {"setting": "--setting", "test_images": "--test-images"}, jobs,
                                 lambda run, evaluation: f"{evaluation['mean']:.4f} test bits/dim")
    command = shlex.join(["python", "benchmarks/glow_permutations.py", *(sys.argv[1:] if argv is None else argv)])
    print("\n".join(write_results(experiment, args.setting, config, steps, eval_at, list(records.values()),
                                   args.variants, args.seeds, command, device)))
    return 0


def write_results(experiment: Experiment, setting: str, config: GlowConfig, steps: int, eval_at: Sequence[int],
                  records: list[dict[str, Any]], variants: list[str], seeds: list[int], command: str,
                  device: torch.device) -> list[str]:
    """Write the figure, ``results.md`` and ``results.json`` of the finished ``records`` into ``--out``;
    return the lines to print."""
    summary = summarize(records, variants, eval_at)
    orderings = paper_orderings(summary)
    verdicts = [entry["text"] for entry in orderings] or ["these variants check none of the paper's orderings"]
    machine = cpu_description() + (f"; {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "")
    count = summary[0]["test_images"]
    title = (f"Glow on {config.data.dataset}, {experiment.config.name}: test bits/dim ({count} test images), "
             f"batch {config.train.batch_size}; band: range over seeds {','.join(map(str, seeds))}")
    out = experiment.out
    out.mkdir(parents=True, exist_ok=True)
    plot(summary, out / "nll_vs_steps.png", title)
    results = [*table(summary, steps), "", *(f"- {verdict}" for verdict in verdicts)]
    markdown = [f"# {title}", "", f"    {command}", "", f"Machine: {machine}, torch {torch.__version__}.", "",
                *results, "", "![test bits/dim against training steps](nll_vs_steps.png)"]
    (out / "results.md").write_text("\n".join(markdown) + "\n")
    (out / "results.json").write_text(json.dumps({
        "command": command, "machine": machine, "torch": torch.__version__, "setting": setting,
        "config": str(experiment.config), "dataset": config.data.dataset, "batch_size": config.train.batch_size,
        "steps": steps, "eval_at": list(eval_at), "test_images": count, "seeds": seeds,
        "variants": variants, "summary": summary, "paper_orderings": orderings, "runs": records}, indent=1))
    return [title, *results, f"machine: {machine}", command,
            f"written: {out / 'results.md'}, {out / 'results.json'}, {out / 'nll_vs_steps.png'}"]

if __name__ == "__main__":
    cli.run_command(main)
