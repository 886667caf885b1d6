"""What the machine is: the CPU facts that decide speed, written beside every speed figure."""

from __future__ import annotations

import os
import platform
from pathlib import Path

VECTOR_UNITS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
"""The ``/proc/cpuinfo`` flags that decide the speed of float32 and bf16 convolutions."""


def cpu_description(cpuinfo: str | None = None) -> str:
    r"""The CPU's model name and which of the vector units that decide speed it has (from ``/proc/cpuinfo``).

    Example:
        >>> cpu_description("processor\t: 0\nmodel name\t: Example CPU\nflags\t\t: fpu avx2 avx512f\n" * 2)
        'Example CPU (2 cores; avx2, avx512f)'
        >>> cpu_description("processor\t: 0\ncpu family\t: 6\nmodel\t\t: 85\nmodel name\t: Xeon\nflags\t: avx2\n")
        'Xeon (family 6, model 85; 1 core; avx2)'
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return platform.processor() or "CPU unknown"
    fields = dict(line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    units = [flag for flag in VECTOR_UNITS if flag in flags]
    cores = cpuinfo.count("processor\t:") or os.cpu_count()
    family = f"family {fields['cpu family']}, model {fields['model']}; " if "cpu family" in fields else ""
    plural = "s" if cores != 1 else ""
    name = fields.get("model name", "CPU unknown")
    return f"{name} ({family}{cores} core{plural}; {', '.join(units) or 'no AVX2'})"
