"""Configuration as data: nested dataclasses with defaults, loaded from YAML, overridable with dotted keys.

A task's config is a dataclass whose fields are values or further dataclasses (sections). Values come,
in order, from the dataclass defaults, a YAML file, and command-line overrides in the style of minGPT:

    config = load_config(GlowConfig, "configs/glow/mnist.yaml", ["--train.lr=5e-4", "--model.n_levels", "3"])

Every value is checked against its field's type hint (``int``, ``float``, ``bool``, ``str``,
``Literal[...]``, ``X | None``, ``list[X]``, ``tuple[X, ...]``, ``tuple[X, Y]``, ``dict[str, Any]``). A dict
field holds a part's name and options, such as ``{map: soft_clamp_affine, clamp: 1.5}``: a file or
``--key={...}`` gives the whole dict, ``--key.option=value`` sets one entry. Unknown keys and wrong
types are :class:`ConfigError` s naming the dotted key, where the value came from, and what is expected.
Floats must be finite: NaN and ±inf are refused for every float field (no setting means anything by them;
``X | None`` fields use null for "off"). Ranges are not checked here: a dataclass may define
``validate(self) -> None``, which is called on every section once the config is complete. A string literal
right below a field documents it (an attribute docstring); :func:`config_help` lists every key with its type,
default and that description.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import math
import reprlib
import textwrap
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

T = TypeVar("T")

COMMAND_LINE = "command line"

MAX_CONFIG_BYTES = 2**20
"""The largest config file read: a config is a few kilobytes, so anything larger is the wrong file."""
SHOWN_LENGTH = 80
"""Characters of a value an error message shows at most."""
_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxlist, _SHOWN.maxtuple, _SHOWN.maxdict = 3, 8, 8, 8
_SHOWN.maxstring = _SHOWN.maxother = _SHOWN.maxlong = SHOWN_LENGTH

_NULLS = ("null", "none", "~")
_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


class ConfigError(ValueError):
    """A configuration problem; the message names the key, where it came from and what is expected."""


def parse_overrides(args: Sequence[str]) -> list[tuple[str, str]]:
    """Split command-line settings into ``(dotted key, value text)`` pairs.

    ``--key=value``, ``--key value`` (two items) and ``key=value`` are accepted. In the two-item form the
    value may not start with ``--``, so a key followed by another key is reported as missing its value.

    Example:
        >>> parse_overrides(["--train.lr=1e-3", "--model.n_levels", "3", "seed=1"])
        [('train.lr', '1e-3'), ('model.n_levels', '3'), ('seed', '1')]
    """
    pairs = []
    position = 0
    while position < len(args):
        item = args[position]
        key, has_value, value = item.lstrip("-").partition("=")
        if not has_value:
            following = args[position + 1] if position + 1 < len(args) else None
            if following is None or following.startswith("--"):
                raise ConfigError(f"command-line setting '{item}' has no value; write --{key}=VALUE")
            value = following
            position += 1
        if not key:
            raise ConfigError(f"command-line setting '{item}' has no key; write --section.key=VALUE")
        pairs.append((key, value))
        position += 1
    return pairs


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """``cls()`` updated by the YAML mapping at ``path``, then by command-line ``overrides``, then validated.

    Keys missing from the file keep their defaults; nested mappings fill nested sections.

    Example:
        >>> import tempfile
        >>> from dataclasses import field, make_dataclass
        >>> from cinn.engine import TrainConfig
        >>> Run = make_dataclass("Run", [("train", TrainConfig, field(default_factory=TrainConfig))])
        >>> path = Path(tempfile.mkdtemp()) / "run.yaml"
        >>> _ = path.write_text("train: {steps: 500}")
        >>> config = load_config(Run, path, ["--train.lr=5e-4"])
        >>> config.train.steps, config.train.lr, config.train.batch_size   # from the file, command line, default
        (500, 0.0005, 64)
    """
    config = _defaults(cls)
    if path is not None:
        config = _merge(config, _read_yaml(Path(path)), prefix="", source=str(path))
    return apply_overrides(config, overrides)


def apply_overrides(config: T, overrides: Sequence[str]) -> T:
    """A copy of ``config`` with the command-line ``overrides`` applied, then validated.

    Example:
        >>> from dataclasses import field, make_dataclass
        >>> from cinn.engine import TrainConfig
        >>> Run = make_dataclass("Run", [("train", TrainConfig, field(default_factory=TrainConfig))])
        >>> apply_overrides(Run(), ["--train.batch_size", "32"]).train.batch_size
        32
    """
    for key, text in parse_overrides(overrides):
        config = _override(config, key.split("."), text)
    _validate(config)
    return config


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict of YAML-safe values (tuples become lists), e.g. to store in a checkpoint.

    Example:
        >>> from dataclasses import field, make_dataclass
        >>> from cinn.engine import TrainConfig
        >>> Run = make_dataclass("Run", [("train", TrainConfig, field(default_factory=TrainConfig))])
        >>> config_to_dict(Run())["train"]["lr"]
        0.001
    """
    if not _is_dataclass_instance(config):
        raise TypeError(f"config_to_dict expects a dataclass instance, got {type(config).__name__}")
    return _plain(config)


def config_from_dict(cls: type[T], values: Mapping[str, Any], source: str = "checkpoint") -> T:
    """Rebuild a ``cls`` config from a (possibly partial) nested dict, with the checks of a YAML file.

    Example:
        >>> from dataclasses import field, make_dataclass
        >>> from cinn.engine import TrainConfig
        >>> Run = make_dataclass("Run", [("train", TrainConfig, field(default_factory=TrainConfig))])
        >>> config = Run(TrainConfig(lr=5e-4))
        >>> config_from_dict(Run, config_to_dict(config)) == config
        True
        >>> config_from_dict(Run, {"train": {"steps": 50}}).train.lr   # keys left out keep their defaults
        0.001
    """
    config = _merge(_defaults(cls), values, prefix="", source=source)
    _validate(config)
    return config


def save_config(config: Any, path: str | Path) -> None:
    """Write the resolved ``config`` as YAML, loadable again with :func:`load_config`.

    Example:
        >>> import tempfile
        >>> from dataclasses import field, make_dataclass
        >>> from cinn.engine import TrainConfig
        >>> Run = make_dataclass("Run", [("train", TrainConfig, field(default_factory=TrainConfig))])
        >>> path = Path(tempfile.mkdtemp()) / "config.yaml"
        >>> save_config(Run(TrainConfig(lr=5e-4)), path)
        >>> path.read_text().splitlines()[:2], load_config(Run, path).train.lr
        (['train:', '  steps: 10000'], 0.0005)
    """
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))


def config_differences(first: Mapping[str, Any], second: Mapping[str, Any]) -> list[str]:
    """Sorted dotted keys whose values differ between two nested config dicts; a key on one side only counts.

    Example:
        >>> config_differences({"train": {"lr": 1e-3, "steps": 10}}, {"train": {"lr": 1e-4, "steps": 10}})
        ['train.lr']
    """
    return sorted(_differences(first, second, prefix=""))


def config_help(cls: type) -> list[tuple[str, str, str, str]]:
    """``(dotted key, type, default, description)`` of every setting of the config class ``cls``, in field
    order; the description is the first line of the field's attribute docstring (empty without one).

    Example:
        >>> from cinn.engine import TrainConfig
        >>> next(row for row in config_help(TrainConfig) if row[0] == "lr")
        ('lr', 'a float', '0.001', 'peak learning rate (reached after warmup_steps)')
    """
    rows = []
    config = _defaults(cls)
    docs = _field_docs(cls)
    for key, kind in _field_types(config).items():
        value = getattr(config, key)
        if _is_section(kind):
            rows += [(f"{key}.{name}", *rest) for name, *rest in config_help(kind)]
        else:
            default = yaml.safe_dump(_plain(value), default_flow_style=True, sort_keys=False)
            rows.append((key, _describe(kind), default.strip()
                         .removesuffix("...").strip(), docs.get(key, "")))
    return rows


def format_config_help(cls: type, width: int = 115) -> str:
    """:func:`config_help` as indented text for ``--help``: ``--key=TYPE (default D)`` and the description.

    Example:
        >>> from cinn.engine import TrainConfig
        >>> print(format_config_help(TrainConfig).splitlines()[0])
          --steps  an int, default 10000: training steps; the run ends at this step (or at max_minutes)
    """
    lines = []
    for key, kind, default, description in config_help(cls):
        text = f"  --{key}  {kind}, default {default}" + (f": {description}" if description else "")
        lines += textwrap.wrap(text, width, subsequent_indent="        ", break_on_hyphens=False)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ internals
def _field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass's fields (first lines), read from the source of it and its
    base classes when available; a subclass's docstring of a field wins."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        docs.update(_own_field_docs(klass))
    return docs


def _own_field_docs(cls: type) -> dict[str, str]:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for statement, following in itertools.pairwise(body):
        if (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)):
            docs[statement.target.id] = " ".join(inspect.cleandoc(following.value.value).split("\n\n")[0].split())
    return docs


class _MismatchError(Exception):
    """A value does not fit a type; turned into a :class:`ConfigError` where the key and source are known."""


def _is_dataclass_instance(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _is_section(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


def _is_mapping(kind: Any) -> bool:
    return (typing.get_origin(kind) or kind) is dict


def _defaults(cls: type[T]) -> T:
    if not _is_section(cls):
        raise TypeError(f"a config class must be a dataclass, got {cls!r}")
    return cls()


def _field_types(config: Any) -> dict[str, Any]:
    """Resolved type hints of the settable fields of a dataclass instance (hints may be strings)."""
    try:
        hints = typing.get_type_hints(type(config))
    except NameError as error:
        raise TypeError(f"cannot resolve the type hints of {type(config).__name__} ({error}); define config "
                        "dataclasses at module level") from None
    return {f.name: hints[f.name] for f in dataclasses.fields(config) if f.init}


def _field_type(config: Any, key: str, dotted: str, source: str) -> Any:
    kinds = _field_types(config)
    if key not in kinds:
        section = dotted.rpartition(".")[0]
        where = f"valid keys of '{section}'" if section else "valid top-level keys"
        raise ConfigError(f"unknown key '{dotted}' ({source}); {where}: {', '.join(sorted(kinds))}")
    return kinds[key]


def _read_yaml(path: Path) -> Mapping[str, Any]:
    text = _read_config_text(path)
    try:
        values = yaml.safe_load(text)
    except ValueError as error:  # an int of more digits than Python converts
        raise ConfigError(f"config file {path} holds a value YAML cannot read ({str(error)[:SHOWN_LENGTH]}); "
                          "fix it") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or "unreadable"
        raise ConfigError(f"config file {path} is not valid YAML{where} ({problem}); fix the syntax") from None
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values, not a "
                          f"{type(values).__name__}")
    return values


def _read_config_text(path: Path) -> str:
    """The text of the config file ``path``: a regular file of at most :data:`MAX_CONFIG_BYTES`, UTF-8."""
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder, not a file; pass a YAML file such as "
                          "configs/glow/tiny.yaml to --config")
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist; check the path given to --config")
    if not path.is_file():
        raise ConfigError(f"config file {path} is not a regular file; pass a YAML file to --config")
    with open(path, "rb") as file:
        data = file.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is larger than a config file can be ({MAX_CONFIG_BYTES // 2**20} "
                          "MiB); pass the YAML config, not another file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path} is not text (byte {error.start} is not UTF-8); pass a YAML "
                          "config file") from None


def shown(value: Any) -> str:
    """``repr(value)`` for an error message, at most about :data:`SHOWN_LENGTH` characters: a huge value (a
    YAML alias bomb, a megabyte string) is cut, and never written out in full, not even in memory."""
    text = _SHOWN.repr(value)
    if len(text) <= SHOWN_LENGTH:
        return text
    return f"{text[:SHOWN_LENGTH]}... (cut to {SHOWN_LENGTH} characters)"


def _merge(config: T, values: Any, prefix: str, source: str) -> T:
    """``config`` with the entries of a nested mapping checked and assigned; nested mappings fill sections."""
    section = prefix.rstrip(".")
    if not isinstance(values, Mapping):
        name = f"section '{section}'" if section else "a config"
        raise ConfigError(f"{name} must be a mapping of keys to values, got {shown(values)} ({source})")
    changes = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        kind = _field_type(config, str(key), dotted, source)
        if _is_section(kind):
            changes[key] = _merge(getattr(config, key), value, f"{dotted}.", source)
        else:
            changes[key] = _checked(value, kind, dotted, source, given=value)
    return dataclasses.replace(config, **changes)


def _override(config: T, parts: list[str], text: str, walked: str = "") -> T:
    """``config`` with the command-line ``text`` assigned to the field at the dotted path ``parts``."""
    key, *rest = parts
    dotted = f"{walked}{key}"
    kind = _field_type(config, key, dotted, COMMAND_LINE)
    if _is_section(kind) and rest:
        value = _override(getattr(config, key), rest, text, f"{dotted}.")
    elif _is_section(kind):
        raise ConfigError(f"'{dotted}' is a section, not a value ({COMMAND_LINE}); set its keys with "
                          f"--{dotted}.KEY=VALUE")
    elif rest and _is_mapping(kind) and len(rest) == 1:
        value = _checked({**getattr(config, key), rest[0]: _from_text(text, Any)}, kind, dotted, COMMAND_LINE,
                         given=text)
    elif rest:
        raise ConfigError(f"'{dotted}' is a value, not a section, so '{dotted}.{'.'.join(rest)}' does not exist "
                          f"({COMMAND_LINE}); write --{dotted}=VALUE")
    else:
        value = _checked(_from_text(text, kind), kind, dotted, COMMAND_LINE, given=text)
    return dataclasses.replace(config, **{key: value})


def _from_text(text: str, kind: Any) -> Any:
    """The value a command-line string stands for, before type checking: YAML, except where the type says."""
    options = [option for option in _union_members(kind) if option is not type(None)]
    base = options[0] if len(options) == 1 else kind
    origin = typing.get_origin(base) or base
    if base is str or (origin is Literal and text in typing.get_args(base)):
        return text
    if base is bool:
        return _BOOLEANS.get(text.strip().lower(), text)
    if origin in (list, tuple) and not text.strip().startswith("["):
        text = f"[{text}]"
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _union_members(kind: Any) -> tuple[Any, ...]:
    return typing.get_args(kind) if typing.get_origin(kind) in (Union, types.UnionType) else (kind,)


def _checked(value: Any, kind: Any, key: str, source: str, given: Any) -> Any:
    try:
        value = _coerce(value, kind)
    except _MismatchError:
        raise ConfigError(f"{key} must be {_describe(kind)}, got {shown(given)} ({source})") from None
    if _holds_non_finite(value):
        raise ConfigError(f"{key} must be a finite number, got {shown(given)} ({source}); NaN and inf are "
                          "refused")
    return value


def _holds_non_finite(value: Any) -> bool:
    """Whether ``value``, or an item of a list or tuple ``value``, is a NaN or infinite float."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return any(_holds_non_finite(item) for item in value)
    if isinstance(value, dict):
        return any(_holds_non_finite(item) for item in value.values())
    return False


def _coerce(value: Any, kind: Any) -> Any:
    """``value`` as an instance of ``kind`` (ints widen to floats, lists to tuples), else raise _MismatchError."""
    origin, args = typing.get_origin(kind) or kind, typing.get_args(kind)
    if origin in (Union, types.UnionType):
        is_null = value is None or (isinstance(value, str) and value.strip().lower() in _NULLS)
        if is_null and type(None) in args:
            return None
        for option in args:
            try:
                return _coerce(value, option)
            except _MismatchError:
                continue
        raise _MismatchError
    if origin is Literal:
        for option in args:
            if type(value) is type(option) and value == option:
                return option
        raise _MismatchError
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _MismatchError
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _MismatchError
            items = [_coerce(item, item_kind) for item, item_kind in zip(value, args, strict=True)]
        else:
            items = [_coerce(item, args[0]) for item in value] if args else list(value)
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(name, str) for name in value):
            raise _MismatchError
        item_kind = args[1] if len(args) == 2 else Any
        return {name: _coerce(_number_if_numeric(item), item_kind) for name, item in value.items()}
    if kind is Any:
        return value
    if kind is type(None):
        if value is None:
            return None
        raise _MismatchError
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise _MismatchError
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _MismatchError
    if kind is float:
        return _to_float(value)
    if kind is str:
        if isinstance(value, str):
            return value
        raise _MismatchError
    raise TypeError(f"config fields of type {kind!r} are not supported; use int, float, bool, str, Literal, "
                    "X | None, list, tuple or dict[str, Any]")


def _number_if_numeric(value: Any) -> Any:
    """``value``, or the float of a string that is a number, such as ``1e-3`` or ``inf`` (YAML 1.1 reads these
    as strings), in a dict whose items' types only the part they configure knows."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _to_float(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):  # YAML 1.1 reads exponents without a dot, such as 1e-3, as strings
        try:
            return float(value)
        except ValueError:
            raise _MismatchError from None
    raise _MismatchError


_NAMES = {int: "an int", float: "a float", bool: "a bool (true/false/yes/no/1/0)", str: "a string",
          type(None): "null"}
_PLURALS = {int: "ints", float: "floats", bool: "bools", str: "strings"}


def _describe(kind: Any) -> str:
    """What a value of type ``kind`` looks like, for error messages: ``a list of 3 ints``, ``one of 'a', 'b'``."""
    origin, args = typing.get_origin(kind) or kind, typing.get_args(kind)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(option) for option in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(option) for option in args)
    if origin in (list, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(set(args)) == 1:
                return f"a list of {len(args)} {_plural(args[0])}"
            return f"a list of {len(args)} values ({', '.join(_describe(a) for a in args)})"
        return f"a list of {_plural(args[0])}" if args else "a list"
    if origin is dict:
        return "a mapping such as {name: ..., option: value}"
    return _NAMES.get(kind, f"a {getattr(kind, '__name__', kind)}")


def _plural(kind: Any) -> str:
    return _PLURALS.get(kind, f"values that are each {_describe(kind)}")


def _validate(config: Any) -> None:
    """Call ``validate()`` on every section, innermost first, then on ``config`` itself."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if _is_dataclass_instance(value):
            _validate(value)
    validate = getattr(config, "validate", None)
    if callable(validate):
        validate()


def _plain(value: Any) -> Any:
    if _is_dataclass_instance(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _differences(first: Mapping[str, Any], second: Mapping[str, Any], prefix: str) -> list[str]:
    keys = []
    for key in set(first) | set(second):
        a, b = first.get(key, _ABSENT), second.get(key, _ABSENT)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            keys += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


_ABSENT = object()
