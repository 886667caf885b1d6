"""The engine's process-wide CPU settings: ``retain_freed_memory`` (a training step's freed tensors are reused,
not page-faulted in again) and flushing subnormal floats."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
import torch

FAULTS_PER_REALLOCATION = """
import resource, sys, torch
from cinn.engine.allocator import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
def minor_faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
faults = []
for _ in range(20):  # a 64 MiB tensor, allocated, written and freed
    before = minor_faults()
    torch.ones(16 * 2**20)
    faults.append(minor_faults() - before)
print(sorted(faults[10:])[5])  # the median once the heap has settled (the first few may still fault)
"""


def faults_per_64_mib_tensor(mode: str) -> float:
    """Minor page faults while allocating, writing and freeing a 64 MiB tensor, in a fresh process."""
    result = subprocess.run([sys.executable, "-c", FAULTS_PER_REALLOCATION, mode], capture_output=True, text=True,
                            check=True)
    return float(result.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
def test_retained_memory_is_reused_without_page_faults():
    pages = 64 * 2**20 // 4096
    assert faults_per_64_mib_tensor("default") > pages / 2  # glibc returns the block and faults it in again
    assert faults_per_64_mib_tensor("retain") < pages / 100  # one page in a hundred, or none


@pytest.mark.parametrize("flush", [True, False])
def test_training_on_the_cpu_flushes_subnormal_floats_unless_told_not_to(tmp_path, monkeypatch, flush):
    """Subnormal gradients and Adam moments made the colouriser's CPU steps 5x slower; the engine sets FTZ/DAZ."""
    from cinn import build_glow
    from cinn.data import TensorImageDataset
    from cinn.engine import DequantizedImages, TrainConfig, Trainer

    calls = []
    monkeypatch.setattr(torch, "set_flush_denormal", lambda mode: calls.append(mode) or True)
    data = TensorImageDataset(torch.zeros(8, 1, 4, 4, dtype=torch.uint8), torch.zeros(8, dtype=torch.int64))
    Trainer(build_glow((1, 4, 4), n_levels=1, steps_per_level=1, hidden_channels=4),
            TrainConfig(flush_denormals=flush), tmp_path, data, DequantizedImages(), task="demo", task_config={})
    assert calls == ([True] if flush else [])


def test_flushing_subnormals_makes_them_zero():
    subnormal = torch.tensor([1e-40, 1e-39])
    try:
        assert torch.set_flush_denormal(True)
        assert torch.equal(subnormal * 1.0, torch.zeros(2))
    finally:
        torch.set_flush_denormal(False)
    assert (subnormal * 1.0 != 0).all()
