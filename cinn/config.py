"""Configuration as data: nested dataclasses loaded from YAML, overridable with dotted command-line keys.

    config = load_config(GlowConfig, "configs/glow/fashion_mnist.yaml", ["--train.lr=5e-4"])

Unknown keys and wrong types are :class:`ConfigError` s that name the dotted key and where it came
from. A dataclass may define ``validate(self)``; it is called on every section after loading.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration problem; the message names the key, where it came from and what is expected."""


def parse_overrides(args: Sequence[str]) -> list[tuple[str, str]]:
    """``["--train.lr=1e-3", "--model.width", "64", "seed=1"]`` → ``[("train.lr", "1e-3"), ...]``."""
    pairs, items = [], list(args)
    while items:
        item = items.pop(0).lstrip("-")
        if "=" in item:
            key, value = item.split("=", 1)
        elif items and not items[0].startswith("--"):
            key, value = item, items.pop(0)
        else:
            raise ConfigError(f"command-line setting '{item}' has no value; write --{item}=VALUE")
        pairs.append((key, value))
    return pairs


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Defaults of ``cls``, updated by the YAML file at ``path`` and then by command-line ``overrides``."""
    values: dict[str, Any] = {}
    if path is not None:
        values = _read_yaml(Path(path))
    config = _build(cls, values, prefix="", source=str(path))
    return apply_overrides(config, overrides)


def apply_overrides(config: T, overrides: Sequence[str]) -> T:
    """A copy of ``config`` with command-line ``overrides`` applied (and validated)."""
    values = config_to_dict(config)
    for key, text in parse_overrides(overrides):
        section, *path = key.split(".")
        target, walked = values, []
        for part in [section, *path][:-1]:
            walked.append(part)
            if not isinstance(target.get(part), dict):
                _unknown_key(type(config), ".".join(walked), "the command line")
            target = target[part]
        leaf = key.split(".")[-1]
        if leaf not in target or isinstance(target[leaf], dict):
            _unknown_key(type(config), key, "the command line")
        target[leaf] = _CommandLineValue(text)
    return _validated(_build(type(config), values, prefix="", source="the command line"))


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict of YAML-safe values (tuples become lists)."""
    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value
    return plain(config)


def config_from_dict(cls: type[T], values: dict[str, Any], source: str = "checkpoint") -> T:
    """Rebuild a config from :func:`config_to_dict` output, with the same checks as a YAML file."""
    return _validated(_build(cls, values, prefix="", source=source))


def save_config(config: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (what a run actually used)."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))


def config_differences(first: dict[str, Any], second: dict[str, Any], prefix: str = "") -> list[str]:
    """Sorted dotted keys whose values differ between two config dicts (missing on one side counts)."""
    keys = []
    for key in sorted(set(first) | set(second)):
        a, b = first.get(key, _MISSING), second.get(key, _MISSING)
        if isinstance(a, dict) and isinstance(b, dict):
            keys.extend(config_differences(a, b, f"{prefix}{key}."))
        elif a != b:
            keys.append(f"{prefix}{key}")
    return sorted(keys)


# ---------------------------------------------------------------------------------------- internals
_MISSING = object()


class _CommandLineValue(str):
    """A raw command-line string, parsed as YAML before coercion."""


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {str(error).splitlines()[0]}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must be a mapping of keys to values, got {type(values).__name__}")
    return values


def _unknown_key(cls: type, key: str, source: str) -> typing.NoReturn:
    parts = key.split(".")
    section_cls: Any = cls
    for part in parts[:-1]:
        hints = typing.get_type_hints(section_cls)
        if part not in hints or not dataclasses.is_dataclass(hints[part]):
            break
        section_cls = hints[part]
    valid = ", ".join(f.name for f in dataclasses.fields(section_cls))
    where = f"'{'.'.join(parts[:-1])}'" if len(parts) > 1 else "the config"
    raise ConfigError(f"unknown key '{key}' in {source}; valid keys of {where}: {valid}")


def _build(cls: type[T], values: dict[str, Any], prefix: str, source: str) -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            _unknown_key_at(cls, dotted, source)
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, dict):
                raise ConfigError(f"'{dotted}' is a section; give it a mapping of keys, not {value!r} ({source})")
            kwargs[key] = _build(kind, value, f"{dotted}.", source)
        else:
            kwargs[key] = _coerce(value, kind, dotted, source)
    return cls(**kwargs)


def _unknown_key_at(cls: type, dotted: str, source: str) -> typing.NoReturn:
    valid = ", ".join(f.name for f in dataclasses.fields(cls))
    section = dotted.rsplit(".", 1)[0] if "." in dotted else ""
    where = f"'{section}'" if section else "the config"
    raise ConfigError(f"unknown key '{dotted}' in {source}; valid keys of {where}: {valid}")


def _validated(config: T) -> T:
    for value in [config, *_sections(config)]:
        if hasattr(value, "validate"):
            value.validate()
    return config


def _sections(config: Any) -> list[Any]:
    found = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            found += [value, *_sections(value)]
    return found


_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _raise(error: Exception) -> typing.NoReturn:
    raise error


def _type_name(kind: Any) -> str:
    if typing.get_origin(kind) is Literal:
        return "one of " + ", ".join(repr(option) for option in typing.get_args(kind))
    return {int: "an int", float: "a number", bool: "true or false", str: "a string"}.get(
        kind, getattr(kind, "__name__", str(kind)))


def _coerce(value: Any, kind: Any, key: str, source: str) -> Any:
    raw = value
    if isinstance(value, _CommandLineValue):
        if kind is str:
            return str(value)
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            value = str(raw)
        if kind is bool and isinstance(value, (str, int)) and str(value).lower() in _BOOLEANS:
            return _BOOLEANS[str(value).lower()]
    wrong = ConfigError(f"{key} must be {_type_name(kind)}, got {str(raw)!r} ({source})")
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_none and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        return _coerce(value if not isinstance(raw, _CommandLineValue) else raw, options[0], key, source)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key} must be {_type_name(kind)}, got {raw!r} ({source})")
        return value
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [part for part in value.strip("[]() ").split(",") if part.strip()]
            value = [yaml.safe_load(part) for part in value]
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise wrong
        element = args[0] if args else Any
        items = [v if element is Any else _coerce(v, element, key, source) for v in value]
        if origin is tuple and args and args[-1] is not Ellipsis and len(items) != len(args):
            raise ConfigError(f"{key} must have {len(args)} entries, got {len(items)} ({source})")
        return tuple(items) if origin is tuple else items
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise wrong
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise wrong
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:  # PyYAML reads exponents without a dot, such as 1e-3, as strings
            return float(value) if isinstance(value, str) else _raise(wrong)
        except ValueError:
            raise wrong from None
    if kind is str:
        if isinstance(value, str):
            return value
        raise wrong
    return value
