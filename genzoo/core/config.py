"""Typed configs from dataclasses: defaults, overrides, `--set key=value` parsing.

nanoGPT's configurator rules (unknown keys fail, values are type-checked against the default),
applied to dataclasses instead of exec'd globals.
"""
from __future__ import annotations

import ast
import dataclasses
import math
import numbers
import re
import sys
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
        return _integer(key, value)
    if annotation is float:
        return _float(key, value)
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"bad value {value!r} for {key}: expected a string")
    return value


# the range every integer setting must fit: torch stores sizes and counts as int64, and a number
# past it fails deep inside torch (or loops for ever) instead of here, as one line
INT_MAX = 2 ** 63 - 1
_INTEGER = re.compile(r"[+-]?[0-9]+(?:_[0-9]+)*")


def _integer(key: str, value: Any) -> int:
    """Integer settings take integer literals only: ``200``, ``-3``, ``1_000``. ``1e9``, ``2.0``
    and ``True`` are refused, since a float or a bool that happens to be whole is far more often
    a slip (``max_new_tokens=1e9``) than meant."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            value = int(value)  # numpy's integers, from a config built in Python
        else:
            raise ConfigError(f"bad value {value!r} for {key}: expected an integer literal "
                              "such as 200 (not a float or a bool)")
    if isinstance(value, str):
        text = value.strip()
        if not _INTEGER.fullmatch(text):
            raise ConfigError(f"bad value {value!r} for {key}: expected an integer literal "
                              "such as 200 (not 1e9 or 2.0)")
        digits = text.lstrip("+-").replace("_", "").lstrip("0")
        if len(digits) > len(str(INT_MAX)):  # before int(): Python refuses > 4300 digits itself
            raise ConfigError(f"bad value {_short(value)} for {key}: number out of range "
                              f"(at most {INT_MAX})")
        value = int(text.replace("_", ""))
    if not -INT_MAX <= value <= INT_MAX:
        raise ConfigError(f"bad value {_short(value)} for {key}: number out of range "
                          f"(at most {INT_MAX})")
    return value


def _float(key: str, value: Any) -> float:
    """A finite float: ``1e999`` (which Python reads as inf), ``inf`` and ``nan`` are refused,
    as is an integer too large for a float."""
    number = None
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an int too large for a float
            raise ConfigError(f"bad value {_short(value)} for {key}: number out of range "
                              f"(at most about {sys.float_info.max:.1e})") from None
    elif isinstance(value, str):
        try:
            number = float(value.replace("_", "") if value.strip() else value)
        except ValueError:
            pass
    if number is None:
        raise ConfigError(f"bad value {_short(value)} for {key}: expected a number")
    if number != number:  # nan passes every `x > 0` check the wrong way: never a setting
        raise ConfigError(f"bad value {_short(value)} for {key}: expected a number, not nan")
    if math.isinf(number):
        word = isinstance(value, str) and value.strip().lstrip("+-").lower() in ("inf", "infinity")
        if word or (isinstance(value, float) and math.isinf(value)):
            raise ConfigError(f"bad value {_short(value)} for {key}: expected a finite number")
        raise ConfigError(f"bad value {_short(value)} for {key}: number out of range "
                          f"(at most about {sys.float_info.max:.1e})")
    return number


def _short(value: Any, limit: int = 40) -> str:
    """The value as the message quotes it, cut so a 10**400 does not fill the screen."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        # str() of an int past 4300 digits raises, and is slow well before that
        return f"(an integer of about {int(value.bit_length() * 0.30103) + 1} digits)"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


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
