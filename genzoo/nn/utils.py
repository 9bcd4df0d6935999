"""Small context managers that several families use around their networks.

- ``frozen(module)``: the module's parameters stop requiring grad, restored afterwards (a GAN's
  generator loss flows through the critic without training it);
- ``eval_mode(model)``: eval mode for a block (sampling: batch norm's running statistics, no
  dropout), the previous mode restored afterwards.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

from genzoo.family import frozen

__all__ = ["frozen", "eval_mode"]


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
