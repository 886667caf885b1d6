"""Checkpoint files: atomic writes, safe loads (``weights_only=True``, so loading never runs code), and the
models they describe.

A checkpoint (format ``cinn-checkpoint-3``) is one dict of tensors and plain data:

- ``model_spec``: the builder and its arguments (:mod:`cinn.models.registry`), so the model is rebuilt
  from the file alone;
- ``conventions``: what a user of the model must know about its data (``n_bits``, image shape, class
  count, Lab normalisation, ...), written by the task;
- ``task``, ``cinn_version``, ``config`` (the run's full config);
- ``model`` (the weights), ``ema`` (averaged weights, or None), and, in a training checkpoint, the
  optimiser, scheduler, step, elapsed time and RNG states that resume the run exactly.

:func:`load` rebuilds any trained model from such a file; :func:`load_trained` also returns the task and
conventions. Files of format ``cinn-checkpoint-2``, which named coupling maps the way of cinn 0.2 (``clamp``,
``min_scale`` and ``coupling: affine`` beside each other), load as they are: :func:`upgraded` rewrites their
model spec and config in memory, and ``python -m tasks.TASK upgrade`` writes them in the current format. Files of
format ``cinn-checkpoint-1`` are refused with a one-line error naming cinn 0.2.0, the last version that
converts them.
"""

from __future__ import annotations

import glob
import os
import pickle
import re
import shlex
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cinn.config import shown
from cinn.engine.distributed import require_available
from cinn.engine.header import header_problems
from cinn.models.registry import build_from_spec
from cinn.version import __version__

CHECKPOINT_FORMAT = "cinn-checkpoint-3"
UPGRADED_FORMATS = ("cinn-checkpoint-2",)
"""Earlier formats that load, upgraded in memory (:func:`upgraded`)."""
LAST_VERSION_READING = {"cinn-checkpoint-1": "0.2.0"}
"""Earlier formats no longer read, and the last cinn version whose ``upgrade`` command converts them."""
CHECKPOINT_NAME = "checkpoint.pt"
TRAINING_ENTRIES = ("model", "optimizer", "scheduler", "rng", "step", "elapsed_seconds")
"""The entries of a training checkpoint that ``train --resume`` continues the run from."""


TASK_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
"""What a task's name looks like (a module of ``tasks``); a name from a file that does not is never put into a
suggested command."""


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or of the wrong kind."""


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> None:
    """Write ``payload`` to ``path`` atomically: a temporary file in the same folder, then a rename.

    A crash or a full disk during the write leaves the previous file at ``path`` intact; the temporary files
    of writes that were killed before their rename are removed first (:func:`remove_interrupted_writes`). The
    file gets the permissions of any new file of this process (``0o666`` less the umask), not the temporary
    file's private ``0o600``: a checkpoint is meant to be shared.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_interrupted_writes(path)
    handle, temporary = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save({**payload, "format": CHECKPOINT_FORMAT}, file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~current_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temporary_prefix(path: Path) -> str:
    """How the temporary files of :func:`save_checkpoint` writing ``path`` begin: ``.NAME.``, hidden."""
    return f".{path.name}."


def remove_interrupted_writes(path: str | Path) -> None:
    """Delete the temporary files that writes of ``path`` killed mid-write (``kill -9``, a power cut) left
    beside it."""
    path = Path(path)
    for stale in path.parent.glob(f"{glob.escape(temporary_prefix(path))}*.tmp"):
        stale.unlink(missing_ok=True)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` with ``torch.load(weights_only=True)``; a path that
    is not a readable cinn checkpoint, or whose bytes no longer match the checksums stored with them (a flipped
    bit, a bad copy), is a one-line :class:`CheckpointError`; a ``map_location`` this machine does not have is a
    :class:`~cinn.config.ConfigError`. ``~`` stands for the home folder."""
    path = Path(path).expanduser()
    require_checkpoint_file(path)
    device = torch.device(map_location)
    require_available(device, f"device {str(device)!r}", "load the checkpoint with device='cpu'")
    require_intact(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "unsupported global" not in str(error).lower():
            raise unreadable(path, error) from None
        raise CheckpointError(f"{path} holds Python objects beyond tensors and plain data, whose unpickling "
                              "could run code, so it was not loaded; cinn checkpoints never do, so this file is "
                              "not one (or was tampered with)") from None
    except Exception as error:  # any other failure of torch.load on a file it cannot read: a cut zip, text, ...
        raise unreadable(path, error) from None
    found = payload.get("format") if isinstance(payload, dict) else None
    found = found if isinstance(found, str) else None
    if found in LAST_VERSION_READING:
        task = payload.get("task")
        task = f"tasks.{task}" if isinstance(task, str) and TASK_NAME.fullmatch(task) else "tasks.TASK"
        version = LAST_VERSION_READING[found]
        raise CheckpointError(f"{path} was written by an early cinn (format {found}), which this version no "
                              f"longer reads; convert it with cinn {version}: pip install cinn=={version}, then "
                              f"python -m {task} upgrade --checkpoint {shlex.quote(str(path))} --out NEW.pt")
    if found not in (CHECKPOINT_FORMAT, *UPGRADED_FORMATS):
        raise CheckpointError(f"{path} is not a cinn checkpoint (expected format {CHECKPOINT_FORMAT})")
    problems = header_problems(payload)
    if problems:
        more = f"; and {len(problems) - 4} more" if len(problems) > 4 else ""
        raise CheckpointError(f"checkpoint {path} is malformed: {'; '.join(problems[:4])}{more}; it was not "
                              "written by cinn as it is (damaged or edited): use another checkpoint")
    return upgraded(payload)


OLD_MAP_NAMES = {"affine": "sigmoid_affine", "affine_sigmoid": "sigmoid_affine",
                 "affine_soft_clamp": "soft_clamp_affine", "additive": "additive"}
"""Format ``cinn-checkpoint-2``'s names of the coupling maps (Glow's ``affine`` is the sigmoid map)."""


def upgraded(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint of an earlier readable format in the current one: format 2 gave a coupling map by an old name
    with its option beside it (``coupling: affine, min_scale: 0.5``; ``clamp: 1.5``), in the model spec's
    arguments and in the config's ``model`` section; format 3 gives a map spec (``coupling: {map:
    sigmoid_affine, min_scale: 0.5}``). Entries that are not as format 2 wrote them are left for the reader's
    checks to refuse.

    Example:
        >>> state = {"format": "cinn-checkpoint-2", "model_spec": {"builder": "build_cinn", "arguments": {
        ...     "clamp": 1.5}}, "config": {"model": {"coupling": "affine", "min_scale": 0.5}}}
        >>> new = upgraded(state)
        >>> new["model_spec"]["arguments"]
        {'coupling': {'map': 'soft_clamp_affine', 'clamp': 1.5}}
        >>> new["config"]["model"], new["format"]
        ({'coupling': {'map': 'sigmoid_affine', 'min_scale': 0.5}}, 'cinn-checkpoint-3')
    """
    if state.get("format") not in UPGRADED_FORMATS:
        return state
    state = {**state, "format": CHECKPOINT_FORMAT}
    spec = state.get("model_spec")
    if isinstance(spec, dict) and isinstance(spec.get("arguments"), dict):
        state["model_spec"] = {**spec, "arguments": _coupling_as_map_spec(spec["arguments"])}
    config = state.get("config")
    if isinstance(config, dict) and isinstance(config.get("model"), dict):
        state["config"] = {**config, "model": _coupling_as_map_spec(config["model"])}
    return state


def _coupling_as_map_spec(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (a builder's arguments or a config's model section) with format 2's coupling entries as one map
    spec; unchanged when it has none."""
    coupling = values.get("coupling")
    if not ({"clamp", "min_scale"} & values.keys() or isinstance(coupling, str)):
        return values  # format 3 already, or a builder without couplings
    old = "affine_soft_clamp" if coupling is None else coupling
    if not isinstance(old, str) or old not in OLD_MAP_NAMES:
        return values  # not as format 2 wrote it: the checks that follow refuse it
    values = dict(values)
    options = {"clamp": values.pop("clamp", None), "min_scale": values.pop("min_scale", None)}
    name = OLD_MAP_NAMES[old]
    option = {"soft_clamp_affine": "clamp", "sigmoid_affine": "min_scale"}.get(name)
    values["coupling"] = {"map": name, **({option: options[option]} if options.get(option) is not None else {})}
    return values


def require_checkpoint_file(path: Path) -> None:
    """A ``path`` that is missing, a folder or not a regular file (a FIFO would block the read) is a
    :class:`CheckpointError` that says which."""
    if path.is_dir():
        inside = path / CHECKPOINT_NAME
        suggestion = inside if inside.is_file() else f"the {CHECKPOINT_NAME} of a run directory"
        raise CheckpointError(f"checkpoint {path} is a folder, not a file; pass {suggestion}")
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the checkpoint.pt of a run directory")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a regular file; pass the checkpoint.pt of a run "
                              "directory")


def require_intact(path: Path) -> None:
    """A checkpoint is a zip archive whose every entry carries the CRC-32 of its bytes; one that does not match
    them any more is a :class:`CheckpointError` naming the file (torch itself does not check them, so flipped
    bytes in the weights would load as other weights). Files that are not zip archives are left to
    ``torch.load`` to refuse."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError):
        return
    if damaged is not None:
        raise CheckpointError(f"checkpoint {path} is damaged: its entry {shown(damaged)} no longer matches the "
                              "checksum written with it (changed on disk or in a copy); restore it from a good "
                              "copy or retrain")


def unreadable(path: Path, error: Exception) -> CheckpointError:
    """The error for a file ``torch.load`` cannot read, with the reason in one line and without torch's advice
    to load it with ``weights_only=False`` (which could run code)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    detail = next((line for line in lines if "weights_only" not in line and "torch.load" not in line), "")
    reason = f"{type(error).__name__}: {detail}" if detail else type(error).__name__
    return CheckpointError(f"checkpoint {path} is corrupt, truncated or not a cinn checkpoint ({reason[:200]})")


def require_entries(state: dict[str, Any], names: tuple[str, ...], path: str | Path) -> None:
    """A checkpoint ``state`` without one of the entries ``names`` is a :class:`CheckpointError` naming them."""
    missing = [name for name in names if name not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks its {', '.join(repr(name) for name in missing)} "
                              f"entr{'y' if len(missing) == 1 else 'ies'}: it is incomplete or was not written by "
                              "cinn; pass the checkpoint.pt of a run directory")


def require_task(found: Any, task: str, path: str | Path) -> None:
    """A checkpoint whose recorded task ``found`` is not ``task`` (None: it records none) is a
    :class:`CheckpointError`."""
    if found is None:
        raise CheckpointError(f"checkpoint {path} does not record its task, so it is not a checkpoint of the "
                              f"'{task}' task; pass a checkpoint written by python -m tasks.{task} train")
    if found != task:
        known = isinstance(found, str) and TASK_NAME.fullmatch(found)
        opener = f"open it with python -m tasks.{found} or " if known else ""
        raise CheckpointError(f"{path} is a checkpoint of the {shown(found)} task, not '{task}'; {opener}pass a "
                              f"checkpoint of '{task}'")


def trained_weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model weights to evaluate and sample from in a checkpoint: those of the best evaluation when the run
    kept them (``train.keep=best``), else the EMA's when the run averaged weights, else the last step's."""
    if state.get("best") is not None:
        return state["best"]["model"]
    if state.get("ema") is None:
        return state["model"]
    return {key.removeprefix("module."): value for key, value in state["ema"].items() if key.startswith("module.")}


def require_finite_weights(weights: nn.Module | dict[str, Any], path: str | Path) -> None:
    """Refuse (a :class:`CheckpointError`) the trained model (or the state dict ``weights``) of the checkpoint
    ``path`` when any of its weights is NaN or infinite."""
    state = weights.state_dict() if isinstance(weights, nn.Module) else weights
    broken = [name for name, value in state.items()
              if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all()]
    if broken:
        raise CheckpointError(f"{path} holds non-finite weights (NaN or inf in {len(broken)} tensor(s), first "
                              f"{broken[0]}): its training diverged; go back to an earlier checkpoint or retrain "
                              "with a lower train.lr")


def model_info(spec: dict[str, Any], conventions: dict[str, Any]) -> dict[str, Any]:
    """The entries that make a checkpoint self-describing: ``model_spec``, ``conventions``, ``cinn_version``."""
    return {"model_spec": spec, "conventions": conventions, "cinn_version": __version__}


@dataclass
class TrainedModel:
    """A model rebuilt from a checkpoint, in eval mode, with what its file says about it."""

    model: nn.Module
    task: str
    conventions: dict[str, Any]
    config: dict[str, Any]


def rebuild_model(state: dict[str, Any], path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The trained model of a loaded checkpoint (its EMA weights when the run kept them), in eval mode; weights
    that are NaN or infinite are a :class:`CheckpointError` (:func:`require_finite_weights`), so no command and
    no caller of :func:`load` gets a model that silently computes NaN."""
    require_entries(state, ("model_spec", "model"), path)
    try:
        model = build_from_spec(state["model_spec"])
        model.load_state_dict(trained_weights(state))
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        reason = (str(error).strip().splitlines() or ["no details"])[0][:200]
        raise CheckpointError(f"{path} describes a model that cannot be rebuilt ({type(error).__name__}: "
                              f"{reason}); it was written by cinn {state.get('cinn_version', '?')}") from None
    require_finite_weights(model, path)
    require_fitting_conventions(model, state.get("conventions", {}), path)
    return model.to(device).eval()


def require_fitting_conventions(model: nn.Module, conventions: dict[str, Any], path: str | Path) -> None:
    """Data conventions that disagree with the rebuilt model (another image shape, another number of classes) are
    a :class:`CheckpointError`: commands would otherwise feed the model the wrong data, or sample only some of
    its classes."""
    shape, classes = getattr(model, "input_shape", None), getattr(model, "condition_shapes", None)
    problems = []
    if "image_shape" in conventions and shape is not None and tuple(conventions["image_shape"]) != tuple(shape):
        problems.append(f"image_shape {shown(conventions['image_shape'])} (the model takes {list(shape)})")
    if conventions.get("n_classes") and classes is not None:
        labels = [condition[0] for condition in classes if len(condition) == 1]
        if labels and labels != [conventions["n_classes"]]:
            problems.append(f"n_classes {conventions['n_classes']} (the model has {labels[0]} classes)")
    if problems:
        raise CheckpointError(f"checkpoint {path} is malformed: its conventions give {' and '.join(problems)}; it "
                              "was not written by cinn as it is (damaged or edited): use another checkpoint")


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """The trained model of a checkpoint with its task, data conventions and config — no task code and no
    config file needed.

    Example:
        >>> trained = load_trained("runs/glow_fashion_mnist/checkpoint.pt")   # doctest: +SKIP
        >>> trained.conventions["n_bits"], trained.model.input_shape   # doctest: +SKIP
        (8, (1, 28, 28))
    """
    state = load_checkpoint(path, map_location=device)
    require_entries(state, ("task",), path)
    return TrainedModel(rebuild_model(state, path, device), state["task"], dict(state.get("conventions", {})),
                        dict(state.get("config", {})))


def load(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The trained model of any task's checkpoint, rebuilt from the file alone, in eval mode. A file that is not
    a readable cinn checkpoint, or whose weights are NaN or infinite, is a one-line :class:`CheckpointError`.

    Example:
        >>> flow = cinn.load("runs/glow_fashion_mnist/checkpoint.pt")   # doctest: +SKIP
        >>> samples = flow.sample(16, temperature=0.7)   # doctest: +SKIP
    """
    return load_trained(path, device).model
