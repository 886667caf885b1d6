"""``python tests/paused_train.py STEP TASK ARG...`` runs ``python -m TASK ARG...`` (a ``train``) in this process,
but once step STEP is done it prints ``paused at step STEP`` and waits until its standard input is closed; then
training goes on. A test that must act while a run is in a known state (send a signal, kill it, start a second
run beside it) waits for that line instead of polling files with a deadline, so nothing depends on the speed of
the machine.

The pause comes right after the step, before that step's metrics row and checkpoint: paused at step 61 of a run
that checkpoints every 10 steps, the last checkpoint on disk is step 60's. Tests start such a run with
:func:`start_paused` and let it go on with ``process.communicate()``, which closes its standard input.
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # this checkout's cinn and tasks, as ``python -m`` from ROOT would import

import torch  # noqa: E402

from cinn.engine.trainer import Trainer  # noqa: E402


def start_paused(step: int, module: str, arguments: list[str], **popen: object) -> subprocess.Popen:
    """``python -m module arguments...`` started in its own process and returned once it has paused after
    ``step``; its stdin, stdout and stderr are pipes (text). A run that ends or fails before it pauses fails the
    calling test with its output."""
    process = subprocess.Popen([sys.executable, __file__, str(step), module, *arguments], cwd=ROOT, text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)
    for line in process.stdout:
        if line.startswith(f"paused at step {step}"):
            return process
    _, err = process.communicate(timeout=60)
    raise AssertionError(f"the run ended (exit code {process.returncode}) before step {step}: {err[-2000:]}")


def pause_after(step: int) -> None:
    """Make every :class:`Trainer` pause after training step ``step`` until standard input is closed."""
    train_step = Trainer.train_step

    def paused_train_step(self, *args, **kwargs):
        result = train_step(self, *args, **kwargs)
        if self.step == step:
            print(f"paused at step {step}", flush=True)
            sys.stdin.read()
        return result

    Trainer.train_step = paused_train_step


if __name__ == "__main__":
    pause_step, module, *arguments = sys.argv[1:]
    pause_after(int(pause_step))
    sys.argv = [module, *arguments]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread in this process, as a process started with ``OMP_NUM_THREADS=1`` (:data:`ONE_THREAD`)
    runs: runs that must end bit-identical compute their sums in the same order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
"""The environment of a process whose torch runs on one thread."""
