"""The built-in plugin: registers genzoo's own families, models and datasets from
``registry.yaml`` through the same hooks a third-party package uses.

Family code is named lazily (``module:attr``) in the YAML, so this module imports neither torch
nor any family: ``zoo list`` stays fast.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from importlib import resources
from typing import Any

from genzoo.core.plugins import hookimpl
from genzoo.core.registry import read_yaml


@lru_cache(maxsize=1)
def catalogue() -> dict[str, Any]:
    """registry.yaml, parsed once; a key given twice anywhere in it is an error naming both
    lines (plain YAML would keep the last one silently)."""
    text = resources.files("genzoo").joinpath("registry.yaml").read_text(encoding="utf-8")
    return read_yaml(text, "genzoo/registry.yaml") or {}


@hookimpl
def register_families(register: Callable[..., None]) -> None:
    for name, fields in catalogue().get("families", {}).items():
        register(name, **fields)


@hookimpl
def register_datasets(register: Callable[..., None]) -> None:
    for name, fields in catalogue().get("datasets", {}).items():
        register(name, **fields)


@hookimpl
def register_models(register: Callable[..., None]) -> None:
    for name, fields in catalogue().get("models", {}).items():
        register(name, **fields)


@hookimpl
def register_writers(register: Callable[..., None]) -> None:
    """Writers for sample kinds the built-in families show their own way (the registry's
    ``writers`` section: a flow's density heat map, its data -> latent scatter)."""
    for kind, writer in catalogue().get("writers", {}).items():
        register(kind, writer)


@hookimpl
def register_commands(cli: Any) -> None:
    """The latent-space tools (zoo reconstruct / interpolate / latent-plot / attribute),
    ``zoo export`` and ``zoo new-plugin``, added the way any plugin adds commands."""
    from genzoo.commands import export, latent, scaffold
    for command in [*latent.COMMANDS, *export.COMMANDS, *scaffold.COMMANDS]:
        cli.add_command(command)
