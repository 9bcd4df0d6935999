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
    from genzoo.core.train_config import StepContext, TrainConfig


def fused_adam_ok(params: list[torch.Tensor]) -> bool | None:
    """True where torch's fused Adam/AdamW applies (float parameters on a CPU or a CUDA device):
    one kernel over every tensor instead of a dozen small ops per tensor, which made genzoo's
    6.3M-parameter DCGAN step 5-8% slower than a bare loop on CPU. None: torch's default."""
    ok = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda")
                              for p in params)
    return True if ok else None


@dataclass
class ModelConfig:
    """Families subclass this with their own fields."""


class Model(nn.Module):
    Config: ClassVar[type] = ModelConfig
    #: image | text | points | events: how bare sampler tensors are read, which data fits
    modality: ClassVar[str] = "image"
    #: what one unit of likelihood is: "dim" (a discrete pixel value: bits/dim), "token"
    #: (nats/token, perplexity), "point" (nats/point), "example" (nats/example only), or None
    likelihood_unit: ClassVar[str | None] = "dim"

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

    def setup(self, data: Any) -> None:
        """Called once before training from scratch, with the training set: keep what sampling
        needs later (a tokenizer, normalisation statistics). Keep it in ``artifacts``."""

    # -- run artifacts beyond weights ----------------------------------------------------------
    def artifacts(self) -> dict[str, Any]:
        """Extra state saved with every checkpoint and restored by ``load_run`` and
        ``--resume``: ``{name: tensor}`` goes to ``artifacts.safetensors``, any other JSON-able
        value (a tokenizer's ``to_json()``) to ``artifacts.json``."""
        return {}

    def load_artifacts(self, artifacts: dict[str, Any]) -> None:
        """Restore what ``artifacts`` returned (tensors come back on the CPU)."""

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
        fused = fused_adam_ok(params)
        if not train.weight_decay:  # AdamW without decay is Adam, minus a no-op pass per step
            return {"main": torch.optim.Adam(params, lr=train.lr, betas=tuple(train.betas),
                                             fused=fused)}
        # decay matrices and kernels, not biases or norm scales
        groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": train.weight_decay},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
        return {"main": torch.optim.AdamW(groups, lr=train.lr, betas=tuple(train.betas), fused=fused)}

    def training_step(self, batch: dict[str, torch.Tensor], optimizers: dict[str, Any],
                      ctx: "StepContext") -> dict[str, torch.Tensor]:
        """One optimisation step. GANs and EBMs override this (several optimizers, critic
        steps); the trainer's loop, logging and checkpoints stay the same."""
        with ctx.autocast():
            out = self.loss(batch)
        ctx.optimize(out["loss"], optimizers["main"])
        return out

    def evaluation_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Held-out metrics for one batch; ``loss`` by default, under no_grad. Families whose
        metrics need input gradients (EBMs) override it."""
        with torch.no_grad():
            return self.loss(batch)

    def evaluate_extra(self, data: Any, out_dir: Any = None) -> dict[str, Any]:
        """Family-specific held-out figures for ``zoo eval`` beyond the loss terms (a
        classifier's accuracy and confusion matrix); files it draws go into `out_dir` (the run
        folder), their paths into the result. JSON-able values only."""
        return {}

    # -- likelihood --------------------------------------------------------------------------
    def log_prob(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-example log-likelihood (or a lower bound) in nats of ``batch["x"]``, given any
        conditions the batch carries (``y``...)."""
        raise NotImplementedError(f"{type(self).__name__} defines no likelihood")

    def likelihood_units(self, batch: dict[str, torch.Tensor]) -> int:
        """How many units (``likelihood_unit``) the batch holds: pixel values, predicted tokens,
        points or examples."""
        x = batch["x"]
        if self.likelihood_unit == "dim":
            return int(x.numel())
        return int(x.shape[0])

    @property
    def has_likelihood(self) -> bool:
        return type(self).log_prob is not Model.log_prob and self.likelihood_unit is not None

    @staticmethod
    def bits_per_dim(log_prob: torch.Tensor, dims: int) -> torch.Tensor:
        return -log_prob / (dims * math.log(2.0))

    # -- capabilities the core looks for (never a family's name) -----------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """A feature vector (n, D) per image in [0, 1], (n, C, H, W): a network that defines it
        can serve as FID/KID's feature extractor (``zoo eval --features RUN``), as the
        chapter-2 classifier does with its penultimate layer."""
        raise NotImplementedError(f"{type(self).__name__} defines no image features")

    @classmethod
    def has_features(cls) -> bool:
        return cls.features is not Model.features

    def export_module(self) -> tuple[nn.Module, tuple[torch.Tensor, ...], dict[str, Any]]:
        """The network people deploy, for ``zoo export`` (ONNX, torch.export): a GAN
        generator or a decoder (z -> image), a denoiser step, a language model step (tokens ->
        logits), a classifier (image -> logits). Returns ``(module, example_inputs, names)``:
        `module` in eval mode taking `example_inputs` (tensors, batch first); `names` holds
        ``inputs`` and ``outputs`` (lists of names), optionally ``dynamic``
        (``{input: {dim: label}}``; default: dim 0 of every input is the batch) and ``what``
        (one line saying what it computes, in which units)."""
        raise NotImplementedError(f"{type(self).__name__} defines no exportable network")

    @classmethod
    def can_export(cls) -> bool:
        return cls.export_module is not Model.export_module

    def class_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (n, K) per image in [0, 1], (n, C, H, W): a network that defines it can
        judge whether generated images are recognisable (``zoo eval --metrics recognisable``),
        as the chapter-2 classifier does."""
        raise NotImplementedError(f"{type(self).__name__} defines no class logits")

    @classmethod
    def has_class_logits(cls) -> bool:
        return cls.class_logits is not Model.class_logits

    def flops(self, batch: dict[str, torch.Tensor]) -> int | None:
        """Analytic FLOPs of one training step (forward + backward) on `batch`, for benchmarks'
        model FLOPs utilisation (nanoGPT's 6N + attention for a transformer): ``zoo bench``
        reports that MFU beside the one from its torch.utils.flop_counter count. None (the
        default): the counter's figure alone."""
        return None
