"""Class-conditional TarFlow: apple/ml-tarflow's own notebook model (``train_local.ipynb``) against cinn's models,
trained for the same minutes on the same machine and judged by the same code.

The peer is imported from a checkout you provide (``--peer``); nothing of it is part of cinn.

    git clone https://github.com/apple/ml-tarflow scratch/ml-tarflow
    OMP_NUM_THREADS=1 python benchmarks/tarflow_vs_peer.py train-peer --peer scratch/ml-tarflow --minutes 20 \\
        --out runs/peer_tarflow
    OMP_NUM_THREADS=1 python -m tasks.mnist train --config configs/mnist/tarflow.yaml --train.max_minutes=20
    OMP_NUM_THREADS=1 python benchmarks/tarflow_vs_peer.py report --peer scratch/ml-tarflow \\
        --peer-run runs/peer_tarflow --cinn runs/mnist_tarflow/checkpoint.pt --figures runs/tarflow_figures

``train-peer`` trains the notebook's model with the notebook's settings (patch 4, width 128, 4 blocks of 4 layers,
AdamW lr 2e-3 with betas (0.9, 0.95) and weight decay 1e-4, batch 256, images in [-1, 1] plus Gaussian noise of
std 0.1, a linear warm-up over the first epoch) on the dataset's training split, for ``--minutes`` of wall-clock
time. The notebook's cosine decay spans its whole training (100 epochs); here it spans the time budget (the
fraction of ``--minutes`` elapsed after the warm-up), as cinn's ``train.lr_decay_over: time`` does.

``--channels``, ``--layers-per-block``, ``--batch-size``, ``--lr`` and ``--warmup-steps`` train the peer's model at
another size and pace (the rest of its recipe, its noise included, unchanged): at cinn's size, the comparison is
of the implementations alone.

``report`` judges every model alike on the test split, under cinn's conventions (:mod:`cinn.likelihood`): images
quantised to 8 bits, uniform dequantisation ``x = (k + u)/256``, bits/dim ``(NLL + M·log 256)/(M·ln 2)`` of the
density on ``[0, 1]^M``. The peer's density is on ``[-1, 1]^M`` (``y = 2x − 1``), so ``log p(x) = log p(y) +
M·log 2``: the same conversion as the peer's own ``evaluate_bpd.py``. It prints test bits/dim, the Bayes-rule
accuracy ``argmax_y log p(x | y)`` (:mod:`cinn.bayes`), the class consistency of 100 samples per class at
``--temperature`` (judged by one classifier, cinn's, cached at ``--classifier``), training images per second and
the seconds to draw 100 samples; ``--figures`` writes a grid per model, a row per class.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

import cinn
from cinn.bayes import bayes_rule_accuracy
from cinn.classifier import cached_classifier, class_consistency
from cinn.data import collate_images, load_labelled_dataset
from cinn.engine import DequantizedImages, evaluate_bits_per_dim, prepared_batches
from cinn.machine import cpu_description
from cinn.viz import save_grid

NOTEBOOK = {"patch_size": 4, "channels": 128, "blocks": 4, "layers_per_block": 4, "noise_std": 0.1,
            "batch_size": 256, "lr": 2e-3, "min_lr": 1e-6, "weight_decay": 1e-4, "betas": (0.9, 0.95)}
"""The settings of apple/ml-tarflow's ``train_local.ipynb``."""


def peer_model(peer: Path, image_shape: tuple[int, ...], n_classes: int, settings: dict) -> nn.Module:
    """The peer's ``transformer_flow.Model`` of the size ``settings`` give (``NOTEBOOK``'s keys)."""
    sys.path.insert(0, str(peer))
    from transformer_flow import Model  # the peer's module

    channels, size, _ = image_shape
    return Model(in_channels=channels, img_size=size, patch_size=settings["patch_size"],
                 channels=settings["channels"], num_blocks=settings["blocks"],
                 layers_per_block=settings["layers_per_block"], num_classes=n_classes)


class PeerDensity(nn.Module):
    """The peer's model as a cinn density on ``[0, 1]``:
    ``log p(x | y) = log N(z; 0, I) + M·mean_logdet + M·log 2``, with ``z`` and the per-dimension mean log-det that
    the peer computes for ``2x − 1``; ``sample`` maps back to ``[0, 1]``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def log_prob(self, x: Tensor, c: Tensor) -> Tensor:
        z, _, mean_log_det = self.model(2 * x - 1, c)
        dims = z[0].numel()
        return (-0.5 * z.pow(2).flatten(1).sum(1) - 0.5 * dims * math.log(2 * math.pi) + dims * mean_log_det
                + dims * math.log(2))

    def sample(self, n: int, c: Tensor, temperature: float, generator: torch.Generator) -> Tensor:
        tokens = self.model.num_patches, self.model.blocks[0].proj_in.in_features
        noise = temperature * torch.randn(n, *tokens, generator=generator, device=c.device)
        return ((self.model.reverse(noise, c) + 1) / 2).clamp(0, 1)


def learning_rate(settings: dict, step: int, warmup_steps: int, time_fraction: float,
                  warmup_fraction: float) -> float:
    """The notebook's schedule with its cosine over the time budget: linear from ``min_lr`` to ``lr`` over
    ``warmup_steps``, then a cosine to ``min_lr`` over the rest of the time."""
    low, high = settings["min_lr"], settings["lr"]
    if step <= warmup_steps:
        return low + step / warmup_steps * (high - low)
    t = min(1.0, (time_fraction - warmup_fraction) / max(1e-9, 1 - warmup_fraction))
    return low + 0.5 * (1 + math.cos(math.pi * t)) * (high - low)


def train_peer(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    train_set = load_labelled_dataset(args.dataset, args.data_root, train=True)
    images, labels = collate_images([train_set[i] for i in range(len(train_set))])
    n_classes = int(labels.max()) + 1
    settings = {**NOTEBOOK, **{key: value for key, value in (("channels", args.channels),
                                                             ("layers_per_block", args.layers_per_block),
                                                             ("batch_size", args.batch_size), ("lr", args.lr))
                               if value is not None}}
    model = peer_model(args.peer, tuple(images.shape[1:]), n_classes, settings)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["min_lr"], betas=settings["betas"],
                                  weight_decay=settings["weight_decay"])
    batch = settings["batch_size"]
    loader = DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=batch, shuffle=True,
                        drop_last=True)
    warmup_steps, budget = args.warmup_steps or len(loader), 60 * args.minutes
    step, warmup_fraction, start, log = 0, 0.0, time.perf_counter(), []
    while time.perf_counter() - start < budget:
        for x, y in loader:
            fraction = (time.perf_counter() - start) / budget
            if fraction >= 1:
                break
            if step == warmup_steps:
                warmup_fraction = fraction
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(settings, step + 1, warmup_steps, fraction, warmup_fraction)
            x = x.float() / 255 * 2 - 1
            x = x + settings["noise_std"] * torch.randn_like(x)
            optimizer.zero_grad()
            z, _, log_dets = model(x, y)
            loss = model.get_loss(z, log_dets)
            loss.backward()
            optimizer.step()
            step += 1
            if step % 50 == 0:
                elapsed = time.perf_counter() - start
                log.append({"step": step, "loss": loss.item(), "lr": optimizer.param_groups[0]["lr"],
                            "elapsed_s": elapsed})
                print(f"step {step}: loss {loss.item():.4f}, lr {optimizer.param_groups[0]['lr']:.2e}, "
                      f"{step * batch / elapsed:.1f} img/s, {elapsed / 60:.1f}/{args.minutes:g} min", flush=True)
    elapsed = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out / "peer.pt")
    (args.out / "run.json").write_text(json.dumps({
        "dataset": args.dataset, "steps": step, "batch_size": batch, "elapsed_s": elapsed, "seed": args.seed,
        "threads": torch.get_num_threads(), "cpu": cpu_description(), "n_classes": n_classes,
        "image_shape": list(images.shape[1:]), "settings": settings, "warmup_steps": warmup_steps, "log": log},
        indent=1))
    print(f"peer: {step} steps in {elapsed / 60:.1f} min ({step * batch / elapsed:.1f} img/s): {args.out}")


def open_peer(peer: Path, folder: Path) -> tuple[PeerDensity, dict]:
    """The peer's model that ``train-peer`` wrote to ``folder``, and its run record."""
    run = json.loads((folder / "run.json").read_text())
    model = peer_model(peer, tuple(run["image_shape"]), run["n_classes"], run["settings"])
    model.load_state_dict(torch.load(folder / "peer.pt", weights_only=True))
    return PeerDensity(model).eval(), run


def judged(name: str, model: nn.Module, n_classes: int, images_per_s: float, test_set, classifier,
           args: argparse.Namespace) -> dict:
    """The figures of one model on the test split."""
    objective = DequantizedImages(8, class_conditional=True)
    with torch.no_grad():
        bits = evaluate_bits_per_dim(model, test_set, objective, batch_size=500, seed=args.seed)
        bayes = bayes_rule_accuracy(model, prepared_batches(test_set, objective, batch_size=500, seed=args.seed),
                                    n_classes)
        labels = torch.arange(n_classes).repeat_interleave(args.samples_per_class)
        generator = torch.Generator().manual_seed(args.seed)
        samples = torch.cat([model.sample(len(chunk), chunk, args.temperature, generator)
                             for chunk in labels.split(500)])
        consistency, _ = class_consistency(classifier, samples, labels)
        rows = torch.arange(n_classes).repeat_interleave(10)
        start = time.perf_counter()
        grid = model.sample(len(rows), rows, args.temperature, torch.Generator().manual_seed(args.seed))
        sample_seconds = time.perf_counter() - start
    if args.figures is not None:
        save_grid(grid, args.figures / f"{name}.png", nrow=10)
    return {"model": name, "test_bpd": bits.mean, "test_bpd_se": bits.standard_error,
            "bayes_accuracy": bayes.accuracy, "bayes_se": bayes.standard_error,
            "consistency": consistency, "train_img_per_s": images_per_s, "sample_100_s": sample_seconds}


def report(args: argparse.Namespace) -> None:
    test_set = load_labelled_dataset(args.dataset, args.data_root, train=False)
    if args.limit is not None:
        test_set = Subset(test_set, range(min(args.limit, len(test_set))))
    train_set = load_labelled_dataset(args.dataset, args.data_root, train=True)
    n_classes = 10
    classifier, accuracy = cached_classifier(args.classifier, train_set, test_set, n_classes, seed=0)
    print(f"judging classifier: test accuracy {accuracy:.1%}; samples at temperature {args.temperature}; "
          f"{torch.get_num_threads()} thread(s); {cpu_description()}")
    results = []
    for folder in args.peer_run:
        peer, run = open_peer(args.peer, folder)
        results.append(judged(folder.name, peer, n_classes, run["steps"] * run["batch_size"] / run["elapsed_s"],
                              test_set, classifier, args))
    for checkpoint in args.cinn:
        model = cinn.load(checkpoint).eval()
        state = torch.load(checkpoint, weights_only=True, map_location="cpu")
        batch = state["config"]["train"]["batch_size"]
        name = checkpoint.parent.name
        results.append(judged(name, model, n_classes, state["step"] * batch / state["elapsed_seconds"], test_set,
                              classifier, args))
    print("| model | test bits/dim | Bayes-rule accuracy | class consistency | train img/s | 100 samples (s) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['model']} | {r['test_bpd']:.3f} ± {r['test_bpd_se']:.3f} | {r['bayes_accuracy']:.1%} ± "
              f"{r['bayes_se']:.1%} | {r['consistency']:.1%} | {r['train_img_per_s']:.1f} | "
              f"{r['sample_100_s']:.2f} |")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("train-peer", "report"):
        command = commands.add_parser(name)
        command.add_argument("--peer", type=Path, required=True, help="a checkout of apple/ml-tarflow")
        command.add_argument("--dataset", default="fashion-mnist", help="a labelled cinn dataset")
        command.add_argument("--data-root", help="where the dataset lives")
        command.add_argument("--seed", type=int, default=0)
    train = commands.choices["train-peer"]
    train.add_argument("--minutes", type=float, default=20.0, help="wall-clock training time")
    train.add_argument("--out", type=Path, default=Path("runs/peer_tarflow"), help="folder of the peer's run")
    for option, kind in (("--channels", int), ("--layers-per-block", int), ("--batch-size", int), ("--lr", float)):
        train.add_argument(option, type=kind, help="instead of the notebook's (to train the peer at another size)")
    train.add_argument("--warmup-steps", type=int, help="linear warm-up steps (default: the notebook's one epoch)")
    judge = commands.choices["report"]
    judge.add_argument("--peer-run", type=Path, nargs="*", default=[], help="folders train-peer wrote")
    judge.add_argument("--cinn", type=Path, nargs="*", default=[], help="cinn checkpoints of class-conditional "
                                                                        "models")
    judge.add_argument("--classifier", type=Path, default=Path("runs/tarflow_judge.pt"),
                       help="cache of the judging classifier")
    judge.add_argument("--temperature", type=float, default=0.8)
    judge.add_argument("--samples-per-class", type=int, default=100)
    judge.add_argument("--figures", type=Path, help="folder for a sample grid per model (a row per class)")
    judge.add_argument("--json", type=Path, help="write the figures here too")
    judge.add_argument("--limit", type=int, help="only the first N test images (a quick look; report all)")
    args = parser.parse_args()
    (train_peer if args.command == "train-peer" else report)(args)


if __name__ == "__main__":
    main()
