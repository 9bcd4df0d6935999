"""Typed configs from dataclasses: defaults, overrides, `--set key=value` parsing.

nanoGPT's configurator rules (unknown keys fail, values are type-checked against the default),
applied to dataclasses instead of exec'd globals.
"""
from __future__ import annotations

import ast
import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

from genzoo.errors import ConfigError


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _resolved_types(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # forward refs we cannot resolve: fall back to raw annotations
        return {f.name: f.type for f in dataclasses.fields(cls)}


def coerce(key: str, value: Any, annotation: Any) -> Any:
    """Turn `value` (often a CLI string) into `annotation`, or raise a one-line ConfigError."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(key, value, arg)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"bad value {value!r} for {key}")
    if origin is typing.Literal:
        for choice in args:
            if value == choice or str(value) == str(choice):
                return choice
        raise ConfigError(f"bad value {value!r} for {key}: expected one of {', '.join(map(str, args))}")
    if origin in (list, tuple) or annotation in (list, tuple):
        if isinstance(value, str):
            value = _literal(value) if value.strip().startswith(("[", "(")) else value.split(",")
        if not isinstance(value, (list, tuple)):
            value = [value]
        inner = args[0] if args else Any
        items = [coerce(key, v, inner) if inner is not Any else v for v in value]
        return tuple(items) if (origin is tuple or annotation is tuple) else items
    if origin is dict or annotation is dict:
        if isinstance(value, str):
            value = _literal(value)
        if not isinstance(value, dict):
            raise ConfigError(f"bad value {value!r} for {key}: expected a mapping")
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"bad value {value!r} for {key}: expected true or false")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"bad value {value!r} for {key}: expected an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                try:
                    f = float(value)
                except ValueError:
                    f = None
                if f is not None and f.is_integer():
                    return int(f)
        raise ConfigError(f"bad value {value!r} for {key}: expected an integer")
    if annotation is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int too large for a float
                raise ConfigError(f"bad value {value!r} for {key}: number out of range") from None
        elif isinstance(value, str):
            try:
                number = float(value.replace("_", "") if value.strip() else value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"bad value {value!r} for {key}: expected a number")
        if number != number:  # nan passes every `x > 0` check the wrong way: never a setting
            raise ConfigError(f"bad value {value!r} for {key}: expected a number, not nan")
        return number
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"bad value {value!r} for {key}: expected a string")
    return value


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_set(items: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`["lr=1e-3", "blocks=5"]` -> {"lr": "1e-3", "blocks": "5"}; values stay strings until coerced."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"bad --set {item!r}: expected KEY=VALUE, e.g. --set lr=1e-3")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"bad --set {item!r}: empty key")
        out[key] = value.strip()
    return out


def build(cls: type, overrides: Mapping[str, Any] | None = None, *, what: str = "config") -> Any:
    """Instantiate dataclass `cls` with type-checked overrides; unknown keys list the valid ones."""
    overrides = dict(overrides or {})
    hints = _resolved_types(cls)
    names = field_names(cls)
    unknown = [k for k in overrides if k not in names]
    if unknown:
        raise ConfigError(
            f"unknown {what} key {unknown[0]!r}; valid keys: {', '.join(names)}"
        )
    kwargs = {k: coerce(k, v, hints.get(k, Any)) for k, v in overrides.items()}
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid {what}: {e}") from None
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)
