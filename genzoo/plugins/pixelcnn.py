"""PixelCNN (van den Oord et al. 2016; Foster ch. 5): an autoregressive image model.

Each pixel's intensity, quantised to a few levels, is a categorical distribution conditioned on
the pixels above and to the left. Masked convolutions enforce that ordering: type A (first layer)
hides the centre pixel, type B (later layers) may see the centre's own features.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genzoo.family import (Model, Sampler, apply_temperature_top_k, categorical,
                           categorical_from_uniform, uniforms, window_index)
from genzoo.nn.autoregressive import raster_sample, raster_steps


@dataclass
class PixelCNNConfig:
    image_size: int = 16
    channels: int = 1  # grayscale, as in the book; colour would need per-channel masks
    levels: int = 4  # pixel values are quantised to this many intensities
    filters: int = 128
    blocks: int = 5  # residual blocks of 1x1 -> masked 3x3 (type B) -> 1x1
    kernel_size: int = 7  # the first, type-A masked convolution
    head_layers: int = 2  # 1x1 type-B convolutions before the output

    def __post_init__(self) -> None:
        for key in ("image_size", "blocks", "kernel_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.filters < 2:  # the residual blocks work on filters // 2 channels
            raise ValueError(f"filters must be >= 2, got {self.filters}")
        if self.head_layers < 0:
            raise ValueError(f"head_layers must be >= 0, got {self.head_layers}")
        if self.levels < 2:
            raise ValueError(f"levels must be >= 2, got {self.levels}")
        if self.channels != 1:
            raise ValueError("this PixelCNN models grayscale images: use channels=1 "
                             "(--set data.channels=1 converts colour data)")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")


class MaskedConv2d(nn.Conv2d):
    """A convolution whose kernel is zero at and after the centre (type A) or after it (type B),
    in raster order, so an output never depends on pixels it is about to predict."""

    def __init__(self, mask_type: str, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
        k = kernel_size
        mask = torch.ones(k, k)
        mask[k // 2, k // 2 + (mask_type == "B"):] = 0
        mask[k // 2 + 1:] = 0
        self.mask_type = mask_type
        self.register_buffer("mask", mask[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)

    def masked_weight(self) -> torch.Tensor:
        return self.weight * self.mask


class ResidualBlock(nn.Module):
    """The book's bottleneck: 1x1 halves the filters, masked 3x3 mixes space, 1x1 restores."""

    def __init__(self, filters: int):
        super().__init__()
        self.conv1 = nn.Conv2d(filters, filters // 2, 1)
        self.pixel_conv = MaskedConv2d("B", filters // 2, filters // 2, 3)
        self.conv2 = nn.Conv2d(filters // 2, filters, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(x))
        h = F.relu(self.pixel_conv(h))
        h = F.relu(self.conv2(h))
        return x + h


class PixelCNN(Model):
    Config = PixelCNNConfig

    def __init__(self, config: PixelCNNConfig):
        super().__init__(config)
        c = config
        self.input_conv = MaskedConv2d("A", c.channels, c.filters, c.kernel_size)
        self.blocks = nn.ModuleList(ResidualBlock(c.filters) for _ in range(c.blocks))
        self.head = nn.ModuleList(MaskedConv2d("B", c.filters, c.filters, 1)
                                  for _ in range(c.head_layers))
        self.output = nn.Conv2d(c.filters, c.levels * c.channels, 1)

    @classmethod
    def config_from_data(cls, data: object) -> dict:
        shape = getattr(data, "shape", None)
        return {"image_size": int(shape[-1]), "channels": int(shape[0])} if shape else {}

    # -- data <-> levels ---------------------------------------------------------------------
    def quantise(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] floats -> integer levels 0..L-1 (the book's ``value // (256 / L)``)."""
        L = self.config.levels
        return (x * L).long().clamp_(0, L - 1)

    def model_input(self, levels: torch.Tensor) -> torch.Tensor:
        return levels.to(self.input_conv.weight.dtype) / self.config.levels

    # -- network ------------------------------------------------------------------------------
    def forward(self, levels: torch.Tensor) -> torch.Tensor:
        """Integer levels (B, 1, H, W) -> logits (B, L, H, W)."""
        h = F.relu(self.input_conv(self.model_input(levels)))
        for block in self.blocks:
            h = block(h)
        for conv in self.head:
            h = F.relu(conv(h))
        return self.output(h)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        target = self.quantise(batch["x"])
        logits = self(target)
        nll = F.cross_entropy(logits.float(), target[:, 0])  # nats per pixel
        return {"loss": nll, "nll": nll * target[0].numel(), "bits_per_dim": nll / math.log(2)}

    @torch.no_grad()
    def log_prob(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Log-likelihood of the quantised image in nats (discrete, so bits/dim is exact)."""
        target = self.quantise(batch["x"])
        logp = F.log_softmax(self(target).float(), dim=1)
        return logp.gather(1, target).flatten(1).sum(1)

    def image_shape(self) -> tuple[int, int, int]:
        c = self.config
        return c.channels, c.image_size, c.image_size


@dataclass
class PixelSamplerOptions:
    temperature: float = 1.0
    top_k: int | None = None
    size: int | None = None  # generate at another size than trained (fully convolutional)

    def __post_init__(self) -> None:
        if not 0 < self.temperature < float("inf"):  # also nan
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.size is not None and self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")


@dataclass
class CachedSamplerOptions(PixelSamplerOptions):
    cuda_graph: bool = True  # on GPUs, replay the per-pixel step as one CUDA graph


class NaiveSampler(Sampler):
    """One full forward pass per pixel: H*W passes for an image. The reference the fast
    sampler is checked against."""

    name = "naive"
    Options = PixelSamplerOptions

    @torch.no_grad()
    def sample(self, model: PixelCNN, n: int, generator: torch.Generator, **_: object) -> torch.Tensor:
        o = self.options
        c, h, w = model.image_shape()
        h = w = o.size or h
        levels = torch.zeros(n, c, h, w, dtype=torch.long, device=model.device)

        def draw(logits: torch.Tensor) -> torch.Tensor:  # (n, levels) -> (n, 1)
            return categorical(apply_temperature_top_k(logits, o.temperature, o.top_k),
                               generator)[:, None]
        return raster_sample(levels, model, draw).float() / (model.config.levels - 1)


class CachedSampler(Sampler):
    """Computes each layer's activation at each position exactly once.

    With a type-A first layer, every activation at position p depends only on pixels strictly
    before p in raster order, so once we reach p its activations are final. Walking pixels in
    order and computing every layer at p from the cached lower layers costs one forward pass in
    total, instead of H*W of them. Same draws, same samples as ``naive`` for the same seed.

    The per-pixel step is static (``genzoo.nn.autoregressive``), so on a GPU it is captured once as a
    CUDA graph and replayed H*W times (``cuda_graph=false`` runs it kernel by kernel).
    """

    name = "cached"
    Options = CachedSamplerOptions

    @torch.no_grad()
    def sample(self, model: PixelCNN, n: int, generator: torch.Generator, **_: object) -> torch.Tensor:
        o = self.options
        _, h, w = model.image_shape()
        h = w = o.size or h
        walk = PixelWalk(model, n, h, w, o.temperature, o.top_k,
                         uniforms(generator, (h * w, n), model.device))
        raster_steps(walk.step, h, w, model.device, o.cuda_graph)
        return walk.levels.view(n, 1, h, w).float() / (model.config.levels - 1)


class PixelWalk:
    """The cached sampler's state: padded canvases and per-block caches, flattened so a step
    reads its windows with ``index_select`` at the position counter ``pos`` on the device."""

    def __init__(self, model: PixelCNN, n: int, h: int, w: int, temperature: float,
                 top_k: int | None, u: torch.Tensor):
        cfg, dev = model.config, model.device
        dtype = model.output.weight.dtype
        self.model, self.temperature, self.top_k, self.u = model, temperature, top_k, u
        k = cfg.kernel_size
        self.win_in = window_index(h, w, k, k).to(dev)  # into the input canvas, padded by k // 2
        self.win_3 = window_index(h, w, 3, 3).to(dev)  # into each block's cache, padded by 1
        self.canvas = torch.zeros(n, cfg.channels, (h + k - 1) * (w + k - 1), device=dev, dtype=dtype)
        # first layer as a (B, C*k*k) @ (C*k*k, F) matmul over the window
        self.w_in = model.input_conv.masked_weight().flatten(1).t()
        self.blocks = [(blk, torch.zeros(n, blk.conv1.out_channels, (h + 2) * (w + 2), device=dev,
                                         dtype=dtype), blk.pixel_conv.masked_weight().flatten(1).t())
                       for blk in model.blocks]
        self.head = [conv.masked_weight()[:, :, 0, 0] for conv in model.head]
        self.levels = torch.zeros(n, h * w, dtype=torch.long, device=dev)
        self.pos = torch.zeros(1, dtype=torch.long, device=dev)

    def step(self) -> None:
        m, p = self.model, self.pos
        win = self.win_in.index_select(0, p)[0]
        centre = win[win.numel() // 2:][:1]  # the pixel itself, in canvas coordinates
        x = self.canvas.index_select(2, win).flatten(1)
        hcur = F.relu(torch.addmm(m.input_conv.bias, x, self.w_in))
        win3 = self.win_3.index_select(0, p)[0]
        for blk, cache, w3 in self.blocks:
            a = F.relu(F.linear(hcur, blk.conv1.weight[:, :, 0, 0], blk.conv1.bias))
            cache.index_copy_(2, win3[4:5], a[:, :, None])
            b = F.relu(torch.addmm(blk.pixel_conv.bias, cache.index_select(2, win3).flatten(1), w3))
            hcur = hcur + F.relu(F.linear(b, blk.conv2.weight[:, :, 0, 0], blk.conv2.bias))
        for conv, weight in zip(m.head, self.head):
            hcur = F.relu(F.linear(hcur, weight, conv.bias))
        logits = F.linear(hcur, m.output.weight[:, :, 0, 0], m.output.bias)
        logits = apply_temperature_top_k(logits, self.temperature, self.top_k)
        value = categorical_from_uniform(logits, self.u.index_select(0, p))
        self.levels.index_copy_(1, p, value[:, None])
        self.canvas.index_copy_(2, centre, (value.to(self.canvas.dtype) / m.config.levels)[:, None, None])
        p.add_(1)
