"""``retain_freed_memory``: a training step's freed tensors are reused, not page-faulted in again."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

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
