"""Model specs: a builder's name and its arguments, as plain data, so a file can rebuild its model.

A spec is ``{"builder": "build_glow", "arguments": {...}}`` with only YAML-safe values (numbers, strings,
booleans, None, lists, dicts); it is what a checkpoint stores beside the weights, and
:func:`build_from_spec` turns it back into the untrained model (then ``load_state_dict`` gives the
trained one; see :func:`cinn.load`). The builders of :mod:`cinn.models` are registered; a model of
your own becomes loadable by registering its builder with :func:`register_builder`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from torch import nn

from cinn.models.cinn import build_cinn, build_cinn_fc
from cinn.models.glow import build_glow
from cinn.models.regressor import build_regressor

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])

BUILDERS: dict[str, Callable[..., nn.Module]] = {
    builder.__name__: builder for builder in (build_glow, build_cinn, build_cinn_fc, build_regressor)}


def register_builder(builder: Builder) -> Builder:
    """Make ``builder`` (a function returning a model) usable in specs under its ``__name__``; returns it,
    so it works as a decorator.

    Example:
        >>> @register_builder
        ... def build_identity(size: int) -> nn.Module:
        ...     return nn.Identity()
        >>> build_from_spec(model_spec(build_identity, size=3))
        Identity()
    """
    BUILDERS[builder.__name__] = builder
    return builder


def model_spec(builder: Callable[..., nn.Module], **arguments: Any) -> dict[str, Any]:
    """The spec of ``builder(**arguments)``; tuples become lists, so the spec is plain data.

    Example:
        >>> model_spec(build_glow, input_shape=(1, 28, 28), n_levels=2)
        {'builder': 'build_glow', 'arguments': {'input_shape': [1, 28, 28], 'n_levels': 2}}
    """
    if BUILDERS.get(builder.__name__) is not builder:
        raise ValueError(f"{builder.__name__} is not a registered builder; register it with register_builder")
    return {"builder": builder.__name__, "arguments": _plain(arguments)}


def build_from_spec(spec: Mapping[str, Any]) -> nn.Module:
    """The (untrained) model a spec describes.

    Example:
        >>> flow = build_from_spec({"builder": "build_glow", "arguments": {"input_shape": [1, 8, 8],
        ...                         "n_levels": 1, "steps_per_level": 1, "hidden_channels": 8}})
        >>> flow.input_shape
        (1, 8, 8)
    """
    name = spec.get("builder")
    if name not in BUILDERS:
        raise KeyError(f"unknown model builder {name!r}; known: {', '.join(sorted(BUILDERS))}")
    return BUILDERS[name](**spec.get("arguments", {}))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"a model spec holds plain data only, got {type(value).__name__} {value!r}")
