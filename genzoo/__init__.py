"""genzoo: a plugin-based zoo of generative models.

    import genzoo
    genzoo.list_models("*cnn*")
    model = genzoo.create_model("pixelcnn", blocks=2)
    run = genzoo.train("pixelcnn", steps=100)
    genzoo.load_run(run.path).sample(16)

Importing genzoo is cheap: torch and the families load on first use, so the ``zoo`` CLI can
list the catalogue without them.
"""
from __future__ import annotations

from typing import Any

from genzoo._version import __version__
from genzoo.core.plugins import hookimpl
from genzoo.errors import GenzooError

__all__ = ["hookimpl", "GenzooError", "list_models", "create_model", "train", "resume",
           "load_run", "registry", "Model", "Sampler", "ModelConfig", "SamplerOptions",
           "__version__"]


def registry() -> Any:
    from genzoo.core.registry import registry as _registry
    return _registry()


def list_models(pattern: str | None = None, tags: tuple[str, ...] = (),
                exclude: str | None = None) -> list[str]:
    """Registry names matching a wildcard pattern, e.g. ``list_models("*gan*")``."""
    return [e.name for e in registry().list(pattern, tags, exclude)]


def create_model(name: str, preset: str = "quick", **overrides: Any) -> Any:
    from genzoo.api import create_model as _create
    return _create(name, preset, **overrides)


def train(name: str, preset: str = "quick", out: str | None = None, progress: bool = False,
          **overrides: Any) -> Any:
    from genzoo.api import train as _train
    return _train(name, preset, overrides, out=out, progress=progress)


def resume(path: str, steps: int | None = None, progress: bool = False) -> Any:
    from genzoo.api import resume as _resume
    return _resume(path, steps=steps, progress=progress)


def load_run(path: str, ema: bool = True, device: str = "cpu") -> Any:
    from genzoo.api import load_run as _load
    return _load(path, ema=ema, device=device)


def __getattr__(name: str) -> Any:  # the torch-backed base classes, imported on first use
    if name in ("Model", "ModelConfig"):
        from genzoo.core import model
        return getattr(model, name)
    if name in ("Sampler", "SamplerOptions"):
        from genzoo.core import sampler
        return getattr(sampler, name)
    raise AttributeError(f"module 'genzoo' has no attribute {name!r}")
