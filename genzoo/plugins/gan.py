"""GANs (Goodfellow et al. 2014; Foster ch. 4): DCGAN, WGAN-GP and a conditional WGAN-GP.

A generator maps noise z ~ N(0, I) to an image; a discriminator scores images as real or fake.
The two are trained against each other with two optimizers and alternating updates inside
``training_step``, so the core trainer's loop, logging, checkpoints and NaN stop apply unchanged.

- DCGAN (Radford et al. 2016): the discriminator outputs a probability (here a logit) and both
  players minimise binary cross-entropy; noisy labels keep the discriminator from winning early.
- WGAN-GP (Arjovsky et al. 2017; Gulrajani et al. 2017): a *critic* outputs an unbounded score
  whose gap between real and fake estimates the Wasserstein distance, kept honest by a gradient
  penalty that pushes the critic's gradient norm towards 1. No batch norm in the critic, since the
  penalty is defined per example and batch norm mixes examples.
- CGAN (Mirza & Osindero 2014), as the book builds it: WGAN-GP with a one-hot label concatenated
  to z and broadcast as extra critic channels.

The networks see images in [-1, 1] (tanh output); everything outside them uses [0, 1]. Every
generator offers the latent protocol shared with the autoencoders (``latent_dim``,
``sample_latent``, ``decode``), so ``zoo interpolate`` works on GAN runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from genzoo.errors import ConfigError, DataError
from genzoo.family import Model, Sampler, fused_adam_ok, gaussian
from genzoo.nn.gan import gradient_penalty, init_weights
from genzoo.nn.utils import eval_mode, frozen, square_image_config


# -- configs ----------------------------------------------------------------------------------

@dataclass
class GANConfig:
    image_size: int = 64  # a power of two >= 8: the networks halve / double it per stage
    channels: int = 1
    z_dim: int = 100
    filters: int = 64  # the discriminator's first stage; doubled per stage up to max_filters
    max_filters: int = 512
    upsample: Literal["transpose", "resize"] = "transpose"  # resize: nearest + conv (no checkerboard)
    dropout: float = 0.3  # in the discriminator / critic

    def __post_init__(self) -> None:
        if self.image_size < 8 or self.image_size & (self.image_size - 1):
            raise ValueError(f"image_size must be a power of two >= 8, got {self.image_size} "
                             "(resize the data with --set data.size=32 or 64)")
        if self.z_dim < 1 or self.filters < 1 or self.max_filters < 1:
            raise ValueError("z_dim, filters and max_filters must be >= 1")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass
class DCGANConfig(GANConfig):
    label_noise: float = 0.1  # targets become 1 - u and u, u ~ U(0, label_noise)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.label_noise < 0.5:
            raise ValueError(f"label_noise must be in [0, 0.5), got {self.label_noise}")


@dataclass
class WGANGPConfig(GANConfig):
    channels: int = 3
    z_dim: int = 128
    critic_steps: int = 3  # critic updates per generator update
    gp_weight: float = 10.0  # lambda in Gulrajani et al.

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.critic_steps < 1:
            raise ValueError(f"critic_steps must be >= 1, got {self.critic_steps}")
        if self.gp_weight < 0:
            raise ValueError(f"gp_weight must be >= 0, got {self.gp_weight}")


@dataclass
class CGANConfig(WGANGPConfig):
    z_dim: int = 32
    max_filters: int = 128
    num_classes: int = 2  # from the data when it has labels (twemoji: 8 categories)
    class_names: list[str] = field(default_factory=list)  # for error messages and grids

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class_names for {self.num_classes} classes")


# -- networks ---------------------------------------------------------------------------------

def stage_filters(cfg: GANConfig) -> list[int]:
    """Filters of the discriminator's stride-2 stages, input side first (the book's 64x64:
    64, 128, 256, 512); the generator uses them in reverse. The last stage is 4x4."""
    stages = int(math.log2(cfg.image_size)) - 2
    return [min(cfg.filters * 2 ** i, cfg.max_filters) for i in range(stages)]


def up(c_in: int, c_out: int, mode: str, bias: bool) -> nn.Module:
    """Doubles height and width. A 4x4 stride-2 transposed conv overlaps its kernel unevenly,
    which paints checkerboards; resize-then-conv (Odena et al. 2016) spreads it evenly."""
    if mode == "resize":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                             nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias))
    return nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=bias)


class Generator(nn.Module):
    """z (plus a one-hot label) -> 4x4 -> ... -> image in [-1, 1]. Batch norm everywhere but the
    output, so no conv before it needs a bias."""

    def __init__(self, cfg: GANConfig, num_classes: int = 0):
        super().__init__()
        fs = stage_filters(cfg)[::-1]
        layers: list[nn.Module] = [  # 1x1 -> 4x4
            nn.ConvTranspose2d(cfg.z_dim + num_classes, fs[0], 4, bias=False),
            nn.BatchNorm2d(fs[0]), nn.LeakyReLU(0.2)]
        for c_in, c_out in zip(fs, fs[1:]):
            layers += [up(c_in, c_out, cfg.upsample, bias=False), nn.BatchNorm2d(c_out),
                       nn.LeakyReLU(0.2)]
        layers += [up(fs[-1], cfg.channels, cfg.upsample, bias=True), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


class Discriminator(nn.Module):
    """image (plus label channels) -> one score per image. `batchnorm` for DCGAN only: the
    WGAN-GP critic must treat examples independently."""

    def __init__(self, cfg: GANConfig, in_channels: int, batchnorm: bool):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, c_out in enumerate(stage_filters(cfg)):
            bn = batchnorm and i > 0  # not on the input layer (Radford et al.)
            layers.append(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=not bn))
            if bn:
                layers.append(nn.BatchNorm2d(c_out))
            layers += [nn.LeakyReLU(0.2), nn.Dropout(cfg.dropout)]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, 1, 4))  # 4x4 -> 1x1
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


# -- models -----------------------------------------------------------------------------------

class GAN(Model):
    """What the three families share: the generator, the latent protocol, two Adams."""

    Config = GANConfig
    num_classes = 0  # conditional families set it from their config
    critic_batchnorm = True
    critic_name = "discriminator"

    def __init__(self, config: GANConfig):
        super().__init__(config)
        k = self.num_classes
        self.generator = Generator(config, k)
        self.add_module(self.critic_name,
                        Discriminator(config, config.channels + k, batchnorm=self.critic_batchnorm))
        init_weights(self)  # Radford et al.'s N(0, 0.02): the quick presets learn faster

    @classmethod
    def config_from_data(cls, data: Any) -> dict[str, Any]:
        return square_image_config(cls, data, 64)

    @property
    def adversary(self) -> nn.Module:
        """The discriminator (DCGAN) or critic (WGAN-GP), whichever this family trains."""
        return self._modules[self.critic_name]

    # -- latent protocol (shared with the autoencoders' latent tools) --------------------------
    @property
    def latent_dim(self) -> int:
        return self.config.z_dim

    def sample_latent(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """z ~ N(0, I), drawn on the generator's device (CPU) so a seed means the same z
        everywhere."""
        return gaussian(generator, (n, self.latent_dim), self.device)

    def image_shape(self) -> tuple[int, int, int]:
        c = self.config
        return c.channels, c.image_size, c.image_size

    def decode(self, z: torch.Tensor, label: int | torch.Tensor | None = None) -> torch.Tensor:
        """Latent points -> images in [0, 1]. Conditional models use `label` (default 0)."""
        return ((self(z, label) + 1) / 2).clamp(0, 1)

    def forward(self, z: torch.Tensor, label: int | torch.Tensor | None = None) -> torch.Tensor:
        """The generator: z -> images in [-1, 1]. Conditional models check `label` (default 0)."""
        if not self.num_classes:
            return self.generate(z)
        return self.generate(z, self.labels(0 if label is None else label, z.shape[0], z.device))

    def generate(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The generator on labels known to be valid (the training path: checking them would
        make the host wait for the GPU every step)."""
        if y is not None:
            z = torch.cat([z, F.one_hot(y, self.num_classes).to(z.dtype)], dim=1)
        return self.generator(z)

    def labels(self, label: int | torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
        """A label (or one per example) as a checked long tensor of n labels."""
        k = self.num_classes
        y = torch.as_tensor(label, dtype=torch.long).to(device)
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
            bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
            names = getattr(self.config, "class_names", [])
            shown = " (" + ", ".join(f"{i}={c}" for i, c in enumerate(names)) + ")" if names else ""
            raise ConfigError(f"label {bad} is out of range: this model has {k} classes, "
                              f"valid labels are 0..{k - 1}{shown}")
        return y.expand(n) if y.ndim == 0 else y

    def score(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The discriminator / critic on images in [-1, 1]; labels become constant channels."""
        if self.num_classes:
            onehot = F.one_hot(y, self.num_classes).to(x.dtype)[:, :, None, None]
            x = torch.cat([x, onehot.expand(-1, -1, *x.shape[-2:])], dim=1)
        return self.adversary(x)

    # -- training -----------------------------------------------------------------------------
    def configure_optimizers(self, train: Any) -> dict[str, torch.optim.Optimizer]:
        def adam(module: nn.Module) -> torch.optim.Optimizer:
            params = list(module.parameters())
            return torch.optim.Adam(params, lr=train.lr, betas=tuple(train.betas),
                                    weight_decay=train.weight_decay, fused=fused_adam_ok(params))
        return {self.critic_name: adam(self.adversary), "generator": adam(self.generator)}

    def _real(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = batch["x"] * 2 - 1
        if not self.num_classes:
            return x, None
        if "y" not in batch:
            raise DataError(f"{type(self).__name__} needs class labels, but the dataset has none; "
                            "name an attribute with --set data.label=NAME")
        return x, batch["y"]

    def _noise(self, n: int, device: torch.device) -> torch.Tensor:
        # the global RNG: it is checkpointed, so a resumed run draws the same z
        return torch.randn(n, self.latent_dim, device=device)

    # -- zoo export ---------------------------------------------------------------------------
    def export_module(self) -> tuple[nn.Module, tuple[torch.Tensor, ...], dict[str, Any]]:
        """The generator as deployed: z (B, z_dim) [, labels (B,)] -> images in [0, 1]."""
        z = gaussian(torch.Generator().manual_seed(0), (2, self.latent_dim), self.device)
        c, h, w = self.image_shape()
        what = f"generator: z (B, {self.latent_dim}) ~ N(0, I) -> images (B, {c}, {h}, {w}) in [0, 1]"
        if not self.num_classes:
            return ExportGenerator(self).eval(), (z,), {"inputs": ["z"], "outputs": ["image"],
                                                        "what": what}
        label = torch.arange(2, device=self.device) % self.num_classes
        return ExportGenerator(self).eval(), (z, label), {
            "inputs": ["z", "label"], "outputs": ["image"],
            "what": what.replace(") ~ N(0, I)", f") ~ N(0, I) and class labels (B,) in "
                                                f"0..{self.num_classes - 1}")}


class ExportGenerator(nn.Module):
    """``zoo export``'s network: the generator with its label one-hot and output scaling, so
    a runtime needs nothing but this graph."""

    def __init__(self, gan: GAN):
        super().__init__()
        self.generator = gan.generator
        self.num_classes = gan.num_classes
        if self.num_classes:  # a lookup, not F.one_hot: exporters handle indexing everywhere
            self.register_buffer("onehot", torch.eye(self.num_classes, device=gan.device),
                                 persistent=False)

    def forward(self, z: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            z = torch.cat([z, self.onehot[label].to(z.dtype)], dim=1)
        return ((self.generator(z) + 1) / 2).clamp(0, 1)


class DCGAN(GAN):
    """Foster's DCGAN on LEGO bricks (64x64 grayscale, z=100)."""

    Config = DCGANConfig

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor,
               noise: float) -> torch.Tensor:
        """BCE on logits (stabler than sigmoid + BCE). The book adds noise outside [0, 1]
        (1 + u, -u), where BCE has no minimum; 1 - u and u keep the same softening."""
        real_t = 1 - noise * torch.rand_like(real_logits)
        fake_t = noise * torch.rand_like(fake_logits)
        return (F.binary_cross_entropy_with_logits(real_logits, real_t)
                + F.binary_cross_entropy_with_logits(fake_logits, fake_t)) / 2

    def training_step(self, batch: dict[str, torch.Tensor], optimizers: dict[str, Any],
                      ctx: Any) -> dict[str, torch.Tensor]:
        real, _ = self._real(batch)
        with ctx.autocast():
            fake = self.generate(self._noise(real.shape[0], real.device))
            real_logits, fake_logits = self.score(real), self.score(fake.detach())
            d_loss = self.d_loss(real_logits.float(), fake_logits.float(), self.config.label_noise)
        ctx.optimize(d_loss, optimizers["discriminator"], "discriminator")
        # the generator wants its fakes called real (the non-saturating loss)
        with frozen(self.discriminator), ctx.autocast():
            g_logits = self.score(fake).float()
            g_loss = F.binary_cross_entropy_with_logits(g_logits, torch.ones_like(g_logits))
        ctx.optimize(g_loss, optimizers["generator"], "generator")
        d_loss, g_loss = d_loss.detach(), g_loss.detach()
        # "loss" is what the trainer watches for NaN/inf: the sum is non-finite if either is
        return {"loss": d_loss + g_loss, "d_loss": d_loss, "g_loss": g_loss,
                "d_real_acc": (real_logits.detach() > 0).float().mean(),
                "d_fake_acc": (fake_logits.detach() < 0).float().mean()}

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Both players' losses on a batch, no update (held-out monitoring, FLOP counts)."""
        real, _ = self._real(batch)
        fake = self.generate(self._noise(real.shape[0], real.device))
        real_logits, fake_logits = self.score(real).float(), self.score(fake).float()
        d_loss = self.d_loss(real_logits, fake_logits, 0.0)
        g_loss = F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
        return {"loss": d_loss + g_loss, "d_loss": d_loss, "g_loss": g_loss,
                "d_real_acc": (real_logits > 0).float().mean(),
                "d_fake_acc": (fake_logits < 0).float().mean()}


class WGANGP(GAN):
    """Foster's WGAN-GP on CelebA (64x64 colour, z=128, 3 critic steps, lambda=10)."""

    Config = WGANGPConfig
    critic_batchnorm = False
    critic_name = "critic"

    def critic_loss(self, real: torch.Tensor, fake: torch.Tensor,
                    y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (critic loss, Wasserstein estimate E[C(real)] - E[C(fake)], gradient penalty)."""
        wasserstein = self.score(real, y).float().mean() - self.score(fake, y).float().mean()
        gp = gradient_penalty(lambda x: self.score(x, y), real, fake) \
            if torch.is_grad_enabled() else torch.zeros((), device=real.device)
        return -wasserstein + self.config.gp_weight * gp, wasserstein, gp

    def training_step(self, batch: dict[str, torch.Tensor], optimizers: dict[str, Any],
                      ctx: Any) -> dict[str, torch.Tensor]:
        real, y = self._real(batch)
        n = real.shape[0]
        # the critic should be near-optimal before the generator follows its gradient
        for _ in range(self.config.critic_steps):
            with ctx.autocast():
                with torch.no_grad():
                    fake = self.generate(self._noise(n, real.device), y)
                c_loss, wasserstein, gp = self.critic_loss(real, fake, y)
            ctx.optimize(c_loss, optimizers["critic"], "critic")
        with frozen(self.critic), ctx.autocast():
            g_loss = -self.score(self.generate(self._noise(n, real.device), y), y).float().mean()
        ctx.optimize(g_loss, optimizers["generator"], "generator")
        c_loss, g_loss = c_loss.detach(), g_loss.detach()
        # "loss" is what the trainer watches for NaN/inf: the sum is non-finite if either is
        return {"loss": c_loss + g_loss, "c_loss": c_loss, "g_loss": g_loss,
                "wasserstein": wasserstein.detach(), "gp": gp.detach()}

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Both players' losses on a batch, no update (held-out monitoring, FLOP counts); the
        penalty needs gradients, so it is 0 under ``torch.no_grad``."""
        real, y = self._real(batch)
        fake = self.generate(self._noise(real.shape[0], real.device), y)
        c_loss, wasserstein, gp = self.critic_loss(real, fake, y)
        g_loss = -self.score(fake, y).float().mean()
        return {"loss": c_loss + g_loss, "c_loss": c_loss, "g_loss": g_loss,
                "wasserstein": wasserstein, "gp": gp}


class CGAN(WGANGP):
    """Foster's conditional WGAN-GP on CelebA with a binary attribute (Blond_Hair); on twemoji
    its 8 categories."""

    Config = CGANConfig

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        return self.config.num_classes

    @classmethod
    def config_from_data(cls, data: Any) -> dict[str, Any]:
        out = super().config_from_data(data)
        if getattr(data, "y", "absent") is None:  # a loaded dataset without labels
            raise DataError(f"cgan needs class labels, but dataset {getattr(data, 'name', '')!r} "
                            "has none; name an attribute with --set data.label=NAME")
        classes = list(getattr(data, "classes", []) or [])
        if classes:
            out.update(num_classes=len(classes), class_names=[str(c) for c in classes])
        return out


# -- sampling ---------------------------------------------------------------------------------

@dataclass
class PriorOptions:
    temperature: float = 1.0  # scales z: < 1 trades variety for typical samples
    truncation: float | None = None  # redraw z entries beyond +-t (BigGAN's truncation trick)
    label_grid: bool = True  # conditional, no --label: the same z under each label, in turn

    def __post_init__(self) -> None:
        if not 0 < self.temperature < float("inf"):  # also nan
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature}")
        if self.truncation is not None and not self.truncation > 0:
            raise ValueError(f"truncation must be > 0, got {self.truncation}")


class PriorSampler(Sampler):
    """z ~ N(0, I) through the generator. Conditional models take a `label`; without one,
    consecutive images cycle through the labels (with label_grid, sharing one z per cycle, so
    a grid whose width is a multiple of the class count shows one label per column)."""

    name = "prior"
    Options = PriorOptions
    inputs = {"label": "class index for conditional models (cgan)"}

    def check(self, model: GAN, inputs: dict[str, Any]) -> None:
        if inputs.get("label") is not None and not model.num_classes:
            raise ConfigError(f"--label given, but {type(model).__name__} is an unconditional "
                              "model; only conditional models (cgan) take a label")

    def latent(self, model: GAN, n: int, generator: torch.Generator) -> torch.Tensor:
        z = torch.randn(n, model.latent_dim, generator=generator, device=generator.device)
        t = self.options.truncation
        if t is not None:
            while (out := z.abs() > t).any():
                z[out] = torch.randn(int(out.sum()), generator=generator, device=generator.device)
        return (z * self.options.temperature).to(model.device)

    @torch.no_grad()
    def sample(self, model: GAN, n: int, generator: torch.Generator,
               label: int | torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        k = model.num_classes
        if label is not None and not k:
            raise ConfigError(f"a label was given, but {type(model).__name__} is unconditional")
        with eval_mode(model):  # batch norm's running statistics, and leave them untouched
            if not k:
                return model.decode(self.latent(model, n, generator))
            if label is not None:
                y = model.labels(label, n, model.device)
                return model.decode(self.latent(model, n, generator), y)
            y = torch.arange(n, device=model.device) % k
            if self.options.label_grid:
                z = self.latent(model, -(-n // k), generator).repeat_interleave(k, dim=0)[:n]
            else:
                z = self.latent(model, n, generator)
            return model.decode(z, y)

