"""Build typed dataclass configs from YAML mappings, rejecting unknown keys and bad types."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from benchmark.errors import InputError

T = TypeVar("T")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path``; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: config file not found")
    try:
        with path.open(encoding="utf-8") as handle:
            loaded = yaml.safe_load(handle)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise InputError(f"{where}: invalid YAML ({getattr(error, 'problem', error)})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise InputError(f"{path}: the config must be a mapping of keys to values")
    return loaded


def from_mapping(cls: type[T], values: dict[str, Any], where: str, prefix: str = "") -> T:
    """Instantiate dataclass ``cls`` from ``values``; ``where`` names the source in errors."""
    if not isinstance(values, dict):
        raise InputError(f"{where}: key {prefix.rstrip('.') or '<root>'} must be a mapping")
    hints = typing.get_type_hints(cls)
    fields = {field.name: field for field in dataclasses.fields(cls) if field.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise InputError(
            f"{where}: unknown key {prefix}{unknown[0]}; allowed keys: {', '.join(sorted(fields))}"
        )
    arguments = {}
    for name, value in values.items():
        arguments[name] = _convert(hints[name], value, where, f"{prefix}{name}")
    try:
        return cls(**arguments)
    except (ValueError, TypeError) as error:
        raise InputError(f"{where}: {prefix.rstrip('.') or 'config'}: {error}") from None


def _convert(annotation: Any, value: Any, where: str, key: str) -> Any:
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        return from_mapping(annotation, value, where, f"{key}.")
    if origin in (Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, where, key)
            except InputError as error:
                errors.append(str(error))
        raise InputError(errors[0] if errors else f"{where}: key {key}: invalid value {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{where}: key {key} must be a list, got {value!r}")
        item_type = typing.get_args(annotation)[0]
        return tuple(
            _convert(item_type, item, where, f"{key}[{i}]") for i, item in enumerate(value)
        )
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{where}: key {key} must be a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{where}: key {key} must be an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise InputError(f"{where}: key {key} must be true or false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise InputError(f"{where}: key {key} must be a string, got {value!r}")
        return value
    return value
