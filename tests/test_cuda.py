"""The CUDA path: the same results as the CPU, bf16, backprop by inversion, no host waits inside a training
step, DDP over nccl. Skipped without a CUDA device; ``benchmarks/gpu.sh`` runs them (``pytest -m cuda``)."""

from __future__ import annotations

import socket

import pytest
import torch
from invertibility import brute_force_log_det, perturb_

from cinn import build_cinn, build_glow
from cinn.color import rgb_to_lab
from cinn.data import TensorImageDataset
from cinn.engine import DequantizedImages, TrainConfig, Trainer
from cinn.engine import trainer as trainer_module
from cinn.engine.distributed import ProcessGroup
from cinn.models import with_backprop

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]
CUDA = torch.device("cuda")


def models(dtype=torch.float32):
    torch.manual_seed(0)
    glow = build_glow((2, 8, 8), n_levels=2, steps_per_level=2, hidden_channels=16)
    cinn = build_cinn((2, 8, 8), (1, 8, 8), n_levels=2, blocks_per_level=2, hidden_channels=16)
    inputs = {"glow": (torch.rand(4, 2, 8, 8), None), "cinn": (torch.randn(4, 2, 8, 8), torch.randn(4, 1, 8, 8))}
    built = {}
    for name, model in (("glow", glow), ("cinn", cinn)):
        model = model.to(dtype)
        x, c = inputs[name]
        x, c = x.to(dtype), (c.to(dtype) if c is not None else None)
        with torch.no_grad():
            model.log_prob(x, c)  # data-dependent init
        perturb_(model, scale=0.05)
        built[name] = (model, x, c)
    return built


@pytest.mark.parametrize("name", ["glow", "cinn"])
def test_cuda_gives_the_cpu_results_and_inverts(name):
    model, x, c = models()[name]
    expected = model.log_prob(x, c).detach()
    gpu = model.to(CUDA)
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        x, c = x.to(CUDA), (c.to(CUDA) if c is not None else None)
        with torch.no_grad():
            log_p = gpu.log_prob(x, c)
            back = gpu.decode(gpu.encode(x, c), c)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
    assert torch.allclose(log_p.cpu(), expected, rtol=1e-4, atol=1e-3)
    assert (back - x).abs().max().item() < 1e-4


@pytest.mark.parametrize("name", ["glow", "cinn"])
def test_log_det_is_the_jacobians_on_cuda(name):
    model, x, c = models(torch.float64)[name]
    model = model.to(CUDA)
    x, c = x[:2].to(CUDA), (c[:2].to(CUDA) if c is not None else None)
    _, log_det = model.transform(x, c)
    expected = []
    for b in range(len(x)):
        c_b = c[b:b + 1] if c is not None else None
        expected.append(brute_force_log_det(lambda inputs, c_b=c_b: model.encode(inputs[0], c_b), [x[b:b + 1]]))
    assert torch.allclose(log_det, torch.cat(expected), atol=1e-6)


@pytest.mark.parametrize("name", ["glow", "cinn"])
def test_backprop_by_inversion_gives_standard_gradients_on_cuda(name):
    model, x, c = models(torch.float64)[name]
    model = model.to(CUDA)
    x, c = x.to(CUDA), (c.to(CUDA) if c is not None else None)
    gradients = []
    for backprop in ("standard", "inversion"):
        model.zero_grad()
        with_backprop(model, backprop)(x, c).sum().backward()
        gradients.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert all(torch.allclose(a, b, atol=1e-8) for a, b in zip(*gradients, strict=True))


def tiny_trainer(tmp_path, group=None, **settings):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8)
    config = TrainConfig(**{"steps": 6, "batch_size": 8, "init_batch_size": 16, "warmup_steps": 1,
                            "log_every": 3, "checkpoint_every": 100, "optimizer": "adam", **settings})
    return Trainer(build_glow((1, 8, 8), n_levels=2, steps_per_level=1, hidden_channels=8), config, tmp_path,
                   TensorImageDataset(images, torch.zeros(32, dtype=torch.int64)), DequantizedImages(n_bits=5),
                   task="demo", task_config={}, progress=False, group=group or ProcessGroup(device=CUDA))


def test_a_training_step_never_waits_for_the_device(tmp_path, monkeypatch):
    """torch.cuda.set_sync_debug_mode('error') makes any host wait inside the step an error."""
    trainer = tiny_trainer(tmp_path)
    step = trainer.train_step

    def strict_step(*args, **kwargs):
        torch.cuda.set_sync_debug_mode("error")
        try:
            return step(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    monkeypatch.setattr(trainer, "train_step", strict_step)
    trainer.fit()
    assert trainer.step == 6


def test_batches_come_from_pinned_memory(tmp_path, monkeypatch):
    pinned = []
    real = trainer_module.DataLoader

    def loader(*args, **kwargs):
        pinned.append(kwargs.get("pin_memory"))
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "DataLoader", loader)
    tiny_trainer(tmp_path).fit()
    assert pinned == [True]


def test_bf16_training_keeps_the_likelihood_in_float32(tmp_path):
    trainer = tiny_trainer(tmp_path, precision="bf16")
    metrics = trainer.fit()
    assert trainer.model.log_prob(torch.rand(2, 1, 8, 8, device=CUDA)).dtype == torch.float32
    assert metrics["train_bpd"] == metrics["train_bpd"]  # finite: not NaN


def test_rgb_to_lab_on_cuda_equals_the_cpu():
    rgb = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    assert torch.allclose(rgb_to_lab(rgb.to(CUDA)).cpu(), rgb_to_lab(rgb), atol=1e-3)


def test_one_ddp_step_over_nccl(tmp_path, monkeypatch):
    """The engine's DDP path (all-reduced loss, DistributedDataParallel) over nccl, as one rank of one."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torch.distributed.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        monkeypatch.setattr(ProcessGroup, "distributed", property(lambda self: True))
        trainer = tiny_trainer(tmp_path, group=ProcessGroup(device=CUDA), steps=2, log_every=1)
        assert trainer.fit()["train_bpd"] > 0
    finally:
        torch.distributed.destroy_process_group()
