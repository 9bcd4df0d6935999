"""The Sampler interface: how to draw from a trained network, kept apart from the network (as
diffusers keeps schedulers apart from the U-Net) so one network can be sampled several ways.
Options are a dataclass, so ``zoo sample --set temperature=0.8`` is type-checked and listed."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from genzoo.core import config as configlib


@dataclass
class SamplerOptions:
    """Samplers subclass this with their own fields."""


class Sampler:
    name: ClassVar[str] = ""
    Options: ClassVar[type] = SamplerOptions

    def __init__(self, **options: Any):
        self.options = configlib.build(self.Options, options,
                                       what=f"sampler {self.name or type(self).__name__} option")

    def sample(self, model: Any, n: int, generator: torch.Generator, **inputs: Any) -> torch.Tensor:
        """Return `n` samples; images as floats in [0, 1] shaped (n, C, H, W)."""
        raise NotImplementedError

    @classmethod
    def describe(cls) -> list[tuple[str, str, Any]]:
        import dataclasses
        hints = configlib._resolved_types(cls.Options)
        return [(f.name, getattr(hints.get(f.name), "__name__", str(hints.get(f.name))), f.default)
                for f in dataclasses.fields(cls.Options)]


def apply_temperature_top_k(logits: torch.Tensor, temperature: float = 1.0,
                            top_k: int | None = None) -> torch.Tensor:
    """Shared by every categorical sampler (PixelCNN, LSTM, GPT)."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    logits = logits / temperature
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return logits


def categorical(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Draw from softmax(logits) over the last dim with an explicit generator (CPU-drawn uniforms,
    so the same seed gives the same samples on every device)."""
    probs = torch.softmax(logits.float(), dim=-1)
    flat = probs.reshape(-1, probs.shape[-1])
    u = torch.rand(flat.shape[0], 1, generator=generator, device=generator.device).to(flat.device)
    idx = (flat.cumsum(-1) < u).sum(-1).clamp_max(flat.shape[-1] - 1)
    return idx.reshape(probs.shape[:-1])
