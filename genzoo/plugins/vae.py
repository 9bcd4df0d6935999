"""Autoencoders and variational autoencoders (Kingma & Welling 2014; Foster ch. 3).

An autoencoder squeezes an image through a few numbers, z = encoder(x), and learns to rebuild
it, x_hat = decoder(z). Nothing makes the space of z's tidy, so a random point often decodes to
garbage. A VAE encodes each image as a distribution q(z|x) = N(mu, diag(sigma^2)), decodes a
sample z = mu + sigma * eps (the reparameterisation trick keeps that sample differentiable), and
pays KL(q(z|x) || N(0, I)) for straying from the prior, so that decoding z ~ N(0, I) gives
images: the prior becomes a sampler.

Both families implement the latent protocol of ``genzoo.nn.latent`` (``latent_dim``,
``encode``, ``decode``, ``sample_latent``), so ``zoo reconstruct / interpolate / latent-plot /
attribute`` and the ``prior`` sampler work on them as they will on GANs. Both also keep running
moments of their training embeddings: the autoencoder, having no prior, samples from that
Gaussian; the VAE offers it as the ``fitted`` sampler next to the book's N(0, I) ``prior``.

What ``log_prob`` reports (nats per image; a lower bound, estimated with importance weighting):
  * ``recon: bce`` (Bernoulli decoder): log p(b) of the *binarised* image b = (x > 0.5). A
    Bernoulli is a proper distribution over binary pixels only; on grey pixels BCE is a loss,
    not a likelihood, so we binarise for evaluation (as binarised-MNIST papers do), while
    training on the grey targets as the book does.
  * ``recon: mse`` (Gaussian decoder): log P of the 8-bit image (x * 255 rounded) under
    N(x_hat, sigma^2) discretised into 256 bins (edge bins take the tails), so it is a proper
    probability. sigma defaults to the one the beta-weighted MSE implies (sigma^2 = D / 2 beta):
    then the training loss is exactly -ELBO up to a constant.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from genzoo.errors import ConfigError
from genzoo.family import Model, Sampler, gaussian
from genzoo.nn import latent


@dataclass
class AutoencoderConfig:
    image_size: int = 32  # the book pads Fashion-MNIST 28 -> 32; we resize (data.size=32)
    channels: int = 1
    filters: tuple[int, ...] = (32, 64, 128)  # one stride-2 conv each; the decoder mirrors them
    latent_dim: int = 2
    batch_norm: bool = False  # the faces VAE: conv -> batch norm -> LeakyReLU
    activation: Literal["relu", "leaky_relu"] = "relu"
    recon: Literal["bce", "mse"] = "bce"  # reconstruction loss (bce: Bernoulli, mse: Gaussian)

    def __post_init__(self) -> None:
        if not self.filters:
            raise ValueError("filters needs at least one entry, e.g. [32, 64, 128]")
        if min(self.filters) < 1:
            raise ValueError(f"every entry of filters must be >= 1, got {list(self.filters)}")
        if self.image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {self.image_size}")
        stride = 2 ** len(self.filters)
        if self.image_size % stride:
            near = stride * max(1, self.image_size // stride)
            raise ValueError(f"image_size {self.image_size} must be divisible by 2**len(filters) "
                             f"= {stride} (set data.size, e.g. {near})")
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")


@dataclass
class VAEConfig(AutoencoderConfig):
    beta: float = 500.0  # weight on the per-pixel mean reconstruction loss (book: 500 / 2000)
    iw_samples: int = 16  # importance samples for log_prob (1 = the plain ELBO)
    sigma: float | None = None  # Gaussian decoder std for log_prob; None: sqrt(D / 2 beta)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if self.iw_samples < 1:
            raise ValueError(f"iw_samples must be >= 1, got {self.iw_samples}")
        if self.sigma is not None and self.sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")


# -- network ----------------------------------------------------------------------------------

def _act(cfg: AutoencoderConfig) -> nn.Module:
    # 0.3 is Keras' default LeakyReLU slope, which the book's code uses
    return nn.LeakyReLU(0.3) if cfg.activation == "leaky_relu" else nn.ReLU()


def _block(conv: nn.Module, out_channels: int, cfg: AutoencoderConfig) -> nn.Sequential:
    norm = [nn.BatchNorm2d(out_channels)] if cfg.batch_norm else []
    return nn.Sequential(conv, *norm, _act(cfg))


class Encoder(nn.Module):
    """Stride-2 3x3 convolutions halve the image per layer; a dense layer maps the flattened
    features to `out` numbers (z for the autoencoder, mean and log-variance for the VAE)."""

    def __init__(self, cfg: AutoencoderConfig, out: int):
        super().__init__()
        widths = (cfg.channels, *cfg.filters)
        self.convs = nn.Sequential(*(_block(nn.Conv2d(a, b, 3, stride=2, padding=1), b, cfg)
                                     for a, b in zip(widths, widths[1:])))
        side = cfg.image_size // 2 ** len(cfg.filters)
        self.dense = nn.Linear(cfg.filters[-1] * side * side, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(self.convs(x).flatten(1))


class Decoder(nn.Module):
    """The encoder in reverse: dense -> reshape -> stride-2 transposed convolutions -> a 3x3
    convolution to the image's channels. Returns logits; sigmoid gives pixel means in [0, 1]."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        self.side = cfg.image_size // 2 ** len(cfg.filters)
        self.top = cfg.filters[-1]
        dense: list[nn.Module] = [nn.Linear(cfg.latent_dim, self.top * self.side ** 2)]
        if cfg.batch_norm:  # the book's faces decoder normalises its dense layer; fashion's is linear
            dense += [nn.BatchNorm1d(self.top * self.side ** 2), _act(cfg)]
        self.dense = nn.Sequential(*dense)
        widths = (self.top, *reversed(cfg.filters))
        self.deconvs = nn.Sequential(*(
            _block(nn.ConvTranspose2d(a, b, 3, stride=2, padding=1, output_padding=1), b, cfg)
            for a, b in zip(widths, widths[1:])))
        self.to_image = nn.Conv2d(widths[-1], cfg.channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.dense(z).view(-1, self.top, self.side, self.side)
        return self.to_image(self.deconvs(h))


class _ConvLatentModel(Model):
    """What the autoencoder and the VAE share: shapes, the decoder, reconstruction terms."""

    Config = AutoencoderConfig
    z_params = 1  # numbers the encoder outputs per latent dimension

    def __init__(self, config: AutoencoderConfig):
        super().__init__(config)
        self.encoder = Encoder(config, self.z_params * config.latent_dim)
        self.decoder = Decoder(config)
        # running moments of the training embeddings, for sample_fitted (saved with the weights)
        d = config.latent_dim
        self.register_buffer("embed_mean", torch.zeros(d))
        self.register_buffer("embed_moment2", torch.eye(d))
        self.register_buffer("embed_updates", torch.zeros(()))

    @classmethod
    def config_from_data(cls, data: object) -> dict:
        shape = getattr(data, "shape", None)
        return {"image_size": int(shape[-1]), "channels": int(shape[0])} if shape else {}

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def image_shape(self) -> tuple[int, int, int]:
        c = self.config
        return c.channels, c.image_size, c.image_size

    def check_images(self, x: torch.Tensor) -> None:
        latent.check_images(self, x)  # one-line DataError naming the size the model wants

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent points (n, latent_dim) -> images in [0, 1]."""
        return torch.sigmoid(self.decoder(z).float())

    def export_module(self) -> tuple[nn.Module, tuple[torch.Tensor, ...], dict[str, Any]]:
        """``zoo export``: the decoder, z (B, latent_dim) -> images in [0, 1]."""
        z = gaussian(torch.Generator().manual_seed(0), (2, self.latent_dim), self.embed_mean.device)
        c, h, w = self.image_shape()
        return ExportDecoder(self.decoder).eval(), (z,), {
            "inputs": ["z"], "outputs": ["image"],
            "what": f"decoder: latent points z (B, {self.latent_dim}) -> images (B, {c}, {h}, {w}) "
                    "in [0, 1] (pixel means)"}

    def recon_error(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-example mean per-pixel BCE or MSE: the term the book weights by beta."""
        logits = logits.float()
        if self.config.recon == "bce":
            err = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        else:
            err = (torch.sigmoid(logits) - x) ** 2
        return err.flatten(1).mean(1)

    @staticmethod
    def _mse(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return ((torch.sigmoid(logits.detach().float()) - x) ** 2).mean()

    @torch.no_grad()
    def track_embeddings(self, z: torch.Tensor) -> None:
        """Called by ``loss`` in training mode. A running average at first, then an EMA (rate
        0.05): the embeddings drift while the encoder trains, so old batches should fade."""
        rate = max(1.0 / float(self.embed_updates + 1), 0.05)
        z = z.detach().float()
        self.embed_mean.lerp_(z.mean(0), rate)
        with torch.autocast(z.device.type, enabled=False):  # fp32 statistics under bf16 autocast
            self.embed_moment2.lerp_(z.T @ z / z.shape[0], rate)
        self.embed_updates += 1

    def sample_fitted(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """z ~ N(mean, cov) fitted to the training embeddings (N(0, I) before any training)."""
        mean = self.embed_mean.double()
        cov = self.embed_moment2.double() - torch.outer(mean, mean)
        cov = (cov + cov.T) / 2 + 1e-6 * torch.eye(len(mean), dtype=cov.dtype, device=cov.device)
        scale = torch.linalg.cholesky(cov).float()
        eps = gaussian(generator, (n, self.latent_dim), self.embed_mean.device)
        return self.embed_mean + eps @ scale.T


class ExportDecoder(nn.Module):
    """The decoder with its sigmoid: what ``zoo export`` writes for an autoencoder or VAE."""

    def __init__(self, decoder: nn.Module):
        super().__init__()
        self.decoder = decoder

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z))


# -- autoencoder ------------------------------------------------------------------------------

class Autoencoder(_ConvLatentModel):
    """The book's plain autoencoder. It has no prior, so ``sample_latent`` draws from a Gaussian
    fitted to the training embeddings: samples land where the decoder has seen data, though
    the gaps between clusters still decode badly, the point chapter 3 makes before the VAE."""

    Config = AutoencoderConfig

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self.check_images(x)
        return self.encoder(x)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["x"]
        z = self.encode(x)
        logits = self.decoder(z)
        recon = self.recon_error(logits, x).mean()
        if self.training:
            self.track_embeddings(z)
        return {"loss": recon, "recon": recon.detach(), "mse": self._mse(logits, x)}

    @property
    def prior_mean(self) -> torch.Tensor:
        return self.embed_mean  # the centre `temperature` scales about

    def sample_latent(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.sample_fitted(n, generator)


# -- variational autoencoder ------------------------------------------------------------------

class VAE(_ConvLatentModel):
    Config = VAEConfig
    z_params = 2  # mean and log-variance of q(z|x)

    def encode_dist(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x) as (z_mean, z_log_var), each (n, latent_dim)."""
        self.check_images(x)
        z_mean, z_log_var = self.encoder(x).float().chunk(2, dim=1)
        return z_mean, z_log_var

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean: deterministic, which is what reconstructions and arithmetic want."""
        return self.encode_dist(x)[0]

    def sample_latent(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """z ~ N(0, I), the prior."""
        return gaussian(generator, (n, self.latent_dim), self.device)

    @property
    def sigma(self) -> float:
        """Gaussian decoder std: sigma^2 = D / (2 beta) makes beta * mean-MSE = sum-SE / 2 sigma^2."""
        if self.config.sigma is not None:
            return self.config.sigma
        return math.sqrt(math.prod(self.image_shape()) / (2 * self.config.beta))

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["x"]
        z_mean, z_log_var = self.encode_dist(x)
        z = z_mean + torch.exp(0.5 * z_log_var) * torch.randn_like(z_mean)
        logits = self.decoder(z)
        recon = self.recon_error(logits, x)
        kl = 0.5 * (z_mean ** 2 + z_log_var.exp() - 1 - z_log_var).sum(1)
        loss = (self.config.beta * recon + kl).mean()
        if self.training:
            self.track_embeddings(z_mean)
        with torch.no_grad():  # one-sample ELBO in the nats log_prob reports
            elbo = (self.log_px(x, logits) - kl).mean()
        return {"loss": loss, "recon": recon.mean().detach(), "kl": kl.mean().detach(),
                "elbo": elbo, "mse": self._mse(logits, x)}

    def log_px(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per example, in nats of the likelihood described in the module docstring."""
        logits = logits.float()
        if self.config.recon == "bce":
            bce = F.binary_cross_entropy_with_logits(logits, (x > 0.5).float(), reduction="none")
            return -bce.flatten(1).sum(1)
        return discretised_gaussian_log_prob(x, torch.sigmoid(logits), self.sigma)

    @torch.no_grad()
    def log_prob(self, batch: dict[str, torch.Tensor], k: int | None = None) -> torch.Tensor:
        """Importance-weighted lower bound (Burda et al. 2016) on log p(x) in nats, from k
        samples of q(z|x): log mean_i p(x, z_i) / q(z_i|x). k=1 is the ELBO; the bound tightens
        as k grows. The noise comes from a fixed generator, so evaluation is repeatable."""
        k = k or self.config.iw_samples
        return torch.logsumexp(self.log_weights(batch["x"], k), 0) - math.log(k)

    @torch.no_grad()
    def log_weights(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """log p(x|z) + log p(z) - log q(z|x) for k draws z ~ q(z|x) per image: (k, n)."""
        was_training = self.training
        self.eval()  # batch norm must use its running statistics
        try:
            z_mean, z_log_var = self.encode_dist(x)
            std = torch.exp(0.5 * z_log_var)
            g = torch.Generator().manual_seed(0)
            out = []
            for _ in range(k):
                eps = torch.randn(z_mean.shape, generator=g).to(z_mean.device)
                z = z_mean + std * eps
                # log N(z; 0, I) - log N(z; mean, std^2): the 2 pi terms cancel
                log_ratio = (0.5 * (eps ** 2 - z ** 2) + 0.5 * z_log_var).sum(1)
                out.append(self.log_px(x, self.decoder(z)) + log_ratio)
            return torch.stack(out)
        finally:
            self.train(was_training)


def discretised_gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, sigma: float) -> torch.Tensor:
    """log P(8-bit image) per example: N(mean, sigma^2) integrated over each pixel's bin of width
    1/255, the first and last bins extended to -inf / +inf so the 256 bins sum to one."""
    k = torch.round(x.double() * 255)
    lo = torch.where(k <= 0, -math.inf, (k - 0.5) / 255)
    hi = torch.where(k >= 255, math.inf, (k + 0.5) / 255)
    a, b = (lo - mean.double()) / sigma, (hi - mean.double()) / sigma
    # subtract the two CDFs on the side of the tail they sit in, so tiny masses keep their digits
    p = torch.where(a > 0, torch.special.ndtr(-a) - torch.special.ndtr(-b),
                    torch.special.ndtr(b) - torch.special.ndtr(a))
    return p.clamp_min(1e-300).log().flatten(1).sum(1).float()


class FittedSampler(Sampler):
    """Decode draws from a Gaussian fitted to the training embeddings (a VAE's posterior means)
    instead of from the prior: "ex-post density estimation" (Ghosh et al. 2020). After short
    training the encodings rarely fill N(0, I), so prior draws land where the decoder has seen
    little data and decode to blends; these land among the encodings."""

    name = "fitted"
    Options = latent.PriorOptions

    def sample(self, model: _ConvLatentModel, n: int, generator: torch.Generator,
               **_: object) -> torch.Tensor:
        t = self.options.temperature
        if t <= 0:
            raise ConfigError(f"temperature must be > 0, got {t}")
        z = model.sample_fitted(n, generator)
        return latent.decode(model, model.embed_mean + t * (z - model.embed_mean))
