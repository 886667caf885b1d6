"""Training throughput of cinn's Glow against the standard PyTorch Glow (rosinality/glow-pytorch), side by side.

The peer is imported from a checkout you provide (``--peer``); nothing of it is part of cinn. Every
implementation trains on the same random batch (32x32x3, L=3, width 512, affine coupling, LU 1x1 convs),
each as its users run it: the peer with ``torch.optim.Adam``, cinn with its engine's optimiser (fused Adam).
Steps alternate between the implementations, round after round, in one process, so that the machine's
noise hits all of them alike; the median step time of each is reported.

    git clone https://github.com/rosinality/glow-pytorch /tmp/glow-pytorch
    python benchmarks/train_vs_peer.py --peer /tmp/glow-pytorch --steps-per-level 8 --rounds 30

Implementations: ``peer``; ``cinn`` (channels_last, the default); ``cinn-nchw`` (``channels_last=False``);
``cinn-inversion`` (backprop by inversion).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from cinn import build_glow
from cinn.engine import TrainConfig, build_optimizer


def peer_step(peer: Path, steps_per_level: int, x: torch.Tensor) -> Callable[[], None]:
    sys.path.insert(0, str(peer))
    from model import Glow  # the peer's module, from its checkout

    model = Glow(3, steps_per_level, 3, affine=True, conv_lu=True)

    def loss() -> torch.Tensor:
        log_p, log_det, _ = model(x - 0.5)
        return -(log_p + log_det).mean()

    return training_step(loss, torch.optim.Adam(model.parameters(), lr=1e-5))


def cinn_step(name: str, steps_per_level: int, x: torch.Tensor) -> Callable[[], None]:
    model = build_glow((3, 32, 32), n_levels=3, steps_per_level=steps_per_level, hidden_channels=512,
                       channels_last=name != "cinn-nchw")
    model.backprop = "inversion" if name == "cinn-inversion" else "standard"
    optimizer = build_optimizer(list(model.parameters()), TrainConfig(optimizer="adam", lr=1e-5))
    return training_step(lambda: -model.log_prob(x).mean(), optimizer)


def training_step(loss: Callable[[], torch.Tensor], optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    with torch.no_grad():
        loss()  # data-dependent ActNorm initialisation

    def step() -> None:
        value = loss()
        optimizer.zero_grad()
        value.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer", type=Path, help="checkout of rosinality/glow-pytorch (needed for 'peer')")
    parser.add_argument("--implementations", default="peer,cinn-nchw,cinn")
    parser.add_argument("--steps-per-level", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    names = args.implementations.split(",")
    if "peer" in names and (args.peer is None or not (args.peer / "model.py").is_file()):
        parser.error("--peer must be a checkout of rosinality/glow-pytorch (with model.py) to time 'peer'")

    torch.manual_seed(0)
    x = torch.rand(args.batch_size, 3, 32, 32)
    steps = {name: (peer_step(args.peer, args.steps_per_level, x) if name == "peer"
                    else cinn_step(name, args.steps_per_level, x)) for name in names}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)

    reference = statistics.median(times[names[0]])
    print(f"K={args.steps_per_level} L=3 width 512, batch {args.batch_size}, {torch.get_num_threads()} threads, "
          f"{args.rounds} alternating rounds")
    for name in names:
        median = statistics.median(times[name])
        print(f"  {name:15s} median step {median:.3f} s = {args.batch_size / median:6.2f} img/s "
              f"({reference / median:.2f}x {names[0]})")


if __name__ == "__main__":
    main()
