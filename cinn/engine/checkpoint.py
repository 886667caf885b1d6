"""Checkpoint files: atomic writes, safe loads (``weights_only=True``, so loading never runs code)."""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FORMAT = "cinn-checkpoint-1"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or of the wrong kind."""


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> None:
    """Write ``payload`` to ``path`` atomically: a temporary file in the same folder, then a rename.

    A crash or a full disk during the write leaves the previous file at ``path`` intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save({"format": CHECKPOINT_FORMAT, **payload}, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` with ``torch.load(weights_only=True)``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the checkpoint.pt of a run directory")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "unsupported global" not in str(error).lower():
            raise CheckpointError(f"checkpoint {path} is corrupt, truncated or not a cinn checkpoint "
                                  f"(UnpicklingError: {str(error)[:200]})") from None
        raise CheckpointError(f"{path} holds Python objects beyond tensors and plain data, whose unpickling "
                              "could run code, so it was not loaded; cinn checkpoints never do, so this file is "
                              "not one (or was tampered with)") from None
    except (zipfile.BadZipFile, EOFError, RuntimeError, ValueError, OSError) as error:  # OSError: cut zip
        reason = (str(error).strip().splitlines() or ["no details"])[0][:200]
        raise CheckpointError(f"checkpoint {path} is corrupt, truncated or not a cinn checkpoint "
                              f"({type(error).__name__}: {reason})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a cinn checkpoint (expected format {CHECKPOINT_FORMAT})")
    return payload
