"""VQ-GAN (Esser et al. 2021; Foster ch. 10): a discrete autoencoder, then a transformer over its codes.

Two components, trained in turn as a ``Pipeline`` (``genzoo.family``):

1. ``VQAutoencoder``: a convolutional encoder (residual blocks with GroupNorm and SiLU, optional
   self-attention at the lowest resolution) maps an image to an h x w grid of vectors; a vector
   quantiser replaces each by its nearest codebook entry e_k (VQ-VAE, van den Oord et al. 2017);
   the decoder rebuilds the image from the entries. The quantiser is the straight-through kind:
   the decoder's gradient is copied past the argmin onto the encoder output, and two terms move
   the codebook and the encoder towards each other,
   ``||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2`` (beta = 0.25). Lookup is on l2-normalised
   vectors (cosine similarity; Yu et al. 2022, "ViT-VQGAN"), which keeps far more codes in use
   than the raw Euclidean lookup, and codes that no image has chosen for ``restart_after`` steps
   are re-initialised from encoder outputs of the current batch (Dhariwal et al. 2020,
   "Jukebox"); how long each code has been idle is a buffer, so a resumed run restarts the same
   codes at the same step. We chose straight-through with these two tricks over EMA codebook
   updates: one mechanism (gradients) trains everything, and the codebook is an ordinary
   parameter that the checkpoint and the optimizer already handle.
   Realism comes from a PatchGAN discriminator (Isola et al. 2017) with the hinge loss, switched
   on after ``disc_start`` steps and weighted adaptively as taming-transformers does: lambda =
   ||grad_L(rec)|| / ||grad_L(GAN)|| at the decoder's last layer, so neither term drowns the
   other (a fixed weight under torch.compile, or when autograd cannot take those gradients).

   The paper's perceptual term is LPIPS, which needs ImageNet-trained VGG weights; genzoo never
   downloads weights at run time, and a family module may not load another run (it imports only
   ``genzoo.family`` / ``genzoo.nn``), so the chapter-2 CNN cannot serve either without a core
   hook. The perceptual term here is therefore *feature matching* on the discriminator's own
   intermediate activations (Wang et al. 2018, "pix2pixHD"): an L1 distance between the
   discriminator's features of the image and of its reconstruction. Before ``disc_start`` those
   are the features of a randomly initialised convolutional network (which already measures
   structure better than pixels do); afterwards they are the features the discriminator learns.

2. ``CodePrior``: a GPT (``genzoo.nn.transformer`` blocks) over each image's code grid read in
   raster order, behind a start token, trained on the codes of every training image (encoded
   once by the frozen autoencoder). ``log_prob`` is in nats per image; the report divides by the
   codes per image, so it reads as bits per code.

Samplers (they receive the ``VQGAN`` pipeline: ``model.autoencoder``, ``model.prior``):
``sample`` (prior -> codes -> decoder), ``reconstruct`` (stored training images beside their
reconstructions: the preview while the autoencoder trains), ``codes`` (the code grid coloured
by index beside the decoded image) and ``complete`` (the top rows of a real image's code grid
kept, the rest drawn by the prior). Samplers cannot read a dataset, so the autoencoder keeps 16
training images as a run artifact (``setup``).

Anchors: CompVis/taming-transformers (``taming/modules``: Encoder/Decoder, VectorQuantizer2,
NLayerDiscriminator, VQLPIPSWithDiscriminator), dome272/VQGAN-pytorch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genzoo.errors import ConfigError, DataError
from genzoo.family import (ImageSample, Model, Pipeline, Sampler, SamplerOptions, Stage,
                           TensorData, batches, frozen, fused_adam_ok)
from genzoo.nn.autoregressive import generate
from genzoo.nn.gan import init_weights
from genzoo.nn.transformer import Block, KVCache
from genzoo.nn.utils import eval_mode, square_image_config

EXAMPLES = 16  # training images the autoencoder keeps for the reconstruct / complete samplers


# -- configs ----------------------------------------------------------------------------------

@dataclass
class VQAutoencoderConfig:
    image_size: int = 64  # from the data; divisible by 2 ** (len(ch_mult) - 1)
    channels: int = 3  # from the data
    ch: int = 64  # width of the first level; level i has ch * ch_mult[i] channels
    ch_mult: tuple[int, ...] = (1, 2, 2, 4)  # one level per entry, a halving between levels
    res_blocks: int = 2  # residual blocks per level (taming: 2)
    attention: bool = True  # self-attention at the lowest resolution (taming's mid block)
    codebook_size: int = 512  # K codes
    embed_dim: int = 32  # width of a code (low: l2-normalised lookup works best in few dims)
    beta: float = 0.25  # commitment weight (van den Oord et al.)
    codebook_weight: float = 1.0  # weight of the codebook + commitment terms (taming: 1.0)
    l2_codes: bool = True  # cosine lookup: codes and encoder outputs on the unit sphere
    restart_after: int = 200  # a code unused this many steps restarts at an encoder output; 0: never
    disc_start: int = 10_000  # steps before the discriminator and the GAN loss switch on
    disc_weight: float = 0.8  # times the adaptive weight (taming's configs: 0.8); 0: no GAN
    adaptive_weight: bool = True  # taming's grad-norm ratio; False: disc_weight alone
    disc_ch: int = 64  # PatchGAN's first width (taming: 64)
    disc_layers: int = 3  # PatchGAN's stride-2 layers (taming: 3)
    feature_weight: float = 1.0  # perceptual term: discriminator feature matching (L1); 0: off

    def __post_init__(self) -> None:
        if self.channels < 1 or self.image_size < 1:
            raise ValueError("channels and image_size must be >= 1")
        if not self.ch_mult or min(self.ch_mult) < 1 or self.ch < 1:
            raise ValueError(f"ch and every ch_mult entry must be >= 1, got ch={self.ch}, "
                             f"ch_mult={list(self.ch_mult)}")
        f = 2 ** (len(self.ch_mult) - 1)
        if self.image_size % f:
            raise ValueError(f"image_size {self.image_size} must be divisible by "
                             f"2**(len(ch_mult)-1) = {f} (set data.size)")
        for key in ("res_blocks", "codebook_size", "embed_dim", "disc_ch", "disc_layers"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2, got {self.codebook_size}")
        for key in ("beta", "codebook_weight", "disc_weight", "feature_weight"):
            if not 0 <= getattr(self, key) < math.inf:
                raise ValueError(f"{key} must be a finite number >= 0, got {getattr(self, key)}")
        if self.restart_after < 0 or self.disc_start < 0:
            raise ValueError("restart_after and disc_start must be >= 0")
        if self.image_size // 2 ** self.disc_layers < 2:
            raise ValueError(f"disc_layers {self.disc_layers} halves {self.image_size}-pixel "
                             "images below 2 pixels; use fewer")

    @property
    def grid(self) -> int:
        """Codes per side: image_size / 2 ** (levels - 1)."""
        return self.image_size // 2 ** (len(self.ch_mult) - 1)


@dataclass
class CodePriorConfig:
    vocab: int = 512  # the autoencoder's codebook_size (set from it)
    positions: int = 64  # codes per image, h * w (set from the autoencoder); the start token
    #                      is position 0 and the last code is never an input, so h * w suffice
    layers: int = 4
    heads: int = 4
    embed_dim: int = 128
    ff_dim: int = 512
    dropout: float = 0.1

    def __post_init__(self) -> None:
        for key in ("vocab", "positions", "layers", "heads", "embed_dim", "ff_dim"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.embed_dim % self.heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by heads {self.heads}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


# -- the autoencoder's networks (taming's Encoder / Decoder, smaller) ---------------------------

def norm(c: int) -> nn.GroupNorm:
    """GroupNorm of about 4 channels per group at small widths, 32 groups from 128 channels up
    (taming uses 32 groups at its 128-channel minimum)."""
    return nn.GroupNorm(math.gcd(c, max(1, min(32, c // 4))), c, eps=1e-6)


class ResBlock(nn.Module):
    """norm -> SiLU -> conv, twice, plus the input (through a 1x1 conv where widths differ)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(norm(c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1),
                                  norm(c_out), nn.SiLU(), nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class AttnBlock(nn.Module):
    """Single-head self-attention over the positions of a feature map, plus the input."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = norm(c)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.proj = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).transpose(1, 2).chunk(3, dim=-1)
        y = F.scaled_dot_product_attention(q, k, v)  # (b, hw, c)
        return x + self.proj(y.transpose(1, 2).reshape(b, c, h, w))


class Downsample(nn.Module):
    """A 3x3 stride-2 conv, padded on the right and bottom only (taming), so sizes halve exactly."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour doubling then a 3x3 conv (no transposed-conv checkerboards)."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def mid_block(c: int, attention: bool) -> nn.Sequential:
    return nn.Sequential(ResBlock(c, c), *([AttnBlock(c)] if attention else []), ResBlock(c, c))


class Encoder(nn.Module):
    """image in [-1, 1] (B, C, H, W) -> z_e (B, embed_dim, H/f, W/f)."""

    def __init__(self, cfg: VQAutoencoderConfig):
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        layers: list[nn.Module] = [nn.Conv2d(cfg.channels, cfg.ch, 3, padding=1)]
        c = cfg.ch
        for i, w in enumerate(widths):
            for _ in range(cfg.res_blocks):
                layers.append(ResBlock(c, w))
                c = w
            if i < len(widths) - 1:
                layers.append(Downsample(c))
        layers += [mid_block(c, cfg.attention), norm(c), nn.SiLU(),
                   nn.Conv2d(c, cfg.embed_dim, 1)]  # taming's conv_out + quant_conv in one
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """z_q (B, embed_dim, h, w) -> image in about [-1, 1] (no squashing, as taming)."""

    def __init__(self, cfg: VQAutoencoderConfig):
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult][::-1]
        c = widths[0]
        layers: list[nn.Module] = [nn.Conv2d(cfg.embed_dim, c, 3, padding=1),
                                   mid_block(c, cfg.attention)]
        for i, w in enumerate(widths):
            for _ in range(cfg.res_blocks):
                layers.append(ResBlock(c, w))
                c = w
            if i < len(widths) - 1:
                layers.append(Upsample(c))
        layers += [norm(c), nn.SiLU()]
        self.net = nn.Sequential(*layers)
        self.conv_out = nn.Conv2d(c, cfg.channels, 3, padding=1)  # the adaptive weight's layer

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.net(z))


class VectorQuantizer(nn.Module):
    """Nearest codebook entry per position, straight-through gradients, dead-code restarts.

    ``idle[k]`` counts the training steps since code k was last chosen (a buffer: saved with
    the weights, so a resumed run restarts exactly the codes an uninterrupted one would)."""

    def __init__(self, codebook_size: int, embed_dim: int, l2: bool):
        super().__init__()
        self.l2 = l2
        self.embedding = nn.Embedding(codebook_size, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        if l2:  # directions matter, not norms: spread the codes over the sphere
            nn.init.normal_(self.embedding.weight)
        self.register_buffer("idle", torch.zeros(codebook_size, dtype=torch.long))

    def codebook(self) -> torch.Tensor:
        """The K entries the decoder sees, (K, D): unit vectors under the cosine lookup."""
        e = self.embedding.weight.float()
        return F.normalize(e, dim=1) if self.l2 else e

    def flat(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) encoder outputs -> (B*h*w, D) vectors in lookup space (float32)."""
        z = z.float().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        return F.normalize(z, dim=1) if self.l2 else z

    def lookup(self, zf: torch.Tensor) -> torch.Tensor:
        """Index of the nearest entry of every row of `zf` (N, D)."""
        e = self.codebook()
        d = zf.pow(2).sum(1, keepdim=True) - 2 * zf @ e.T + e.pow(2).sum(1)[None]
        return d.argmin(1)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Codes (B, h, w) -> their entries as a feature map (B, D, h, w)."""
        return F.embedding(idx, self.codebook()).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """z_e (B, D, h, w) -> z_q with straight-through gradients, the codes (B, h, w), the
        codebook term ||sg[z_e] - e||^2, the commitment term ||z_e - sg[e]||^2, and the flat
        encoder outputs (for restarts). Distances in float32 even under autocast: bf16 ties
        would pick codes by rounding."""
        b, _, h, w = z.shape
        with torch.autocast(z.device.type, enabled=False):
            zf = self.flat(z)
            idx = self.lookup(zf)
            e = F.embedding(idx, self.codebook())
            codebook = F.mse_loss(e, zf.detach())
            commitment = F.mse_loss(zf, e.detach())
            zq = zf + (e - zf).detach()  # forward: e; backward: identity onto z_e
        zq = zq.view(b, h, w, -1).permute(0, 3, 1, 2)
        return {"z_q": zq, "codes": idx.view(b, h, w), "codebook": codebook,
                "commitment": commitment, "z_flat": zf.detach()}

    @torch.no_grad()
    def restart_dead(self, codes: torch.Tensor, z_flat: torch.Tensor,
                     after: int) -> torch.Tensor:
        """Count this step's use, and move every code idle for `after` steps onto a random
        encoder output of this batch (the global RNG: checkpointed). Returns the restarted
        codes as a bool mask (K,)."""
        k = self.idle.shape[0]
        used = torch.bincount(codes.flatten(), minlength=k) > 0
        self.idle.add_(1).masked_fill_(used, 0)
        dead = self.idle >= after if after else torch.zeros_like(used)
        n = int(dead.sum())
        if n:
            pick = torch.randint(0, z_flat.shape[0], (n,), device=z_flat.device)
            self.embedding.weight[dead] = z_flat[pick].to(self.embedding.weight.dtype)
            self.idle.masked_fill_(dead, 0)
        return dead


class PatchDiscriminator(nn.Module):
    """Isola et al.'s PatchGAN as taming's NLayerDiscriminator: 4x4 convs, stride 2 for
    `layers` layers then stride 1, batch norm after the first, LeakyReLU(0.2); one logit per
    overlapping patch, (B, 1, H', W')."""

    def __init__(self, channels: int, ch: int, layers: int):
        super().__init__()
        blocks: list[nn.Module] = [nn.Sequential(nn.Conv2d(channels, ch, 4, 2, 1),
                                                 nn.LeakyReLU(0.2))]
        c = ch
        for n in range(1, layers + 1):
            out = ch * min(2 ** n, 8)
            stride = 2 if n < layers else 1
            blocks.append(nn.Sequential(nn.Conv2d(c, out, 4, stride, 1, bias=False),
                                        nn.BatchNorm2d(out), nn.LeakyReLU(0.2)))
            c = out
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(c, 1, 4, 1, 1)
        init_weights(self)  # taming's weights_init: N(0, 0.02), batch norm scales N(1, 0.02)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for block in self.blocks:
            x = block(x)
            out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)[-1])


# -- losses ---------------------------------------------------------------------------------------

def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss: (E[relu(1 - D(x))] + E[relu(1 + D(x_rec))]) / 2."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    fallback: float = 1.0) -> torch.Tensor:
    """taming's lambda = ||grad_w L_rec|| / (||grad_w L_GAN|| + 1e-4) at the decoder's last
    weight w, clamped to [0, 1e4] and detached. Under torch.compile (a graph break per step)
    or where autograd cannot take the gradients, the fixed `fallback`."""
    if torch.compiler.is_compiling():
        return torch.tensor(fallback, device=rec_loss.device)
    try:
        (g_rec,) = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
        (g_gan,) = torch.autograd.grad(g_loss, last_layer, retain_graph=True)
    except RuntimeError:
        return torch.tensor(fallback, device=rec_loss.device)
    w = g_rec.float().norm() / (g_gan.float().norm() + 1e-4)
    return w.clamp(0.0, 1e4).detach()


def perplexity(codes: torch.Tensor, k: int) -> torch.Tensor:
    """exp(entropy) of the code histogram: K when every code is used equally, 1 for one code."""
    p = torch.bincount(codes.flatten(), minlength=k).float()
    p = p / p.sum().clamp_min(1)
    return torch.exp(-(p * p.clamp_min(1e-12).log()).sum())


# -- stage 1: the autoencoder ------------------------------------------------------------------

class VQAutoencoder(Model):
    Config = VQAutoencoderConfig
    modality = "image"
    likelihood_unit = None

    def __init__(self, config: VQAutoencoderConfig):
        super().__init__(config)
        c = config
        self.encoder = Encoder(c)
        self.quantizer = VectorQuantizer(c.codebook_size, c.embed_dim, c.l2_codes)
        self.decoder = Decoder(c)
        self.discriminator = PatchDiscriminator(c.channels, c.disc_ch, c.disc_layers)
        self.examples: torch.Tensor | None = None  # uint8 training images (setup / artifacts)

    @classmethod
    def config_from_data(cls, data: Any) -> dict[str, Any]:
        return square_image_config(cls, data, 64)

    def setup(self, data: Any) -> None:
        """Keep EXAMPLES training images, spread over the set, for the samplers that show real
        images (reconstruct, complete): a sampler never sees the dataset."""
        n = len(data)
        idx = torch.linspace(0, n - 1, min(EXAMPLES, n)).round().long()
        x = data.batch(idx)["x"]
        self.examples = x.cpu() if x.dtype == torch.uint8 else \
            (x.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()

    def artifacts(self) -> dict[str, Any]:
        return {"examples": self.examples}

    def load_artifacts(self, artifacts: dict[str, Any]) -> None:
        ex = artifacts.get("examples")
        self.examples = ex if isinstance(ex, torch.Tensor) else None

    # -- the protocol the pipeline and the samplers use ----------------------------------------
    @property
    def grid(self) -> int:
        return self.config.grid

    def image_shape(self) -> tuple[int, int, int]:
        c = self.config
        return c.channels, c.image_size, c.image_size

    def check_images(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.image_shape():
            raise DataError(f"this autoencoder takes images {self.image_shape()}, got "
                            f"{tuple(x.shape[1:])}")

    def encode_codes(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (B, C, H, W) -> codes (B, h, w)."""
        self.check_images(x)
        return self.quantizer.lookup(self.quantizer.flat(self.encoder(x * 2 - 1))).view(
            x.shape[0], self.grid, self.grid)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, h, w) -> images in [0, 1]."""
        return ((self.decoder(self.quantizer.embed(codes)).float() + 1) / 2).clamp(0, 1)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_codes(self.encode_codes(x))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Images in [0, 1] -> the quantiser's outputs plus ``x_rec`` in the network's [-1, 1]."""
        out = self.quantizer(self.encoder(x * 2 - 1))
        out["x_rec"] = self.decoder(out["z_q"])
        return out

    # -- training -----------------------------------------------------------------------------
    def configure_optimizers(self, train: Any) -> dict[str, torch.optim.Optimizer]:
        def adam(params: list[torch.Tensor]) -> torch.optim.Optimizer:
            return torch.optim.Adam(params, lr=train.lr, betas=tuple(train.betas),
                                    weight_decay=train.weight_decay, fused=fused_adam_ok(params))
        disc = set(id(p) for p in self.discriminator.parameters())
        main = [p for p in self.parameters() if id(p) not in disc and p.requires_grad]
        return {"main": adam(main), "disc": adam(list(self.discriminator.parameters()))}

    def feature_match(self, x: torch.Tensor, x_rec: torch.Tensor) -> torch.Tensor:
        """Mean L1 between the discriminator's features of x and of x_rec (both in [-1, 1])."""
        with torch.no_grad():
            real = self.discriminator.features(x)
        fake = self.discriminator.features(x_rec)
        return sum((f.float() - r.float()).abs().mean() for f, r in zip(fake, real)) / len(real)

    def terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The generator side's terms on a batch in [0, 1]: L1 reconstruction (taming's), the
        feature-matching term, codebook and commitment terms, and the forward pass."""
        c = self.config
        out = self(x)
        target = x * 2 - 1
        out["rec"] = (out["x_rec"].float() - target).abs().mean()
        out["fm"] = self.feature_match(target, out["x_rec"]) if c.feature_weight \
            else torch.zeros((), device=x.device)
        out["vq"] = c.codebook_weight * (out["codebook"] + c.beta * out["commitment"])
        return out

    def training_step(self, batch: dict[str, torch.Tensor], optimizers: dict[str, Any],
                      ctx: Any) -> dict[str, torch.Tensor]:
        c = self.config
        x = batch["x"]
        gan_on = c.disc_weight > 0 and ctx.step >= c.disc_start
        zero = torch.zeros((), device=x.device)
        with ctx.autocast():
            with frozen(self.discriminator):
                out = self.terms(x)
                nll = out["rec"] + c.feature_weight * out["fm"]
                g_loss, d_weight = zero, zero
                if gan_on:
                    g_loss = -self.discriminator(out["x_rec"]).float().mean()
                    d_weight = (adaptive_weight(nll, g_loss, self.decoder.conv_out.weight)
                                if c.adaptive_weight else torch.ones((), device=x.device))
                    d_weight = d_weight * c.disc_weight
            loss = nll + d_weight * g_loss + out["vq"]
        ctx.optimize(loss, optimizers["main"], "main")
        d_loss = zero
        if gan_on:
            with ctx.autocast():
                real = self.discriminator(x * 2 - 1).float()
                fake = self.discriminator(out["x_rec"].detach()).float()
                d_loss = hinge_d_loss(real, fake)
            ctx.optimize(d_loss, optimizers["disc"], "disc")
        restarted = self.quantizer.restart_dead(out["codes"], out["z_flat"], c.restart_after)
        if restarted.any():  # fresh codes must not inherit the old ones' Adam moments
            reset_adam_rows(optimizers["main"], self.quantizer.embedding.weight, restarted)
        mse = ((out["x_rec"].detach().float() + 1) / 2 - x).pow(2).mean()
        return {"loss": loss.detach() + d_loss.detach(), "rec": out["rec"].detach(),
                "mse": mse, "fm": out["fm"].detach(), "codebook": out["codebook"].detach(),
                "commitment": out["commitment"].detach(), "g_loss": g_loss.detach(),
                "d_loss": d_loss.detach(), "d_weight": d_weight.detach(),
                "perplexity": perplexity(out["codes"], c.codebook_size),
                "restarted": restarted.sum().float()}

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Held-out: reconstruction and quantiser terms (no GAN terms: they measure the
        discriminator as much as the autoencoder)."""
        x = batch["x"]
        out = self.terms(x)
        mse = ((out["x_rec"].float() + 1) / 2 - x).pow(2).mean()
        return {"loss": out["rec"] + self.config.feature_weight * out["fm"] + out["vq"],
                "rec": out["rec"], "mse": mse, "psnr": 10 * torch.log10(1 / mse.clamp_min(1e-10)),
                "codebook": out["codebook"], "commitment": out["commitment"],
                "perplexity": perplexity(out["codes"], self.config.codebook_size)}


def reset_adam_rows(opt: torch.optim.Optimizer, param: torch.Tensor, rows: torch.Tensor) -> None:
    """Zero Adam's moments of the given rows of `param` (restarted codes)."""
    state = opt.state.get(param, {})
    for key in ("exp_avg", "exp_avg_sq"):
        if key in state:
            state[key][rows] = 0


# -- stage 2: the prior over codes -------------------------------------------------------------

class CodePrior(Model):
    """A GPT-2-style (pre-norm) transformer over a code grid in raster order: position t sees the
    start token and codes 0..t-1 and predicts code t."""

    Config = CodePriorConfig
    modality = "text"  # token sequences; samplers go through the pipeline, which is "image"
    likelihood_unit = "token"

    def __init__(self, config: CodePriorConfig):
        super().__init__(config)
        c = config
        self.token_embedding = nn.Embedding(c.vocab + 1, c.embed_dim)  # + the start token
        self.position_embedding = nn.Embedding(c.positions, c.embed_dim)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c.embed_dim, c.heads, c.embed_dim // c.heads, c.ff_dim,
                                          c.dropout, "pre", "gelu") for _ in range(c.layers))
        self.ln_f = nn.LayerNorm(c.embed_dim)
        self.head = nn.Linear(c.embed_dim, c.vocab)
        for m in self.modules():  # GPT-2 / nanoGPT initialisation
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)

    @property
    def start_token(self) -> int:
        return self.config.vocab

    def setup(self, data: Any) -> None:
        x = data.x
        if x.shape[1] != self.config.positions or int(x.max()) >= self.config.vocab:
            raise DataError(f"code grids of {x.shape[1]} codes up to {int(x.max())} do not fit a "
                            f"prior of {self.config.positions} positions and "
                            f"{self.config.vocab} codes")

    def forward(self, idx: torch.Tensor, caches: list[KVCache] | None = None,
                start: int = 0) -> torch.Tensor:
        """Tokens (B, T) at positions start..start+T-1 -> logits of the next code (B, T, vocab)."""
        T = idx.shape[1]
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.drop(self.token_embedding(idx) + self.position_embedding(pos))
        for i, block in enumerate(self.blocks):
            x, _ = block(x, caches[i] if caches is not None else None)
        return self.head(self.ln_f(x))

    def inputs(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, T) -> the inputs that predict them: the start token, then codes 0..T-2."""
        start = torch.full_like(codes[:, :1], self.start_token)
        return torch.cat([start, codes[:, :-1]], 1)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        codes = batch["x"]
        logits = self(self.inputs(codes))
        nll = F.cross_entropy(logits.flatten(0, 1).float(), codes.flatten())
        return {"loss": nll, "bits_per_code": nll.detach() / math.log(2)}  # nats per code

    @torch.no_grad()
    def log_prob(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        codes = batch["x"]
        logits = self(self.inputs(codes)).float()
        return -F.cross_entropy(logits.transpose(1, 2), codes, reduction="none").sum(1)

    def likelihood_units(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["x"].numel())  # codes

    @torch.no_grad()
    def sample_codes(self, prefix: torch.Tensor, generator: torch.Generator,
                     temperature: float = 1.0, top_k: int | None = None) -> torch.Tensor:
        """Complete code rows (n, P) given codes to (n, positions), one code at a time from a
        KV cache (``genzoo.nn.autoregressive.generate`` draws: temperature, top-k)."""
        n, P = prefix.shape
        T = self.config.positions
        caches = [KVCache(T) for _ in self.blocks]
        fed = 0

        def next_logits(seq: torch.Tensor) -> torch.Tensor:
            nonlocal fed  # feed only what the caches have not seen
            logits = self(seq[:, fed:], caches, fed)
            fed = seq.shape[1]
            return logits[:, -1]
        seq = torch.cat([torch.full((n, 1), self.start_token, dtype=torch.long,
                                    device=prefix.device), prefix], 1)
        seq = generate(seq, next_logits, generator, T - P, temperature, top_k)
        return seq[:, 1:]


# -- the data of stage 2 --------------------------------------------------------------------------

@dataclass
class CodeData(TensorData):
    """Every training image's code grid, (N, h*w) long, in raster order."""

    x: torch.Tensor
    grid: int = 0
    name: str = ""
    modality: str = "text"


@torch.no_grad()
def encode_dataset(ae: VQAutoencoder, data: Any, batch_size: int = 256) -> torch.Tensor:
    """Codes (N, h*w) of every image of `data`, on the CPU, by the frozen autoencoder."""
    out = []
    with eval_mode(ae):
        for batch in batches(data, batch_size, ae.device):
            out.append(ae.encode_codes(batch["x"]).flatten(1).cpu())
    return torch.cat(out)


# -- the pipeline ---------------------------------------------------------------------------------

class VQGAN(Pipeline):
    modality = "image"
    stages = (Stage("autoencoder", VQAutoencoder, preview="reconstruct",
                    summary="encoder, codebook, decoder and PatchGAN"),
              Stage("prior", CodePrior, summary="GPT over the code grids"))

    @classmethod
    def component_config(cls, name: str, data: Any, upstream: dict[str, Model]) -> dict[str, Any]:
        if name == "prior":
            ae = upstream["autoencoder"]
            return {"vocab": ae.config.codebook_size, "positions": ae.config.grid ** 2}
        return super().component_config(name, data, upstream)

    @classmethod
    def stage_data(cls, name: str, data: Any, upstream: dict[str, Model]) -> Any:
        if name != "prior":
            return data
        ae = upstream["autoencoder"]
        return CodeData(encode_dataset(ae, data), grid=ae.config.grid,
                        name=f"{getattr(data, 'name', '')} codes")

    @torch.no_grad()
    def figures(self, data: Any) -> dict[str, Any]:
        """Held-out: reconstruction MSE and PSNR (images in [0, 1]), the codebook's perplexity and
        the fraction of codes used at least once, and the prior's bits per code."""
        ae, prior = self.autoencoder, self.prior
        k = ae.config.codebook_size
        se, psnr, n, nll, units = 0.0, 0.0, 0, 0.0, 0
        counts = torch.zeros(k, dtype=torch.long)
        with eval_mode(self):
            for batch in batches(data, 128, ae.device):
                x = batch["x"]
                codes = ae.encode_codes(x)
                mse = (ae.decode_codes(codes) - x).pow(2).flatten(1).mean(1)
                se += float(mse.sum())
                psnr += float((10 * torch.log10(1 / mse.clamp_min(1e-10))).sum())
                n += x.shape[0]
                counts += torch.bincount(codes.flatten().cpu(), minlength=k)
                flat = codes.flatten(1)
                nll -= float(prior.log_prob({"x": flat}).sum())
                units += flat.numel()
        p = counts.float() / counts.sum().clamp_min(1)
        ppl = float(torch.exp(-(p * p.clamp_min(1e-12).log()).sum()))
        # "alive" is measured on held-out images: in training, restarts keep every code's idle
        # count below restart_after, so the training counters would always say 100%
        return {"recon_mse": se / max(n, 1), "psnr_db": psnr / max(n, 1),
                "codebook_perplexity": ppl, "codes_used_test": float((counts > 0).float().mean()),
                "prior_bits_per_code": nll / max(units, 1) / math.log(2),
                "codes_per_image": ae.config.grid ** 2, "codebook_size": k}


# -- samplers -------------------------------------------------------------------------------------

def _parts(model: Any) -> tuple[VQAutoencoder, CodePrior | None]:
    """The autoencoder and the prior of a pipeline (the prior is None while stage 1 trains and
    a sampler gets the autoencoder alone)."""
    if isinstance(model, VQAutoencoder):
        return model, None
    ae = model.autoencoder
    prior = model.parts["prior"] if "prior" in model.parts else None
    return ae, prior


def _need_prior(model: Any, name: str) -> CodePrior:
    prior = _parts(model)[1]
    if prior is None:
        raise ConfigError(f"sampler {name!r} needs the trained prior; this model has only its "
                          "autoencoder (use the reconstruct sampler)")
    return prior


def _examples(ae: VQAutoencoder, n: int) -> torch.Tensor:
    """n stored training images in [0, 1] (cycling through the EXAMPLES kept)."""
    if ae.examples is None or not len(ae.examples):
        raise ConfigError("this autoencoder keeps no example images (setup never saw the "
                          "training set), so it has nothing to reconstruct or complete")
    idx = torch.arange(n) % ae.examples.shape[0]
    return ae.examples[idx].float().div(255).to(ae.device)


def palette(k: int) -> torch.Tensor:
    """A fixed colour per code, (k, 3) in [0.1, 0.9]: codes next in index look unrelated."""
    return torch.rand(k, 3, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1


def code_image(codes: torch.Tensor, k: int, size: int) -> torch.Tensor:
    """Codes (n, h, w) -> an RGB picture of the grid (n, 3, size, size), one colour per code."""
    img = palette(k).to(codes.device)[codes].permute(0, 3, 1, 2)
    return F.interpolate(img, size=(size, size), mode="nearest")


@dataclass
class CodeSampleOptions:
    temperature: float = 1.0  # divides the prior's logits: < 1 trades variety for typical codes
    top_k: int | None = None  # draw each code from the k likeliest only

    def __post_init__(self) -> None:
        if not 0 < self.temperature < math.inf:  # also nan
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 (or none), got {self.top_k}")


class PriorSampler(Sampler):
    """Codes drawn by the prior in raster order, decoded to images."""

    name = "sample"
    Options = CodeSampleOptions

    def check(self, model: Any, inputs: dict[str, Any]) -> None:
        prior = _need_prior(model, self.name)
        k = self.options.top_k
        if k is not None and k > prior.config.vocab:
            raise ConfigError(f"top_k {k} is larger than the codebook ({prior.config.vocab} codes)")

    def draw_codes(self, model: Any, n: int, generator: torch.Generator) -> torch.Tensor:
        ae, prior = _parts(model)
        prefix = torch.zeros(n, 0, dtype=torch.long, device=ae.device)
        codes = prior.sample_codes(prefix, generator, self.options.temperature, self.options.top_k)
        return codes.view(n, ae.grid, ae.grid)

    @torch.no_grad()
    def sample(self, model: Any, n: int, generator: torch.Generator, **_: Any) -> torch.Tensor:
        return _parts(model)[0].decode_codes(self.draw_codes(model, n, generator))


class ReconstructSampler(Sampler):
    """Stored training images (left) beside their reconstructions (right), one pair per
    sample: decode(quantise(encode(x)))."""

    name = "reconstruct"
    Options = SamplerOptions

    def check(self, model: Any, inputs: dict[str, Any]) -> None:
        _examples(_parts(model)[0], 1)

    @torch.no_grad()
    def sample(self, model: Any, n: int, generator: torch.Generator, **_: Any) -> ImageSample:
        ae = _parts(model)[0]
        x = _examples(ae, n)
        return ImageSample(torch.cat([x, ae.reconstruct(x)], dim=3).cpu())


class CodesSampler(PriorSampler):
    """The prior's code grid, one colour per code (left), beside the image it decodes to."""

    name = "codes"

    @torch.no_grad()
    def sample(self, model: Any, n: int, generator: torch.Generator, **_: Any) -> ImageSample:
        ae = _parts(model)[0]
        codes = self.draw_codes(model, n, generator)
        img = ae.decode_codes(codes)
        if img.shape[1] == 1:
            img = img.expand(-1, 3, -1, -1)
        view = code_image(codes, ae.config.codebook_size, ae.config.image_size)
        return ImageSample(torch.cat([view, img], dim=3).cpu())


@dataclass
class CompleteOptions(CodeSampleOptions):
    rows: int | None = None  # code rows kept from the real image; none: the top half

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rows is not None and self.rows < 0:
            raise ValueError(f"rows must be >= 0 (or none), got {self.rows}")


class CompleteSampler(PriorSampler):
    """Image completion: a stored training image's top code rows are kept, the prior draws the
    rest. Each sample shows the original, what was given (the rest grey), and the completion."""

    name = "complete"
    Options = CompleteOptions

    def check(self, model: Any, inputs: dict[str, Any]) -> None:
        super().check(model, inputs)
        ae = _parts(model)[0]
        _examples(ae, 1)
        if self.options.rows is not None and self.options.rows > ae.grid:
            raise ConfigError(f"rows {self.options.rows} is more than the code grid's "
                              f"{ae.grid} rows")

    def complete_codes(self, model: Any, x: torch.Tensor,
                       generator: torch.Generator) -> torch.Tensor:
        """Codes (n, h, w) of images `x`, rows below the first `rows` drawn by the prior."""
        ae, prior = _parts(model)
        g = ae.grid
        rows = g // 2 if self.options.rows is None else self.options.rows
        given = ae.encode_codes(x).flatten(1)[:, :rows * g]
        codes = prior.sample_codes(given, generator, self.options.temperature, self.options.top_k)
        return codes.view(-1, g, g)

    @torch.no_grad()
    def sample(self, model: Any, n: int, generator: torch.Generator, **_: Any) -> ImageSample:
        ae = _parts(model)[0]
        x = _examples(ae, n)
        done = ae.decode_codes(self.complete_codes(model, x, generator))
        rows = ae.grid // 2 if self.options.rows is None else self.options.rows
        cut = rows * ae.config.image_size // ae.grid
        given = x.clone()
        given[:, :, cut:] = 0.5
        return ImageSample(torch.cat([x, given, done], dim=3).cpu())
