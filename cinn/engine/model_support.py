"""What the engine does for a model beyond calling it, chosen once, before the loop: a plain
:class:`~cinn.engine.trainer.DensityModel` is trained as it is; a :class:`~cinn.models.Flow` also has a memory
layout (timed on the machine, recorded in the checkpoint) and can be trained by backprop through its inverse.

The trainer asks :func:`model_support` for the object that answers these questions, so the loop itself never
asks what kind of model it trains.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from cinn.config import ConfigError
from cinn.engine.layout import LAYOUTS, settle_by_timing
from cinn.models import Flow, with_backprop
from cinn.models.dequantization import VariationallyDequantizedFlow

Loss = Callable[[nn.Module], Tensor]
"""The training loss on a fixed batch of the model as the step calls it (a 0-d tensor, with its graph)."""


class ModelSupport:
    """A model that is only a density: no layout to choose, standard backprop only.

    Example:
        >>> support = model_support(nn.Linear(2, 1))
        >>> support.layout, support.training_module("standard") is support.model
        (None, True)
    """

    def __init__(self, model: nn.Module):
        self.model = model

    @property
    def layout(self) -> str | None:
        """The memory layout to record in the checkpoint (None: the model has no choice of layout)."""
        return None

    def restore_layout(self, name: str | None) -> None:
        """Put the model back in the layout a checkpoint recorded (before the optimiser's state is loaded)."""

    def settle_layout(self, loss: Loss | None, batch_shape: tuple[int, ...], *, precision: str, backprop: str,
                      where: str | None) -> str | None:
        """Choose the layout before the first step; returns the line to print, or None."""
        return None

    def training_module(self, backprop: str) -> nn.Module:
        """What the training step calls: the model itself; backprop by inversion is a :class:`ConfigError`."""
        if backprop == "inversion":
            raise ConfigError(f"train.backprop=inversion needs an invertible model; a {type(self.model).__name__} "
                              "is not one")
        return self.model


class FlowSupport(ModelSupport):
    """A flow: its layout (channels_last or NCHW, timed on the machine when the builder left it open; see
    :mod:`cinn.engine.layout`) and backprop by inversion (:func:`~cinn.models.with_backprop`)."""

    model: Flow

    @property
    def layout(self) -> str | None:
        return self.model.layout

    def restore_layout(self, name: str | None) -> None:
        if name in LAYOUTS:
            self.model.use_memory_format(LAYOUTS[name])

    def settle_layout(self, loss: Loss | None, batch_shape: tuple[int, ...], *, precision: str, backprop: str,
                      where: str | None) -> str | None:
        """A flow built with ``channels_last=None``: on one CPU process (``where`` None), timed with ``loss`` on
        a batch of ``batch_shape`` (or taken from the cache); on other devices, under ``torch.distributed``
        (``where`` says which) and when resuming a run that recorded no layout (``loss`` None), channels_last."""
        if self.model.layout_settled:
            return None
        if loss is None or where is not None:
            self.model.use_memory_format(torch.channels_last)
            return None if where is None else f"layout channels_last ({where})"

        def step(flow: Flow) -> None:
            loss(with_backprop(flow, backprop)).backward()

        return settle_by_timing(self.model, step, batch_shape, precision, backprop).describe()

    def training_module(self, backprop: str) -> nn.Module:
        return with_backprop(self.model, backprop)


class DequantizedFlowSupport(FlowSupport):
    """A variationally dequantised flow (:class:`~cinn.models.dequantization.VariationallyDequantizedFlow`): the
    layout is its flow's; backprop by inversion runs through the flow, standard backprop through the dequantiser
    (whose activations are few)."""

    def __init__(self, model: VariationallyDequantizedFlow):
        super().__init__(model.flow)
        self.whole = model

    def training_module(self, backprop: str) -> nn.Module:
        if backprop == "standard":
            return self.whole
        return self.whole.trained_with(with_backprop(self.model, backprop))


def model_support(model: Any) -> ModelSupport:
    """The support the engine gives ``model``: :class:`FlowSupport` for a flow, :class:`DequantizedFlowSupport`
    for a variationally dequantised one, else :class:`ModelSupport`."""
    if isinstance(model, VariationallyDequantizedFlow):
        return DequantizedFlowSupport(model)
    return FlowSupport(model) if isinstance(model, Flow) else ModelSupport(model)
