"""Training throughput of cinn's Glow against the standard PyTorch Glow (rosinality/glow-pytorch), side by side.

The peer is imported from a checkout you provide (``--peer``); nothing of it is part of cinn. Every
implementation trains on the same random batch (32x32x3, L=3, width 512, affine coupling, LU 1x1 convs),
each as its users run it: the peer with ``torch.optim.Adam`` and the C library's default ``malloc``; cinn with
its engine's optimiser (fused Adam) and its engine's allocator setting (``retain_freed_memory``).

Each implementation lives in its own worker process (so that each has its own heap and allocator settings),
and the workers take turns: one training step each, round after round, while the others wait idle. The
machine's noise (separate runs minutes apart differed by ±10% on a shared 2-core VM) thus hits all of them
alike; the median step time and each worker's peak RSS are reported.

    git clone https://github.com/rosinality/glow-pytorch /tmp/glow-pytorch
    python benchmarks/train_vs_peer.py --peer /tmp/glow-pytorch --steps-per-level 8 --rounds 30

    python benchmarks/train_vs_peer.py --peer /tmp/glow-pytorch --implementations peer,cinn --precision fp32,bf16

Implementations: ``peer``; ``peer-retain`` (the peer with cinn's allocator setting: how much of the gap is
the allocator); ``cinn`` (the default layout, :func:`cinn.layout.preferred_memory_format`); ``cinn-nchw`` and
``cinn-cl`` (NCHW or channels_last forced); ``cinn-release`` (cinn with the default ``malloc``);
``cinn-inversion`` (backprop by inversion). ``NAME:bf16`` trains under ``torch.autocast(bfloat16)``: the peer's
whole forward pass, as its users would wrap it; cinn's as its engine does (``--train.precision=bf16``: the
subnets in bf16, the x → z path in float32). ``--precision fp32,bf16`` runs every name given without a
suffix in both.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from multiprocessing.connection import Connection
from pathlib import Path

import torch

from cinn import build_glow
from cinn.engine import TrainConfig, build_optimizer
from cinn.engine.allocator import retain_freed_memory
from cinn.engine.layout import settle_by_timing
from cinn.machine import cpu_description
from cinn.models import Flow, with_backprop

IMPLEMENTATIONS = ("peer", "peer-retain", "cinn", "cinn-release", "cinn-nchw", "cinn-cl", "cinn-inversion",
                   "cinn-compile")
PRECISIONS = ("fp32", "bf16")


def autocast(precision: str, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def peer_step(peer: Path, steps_per_level: int, x: torch.Tensor, precision: str) -> Callable[[], None]:
    sys.path.insert(0, str(peer))
    from model import Glow  # the peer's module, from its checkout

    model = Glow(3, steps_per_level, 3, affine=True, conv_lu=True).to(x.device)

    def loss() -> torch.Tensor:
        with autocast(precision, x.device):
            log_p, log_det, _ = model(x - 0.5)
        return -(log_p.float() + log_det.float()).mean()

    return training_step(loss, torch.optim.Adam(model.parameters(), lr=1e-5))


def cinn_step(name: str, steps_per_level: int, x: torch.Tensor, precision: str) -> Callable[[], None]:
    layout = {"cinn-nchw": False, "cinn-cl": True}.get(name)  # None: chosen as the engine chooses
    model = build_glow((3, 32, 32), n_levels=3, steps_per_level=steps_per_level, hidden_channels=512,
                       channels_last=layout).to(x.device)
    backprop = "inversion" if name == "cinn-inversion" else "standard"

    def loss_of(flow: Flow) -> torch.Tensor:
        with autocast(precision, x.device):
            log_prob = with_backprop(flow, backprop)(x)
        return -log_prob.float().mean()

    if not model.layout_settled and x.device.type == "cuda":  # as the engine does on CUDA
        model.use_memory_format(torch.channels_last)
    elif not model.layout_settled:
        with torch.no_grad():
            model.log_prob(x)  # data-dependent ActNorm initialisation, as the engine does before choosing
        choice = settle_by_timing(model, lambda flow: loss_of(flow).backward(), tuple(x.shape), precision,
                                  backprop)
        print(f"{name}:{precision}: {choice.describe()}", flush=True)
    optimizer = build_optimizer(list(model.parameters()), TrainConfig(optimizer="adam", lr=1e-5))
    if name == "cinn-compile":
        compiled = torch.compile(with_backprop(model, backprop))

        def compiled_loss() -> torch.Tensor:
            with autocast(precision, x.device):
                log_prob = compiled(x)
            return -log_prob.float().mean()

        return training_step(compiled_loss, optimizer)
    return training_step(lambda: loss_of(model), optimizer)


def training_step(loss: Callable[[], torch.Tensor], optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    with torch.no_grad():
        loss()  # data-dependent ActNorm initialisation

    def step() -> None:
        value = loss()
        optimizer.zero_grad()
        value.backward()
        optimizer.step()

    return step


def worker(variant: str, args: argparse.Namespace, connection: Connection) -> None:
    """Build ``variant`` (``NAME:PRECISION``), then time one training step per request; answer ``None`` to end
    with the peak RSS."""
    name, precision = variant.split(":")
    device = torch.device(args.device)
    if name not in ("peer", "cinn-release") and device.type == "cpu":
        retain_freed_memory()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # as the engine does
    torch.manual_seed(0)
    x = torch.rand(args.batch_size, 3, 32, 32, device=device)
    step = (peer_step(args.peer, args.steps_per_level, x, precision) if name.startswith("peer")
            else cinn_step(name, args.steps_per_level, x, precision))
    for _ in range(args.warmup):
        step()
    synchronize(device)
    connection.send(torch.get_num_threads())
    while connection.recv():
        start = time.perf_counter()
        step()
        synchronize(device)
        connection.send(time.perf_counter() - start)
    connection.send(torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
                    else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer", type=Path, help="checkout of rosinality/glow-pytorch (needed for 'peer')")
    parser.add_argument("--implementations", default="peer,cinn-nchw,cinn-cl,cinn",
                        help=f"comma-separated, the first is the reference; from {', '.join(IMPLEMENTATIONS)}, "
                             "each optionally NAME:bf16")
    parser.add_argument("--precision", default="fp32",
                        help="comma-separated precisions (fp32, bf16) for the names given without one")
    parser.add_argument("--steps-per-level", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (peak memory is then max_memory_allocated)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args()
    precisions = args.precision.split(",")
    if unknown := [p for p in precisions if p not in PRECISIONS]:
        parser.error(f"unknown precision(s) {unknown}; choose from {', '.join(PRECISIONS)}")
    names = [name if ":" in name else f"{name}:{precision}"
             for precision in precisions for name in args.implementations.split(",")]
    if unknown := [name for name in names
                   if name.split(":")[0] not in IMPLEMENTATIONS or name.split(":")[1] not in PRECISIONS]:
        parser.error(f"unknown implementation(s) {unknown}; choose from {', '.join(IMPLEMENTATIONS)}, "
                     "each optionally :bf16")
    peer_missing = args.peer is None or not (args.peer / "model.py").is_file()
    if any(name.startswith("peer") for name in names) and peer_missing:
        parser.error("--peer must be a checkout of rosinality/glow-pytorch (with model.py) to time the peer")

    context = multiprocessing.get_context("spawn")
    connections, processes = {}, []
    for name in names:  # built one after another, so that no two compete for the cores while warming up
        connections[name], theirs = context.Pipe()
        process = context.Process(target=worker, args=(name, args, theirs), daemon=True)
        process.start()
        processes.append(process)
        threads = connections[name].recv()
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            connections[name].send(True)
            times[name].append(connections[name].recv())
    peak_rss = {}
    for name in names:
        connections[name].send(False)
        peak_rss[name] = connections[name].recv()
    for process in processes:
        process.join()

    reference = statistics.median(times[names[0]])
    machine = (f"{torch.cuda.get_device_name(args.device)}, torch {torch.__version__}" if args.device != "cpu"
               else f"{threads} threads, {cpu_description()}")
    memory = "max_memory_allocated" if args.device != "cpu" else "peak RSS"
    print(f"K={args.steps_per_level} L=3 width 512, batch {args.batch_size}, {args.rounds} alternating rounds, "
          f"one process per implementation; {machine}")
    results = []
    for name in names:
        median = statistics.median(times[name])
        results.append({"implementation": name, "median_step_s": median, "images_per_s": args.batch_size / median,
                        "ratio": reference / median, "peak_memory_mib": peak_rss[name]})
        print(f"  {name:20s} median step {median:.3f} s = {args.batch_size / median:8.2f} img/s "
              f"({reference / median:.2f}x {names[0]}), {memory} {peak_rss[name]:,.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "steps_per_level": args.steps_per_level,
                                         "batch_size": args.batch_size, "results": results}, indent=1))


if __name__ == "__main__":
    main()
