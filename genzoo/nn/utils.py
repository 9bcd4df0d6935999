"""Small context managers that several families use around their networks.

- ``frozen(module)``: the module's parameters stop requiring grad, restored afterwards (a GAN's
  generator loss flows through the critic without training it);
- ``eval_mode(model)``: eval mode for a block (sampling: batch norm's running statistics, no
  dropout), the previous mode restored afterwards;
- ``square_image_config(cls, data)``: the ``image_size`` / ``channels`` config values of a set of
  square images, for the ``config_from_data`` of convolutional families.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from typing import Any

from torch import nn

from genzoo.family import DataError, frozen

__all__ = ["frozen", "eval_mode", "square_image_config"]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """`model` in eval mode inside the block (batch norm uses and leaves untouched its running
    statistics, dropout is off); its train / eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def square_image_config(cls: type, data: Any, size: int = 64) -> dict[str, Any]:
    """``{"image_size": H, "channels": C}`` of a dataset of square images shaped (C, H, H), for
    ``Model.config_from_data``; ``{}`` when the shape is unknown. Other shapes are one line
    naming the family `cls` and the option that resizes them (``--set data.size=SIZE``)."""
    shape = getattr(data, "shape", None)
    if not shape:
        return {}
    if len(shape) != 3 or shape[1] != shape[2]:
        raise DataError(f"{cls.__name__} needs square images, got {tuple(shape)}; resize them "
                        f"with --set data.size={size}")
    return {"image_size": int(shape[-1]), "channels": int(shape[0])}
