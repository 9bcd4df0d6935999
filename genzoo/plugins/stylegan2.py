"""StyleGAN2 (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN"; Foster
ch. 10), sized for small data and CPUs, with DiffAugment (Zhao et al. 2020) for the 1,636 twemoji.

- A mapping network f: z -> w (an MLP whose learning rate is 100x lower, ``mapping_lr_mul``)
  turns the Gaussian z into an intermediate latent w; every synthesis layer gets its own copy of
  w (``num_ws`` of them), which is what style mixing swaps.
- The synthesis network starts from a learned 4x4 constant. Each layer is a *modulated*
  convolution: an affine map A(w) scales the input channels ("style"), and *demodulation*
  divides each output channel by the norm the scaled weights would give it (the paper's fix for
  AdaIN's droplet artefacts). Per-pixel noise with a learned strength per layer adds
  stochastic detail. Skip architecture: each resolution adds its toRGB output to the
  upsampled image of the resolution below.
- A residual discriminator with a minibatch-stddev channel at 4x4.
- Non-saturating logistic loss; R1 on reals every ``r1_interval`` steps, scaled by the
  interval (lazy regularisation, the optimizer's lr and betas adjusted as in the paper); style
  mixing with probability 0.9; an EMA generator (the trainer's ``train.ema_decay``, which
  averages the whole Model, the tracked w-average buffer included).
- Equalized learning rate everywhere: weights are stored N(0, 1) and scaled by He's constant
  at run time, so Adam's steps are the same size for every layer.
- DiffAugment (colour, translation, cutout) on every image the discriminator sees, real and
  fake, in both players' steps: with 1.6k images D otherwise memorises them in minutes.

Resampling: bilinear x2 upsampling is the paper's [1, 3, 3, 1] FIR filter (edges replicated
rather than zero-padded); downsampling uses a 2x2 box filter instead, cheaper on a CPU.

The latent protocol's latent is **w**, not z (``sample_latent`` maps z through the mapping
network; ``decode`` broadcasts w to every layer): ``zoo interpolate`` then morphs in W, where
the paper measures perceptual path length, and its ``--temperature`` (about ``prior_mean``, the
tracked w-average) is the truncation trick.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from genzoo.errors import ConfigError
from genzoo.family import ImageSample, Model, ModelConfig, Sampler, fused_adam_ok, gaussian
from genzoo.nn.utils import frozen, square_image_config

AUGMENTS = ("color", "translation", "cutout")
NoiseMode = Literal["const", "random", "none"]


# -- config -----------------------------------------------------------------------------------

@dataclass
class StyleGAN2Config(ModelConfig):
    image_size: int = 64  # a power of two >= 8
    channels: int = 3
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    mapping_lr_mul: float = 0.01  # the mapping MLP learns 100x slower (paper, appendix B)
    channel_base: int = 16384  # feature maps at resolution r: min(channel_base // r, channel_max)
    channel_max: int = 512
    mbstd_group: int = 4  # minibatch-stddev group size (largest divisor of the batch up to it)
    style_mixing: float = 0.9  # probability that a training image mixes two w's
    r1_gamma: float = 10.0  # R1 weight; 0 turns R1 off
    r1_interval: int = 16  # lazy regularisation: R1 every this many steps, scaled by it
    w_avg_beta: float = 0.995  # the w-average (truncation's centre) tracks the mapping's outputs
    augment: str = "color,translation,cutout"  # DiffAugment policy, comma-separated; "" for none

    def __post_init__(self) -> None:
        if self.image_size < 8 or self.image_size & (self.image_size - 1):
            raise ValueError(f"image_size must be a power of two >= 8, got {self.image_size} "
                             "(resize the data with --set data.size=32 or 64)")
        for key in ("channels", "z_dim", "w_dim", "mapping_layers", "channel_base", "channel_max",
                    "mbstd_group", "r1_interval"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not 0 < self.mapping_lr_mul <= 1:
            raise ValueError(f"mapping_lr_mul must be in (0, 1], got {self.mapping_lr_mul}")
        if not 0 <= self.style_mixing <= 1:
            raise ValueError(f"style_mixing must be a probability in [0, 1], got {self.style_mixing}")
        if not (math.isfinite(self.r1_gamma) and self.r1_gamma >= 0):
            raise ValueError(f"r1_gamma must be a finite number >= 0, got {self.r1_gamma}")
        if not 0 <= self.w_avg_beta < 1:
            raise ValueError(f"w_avg_beta must be in [0, 1), got {self.w_avg_beta}")
        bad = [p for p in augment_policy(self.augment) if p not in AUGMENTS]
        if bad:
            raise ValueError(f"unknown augment {bad[0]!r}; valid: {', '.join(AUGMENTS)} "
                             "(comma-separated, or '' for none)")

    def width(self, resolution: int) -> int:
        """Feature maps at a resolution (the paper's configs: base / r, capped)."""
        return min(self.channel_base // resolution, self.channel_max) or 1

    @property
    def num_ws(self) -> int:
        """Copies of w the synthesis network takes: one per modulated conv and the last toRGB
        (each toRGB shares its w with the next block's first conv)."""
        return 2 * int(math.log2(self.image_size)) - 2


def augment_policy(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


# -- DiffAugment (Zhao et al. 2020) -----------------------------------------------------------
# Differentiable, so G's gradient flows through the augmentation of its fakes; randomness from
# the global RNG, which the trainer checkpoints. Images in [-1, 1].

def rand_color(x: torch.Tensor) -> torch.Tensor:
    """Random brightness (+-0.5), saturation (x0..2) and contrast (x0.5..1.5) per image."""
    n = x.shape[0]
    x = x + (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean


def rand_translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to `ratio` of its size, zero-filling what comes in."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (n, 1, 1), device=x.device)
    tx = torch.randint(-sw, sw + 1, (n, 1, 1), device=x.device)
    gy = (torch.arange(h, device=x.device).view(1, h, 1) + ty + 1).clamp(0, h + 1)
    gx = (torch.arange(w, device=x.device).view(1, 1, w) + tx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])  # the zero border every out-of-range index lands on
    b = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded.permute(0, 2, 3, 1)[b, gy, gx].permute(0, 3, 1, 2)


def rand_cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero a random square of `ratio` of the image's side in each image (clipped at edges)."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((ys >= cy - ch // 2) & (ys < cy - ch // 2 + ch)
              & (xs >= cx - cw // 2) & (xs < cx - cw // 2 + cw))
    return x * (~inside).unsqueeze(1).to(x.dtype)


_AUGMENT_FNS = {"color": rand_color, "translation": rand_translation, "cutout": rand_cutout}


def diff_augment(x: torch.Tensor, policy: str | list[str]) -> torch.Tensor:
    """DiffAugment: the policy's transforms in order ("color,translation,cutout")."""
    for name in augment_policy(policy) if isinstance(policy, str) else policy:
        x = _AUGMENT_FNS[name](x)
    return x


# -- equalized-learning-rate layers -----------------------------------------------------------

def lrelu(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU times sqrt(2): He's gain keeps activations at unit variance."""
    return F.leaky_relu(x, 0.2) * math.sqrt(2)


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate; `lr_mul` scales its effective learning rate
    (the mapping network's 0.01) by storing weights 1/lr_mul larger and scaling them back."""

    def __init__(self, c_in: int, c_out: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in) / lr_mul)
        self.bias = nn.Parameter(torch.full((c_out,), float(bias_init) / lr_mul))
        self.weight_gain, self.lr_mul, self.activate = lr_mul / math.sqrt(c_in), lr_mul, activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.lr_mul)
        return lrelu(x) if self.activate else x


class EqualConv2d(nn.Module):
    """Conv with equalized learning rate (the discriminator's layers); `down` halves the size
    first with a 2x2 box filter."""

    def __init__(self, c_in: int, c_out: int, kernel: int, bias: bool = True,
                 activate: bool = True, down: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
        self.weight_gain = 1 / math.sqrt(c_in * kernel * kernel)
        self.activate, self.down, self.padding = activate, down, kernel // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down:
            x = F.avg_pool2d(x, 2)
        x = F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.padding)
        return lrelu(x) if self.activate else x


# -- generator --------------------------------------------------------------------------------

def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    """f: z -> w, an MLP on the normalised z; it also keeps w_avg, the running mean of its
    outputs during training, the centre of the truncation trick."""

    def __init__(self, cfg: StyleGAN2Config):
        super().__init__()
        dims = [cfg.z_dim] + [cfg.w_dim] * cfg.mapping_layers
        self.net = nn.Sequential(*[EqualLinear(a, b, lr_mul=cfg.mapping_lr_mul, activate=True)
                                   for a, b in zip(dims[:-1], dims[1:])])
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(normalize_2nd_moment(z))


class ModulatedConv2d(nn.Module):
    """Weight demodulation (paper sec. 2.2): w' = s_i w, then each output channel divided by
    sqrt(sum w'^2). Computed by scaling activations instead of weights (the paper's 'non-fused'
    form: x * s, one shared conv, * demod) - the same numbers as a per-sample grouped conv,
    and a plain batched conv is faster on a CPU."""

    def __init__(self, c_in: int, c_out: int, kernel: int, w_dim: int, demodulate: bool = True,
                 up: bool = False):
        super().__init__()
        self.affine = EqualLinear(w_dim, c_in, bias_init=1.0)  # styles start at 1: a plain conv
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))
        self.weight_gain = 1 / math.sqrt(c_in * kernel * kernel)
        self.demodulate, self.up, self.padding = demodulate, up, kernel // 2

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)  # (n, c_in)
        weight = self.weight * self.weight_gain
        x = x * styles.to(x.dtype)[:, :, None, None]
        if self.up:  # bilinear x2 is the paper's [1, 3, 3, 1] upsampling filter
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = F.conv2d(x, weight.to(x.dtype), padding=self.padding)
        if self.demodulate:
            # sum over (c_in, k, k) of (s_i w)^2 = styles^2 @ sum_k w^2: no per-sample weights;
            # in float32 (an 8-bit mantissa under bf16 autocast would round the norm)
            wsq = weight.float().square().sum(dim=(2, 3))  # (c_out, c_in)
            d = (styles.float().square() @ wsq.t() + 1e-8).rsqrt()
            x = x * d.to(x.dtype)[:, :, None, None]
        return x


class SynthesisLayer(nn.Module):
    """Modulated conv, per-pixel noise with a learned strength, bias, leaky ReLU."""

    def __init__(self, c_in: int, c_out: int, w_dim: int, resolution: int, up: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(c_in, c_out, 3, w_dim, up=up)
        self.noise_strength = nn.Parameter(torch.zeros(()))  # starts silent (paper)
        self.bias = nn.Parameter(torch.zeros(c_out))
        # 'const' noise: one fixed map, so decode(w) is a function (interpolations don't flicker)
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.resolution = resolution

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: NoiseMode = "random",
                generator: torch.Generator | None = None) -> torch.Tensor:
        x = self.conv(x, w)
        n, r = x.shape[0], self.resolution
        if noise_mode == "random":
            noise = (torch.randn(n, 1, r, r, device=x.device, dtype=x.dtype) if generator is None
                     else gaussian(generator, (n, 1, r, r), x.device, x.dtype))
            x = x + noise * self.noise_strength.to(x.dtype)
        elif noise_mode == "const":
            x = x + (self.noise_const * self.noise_strength).to(x.dtype)
        return lrelu(x + self.bias.to(x.dtype)[:, None, None])


class ToRGB(nn.Module):
    """1x1 modulated conv without demodulation (the output's scale matters), plus a bias."""

    def __init__(self, c_in: int, channels: int, w_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(c_in, channels, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias.to(x.dtype)[:, None, None]


class SynthesisBlock(nn.Module):
    """One resolution: (upsampling conv,) conv, toRGB added to the upsampled image (skip)."""

    def __init__(self, c_in: int, c_out: int, cfg: StyleGAN2Config, resolution: int):
        super().__init__()
        self.first = resolution == 4
        if self.first:
            self.const = nn.Parameter(torch.randn(c_out, 4, 4))
        else:
            self.conv0 = SynthesisLayer(c_in, c_out, cfg.w_dim, resolution, up=True)
        self.conv1 = SynthesisLayer(c_out, c_out, cfg.w_dim, resolution)
        self.torgb = ToRGB(c_out, cfg.channels, cfg.w_dim)
        self.num_conv = 1 if self.first else 2

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor,
                noise_mode: NoiseMode, generator: torch.Generator | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        i = 0
        if self.first:
            x = self.const.to(ws.dtype).expand(ws.shape[0], -1, -1, -1)
        else:
            x = self.conv0(x, ws[:, 0], noise_mode, generator)
            i = 1
        x = self.conv1(x, ws[:, i], noise_mode, generator)
        y = self.torgb(x, ws[:, i + 1])
        if img is not None:
            img = F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False)
        return x, (y if img is None else img + y)


class SynthesisNetwork(nn.Module):
    """ws (n, num_ws, w_dim) -> image in about [-1, 1] (unbounded: no tanh, as in the paper)."""

    def __init__(self, cfg: StyleGAN2Config):
        super().__init__()
        resolutions = [2 ** i for i in range(2, int(math.log2(cfg.image_size)) + 1)]
        self.blocks = nn.ModuleList(
            SynthesisBlock(cfg.width(max(r // 2, 4)), cfg.width(r), cfg, r) for r in resolutions)

    def forward(self, ws: torch.Tensor, noise_mode: NoiseMode = "random",
                generator: torch.Generator | None = None) -> torch.Tensor:
        x = img = None
        i = 0
        for block in self.blocks:
            x, img = block(x, img, ws[:, i:i + block.num_conv + 1], noise_mode, generator)
            i += block.num_conv
        return img


# -- discriminator ----------------------------------------------------------------------------

def minibatch_stddev(x: torch.Tensor, group: int) -> torch.Tensor:
    """Appends one channel: the stddev of each feature over a group of images, averaged - so D
    can see a batch with too little variety (Karras et al. 2018). The group is the largest
    divisor of the batch up to `group`."""
    n, c, h, w = x.shape
    g = max(d for d in range(1, min(group, n) + 1) if n % d == 0)
    y = x.float().reshape(g, -1, c, h, w)
    y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (n / g,)
    y = y.repeat(g).reshape(n, 1, 1, 1).expand(n, 1, h, w).to(x.dtype)
    return torch.cat([x, y], dim=1)


class DiscriminatorBlock(nn.Module):
    """Residual: two 3x3 convs (the second halves the size) beside a downsampled 1x1 skip, summed
    and scaled by 1/sqrt(2) to keep the variance."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv0 = EqualConv2d(c_in, c_in, 3)
        self.conv1 = EqualConv2d(c_in, c_out, 3, down=True)
        self.skip = EqualConv2d(c_in, c_out, 1, bias=False, activate=False, down=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.skip(x) + self.conv1(self.conv0(x))) * math.sqrt(0.5)


class Discriminator(nn.Module):
    """fromRGB, residual blocks down to 4x4, minibatch stddev, conv, two dense layers -> logit."""

    def __init__(self, cfg: StyleGAN2Config):
        super().__init__()
        r = cfg.image_size
        self.fromrgb = EqualConv2d(cfg.channels, cfg.width(r), 1)
        blocks = []
        while r > 4:
            blocks.append(DiscriminatorBlock(cfg.width(r), cfg.width(r // 2)))
            r //= 2
        self.blocks = nn.Sequential(*blocks)
        c = cfg.width(4)
        self.mbstd_group = cfg.mbstd_group
        self.conv = EqualConv2d(c + 1, c, 3)
        self.fc = EqualLinear(c * 16, c, activate=True)
        self.out = EqualLinear(c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.fromrgb(x))
        x = self.conv(minibatch_stddev(x, self.mbstd_group))
        return self.out(self.fc(x.flatten(1))).flatten()


# -- the model --------------------------------------------------------------------------------

class StyleGAN2(Model):
    """Mapping + synthesis networks (the generator) and a residual discriminator."""

    Config = StyleGAN2Config

    def __init__(self, config: StyleGAN2Config):
        super().__init__(config)
        self.mapping = MappingNetwork(config)
        self.synthesis = SynthesisNetwork(config)
        self.discriminator = Discriminator(config)

    @classmethod
    def config_from_data(cls, data: Any) -> dict[str, Any]:
        return square_image_config(cls, data, 32)

    @property
    def generator_modules(self) -> list[nn.Module]:
        return [self.mapping, self.synthesis]

    # -- the generator -----------------------------------------------------------------------
    def truncate(self, w: torch.Tensor, psi: float = 1.0) -> torch.Tensor:
        """The truncation trick in W: w_avg + psi (w - w_avg); psi = 0 is the average image."""
        if psi == 1.0:
            return w
        return self.mapping.w_avg.to(w) + psi * (w - self.mapping.w_avg.to(w))

    def broadcast(self, w: torch.Tensor) -> torch.Tensor:
        """(n, w_dim) -> (n, num_ws, w_dim): the same w for every layer."""
        return w[:, None].expand(-1, self.config.num_ws, -1)

    def mix(self, ws: torch.Tensor, w2: torch.Tensor, cutoff: int | torch.Tensor) -> torch.Tensor:
        """Style mixing: layers from `cutoff` on take w2 (fine styles) instead of ws's."""
        idx = torch.arange(self.config.num_ws, device=ws.device)
        take = (idx >= torch.as_tensor(cutoff, device=ws.device).view(-1, 1))[..., None]
        return torch.where(take, w2[:, None].to(ws.dtype), ws)

    def synthesize(self, ws: torch.Tensor, noise_mode: NoiseMode = "random",
                   generator: torch.Generator | None = None) -> torch.Tensor:
        return self.synthesis(ws, noise_mode, generator)

    def forward(self, z: torch.Tensor, psi: float = 1.0) -> torch.Tensor:
        """z -> images in about [-1, 1], random noise from the global RNG (no mixing)."""
        return self.synthesize(self.broadcast(self.truncate(self.mapping(z), psi)))

    # -- latent protocol: the latent is w -----------------------------------------------------
    @property
    def latent_dim(self) -> int:
        return self.config.w_dim

    @property
    def prior_mean(self) -> torch.Tensor:
        """The tracked w-average: `zoo interpolate --temperature psi` truncates toward it."""
        return self.mapping.w_avg

    def sample_latent(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """w = f(z), z ~ N(0, I) drawn on the generator's device (a seed means the same w
        everywhere)."""
        with torch.no_grad():
            return self.mapping(gaussian(generator, (n, self.config.z_dim), self.device))

    def image_shape(self) -> tuple[int, int, int]:
        c = self.config
        return c.channels, c.image_size, c.image_size

    def decode(self, w: torch.Tensor) -> torch.Tensor:
        """w (n, w_dim) -> images in [0, 1], the same w for every layer and the constant noise
        maps, so the same w always gives the same image."""
        return to_unit(self.synthesize(self.broadcast(w), "const"))

    # -- training -----------------------------------------------------------------------------
    def configure_optimizers(self, train: Any) -> dict[str, torch.optim.Optimizer]:
        """Adam for each player (the paper's betas are (0, 0.99), set in the registry). D's lr
        and betas are adjusted for lazy R1: c = k / (k + 1), lr * c, beta ** c (paper, sec. 3.1)."""
        k = self.config.r1_interval
        c = k / (k + 1) if self.config.r1_gamma > 0 else 1.0
        b1, b2 = train.betas

        def adam(params: list[torch.Tensor], f: float) -> torch.optim.Optimizer:
            return torch.optim.Adam(params, lr=train.lr * f, betas=(b1 ** f, b2 ** f), eps=1e-8,
                                    weight_decay=train.weight_decay, fused=fused_adam_ok(params))
        g_params = [p for m in self.generator_modules for p in m.parameters()]
        return {"discriminator": adam(list(self.discriminator.parameters()), c),
                "generator": adam(g_params, 1.0)}

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, self.config.augment)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """D's logit on images in [-1, 1], after DiffAugment (real and fake alike)."""
        return self.discriminator(self.augment(x))

    def training_ws(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """ws for n training images, with style mixing at probability ``style_mixing``: a
        random crossover layer after which a second z's w takes over. Returns (ws, w of the first
        z). The global RNG: it is checkpointed, so a resumed run draws the same."""
        cfg = self.config
        w = self.mapping(torch.randn(n, cfg.z_dim, device=device))
        ws = self.broadcast(w)
        if cfg.style_mixing > 0 and cfg.num_ws > 1:
            w2 = self.mapping(torch.randn(n, cfg.z_dim, device=device))
            cutoff = torch.randint(1, cfg.num_ws, (n,), device=device)
            keep = torch.rand(n, device=device) >= cfg.style_mixing
            cutoff = torch.where(keep, torch.full_like(cutoff, cfg.num_ws), cutoff)
            ws = self.mix(ws, w2, cutoff)
        return ws, w

    def r1_penalty(self, real: torch.Tensor) -> torch.Tensor:
        """R1 (Mescheder et al. 2018): E ||grad_x D(x)||^2 on (augmented) reals, in float32
        whatever autocast region the caller is in."""
        with torch.autocast(real.device.type, enabled=False):
            x = real.detach().float().requires_grad_(True)
            score = self.score(x).float()
            (grad,) = torch.autograd.grad(score.sum(), x, create_graph=True)
            return grad.square().flatten(1).sum(1).mean()

    def _real(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return batch["x"] * 2 - 1

    def training_step(self, batch: dict[str, torch.Tensor], optimizers: dict[str, Any],
                      ctx: Any) -> dict[str, torch.Tensor]:
        cfg = self.config
        real = self._real(batch)
        n = real.shape[0]
        # D: logistic loss on real and (detached) fake, both augmented
        with ctx.autocast():
            with torch.no_grad():
                fake = self.synthesize(self.training_ws(n, real.device)[0])
            d_real, d_fake = self.score(real).float(), self.score(fake).float()
            d_loss = F.softplus(d_fake).mean() + F.softplus(-d_real).mean()
        ctx.optimize(d_loss, optimizers["discriminator"], "discriminator")
        out = {"d_loss": d_loss.detach(), "d_real": d_real.detach().mean(),
               "d_fake": d_fake.detach().mean()}
        # lazy R1: every r1_interval steps, its own D step, weighted by the interval so its
        # average pull is what R1 every step would give
        if cfg.r1_gamma > 0:
            if ctx.step % cfg.r1_interval == 0:
                r1 = self.r1_penalty(real)
                ctx.optimize(r1 * (cfg.r1_gamma / 2 * cfg.r1_interval),
                             optimizers["discriminator"], "discriminator")
                # the interval's share: a logging window's mean is then the mean penalty
                out["r1"] = r1.detach() * cfg.r1_interval
            else:
                out["r1"] = torch.zeros((), device=real.device)
        # G: the non-saturating loss, softplus(-D(G(z))), through frozen D
        with frozen(self.discriminator), ctx.autocast():
            ws, w = self.training_ws(n, real.device)
            g_loss = F.softplus(-self.score(self.synthesize(ws)).float()).mean()
        ctx.optimize(g_loss, optimizers["generator"], "generator")
        with torch.no_grad():  # truncation's centre follows the mapping network
            self.mapping.w_avg.lerp_(w.detach().float().mean(0), 1 - cfg.w_avg_beta)
        g_loss = g_loss.detach()
        # "loss" is what the trainer watches for NaN/inf: the sum is non-finite if either is
        return {"loss": out["d_loss"] + g_loss, "g_loss": g_loss, **out}

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Both players' losses on a batch, no update (held-out monitoring, FLOP counts)."""
        real = self._real(batch)
        fake = self.synthesize(self.training_ws(real.shape[0], real.device)[0])
        d_real, d_fake = self.score(real).float(), self.score(fake).float()
        d_loss = F.softplus(d_fake).mean() + F.softplus(-d_real).mean()
        g_loss = F.softplus(-d_fake).mean()
        return {"loss": d_loss + g_loss, "d_loss": d_loss, "g_loss": g_loss,
                "d_real": d_real.mean(), "d_fake": d_fake.mean()}


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] -> [0, 1], clamped (the synthesis has no tanh)."""
    return ((x.float() + 1) / 2).clamp(0, 1)


# -- sampling ---------------------------------------------------------------------------------

def _check_psi(psi: float) -> None:
    if not 0 <= psi <= 1:  # also nan
        raise ValueError(f"truncation must be a number psi in [0, 1] (1: none, 0: the average "
                         f"image), got {psi}")


def _check_noise(noise: str) -> None:
    if noise not in ("const", "random", "none"):
        raise ValueError(f"noise must be const, random or none, got {noise!r}")


@dataclass
class PriorOptions:
    truncation: float = 1.0  # psi: w -> w_avg + psi (w - w_avg); 0.7 trades variety for quality
    noise: str = "const"  # the per-pixel noise: const (fixed maps), random (from the seed), none

    def __post_init__(self) -> None:
        _check_psi(self.truncation)
        _check_noise(self.noise)


class PriorSampler(Sampler):
    """z ~ N(0, I) -> w, truncated toward the w-average, -> the synthesis network."""

    name = "prior"
    Options = PriorOptions

    def latent(self, model: StyleGAN2, n: int, generator: torch.Generator) -> torch.Tensor:
        """Truncated w's for n images."""
        return model.truncate(model.sample_latent(n, generator), self.options.truncation)

    @torch.no_grad()
    def sample(self, model: StyleGAN2, n: int, generator: torch.Generator,
               **_: Any) -> torch.Tensor:
        ws = model.broadcast(self.latent(model, n, generator))
        return to_unit(model.synthesize(ws, self.options.noise, generator))


@dataclass
class MixingOptions(PriorOptions):
    columns: int = 4  # column sources: the grid is columns + 1 images wide
    coarse: int | None = None  # w copies from the row source (default: the 4x4 and 8x8 layers)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.columns <= 64:
            raise ValueError(f"columns must be from 1 to 64, got {self.columns}")
        if self.coarse is not None and self.coarse < 1:
            raise ValueError(f"coarse must be >= 1, got {self.coarse}")
        if self.noise == "random":  # fresh noise per image would differ between a source and its mixes
            raise ValueError("noise must be const or none for the mixing grid, got 'random'")


class MixingSampler(Sampler):
    """The paper's style-mixing figure as one grid, `columns` + 1 images wide: the top row holds
    the column sources (after a blank corner), the left column the row sources, and the image at
    (row i, column j) takes its coarse styles (the first `coarse` w copies: pose, shape) from row
    source i and the rest (colours, fine detail) from column source j. `n` images in all: a
    grid cut to n, so --n 25 with columns=4 is the full 5 x 5."""

    name = "mixing"
    Options = MixingOptions

    def cutoff(self, model: StyleGAN2) -> int:
        k = model.config.num_ws
        return self.options.coarse if self.options.coarse is not None else min(4, k - 1)

    def check(self, model: StyleGAN2, inputs: dict[str, Any]) -> None:
        k = model.config.num_ws
        if self.options.coarse is not None and self.options.coarse >= k:
            raise ConfigError(f"coarse must be from 1 to {k - 1}: this {model.config.image_size} "
                              f"px model has {k} w copies, got {self.options.coarse}")

    def grid_ws(self, model: StyleGAN2, rows: int, generator: torch.Generator
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(row sources' w, column sources' w, the mixed ws (rows, columns, num_ws, w_dim))."""
        self.check(model, {})
        cols = self.options.columns
        w = PriorSampler(truncation=self.options.truncation).latent(model, cols + rows, generator)
        w_col, w_row = w[:cols], w[cols:]
        ws = model.broadcast(w_row).repeat_interleave(cols, 0)  # row i, col j at i * cols + j
        mixed = model.mix(ws, w_col.repeat(rows, 1), self.cutoff(model))
        return w_row, w_col, mixed.view(rows, cols, *mixed.shape[1:])

    @torch.no_grad()
    def sample(self, model: StyleGAN2, n: int, generator: torch.Generator,
               **_: Any) -> ImageSample:
        cols = self.options.columns
        width = cols + 1
        rows = max(1, -(-n // width) - 1)
        w_row, w_col, mixed = self.grid_ws(model, rows, generator)
        noise = self.options.noise

        def draw(ws: torch.Tensor) -> torch.Tensor:
            return to_unit(model.synthesize(ws, noise))
        top = draw(model.broadcast(w_col))
        left = draw(model.broadcast(w_row))
        cells = draw(mixed.flatten(0, 1)).view(rows, cols, *top.shape[1:])
        corner = torch.ones_like(top[:1])  # blank (white) above the row sources
        grid = [torch.cat([corner, top])]
        grid += [torch.cat([left[i:i + 1], cells[i]]) for i in range(rows)]
        return ImageSample(torch.cat(grid)[:n].cpu(), nrow=width)
