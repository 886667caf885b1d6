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

from cinn.config import shown
from cinn.models.cinn import build_cinn, build_cinn_fc
from cinn.models.glow import build_glow
from cinn.models.regressor import build_regressor

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])

BUILDERS: dict[str, Callable[..., nn.Module]] = {
    builder.__name__: builder for builder in (build_glow, build_cinn, build_cinn_fc, build_regressor)}

MAX_BLOCKS = 1024
"""The most couplings a model may have in all (the shipped configs have at most 96): models are built block by
block, so a typo's 10**8 would build for hours."""
MAX_IMAGE_SIZE = 4096
"""The largest side of a model's input or condition image."""
MAX_WIDTH = 8192
"""The widest subnet, condition network or prior a model may have (the shipped configs use at most 512)."""
MAX_SPEC_ITEMS = 256
"""The most numbers, strings and containers a spec's arguments may hold in all (a spec has a few dozen)."""

_WIDTHS = ("hidden_channels", "hidden_features", "n_classes", "width", "global_features")
_DEPTHS = ("n_levels", "steps_per_level", "blocks_per_level", "n_blocks", "layers_per_block")
_SHAPES = ("input_shape", "condition_shape")


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
    if not isinstance(name, str) or name not in BUILDERS:
        raise KeyError(f"unknown model builder {shown(name)}; known: {', '.join(sorted(BUILDERS))}")
    arguments = spec.get("arguments", {})
    problem = size_problem(arguments)
    if problem is not None:
        raise ValueError(problem)
    return BUILDERS[name](**arguments)


def size_problem(arguments: Any) -> str | None:
    """Why a builder's ``arguments`` ask for more than any model may be (None when they do not): more than
    :data:`MAX_SPEC_ITEMS` values or nested more than 5 deep, more than :data:`MAX_BLOCKS` couplings, widths above
    :data:`MAX_WIDTH`, image sides above :data:`MAX_IMAGE_SIZE`, or sizes that are not positive integers. Checked
    before anything is built, so a crafted spec costs no time or memory.

    Example:
        >>> size_problem({"n_levels": 3, "steps_per_level": 4000})
        'the model would have 12000 flow steps or couplings, more than the 1024 allowed'
    """
    if not isinstance(arguments, Mapping):
        return f"a spec's arguments are a mapping, not {shown(arguments)}"
    inner = arguments.get("flow")  # the spec of the flow a wrapper such as a dequantiser builds
    if isinstance(inner, Mapping) and (problem := size_problem(inner.get("arguments", {}))) is not None:
        return problem
    if _count(arguments, depth=0) > MAX_SPEC_ITEMS:
        return f"the spec's arguments hold more than {MAX_SPEC_ITEMS} values or are nested more than 5 deep"
    sizes = {key: arguments[key] for key in (*_WIDTHS, *_DEPTHS) if key in arguments}
    for key, value in sizes.items():
        low = 1 if key in ("n_levels", "hidden_channels", "hidden_features") else 0
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            return f"{key} must be an integer >= {low}, not {shown(value)}"
    blocks = sizes.get("n_levels", 1) * max(sizes.get(key, 1) for key in _DEPTHS[1:])
    if blocks > MAX_BLOCKS:
        return f"the model would have {blocks} flow steps or couplings, more than the {MAX_BLOCKS} allowed"
    widths = [sizes[key] for key in _WIDTHS if key in sizes]
    condition_channels = arguments.get("condition_channels")
    widths += condition_channels if isinstance(condition_channels, list) else []
    if any(not isinstance(width, int) or width > MAX_WIDTH for width in widths):
        return f"a width or class count is above {MAX_WIDTH} (or not an integer): {shown(widths)}"
    for key in _SHAPES:
        shape = arguments.get(key)
        if shape is not None and not is_image_shape(shape):
            return f"{key} must be {IMAGE_SHAPE}, not {shown(shape)}"
    return None


IMAGE_SHAPE = f"1 to 3 sizes from 1 to {MAX_IMAGE_SIZE}"
"""What :func:`is_image_shape` accepts, in words."""


def is_image_shape(value: Any) -> bool:
    """Whether ``value`` is a model's input or condition shape as plain data: a list of 1 to 3 integer sizes from
    1 to :data:`MAX_IMAGE_SIZE`.

    Example:
        >>> is_image_shape([1, 28, 28]), is_image_shape([3, 10**6, 10**6]), is_image_shape((1, 28, 28))
        (True, False, False)
    """
    return isinstance(value, list) and 1 <= len(value) <= 3 and all(
        isinstance(side, int) and not isinstance(side, bool) and 1 <= side <= MAX_IMAGE_SIZE for side in value)


def _count(value: Any, depth: int) -> int:
    """How many values ``value`` holds, counting containers; past depth 5 (a spec within a spec, such as a
    variationally dequantised flow's, reaches 4) the count is over any limit."""
    if depth > 5:
        return MAX_SPEC_ITEMS + 1
    if isinstance(value, Mapping):
        return 1 + sum(_count(item, depth + 1) for item in value.values())
    if isinstance(value, (list, tuple)):
        return 1 + sum(_count(item, depth + 1) for item in value)
    return 1


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"a model spec holds plain data only, got {type(value).__name__} {value!r}")
