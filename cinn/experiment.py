"""Experiments that follow a measure along training: runs of a task trained step by step and evaluated between
the steps.

Each run is ``python -m tasks.TASK train`` in a process of its own with one thread, trained to its first
evaluation step, evaluated, then resumed (``--resume`` with a larger ``train.steps``, a change the task kernel
allows) to the next evaluation step, and so on. That ends with the same weights as one run trained straight to
its last step when the learning rate does not depend on ``train.steps`` (constant after warm-up: see
:func:`refuse_stretching_schedule`), because every step's randomness is a function of (seed, step). A run's
evaluations are kept in its run directory (``evaluations.json``, written atomically) beside its checkpoint, so
the same call continues an interrupted experiment: evaluations already made are not repeated, unfinished runs
continue from their checkpoint.

The benchmark scripts built on it (``benchmarks/glow_permutations.py``, ``benchmarks/fc_cinn_consistency.py``)
choose the runs, say how a checkpoint is evaluated and write the figures.

Example:
    >>> experiment = Experiment(task="mnist", config=Path("configs/mnist/tiny.yaml"), out=Path("runs/curves"))
    >>> run = Run("fast-seed0", ("--train.lr=0.001", "--train.seed=0"), eval_at=(100, 200))
    >>> experiment.train_command(run, 100, resume=False)[1:4]
    ['-m', 'tasks.mnist', 'train']
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cinn.cli import USER_ERRORS, int_in_range
from cinn.config import ConfigError
from cinn.engine.checkpoint import CHECKPOINT_NAME

RECORD_NAME = "evaluations.json"
"""A run's evaluations, in its run directory."""

Record = dict[str, Any]
"""A run's header (what the experiment needs to know of it, e.g. its variant and seed) and its
``"evaluations"``: a list of dicts, each with its ``"step"``, ascending."""

Evaluate = Callable[["Run", Path, int], dict[str, Any]]
"""``evaluate(run, checkpoint, step)``: the measures of ``run``'s checkpoint, which is at ``step``."""


@dataclass(frozen=True)
class Run:
    """One training run: its folder name, the task's command-line overrides that make it what it is (its variant
    and seed), and the steps it is evaluated at (ascending)."""

    name: str
    overrides: tuple[str, ...]
    eval_at: tuple[int, ...]


@dataclass(frozen=True)
class Experiment:
    """What the runs of one call share: the task, its config, the output folder, ``train.device`` and, if given,
    ``data.root``."""

    task: str
    config: Path
    out: Path
    device: str = "cpu"
    data_root: str | None = None

    def run_dir(self, run: Run) -> Path:
        return self.out / "runs" / run.name

    def log(self, run: Run) -> Path:
        return self.out / "logs" / f"{run.name}.log"

    def train_command(self, run: Run, steps: int, resume: bool) -> list[str]:
        """``python -m tasks.TASK train`` of ``run`` up to ``steps``: continuing its checkpoint (``resume``), or
        from scratch. The whole config is given either way, so that the task refuses to resume a run whose config
        has changed since."""
        data = [] if self.data_root is None else [f"--data.root={self.data_root}"]
        return [sys.executable, "-m", f"tasks.{self.task}", "train", "--config", str(self.config),
                "--resume" if resume else "--overwrite", "--run_dir", str(self.run_dir(run)), *run.overrides,
                f"--train.steps={steps}", "--train.max_minutes=null", "--train.eval_every=0",
                f"--train.device={self.device}", *data]


def train(experiment: Experiment, run: Run, steps: int, resume: bool) -> None:
    """Train ``run`` to ``steps`` in a process of its own with one thread, its output appended to its log."""
    log = experiment.log(run)
    log.parent.mkdir(parents=True, exist_ok=True)
    command = experiment.train_command(run, steps, resume)
    with open(log, "a") as file:
        file.write(f"$ OMP_NUM_THREADS=1 {shlex.join(command)}\n")
        file.flush()
        code = subprocess.run(command, stdout=file, stderr=subprocess.STDOUT,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode
    if code != 0:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        raise ConfigError(f"{run.name}: training to step {steps} failed (exit code {code}: {lines[-1]}); its log "
                          f"is {log}")


def check_step(checkpoint: Path, at: int, step: int) -> None:
    """Refuse a checkpoint at step ``at`` that should be at ``step`` (the last training stopped early, or an
    earlier call trained past it)."""
    if at != step:
        raise ConfigError(f"{checkpoint} is at step {at} after training to step {step}: it was stopped early (see "
                          "its log) or trained past that step by an earlier call; run the same command again to "
                          "continue, or choose another --out")


def read_record(run_dir: Path) -> Record | None:
    path = run_dir / RECORD_NAME
    return json.loads(path.read_text()) if path.exists() else None


def write_record(run_dir: Path, record: Record) -> None:
    temporary = run_dir / f".{RECORD_NAME}.tmp"
    temporary.write_text(json.dumps(record, indent=1))
    os.replace(temporary, run_dir / RECORD_NAME)


def evaluated_steps(record: Record | None) -> set[int]:
    return set() if record is None else {evaluation["step"] for evaluation in record["evaluations"]}


def existing_records(experiment: Experiment, runs: Sequence[Run], header: Callable[[Run], Record],
                     options: Mapping[str, str]) -> dict[Run, Record]:
    """The records already in ``--out`` of ``runs`` (with a checkpoint beside them), checked against this call:
    a header value that differs, or an evaluation step to add before one already made, is a one-line error.
    ``options`` maps the header keys that a command-line option sets to that option, which the error then names;
    any other key (a variant's definition, its seed) can only differ when another version of the script made
    the record.

    Example:
        >>> experiment = Experiment(task="mnist", config=Path("configs/mnist/tiny.yaml"), out=Path("runs/none"))
        >>> existing_records(experiment, [Run("fast-seed0", (), (100,))], lambda run: {"seed": 0}, {})
        {}
    """
    records = {}
    for run in runs:
        run_dir = experiment.run_dir(run)
        record = read_record(run_dir) if (run_dir / CHECKPOINT_NAME).exists() else None
        if record is None:
            continue
        for key, value in header(run).items():
            if record.get(key) != value:
                remedy = (f"give {options[key]} {record.get(key)} or choose another --out" if key in options
                          else "another version of this script made them: choose another --out")
                raise ConfigError(f"{run_dir} holds evaluations with {key} {record.get(key)}, not {value}; "
                                  f"{remedy}")
        done = evaluated_steps(record)
        missing = sorted(set(run.eval_at) - done)
        if missing and done and missing[0] < max(done):
            raise ConfigError(f"--eval-at {missing[0]}: {run_dir} is already trained past that step (evaluated at "
                              f"{', '.join(map(str, sorted(done)))}); evaluation steps can only be added after a "
                              "run's last one, or choose another --out")
        records[run] = record
    return records


def complete(experiment: Experiment, run: Run, evaluate: Evaluate, record: Record,
             stopping: threading.Event, report: Callable[[Run, dict[str, Any]], str]) -> Record:
    """Train and evaluate ``run`` at every step of ``run.eval_at`` that ``record`` has no evaluation of yet;
    return the record (``stopping``: start no further training; ``report``: the line printed per evaluation)."""
    checkpoint = experiment.run_dir(run) / CHECKPOINT_NAME
    for step in sorted(set(run.eval_at) - evaluated_steps(record)):
        if stopping.is_set():
            break
        train(experiment, run, step, resume=checkpoint.exists())
        evaluation = {"step": step, **evaluate(run, checkpoint, step)}
        record = {**record, "evaluations": sorted([*record["evaluations"], evaluation],
                                                  key=lambda entry: entry["step"])}
        write_record(experiment.run_dir(run), record)
        print(f"{run.name}: step {step}: {report(run, evaluation)}", flush=True)
    return record


def train_and_evaluate(experiment: Experiment, runs: Sequence[Run], evaluate: Evaluate,
                       header: Callable[[Run], Record], options: Mapping[str, str], jobs: int,
                       report: Callable[[Run, dict[str, Any]], str]) -> dict[Run, Record]:
    """Every run trained and evaluated at all its steps, ``jobs`` at a time, continuing what ``--out`` holds
    (checked by :func:`existing_records`, ``options`` as there); returns the records. The runs that fail do not
    stop the others, and their first error is raised once the others are done."""
    records = existing_records(experiment, runs, header, options)
    pending = [run for run in runs if not set(run.eval_at) <= evaluated_steps(records.get(run))]
    print(f"{len(pending)} of {len(runs)} runs to train or evaluate" + (f", {jobs} at a time" if pending else ""),
          flush=True)
    stopping, failures = threading.Event(), []
    pool = ThreadPoolExecutor(jobs)
    futures = {pool.submit(complete, experiment, run, evaluate, records.get(run) or {**header(run),
                                                                                      "evaluations": []},
                           stopping, report): run for run in pending}
    try:
        for future in as_completed(futures):
            try:
                records[futures[future]] = future.result()
            except USER_ERRORS as error:
                failures.append(str(error))
    finally:  # on Ctrl-C (which the training processes get as well) no further run or step is started
        stopping.set()
        pool.shutdown(cancel_futures=True)
    if failures:
        raise ConfigError(f"{len(failures)} of {len(runs)} runs failed, the first: {failures[0]}; run the same "
                          "command again to continue")
    return {run: records[run] for run in runs}


def refuse_stretching_schedule(config_path: Path, lr_decay: str) -> None:
    """A decaying learning rate stretches with ``train.steps``, so a run resumed from one evaluation step to the
    next would not be one run to the budget."""
    if lr_decay != "none":
        raise ConfigError(f"{config_path} sets train.lr_decay={lr_decay}, whose schedule stretches with "
                          "train.steps, so a run resumed from one evaluation step to the next would not be one "
                          "run to the budget; remove it")


def int_list(low: int) -> Callable[[str], list[int]]:
    """An argparse ``type``: comma-separated integers >= ``low``, returned sorted and without repeats.

    Example:
        >>> int_list(1)("300,100,300")
        [100, 300]
    """
    integer = int_in_range(low)

    def parse(text: str) -> list[int]:
        try:
            return sorted({integer(part) for part in text.split(",")})
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"must be comma-separated integers >= {low}, got {text!r}") from None

    return parse


def variant_list(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse ``type``: comma-separated names out of ``allowed``, repeats dropped, order kept.

    Example:
        >>> variant_list(["fast", "slow"])("slow,fast,slow")
        ['slow', 'fast']
    """

    def parse(text: str) -> list[str]:
        names = text.split(",")
        unknown = [name for name in names if name not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown variant(s) {', '.join(map(repr, unknown))}; choose from "
                                             f"{', '.join(allowed)}")
        return list(dict.fromkeys(names))

    return parse


def evenly_spaced(steps: int, count: int) -> list[int]:
    """``count`` steps spread evenly up to ``steps`` (fewer when ``steps`` is smaller).

    Example:
        >>> evenly_spaced(1800, 5)
        [360, 720, 1080, 1440, 1800]
    """
    return sorted({steps * k // count for k in range(1, count + 1)} - {0})
