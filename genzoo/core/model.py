"""The Model interface every family implements.

A model is built from a typed config dataclass (``Model.Config``), so every hyperparameter has a
type and a default and a checkpoint can always rebuild its network from ``config.json``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from genzoo.core import config as configlib

if TYPE_CHECKING:
    from genzoo.core.trainer import StepContext, TrainConfig


@dataclass
class ModelConfig:
    """Families subclass this with their own fields."""


class Model(nn.Module):
    Config: ClassVar[type] = ModelConfig
    #: which training batch keys the model needs; documents the data contract
    modality: ClassVar[str] = "image"

    def __init__(self, config: Any):
        super().__init__()
        self.config = config

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_config(cls, overrides: dict[str, Any] | None = None) -> "Model":
        return cls(configlib.build(cls.Config, overrides, what=f"{cls.__name__} config"))

    @classmethod
    def config_from_data(cls, data: Any) -> dict[str, Any]:
        """Config values implied by the dataset (channels, image size, classes...). They sit
        between the Config defaults and the preset / user overrides."""
        return {}

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- training ----------------------------------------------------------------------------
    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Return ``{"loss": scalar, ...metrics}`` for one batch."""
        raise NotImplementedError

    def configure_optimizers(self, train: "TrainConfig") -> dict[str, torch.optim.Optimizer]:
        params = [p for p in self.parameters() if p.requires_grad]
        if not train.weight_decay:  # AdamW without decay is Adam, minus a no-op pass per step
            return {"main": torch.optim.Adam(params, lr=train.lr, betas=tuple(train.betas))}
        # decay matrices and kernels, not biases or norm scales
        groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": train.weight_decay},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
        return {"main": torch.optim.AdamW(groups, lr=train.lr, betas=tuple(train.betas))}

    def training_step(self, batch: dict[str, torch.Tensor], optimizers: dict[str, Any],
                      ctx: "StepContext") -> dict[str, torch.Tensor]:
        """One optimisation step. GANs and EBMs override this (several optimizers, critic
        steps); the trainer's loop, logging and checkpoints stay the same."""
        with ctx.autocast():
            out = self.loss(batch)
        ctx.optimize(out["loss"], optimizers["main"])
        return out

    # -- likelihood --------------------------------------------------------------------------
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Per-example log-likelihood (or a lower bound) in nats."""
        raise NotImplementedError(f"{type(self).__name__} defines no likelihood")

    @property
    def has_likelihood(self) -> bool:
        return type(self).log_prob is not Model.log_prob

    @staticmethod
    def bits_per_dim(log_prob: torch.Tensor, dims: int) -> torch.Tensor:
        return -log_prob / (dims * math.log(2.0))
