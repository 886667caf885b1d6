"""Starting part of a model from another run, and training parts of a model at their own learning rates.

The cINN paper pre-trains its colourisation condition network as a plain colouriser and then trains it jointly
with the flow at a lower learning rate: ``train.init_from`` + ``train.init_modules`` copy that network's weights
from the pre-training run, ``train.lr_scale`` sets its learning rate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cinn.config import ConfigError
from cinn.engine.checkpoint import CheckpointError, load_checkpoint, trained_weights


def module_parameters(model: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """The parameters and buffers of ``model``'s sub-module ``name`` (dotted), keyed by their names in
    ``model``; an unknown name is a :class:`ConfigError` that lists the model's top-level modules."""
    state = {key: value for key, value in model.state_dict().items() if key.startswith(f"{name}.")}
    if not state:
        known = ", ".join(child for child, _ in model.named_children())
        raise ConfigError(f"the model has no module {name!r} with weights; its modules: {known}")
    return state


def warm_start(model: nn.Module, checkpoint: Path | str, modules: Sequence[str]) -> int:
    """Copy into ``model`` the trained weights (:func:`~cinn.engine.checkpoint.trained_weights`) that the run
    of ``checkpoint`` has for each of its sub-modules ``modules`` (:func:`copy_modules`); returns the number of
    numbers copied."""
    return copy_modules(model, trained_weights(load_checkpoint(Path(checkpoint))), modules, str(checkpoint))


def copy_modules(model: nn.Module, weights: Mapping[str, torch.Tensor], modules: Sequence[str],
                 source: str = "the weights") -> int:
    """Copy into ``model`` the entries of the state dict ``weights`` that belong to its sub-modules ``modules``;
    returns the number of numbers copied. Each module must exist in both with the same names and shapes (else a
    :class:`CheckpointError` that names ``source``).

    Example:
        >>> trained, fresh = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1)), nn.Sequential(nn.Linear(2, 3))
        >>> copy_modules(fresh, trained.state_dict(), ["0"]), torch.equal(fresh[0].weight, trained[0].weight)
        (9, True)
    """
    copied = {}
    for name in modules:
        for key, value in module_parameters(model, name).items():
            if key not in weights:
                raise CheckpointError(f"{source} has no weights for {key} (train.init_modules names {name}); "
                                      "start from a run whose model has this module")
            if weights[key].shape != value.shape:
                raise CheckpointError(f"{source}'s {key} is {tuple(weights[key].shape)}, this model's "
                                      f"{tuple(value.shape)}: build the same {name} (widths, levels) in both runs")
            copied[key] = weights[key]
    model.load_state_dict(copied, strict=False)
    return sum(value.numel() for value in copied.values())


def parameter_groups(model: nn.Module, lr: float, lr_scale: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The trainable parameters of ``model`` as optimiser groups: those of each sub-module named in
    ``lr_scale`` at ``lr · lr_scale[name]``, the rest at ``lr`` (empty groups left out).

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
        >>> [(len(group["params"]), group["lr"]) for group in parameter_groups(model, 1e-3, {"0": 0.1})]
        [(2, 0.0001), (2, 0.001)]
    """
    scaled: dict[str, list[nn.Parameter]] = {name: [] for name in lr_scale}
    rest = []
    for key, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        owner = next((name for name in lr_scale if key.startswith(f"{name}.")), None)
        (scaled[owner] if owner is not None else rest).append(parameter)
    for name, parameters in scaled.items():
        if not parameters:
            module_parameters(model, name)  # says which modules there are
            raise ConfigError(f"train.lr_scale names {name!r}, which has no trainable parameters")
    groups = [{"params": parameters, "lr": lr * float(lr_scale[name])} for name, parameters in scaled.items()]
    return [*groups, {"params": rest, "lr": lr}] if rest else groups
