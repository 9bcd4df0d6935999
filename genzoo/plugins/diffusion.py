"""Denoising diffusion models (Ho et al. 2020; Song et al. 2021, DDIM; Foster ch. 8).

Training: take an image x0 (normalised with the training set's per-channel mean and std), pick a
noise level t in (0, 1], mix
    x_t = signal_rate(t) * x0 + noise_rate(t) * eps,      eps ~ N(0, I),
with signal_rate^2 + noise_rate^2 = 1 (the *diffusion schedule*), and teach a U-Net to tell the
noise eps back from x_t, given the noise variance noise_rate(t)^2. The loss is the mean absolute
(book) or squared error between the true and the predicted noise.

Sampling runs the mixing backwards: from pure noise, predict the noise, hence the clean image
x0_hat = (x_t - noise_rate * eps_hat) / signal_rate, and re-mix x0_hat and eps_hat at the next,
lower noise level. Done deterministically that is DDIM (the book's ``reverse_diffusion``); adding
fresh noise at each step gives DDPM's ancestral sampler. The samplers live apart from the network
(``DDIMSampler``, ``DDPMSampler``) as diffusers keeps its schedulers apart from its U-Net.

The U-Net is the book's: a sinusoidal embedding of the noise variance, broadcast over the image and
concatenated with a 1x1 convolution of it; down blocks of residual blocks whose outputs are kept
as skips, then average pooling; a bottleneck of residual blocks; up blocks that upsample
bilinearly and concatenate the skips back; a zero-initialised 1x1 convolution to the noise.

What comes from elsewhere: ``timm.layers`` for the activation factory (``get_act_layer``, swish as
the book's Keras model uses) and ``create_conv2d`` (``padding="same"``, Keras' padding); timm's
``ModelEmaV3`` keeps the EMA weights (the trainer's ``ema_decay``) that ``load_run`` samples from;
einops broadcasts the noise embedding over the image and lays out the reverse-process grid.
timm has no diffusion U-Net: the blocks follow the book's code.

The latent protocol of ``genzoo.nn.latent``: the latent of an image is the initial noise map
(flattened to ``latent_dim`` = C*H*W numbers) and ``decode`` is deterministic DDIM, so
``zoo interpolate RUN --method spherical`` morphs between two noise maps (the book's figure).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from timm.layers import create_conv2d, get_act_layer
from torch import nn

from genzoo.errors import ConfigError
from genzoo.family import ImageSample, Model, Sampler, gaussian

Schedule = Literal["offset_cosine", "cosine", "linear"]
SCHEDULES = ("offset_cosine", "cosine", "linear")


@dataclass
class DiffusionConfig:
    image_size: int = 64
    channels: int = 3
    widths: tuple[int, ...] = (32, 64, 96, 128)  # one down/up block per width but the last,
    #                                             the bottleneck's (book: 32, 64, 96 | 128)
    block_depth: int = 2  # residual blocks per down/up block and in the bottleneck
    embedding_dim: int = 32  # sinusoidal noise-variance embedding (book NOISE_EMBEDDING_SIZE)
    max_frequency: float = 1000.0  # embedding frequencies run geometrically from 1 to this
    noise_schedule: Schedule = "offset_cosine"  # (named apart from train.schedule, the lr's)
    timesteps: int = 1000  # the schedule's length: noise levels t = i / T, i = 1..T
    min_signal_rate: float = 0.02  # offset cosine: signal rate at t = 1 (book)
    max_signal_rate: float = 0.95  # offset cosine: signal rate at t = 0 (book)
    loss: Literal["mae", "mse"] = "mae"  # on the predicted noise (book: mean absolute error)
    # the DDIM sampler's (and ``decode``'s) reverse steps when it is not given steps (book: 20),
    # so a preset can carry the setting its figures were measured with
    sample_steps: int = 20
    # the DDIM sampler's eta when it is not given one: 0 is the book's deterministic DDIM; 1 draws
    # fresh noise at every step (DDPM's posterior), which lets the chain correct a small
    # network's mistakes (quick ddm-mnist, 1,000 training-split samples: 0.50 -> 0.61 confident
    # digits at 100 steps, 0.59 at 50; test 0.475 -> 0.545). ``decode`` stays deterministic
    # whatever this says: a noise map must name one image.
    sample_eta: float = 0.0
    channels_last: bool = True  # NHWC activations: oneDNN / cuDNN convolutions run faster

    def __post_init__(self) -> None:
        if self.noise_schedule not in SCHEDULES:  # direct construction; --set is checked by Literal
            raise ValueError(f"unknown noise_schedule {self.noise_schedule!r}; valid: "
                             f"{', '.join(SCHEDULES)}")
        if len(self.widths) < 2 or min(self.widths) < 1:
            raise ValueError(f"widths needs >= 2 positive entries (down blocks, then the "
                             f"bottleneck), got {list(self.widths)}")
        if self.block_depth < 1:
            raise ValueError(f"block_depth must be >= 1, got {self.block_depth}")
        stride = 2 ** (len(self.widths) - 1)
        if self.image_size % stride:
            near = stride * max(1, round(self.image_size / stride))
            raise ValueError(f"image_size {self.image_size} must be divisible by "
                             f"2**(len(widths) - 1) = {stride} (set data.size, e.g. {near})")
        if self.embedding_dim < 2 or self.embedding_dim % 2:
            raise ValueError(f"embedding_dim must be even and >= 2, got {self.embedding_dim}")
        if self.timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {self.timesteps}")
        if self.sample_steps < 1:  # > timesteps is the sampler's one-line error
            raise ValueError(f"sample_steps must be >= 1, got {self.sample_steps}")
        if not (math.isfinite(self.sample_eta) and self.sample_eta >= 0):
            raise ValueError(f"sample_eta must be a number >= 0, got {self.sample_eta}")
        if not 0 < self.min_signal_rate < self.max_signal_rate <= 1:
            raise ValueError("need 0 < min_signal_rate < max_signal_rate <= 1, got "
                             f"{self.min_signal_rate} and {self.max_signal_rate}")


# -- diffusion schedules ------------------------------------------------------------------------

def diffusion_schedule(name: str, t: torch.Tensor, min_signal_rate: float = 0.02,
                       max_signal_rate: float = 0.95,
                       timesteps: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """(noise_rates, signal_rates) at diffusion times t in [0, 1]; signal^2 + noise^2 = 1.

    - ``linear`` (Ho et al. 2020): betas rise linearly 1e-4 -> 0.02 over `timesteps` steps,
      signal^2 is the running product of (1 - beta); most of the image is gone well before t = 1.
    - ``cosine`` (Nichol & Dhariwal 2021's shape): signal = cos(angle), the angle running from 0
      (no noise at t = 0) to acos(min_signal_rate) rather than pi / 2, so that the clean-image
      estimate (x_t - noise * eps) / signal stays defined at t = 1 (they clip betas instead).
    - ``offset_cosine`` (the book's): the same angle, but running from acos(max_signal_rate) to
      acos(min_signal_rate), so t = 0 is not noise-free and t = 1 keeps 2% of the signal: the
      network never sees the degenerate ends.
    """
    t = t.double()
    if name == "linear":
        betas = 1e-4 + torch.arange(1, timesteps + 1, dtype=torch.float64) / timesteps * (0.02 - 1e-4)
        log_ab = torch.cat([torch.zeros(1, dtype=torch.float64), torch.log1p(-betas).cumsum(0)])
        i = (t * timesteps).round().long().clamp(0, timesteps)
        signal = torch.exp(0.5 * log_ab.to(t.device)[i])
        noise = torch.sqrt(-torch.expm1(2 * torch.log(signal)))  # sqrt(1 - signal^2), exact near 1
        return noise, signal
    if name == "cosine":
        angle = t * math.acos(min_signal_rate)
    elif name == "offset_cosine":
        start, end = math.acos(max_signal_rate), math.acos(min_signal_rate)
        angle = start + t * (end - start)
    else:
        raise ConfigError(f"unknown schedule {name!r}; valid: {', '.join(SCHEDULES)}")
    return torch.sin(angle), torch.cos(angle)


# -- the U-Net ----------------------------------------------------------------------------------

def sinusoidal_embedding(noise_variances: torch.Tensor, dim: int = 32,
                         max_frequency: float = 1000.0) -> torch.Tensor:
    """(B,) noise variances -> (B, dim): sin and cos at `dim`/2 frequencies spaced geometrically
    from 1 to `max_frequency` (the book's embedding; like a transformer's positions, but of a
    continuous value in [0, 1])."""
    freqs = torch.exp(torch.linspace(0.0, math.log(max_frequency), dim // 2,
                                     device=noise_variances.device))
    angles = 2.0 * math.pi * freqs * noise_variances.float()[:, None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class ResidualBlock(nn.Module):
    """Batch norm (no scale or shift, as the book's) -> 3x3 conv + swish -> 3x3 conv, plus the
    input (through a 1x1 conv when the width changes)."""

    def __init__(self, in_width: int, width: int):
        super().__init__()
        self.residual = nn.Identity() if in_width == width else nn.Conv2d(in_width, width, 1)
        # Keras BatchNormalization defaults: momentum 0.99 (PyTorch 0.01), epsilon 1e-3
        self.norm = nn.BatchNorm2d(in_width, eps=1e-3, momentum=0.01, affine=False)
        self.conv1 = create_conv2d(in_width, width, 3, padding="same")
        self.act = get_act_layer("swish")()
        self.conv2 = create_conv2d(width, width, 3, padding="same")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act(self.conv1(self.norm(x)))) + self.residual(x)


class UNet(nn.Module):
    """The book's noise model: (noisy images, noise variances) -> predicted noise."""

    def __init__(self, cfg: DiffusionConfig):
        super().__init__()
        self.cfg = cfg
        first, *down_widths = cfg.widths[:-1]
        widths, bottleneck, depth = cfg.widths[:-1], cfg.widths[-1], cfg.block_depth
        self.stem = nn.Conv2d(cfg.channels, widths[0], 1)
        self.down = nn.ModuleList()
        skips, w = [], widths[0] + cfg.embedding_dim  # image features ++ noise embedding
        for width in widths:
            blocks = nn.ModuleList()
            for _ in range(depth):
                blocks.append(ResidualBlock(w, width))
                w = width
                skips.append(w)
            self.down.append(blocks)
        self.middle = nn.ModuleList()
        for _ in range(depth):
            self.middle.append(ResidualBlock(w, bottleneck))
            w = bottleneck
        self.up = nn.ModuleList()
        for width in reversed(widths):
            blocks = nn.ModuleList()
            for _ in range(depth):
                blocks.append(ResidualBlock(w + skips.pop(), width))
                w = width
            self.up.append(blocks)
        self.head = nn.Conv2d(w, cfg.channels, 1)
        nn.init.zeros_(self.head.weight)  # start by predicting zero noise (book: zeros init)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor, noise_variances: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        emb = sinusoidal_embedding(noise_variances, cfg.embedding_dim, cfg.max_frequency)
        emb = repeat(emb.to(x.dtype), "b c -> b c h w", h=x.shape[-2], w=x.shape[-1])
        h = torch.cat([self.stem(x), emb], dim=1)
        skips = []
        for blocks in self.down:
            for block in blocks:
                h = block(h)
                skips.append(h)
            h = F.avg_pool2d(h, 2)
        for block in self.middle:
            h = block(h)
        for blocks in self.up:
            h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1))
        return self.head(h)


# -- the model ----------------------------------------------------------------------------------

class DiffusionModel(Model):
    """Book ch. 8's DiffusionModel: the U-Net, the schedule, the data statistics and the loss.
    Sampling is in ``DDIMSampler`` / ``DDPMSampler``; ``decode`` (deterministic DDIM from a noise
    map) serves the latent tools."""

    Config = DiffusionConfig
    modality = "image"
    likelihood_unit = None  # the noise-prediction loss is no likelihood

    def __init__(self, config: DiffusionConfig):
        super().__init__(config)
        self.network = UNet(config)
        if config.channels_last:
            self.network.to(memory_format=torch.channels_last)
        # the training set's per-channel statistics; set by ``setup`` and saved as artifacts,
        # so they are not weights (nor averaged by the EMA). Until then: [0, 1] -> [-1, 1].
        c = config.channels
        self.register_buffer("data_mean", torch.full((1, c, 1, 1), 0.5), persistent=False)
        self.register_buffer("data_std", torch.full((1, c, 1, 1), 0.5), persistent=False)
        # the schedule at every level i = 0..T, once, in float64 on the CPU (not buffers: MPS has
        # no float64, and model.float() must not round them); levels are drawn on the CPU too
        self._noise_rates, self._signal_rates = diffusion_schedule(
            config.noise_schedule, torch.arange(config.timesteps + 1, dtype=torch.float64) / config.timesteps,
            config.min_signal_rate, config.max_signal_rate, config.timesteps)

    @classmethod
    def config_from_data(cls, data: Any) -> dict:
        shape = getattr(data, "shape", None)
        return {"image_size": int(shape[-1]), "channels": int(shape[0])} if shape else {}

    def image_shape(self) -> tuple[int, int, int]:
        c = self.config
        return c.channels, c.image_size, c.image_size

    # -- data statistics (the book's Normalization layer, adapted to the training set) ----------
    @torch.no_grad()
    def setup(self, data: Any) -> None:
        x = data.x if hasattr(data, "x") else None
        if x is None or x.ndim != 4:
            return
        s1 = torch.zeros(x.shape[1], dtype=torch.float64)
        s2 = torch.zeros_like(s1)
        for i in range(0, len(x), 512):  # uint8 in chunks: no float copy of the whole set
            chunk = x[i:i + 512].double().cpu()
            chunk = chunk / 255.0 if x.dtype == torch.uint8 else chunk
            s1 += chunk.sum((0, 2, 3))
            s2 += (chunk ** 2).sum((0, 2, 3))
        count = x.shape[0] * x.shape[2] * x.shape[3]
        mean = s1 / count
        std = (s2 / count - mean ** 2).clamp_min(1e-12).sqrt()
        self.load_artifacts({"mean": mean.float(), "std": std.float()})

    def artifacts(self) -> dict[str, Any]:
        return {"mean": self.data_mean.flatten().cpu(), "std": self.data_std.flatten().cpu()}

    def load_artifacts(self, artifacts: dict[str, Any]) -> None:
        c = self.config.channels
        for key, buf in (("mean", self.data_mean), ("std", self.data_std)):
            value = torch.as_tensor(artifacts[key], dtype=torch.float32).flatten()
            if value.numel() != c:
                raise ValueError(f"{key} has {value.numel()} channels, the model {c}")
            buf.copy_(value.view(1, c, 1, 1))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.data_mean) / self.data_std

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() * self.data_std + self.data_mean).clamp(0, 1)

    # -- schedule ----------------------------------------------------------------------------
    @property
    def schedule_length(self) -> int:
        return self.config.timesteps

    def rates(self, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(noise_rates, signal_rates) at integer levels i in 0..T (on the CPU), shaped
        (B, 1, 1, 1), in the model's dtype on its device (a host-to-device copy, no sync)."""
        i = i.cpu()
        like = self.data_mean
        return tuple(r[i].view(-1, 1, 1, 1).to(like.device, like.dtype, non_blocking=True)
                     for r in (self._noise_rates, self._signal_rates))

    # -- network -----------------------------------------------------------------------------
    def forward(self, noisy: torch.Tensor, noise_rates: torch.Tensor) -> torch.Tensor:
        """Predicted noise for noisy images at the given noise rates ((B,) or (B, 1, 1, 1))."""
        return self.network(noisy, noise_rates.flatten() ** 2)

    def denoise(self, noisy: torch.Tensor, noise_rates: torch.Tensor,
                signal_rates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(predicted noise, predicted clean image), both in normalised units."""
        pred_noise = self(noisy, noise_rates).to(noisy.dtype)
        pred_images = (noisy - noise_rates * pred_noise) / signal_rates
        return pred_noise, pred_images

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x0 = self.normalise(batch["x"])
        noise = torch.randn_like(x0)
        levels = torch.randint(1, self.config.timesteps + 1, (x0.shape[0],))  # CPU RNG: resumable
        noise_rates, signal_rates = self.rates(levels)
        pred = self(signal_rates * x0 + noise_rates * noise, noise_rates).float()
        mae = (pred - noise).abs().mean()
        mse = ((pred - noise) ** 2).mean()
        return {"loss": mae if self.config.loss == "mae" else mse,
                "mae": mae.detach(), "mse": mse.detach()}

    def export_module(self) -> tuple[nn.Module, tuple[torch.Tensor, ...], dict[str, Any]]:
        """``zoo export``: one deterministic DDIM step (eta = 0), the loop a runtime drives."""
        g = torch.Generator().manual_seed(0)
        n = 2
        noisy = gaussian(g, (n, *self.image_shape()), self.data_mean.device)
        levels = level_sequence(self.schedule_length, 20)[:2]  # the first step of 20
        rates = [r.flatten() for lv in levels
                 for r in self.rates(torch.full((n,), lv, dtype=torch.long))]
        c, h, w = self.image_shape()
        return DDIMStep(self).eval(), (noisy, *rates), {
            "inputs": ["x", "noise_rate", "signal_rate", "next_noise_rate", "next_signal_rate"],
            "outputs": ["next_x", "image"],
            "what": f"one DDIM step (eta 0): x (B, {c}, {h}, {w}) at noise/signal rates (B,) -> "
                    "x at the next rates, and the clean-image prediction in [0, 1]; start from "
                    "x ~ N(0, I) at the rates of level T, rates from the run's "
                    f"{self.config.noise_schedule} schedule ({self.schedule_length} levels)"}

    # -- latent protocol (genzoo.nn.latent) ----------------------------------------------------
    @property
    def latent_dim(self) -> int:
        c, h, w = self.image_shape()
        return c * h * w

    def sample_latent(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Initial noise maps, flattened: drawn on the generator's device (the CPU), so a seed
        gives the same maps on every device."""
        return gaussian(generator, (n, self.latent_dim), self.data_mean.device)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Noise maps (n, latent_dim) -> images in [0, 1], by deterministic DDIM."""
        noise = z.view(-1, *self.image_shape()).to(self.data_mean.device)
        images, _ = reverse_diffusion(self, noise, self.config.sample_steps)
        return self.denormalise(images)


# -- samplers -----------------------------------------------------------------------------------

class DDIMStep(nn.Module):
    """``reverse_diffusion``'s deterministic step as a module (``zoo export``): the U-Net, the
    update x_t' = s' x0_hat + n' eps_hat, and the data statistics to show x0_hat in [0, 1]."""

    def __init__(self, model: DiffusionModel):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, noise_rate: torch.Tensor, signal_rate: torch.Tensor,
                next_noise_rate: torch.Tensor, next_signal_rate: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        n, s, n2, s2 = (r.view(-1, 1, 1, 1) for r in
                        (noise_rate, signal_rate, next_noise_rate, next_signal_rate))
        pred_noise, pred_images = self.model.denoise(x, n, s)
        return s2 * pred_images + n2 * pred_noise, self.model.denormalise(pred_images)


def level_sequence(timesteps: int, steps: int) -> list[int]:
    """`steps` + 1 integer noise levels from T down to 0, evenly spaced (the book's
    t = 1, 1 - 1/steps, ..., 0). Distinct while steps <= T."""
    return [round(timesteps * (1 - k / steps)) for k in range(steps + 1)]


def reverse_diffusion(model: DiffusionModel, noise: torch.Tensor, steps: int, eta: float = 0.0,
                      generator: torch.Generator | None = None, ancestral: bool = False,
                      frames: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run the reverse process from `noise` (normalised units) in `steps` steps; returns the
    final clean-image prediction and, if `frames` > 0, that many snapshots of x_t along the way
    (the first is the noise, the last the result).

    Each step predicts (eps_hat, x0_hat) at level t and moves to the lower level t':
      DDIM (Song et al. 2021, eq. 12):  x_t' = s' x0_hat + sqrt(n'^2 - sigma^2) eps_hat + sigma z,
          sigma = eta * (n' / n) * sqrt(1 - (s / s')^2); eta = 0 is deterministic (the book's).
      DDPM (Ho et al. 2020, ancestral): x_t' ~ q(x_t' | x_t, x0_hat), the Gaussian posterior with
          mean (s' beta / n^2) x0_hat + (sqrt(alpha) n'^2 / n^2) x_t and variance (n'^2 / n^2) beta,
          alpha = (s / s')^2, beta = 1 - alpha: the same distribution as DDIM with eta = 1.
    The last step returns x0_hat itself (diffusers' ``set_alpha_to_one``; the book's return)."""
    if (ancestral or eta > 0) and generator is None:
        # fresh noise comes only from the caller's generator: a seed must name the samples
        raise ValueError("a stochastic reverse process (eta > 0 or ancestral) needs a generator")
    T = model.schedule_length
    levels = level_sequence(T, steps)
    x = noise
    n_img = x.shape[0]
    keep = set()
    if frames > 0:
        keep = {round(k * steps / max(1, frames - 1)) for k in range(frames)}
    snapshots = [x] if 0 in keep else []
    pred_images = x
    for k in range(steps):
        level = torch.full((n_img,), levels[k], dtype=torch.long)
        n, s = model.rates(level)
        pred_noise, pred_images = model.denoise(x, n, s)
        if k == steps - 1:
            x = pred_images
        else:
            n2, s2 = model.rates(torch.full((n_img,), levels[k + 1], dtype=torch.long))
            alpha = (s / s2) ** 2
            if ancestral:
                beta = 1 - alpha
                mean = (s2 * beta / n ** 2) * pred_images + (alpha.sqrt() * n2 ** 2 / n ** 2) * x
                eps = gaussian(generator, x.shape, x.device, x.dtype)
                x = mean + eps * ((n2 ** 2 / n ** 2) * beta).sqrt()
            else:
                sigma = eta * (n2 / n) * (1 - alpha).clamp_min(0).sqrt()
                x = s2 * pred_images + (n2 ** 2 - sigma ** 2).clamp_min(0).sqrt() * pred_noise
                if eta > 0:
                    x = x + sigma * gaussian(generator, x.shape, x.device, x.dtype)
        if k + 1 in keep:
            snapshots.append(x)
    return pred_images if steps else x, snapshots


@dataclass
class DDIMOptions:
    steps: int | None = None  # reverse steps; None: the model's sample_steps (book: 20 to plot)
    eta: float | None = None  # 0: deterministic DDIM (book); 1: as stochastic as DDPM;
    #                           None: the model's sample_eta (0 unless its preset says otherwise)
    frames: int = 8  # --show-process: snapshots of the reverse process per sample

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.eta is not None and not (math.isfinite(self.eta) and self.eta >= 0):
            raise ValueError(f"eta must be a number >= 0, got {self.eta}")
        if self.frames < 2:
            raise ValueError(f"frames must be >= 2, got {self.frames}")


@dataclass
class DDPMOptions:
    steps: int = 100  # ancestral steps; the schedule's length (1000) is Ho et al.'s full chain
    frames: int = 8

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.frames < 2:
            raise ValueError(f"frames must be >= 2, got {self.frames}")


class _DiffusionSampler(Sampler):
    shows = {"process": "the reverse process: each sample's x_t at `frames` evenly spaced steps"}
    ancestral = False
    max_process_rows = 8

    def steps(self, model: Any) -> int:
        """The options' steps, or (DDIM, not given) the model's ``sample_steps``."""
        steps = self.options.steps
        return model.config.sample_steps if steps is None else steps

    def eta(self, model: Any) -> float:
        """The options' eta, or (not given) the model's ``sample_eta``; DDPM is eta 1 by
        construction (``ancestral``)."""
        eta = getattr(self.options, "eta", 1.0)
        return model.config.sample_eta if eta is None else eta

    def check(self, model: Any, inputs: dict[str, Any]) -> None:
        T, steps = model.schedule_length, self.steps(model)
        if steps > T:
            raise ConfigError(f"steps={steps} is more than the schedule's length "
                              f"({T} noise levels); use steps between 1 and {T}")

    @torch.no_grad()
    def sample(self, model: DiffusionModel, n: int, generator: torch.Generator,
               show: tuple[str, ...] = (), **_: Any) -> ImageSample:
        o = self.options
        noise = model.sample_latent(n, generator).view(n, *model.image_shape())
        frames = o.frames if "process" in show else 0
        images, snaps = reverse_diffusion(model, noise, self.steps(model), self.eta(model),
                                          generator, self.ancestral, frames)
        out = ImageSample(model.denormalise(images).cpu())
        if frames:
            rows = min(n, self.max_process_rows)
            stack = torch.stack([model.denormalise(s[:rows]).cpu() for s in snaps], dim=1)
            out.extras["process"] = ImageSample(rearrange(stack, "n f c h w -> (n f) c h w"),
                                                nrow=len(snaps))
        return out


class DDIMSampler(_DiffusionSampler):
    """Denoising diffusion implicit models: deterministic for eta = 0, so a noise map names an
    image; skips levels freely (20 steps of a 1000-level schedule)."""

    name = "ddim"
    Options = DDIMOptions
    preview = {"steps": 10}  # the trainer's periodic grids


class DDPMSampler(_DiffusionSampler):
    """Ancestral sampling: fresh noise at every step, from the Gaussian posterior
    q(x_t' | x_t, x0_hat). Needs many more steps than DDIM for clean images."""

    name = "ddpm"
    Options = DDPMOptions
    ancestral = True
    preview = {"steps": 50}
