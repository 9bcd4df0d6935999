"""Text to image (Foster ch. 13 in miniature): CLIP trained from scratch, then latent diffusion
with cross-attention to the prompt and classifier-free guidance.

**CLIP** (Radford et al. 2021). An image tower (the chapter-2 CNN's conv -> batch norm ->
LeakyReLU blocks) and a text tower (the chapter-9 transformer's blocks from ``genzoo.nn``, over a
learned start token and the caption's words) map an image and a caption into one space; a batch
of N pairs is trained with the symmetric InfoNCE loss: cross-entropy of the N x N cosine
similarities, times a learned temperature, towards the matching pairs, image -> text and text ->
image. Captions made from classes repeat inside a batch ("a handwritten seven" x 13), so pairs
with identical captions count as matches too (the loss is the plain one when captions differ).
The text tower is causal with the padding at the end, so padding never reaches a word; the
caption's embedding is the output at its last word (CLIP's EOS), the empty caption's that of
the start token. ``zoo eval`` reports zero-shot classification (an image gets the class whose
prompt, "a handwritten seven", it is closest to) and image <-> text retrieval recall@1/5.

**Latent diffusion** (Rombach et al. 2022), a pipeline of three stages:
1. ``clip``: the model above; frozen afterwards, its text tower encodes prompts (every token's
   output, as Stable Diffusion uses CLIP's last hidden states).
2. ``autoencoder``: a small convolutional KL-autoencoder (the chapter-3 VAE made spatial: a
   4 x H/4 x W/4 latent grid, a weak KL term as Rombach's "KL-f4"); latents are standardised by
   running moments it keeps while training.
3. ``unet``: the chapter-8 denoiser (offset cosine schedule, noise-variance embedding, DDIM)
   over the latents, its residual blocks followed by transformer blocks whose cross-attention
   reads the prompt's token states (masked on padding). 10% of training captions are dropped
   to the empty caption, so one network predicts both eps(x, prompt) and eps(x, "").

**Classifier-free guidance** (Ho & Salimans 2022) at sampling: eps = eps_u + w (eps_c - eps_u);
w = 0 is unconditional, w = 1 conditional, w > 1 sharpens towards the prompt. Both passes run as
one batch of 2n (``batched=false``: two passes, for the latency figure).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from genzoo.errors import ConfigError, DataError
from genzoo.family import (ImageSample, Model, Pipeline, Sampler, Stage, Tokenizer, batches,
                           gaussian)
from genzoo.nn.captions import caption_tokenizer, tokenize
from genzoo.nn.transformer import Block


def _groups(c: int) -> int:
    return next(g for g in (8, 4, 2, 1) if c % g == 0)


def _check_image_size(size: int, downsamples: int) -> None:
    if size % (2 ** downsamples):
        raise ValueError(f"image_size {size} must be divisible by {2 ** downsamples} (set "
                         "data.size or data.pad)")


# ================================================================================================
# CLIP
# ================================================================================================

@dataclass
class CLIPConfig:
    image_size: int = 32
    channels: int = 1
    filters: tuple[int, ...] = (32, 64, 128)  # image tower: per width a stride-1 and a stride-2 block
    embed_dim: int = 64  # the joint image-text space
    width: int = 64  # text tower width (the U-Net's cross-attention reads these states)
    layers: int = 2
    heads: int = 4
    context: int = 16  # caption tokens read (from the data: its longest caption)
    vocab: int = 64  # words kept (from the data: all its captions' words, + padding and [UNK])
    init_temperature: float = 0.07  # CLIP's
    max_logit_scale: float = 100.0  # CLIP clips 1 / temperature at 100

    def __post_init__(self) -> None:
        _check_image_size(self.image_size, len(self.filters))
        if not self.filters or min(self.filters) < 1:
            raise ValueError(f"filters needs widths >= 1, got {list(self.filters)}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} must be divisible by heads {self.heads}")
        if self.context < 1 or self.vocab < 3 or self.layers < 1 or self.embed_dim < 1:
            raise ValueError("context, layers and embed_dim must be >= 1, vocab >= 3")
        if not 0 < self.init_temperature < 1:
            raise ValueError(f"init_temperature must be in (0, 1), got {self.init_temperature}")


def conv_block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """The chapter-2 CNN's block: 3x3 conv -> batch norm -> LeakyReLU(0.3)."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1),
                         nn.BatchNorm2d(c_out), nn.LeakyReLU(0.3))


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -(target * logits.log_softmax(-1)).sum(-1).mean()


def info_nce(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor,
             same: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE of unit embeddings (N, D) and (N, D): the mean of the image -> text
    and text -> image cross-entropies of ``scale * image @ text.T``. `same` (N, N, symmetric)
    marks the pairs that match (identical captions; default: the diagonal), each row's target
    spread evenly over them. Returns (loss, logits)."""
    logits = scale * image @ text.T
    if same is None:
        same = torch.eye(len(image), device=image.device)
    target = same.float() / same.float().sum(1, keepdim=True)
    return 0.5 * (soft_cross_entropy(logits, target) + soft_cross_entropy(logits.T, target)), logits


class CLIP(Model):
    """Image and text towers into one space, trained contrastively (see the module docstring).
    The word tokenizer is a run artifact, built from the training captions."""

    Config = CLIPConfig
    modality = "image"
    likelihood_unit = None

    def __init__(self, config: CLIPConfig):
        super().__init__(config)
        c = config
        blocks, c_in = [], c.channels
        for w in c.filters:
            blocks += [conv_block(c_in, w, 1), conv_block(w, w, 2)]
            c_in = w
        side = c.image_size // 2 ** len(c.filters)
        self.image_tower = nn.Sequential(*blocks, nn.Flatten(),
                                         nn.Linear(c_in * side * side, c.embed_dim))
        self.token_embedding = nn.Embedding(c.vocab, c.width)
        self.start = nn.Parameter(torch.randn(c.width) * 0.02)
        self.positions = nn.Parameter(torch.randn(c.context + 1, c.width) * 0.01)
        self.blocks = nn.ModuleList(Block(c.width, c.heads, c.width // c.heads, 4 * c.width)
                                    for _ in range(c.layers))
        self.ln_final = nn.LayerNorm(c.width)
        self.text_projection = nn.Linear(c.width, c.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / c.init_temperature)))
        self.tokenizer: Tokenizer | None = None
        self.class_names: list[str] = []
        self.class_prompts: list[str] = []
        self.groups: dict[str, list[int]] = {}

    # -- data --------------------------------------------------------------------------------
    @classmethod
    def config_from_data(cls, data: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        shape = getattr(data, "shape", None)
        if shape:
            out.update(image_size=int(shape[-1]), channels=int(shape[0]))
        captions = getattr(data, "captions", None)
        if captions:
            tok = caption_tokenizer(captions)
            longest = max(len(tok.split(c)) for alts in captions for c in alts)
            out.update(vocab=len(tok), context=max(1, min(longest, 64)))
        return out

    def setup(self, data: Any) -> None:
        if not getattr(data, "captions", None):
            raise DataError(f"dataset {getattr(data, 'name', '')!r} has no captions; use a "
                            "captioned one (mnist-captions, twemoji-captions ...) or a folder "
                            "with a captions.jsonl (--data folder:PATH)")
        # a preset's vocab caps the words kept (the most frequent; the rest read as [UNK])
        self.tokenizer = caption_tokenizer(data.captions, max_vocab=self.config.vocab)
        self.class_names = list(getattr(data, "classes", []) or [])
        self.class_prompts = list(getattr(data, "class_prompts", []) or [])
        self.groups = {k: list(v) for k, v in (getattr(data, "groups", {}) or {}).items()}

    def artifacts(self) -> dict[str, Any]:
        if self.tokenizer is None:
            return {}
        return {"tokenizer": self.tokenizer.to_json(), "class_names": self.class_names,
                "class_prompts": self.class_prompts, "groups": self.groups}

    def load_artifacts(self, artifacts: dict[str, Any]) -> None:
        if "tokenizer" in artifacts:
            self.tokenizer = Tokenizer.from_json(artifacts["tokenizer"])
        self.class_names = list(artifacts.get("class_names") or [])
        self.class_prompts = list(artifacts.get("class_prompts") or [])
        self.groups = {k: list(v) for k, v in (artifacts.get("groups") or {}).items()}

    # -- towers ------------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Captions -> (B, context) ids on the model's device; unknown words -> [UNK]."""
        if self.tokenizer is None:
            raise ConfigError("this CLIP has no tokenizer yet (it is built from the training "
                              "captions)")
        return tokenize(self.tokenizer, texts, self.config.context).to(self.device)

    def prompt_tokens(self, prompt: str) -> list[int]:
        """A user's prompt as ids: unknown words and prompts longer than the context are one
        line each (the tokenizer names the unknown words and close vocabulary ones)."""
        if self.tokenizer is None:
            raise ConfigError("this CLIP has no tokenizer yet")
        ids = self.tokenizer.encode_prompt(prompt)
        if len(ids) > self.config.context:
            raise ConfigError(f"the prompt has {len(ids)} words; this model reads at most "
                              f"{self.config.context} (its longest training caption)")
        return ids

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> unit embeddings (B, embed_dim)."""
        return F.normalize(self.image_tower(x * 2 - 1).float(), dim=-1)

    def text_states(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) ids -> every position's state (B, 1 + L, width) (the start token, then the
        words) and which positions are real (B, 1 + L) bool: the start and the words, not the
        padding. Causal attention with the padding last: a word never sees padding."""
        B, L = tokens.shape
        h = torch.cat([self.start.expand(B, 1, -1), self.token_embedding(tokens)], 1)
        h = h + self.positions[:L + 1]
        for block in self.blocks:
            h, _ = block(h)
        lengths = (tokens != 0).sum(1)
        mask = torch.arange(L + 1, device=tokens.device)[None] <= lengths[:, None]
        return self.ln_final(h), mask

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> unit embeddings (B, embed_dim): the state at the last word."""
        h, mask = self.text_states(tokens)
        last = mask.sum(1) - 1
        return F.normalize(self.text_projection(h[torch.arange(len(h)), last]).float(), dim=-1)

    @property
    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=self.config.max_logit_scale)

    def loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        captions = batch["captions"]
        # one wording for the whole batch: then equal classes have equal captions
        k = int(torch.randint(len(captions[0]), ())) if self.training else 0
        tokens = self.tokenize([alts[k] for alts in captions])
        same = (tokens[:, None] == tokens[None]).all(-1)
        loss, logits = info_nce(self.encode_image(batch["x"]), self.encode_text(tokens),
                                self.scale, same)
        hit = same.gather(1, logits.argmax(1, keepdim=True)).float().mean()
        return {"loss": loss, "accuracy": hit.detach(), "temperature": (1 / self.scale).detach()}

    # -- zoo eval ----------------------------------------------------------------------------
    @torch.no_grad()
    def embed_images(self, data: Any, batch_size: int = 256) -> torch.Tensor:
        was = self.training
        self.eval()
        try:
            return torch.cat([self.encode_image(b["x"]) for b in batches(data, batch_size,
                                                                         self.device)])
        finally:
            self.train(was)

    @torch.no_grad()
    def embed_texts(self, texts: list[str], batch_size: int = 512) -> torch.Tensor:
        was = self.training
        self.eval()
        try:
            return torch.cat([self.encode_text(self.tokenize(texts[i:i + batch_size]))
                              for i in range(0, len(texts), batch_size)])
        finally:
            self.train(was)

    def evaluate_extra(self, data: Any, out_dir: Any = None) -> dict[str, Any]:
        return clip_figures(self, data)

    def image_shape(self) -> tuple[int, int, int]:
        c = self.config
        return c.channels, c.image_size, c.image_size


@torch.no_grad()
def clip_figures(clip: CLIP, data: Any) -> dict[str, Any]:
    """Zero-shot accuracy (per group of classes: ``zero_shot/mnist``...), and retrieval
    recall@1/5 between the images and their (first-wording) captions. Captions repeat on
    class-made data, so a retrieved caption (image) counts when it is the query's caption (has
    the query's caption): on unique captions these are the usual recalls."""
    captions = getattr(data, "captions", None)
    if not captions:
        raise DataError("this split has no captions: CLIP's figures need captioned images")
    img = clip.embed_images(data)
    out: dict[str, Any] = {}
    y = getattr(data, "y", None)
    prompts = clip.class_prompts
    if y is not None and prompts and len(prompts) == len(getattr(data, "classes", []) or []):
        sims = img @ clip.embed_texts(prompts).T  # (N, classes)
        y = y.to(sims.device)
        groups = clip.groups or {"": list(range(len(prompts)))}
        hits = torch.zeros(len(y), dtype=torch.bool, device=sims.device)
        for name, ids in groups.items():
            ids_t = torch.tensor(ids, device=sims.device)
            rows = torch.isin(y, ids_t)
            if rows.any():
                pred = ids_t[sims[rows][:, ids_t].argmax(1)]
                hits[rows] = pred == y[rows]
                if name:
                    out[f"zero_shot/{name}"] = float(hits[rows].float().mean())
        out["zero_shot_accuracy"] = float(hits.float().mean())
    texts = [alts[0] for alts in captions]
    distinct = sorted(set(texts))
    index = {t: i for i, t in enumerate(distinct)}
    which = torch.tensor([index[t] for t in texts], device=img.device)
    sims = img @ clip.embed_texts(distinct).T  # (N images, D captions)
    for k in (1, 5):
        kk = min(k, len(distinct))
        top = sims.topk(kk, dim=1).indices  # image -> caption
        out[f"recall@{k}/image_to_text"] = float((top == which[:, None]).any(1).float().mean())
        kk = min(k, len(texts))
        top_img = sims.T.topk(kk, dim=1).indices  # caption -> images: (D, kk)
        hit_caption = (which[top_img] == torch.arange(len(distinct), device=img.device)[:, None]).any(1)
        out[f"recall@{k}/text_to_image"] = float(hit_caption[which].float().mean())
    return out


@dataclass
class DreamOptions:
    steps: int = 100
    lr: float = 0.05

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


class DreamSampler(Sampler):
    """What CLIP sees in a prompt: pixels ascend the cosine between the image and the prompt
    (without a prompt: each class prompt in turn). Not a generator, a window on the towers."""

    name = "dream"
    Options = DreamOptions
    inputs = {"prompt": "text the images should match (default: each class prompt in turn)"}
    needs_grad = True
    preview = {"steps": 20}

    def check(self, model: CLIP, inputs: dict[str, Any]) -> None:
        prompt = inputs.get("prompt")
        if prompt is not None and prompt.strip():
            model.prompt_tokens(prompt)

    def sample(self, model: CLIP, n: int, generator: torch.Generator, prompt: str | None = None,
               **_: Any) -> ImageSample:
        texts = _prompts_for(model, n, prompt)[0]
        target = model.encode_text(model.tokenize(texts)).detach()
        pixels = (0.1 * gaussian(generator, (n, *model.image_shape()), model.device)).requires_grad_(True)
        opt = torch.optim.Adam([pixels], lr=self.options.lr)
        for _ in range(self.options.steps):
            score = (model.encode_image(torch.sigmoid(pixels)) * target).sum()
            opt.zero_grad(set_to_none=True)
            (-score).backward()
            opt.step()
        out = ImageSample(torch.sigmoid(pixels.detach()).cpu())
        out.extras["prompt"] = _describe(texts, prompt, None)
        return out


def _prompts_for(clip: CLIP, n: int, prompt: str | None) -> tuple[list[str], bool]:
    """The prompt of each of n samples, and whether they are unconditional: a given prompt
    for all; the empty prompt: unconditional; none: the class prompts in turn (the previews)."""
    if prompt is not None and not prompt.strip():
        return [""] * n, True
    if prompt is not None:
        clip.prompt_tokens(prompt)
        return [prompt] * n, False
    if clip.class_prompts:
        return [clip.class_prompts[i % len(clip.class_prompts)] for i in range(n)], False
    return [""] * n, True


def _describe(texts: list[str], prompt: str | None, guidance: float | None) -> str:
    how = "" if guidance is None else f" (guidance {guidance:g})"
    if not any(texts):
        return "unconditional samples (empty prompt)"
    if prompt is not None:
        return f"prompt: {prompt}{how}"
    return f"one prompt per sample, in turn{how}: " + " | ".join(dict.fromkeys(texts))


# ================================================================================================
# The autoencoder (stage 2)
# ================================================================================================

class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> 3x3 conv, twice, plus the input (1x1 conv when the width changes);
    with `time_dim`, the noise level's embedding is added between the convolutions."""

    def __init__(self, c_in: int, c_out: int, time_dim: int = 0):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(time_dim, c_out) if time_dim else None
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.time is not None and t is not None:
            h = h + self.time(t)[:, :, None, None]
        return self.conv2(F.silu(self.norm2(h))) + self.skip(x)


@dataclass
class AutoencoderConfig:
    image_size: int = 32
    channels: int = 1
    widths: tuple[int, ...] = (32, 64)  # one residual block and a 2x downsampling per width
    latent_channels: int = 4
    kl_weight: float = 1e-3  # on the mean KL per latent number (weak: Rombach's KL-reg)
    moment_rate: float = 0.05  # EMA rate of the latent moments that standardise them

    def __post_init__(self) -> None:
        _check_image_size(self.image_size, len(self.widths))
        if not self.widths or min(self.widths) < 1 or self.latent_channels < 1:
            raise ValueError("widths and latent_channels must be >= 1")
        if self.kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {self.kl_weight}")


class KLAutoencoder(Model):
    """Images (C, H, W) <-> latent grids (latent_channels, H / 2^k, W / 2^k): a VAE with a
    spatial latent, trained on MSE plus a weak KL term. Keeps running moments of its latents
    (``latent_mean``, ``latent_std``) so the diffusion stage sees them standardised."""

    Config = AutoencoderConfig
    modality = "image"
    likelihood_unit = None

    def __init__(self, config: AutoencoderConfig):
        super().__init__(config)
        c = config
        enc: list[nn.Module] = [nn.Conv2d(c.channels, c.widths[0], 3, padding=1)]
        w = c.widths[0]
        for width in c.widths:
            enc += [ResBlock(w, width), nn.Conv2d(width, width, 3, stride=2, padding=1)]
            w = width
        enc += [nn.GroupNorm(_groups(w), w), nn.SiLU(), nn.Conv2d(w, 2 * c.latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(c.latent_channels, w, 3, padding=1)]
        for width in reversed(c.widths):
            dec += [ResBlock(w, width), nn.Upsample(scale_factor=2, mode="nearest"),
                    nn.Conv2d(width, width, 3, padding=1)]
            w = width
        dec += [nn.GroupNorm(_groups(w), w), nn.SiLU(), nn.Conv2d(w, c.channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)
        self.register_buffer("latent_mean", torch.zeros(()))
        self.register_buffer("latent_var", torch.ones(()))
        self.register_buffer("moment_updates", torch.zeros(()))

    @classmethod
    def config_from_data(cls, data: Any) -> dict[str, Any]:
        shape = getattr(data, "shape", None)
        return {"image_size": int(shape[-1]), "channels": int(shape[0])} if shape else {}

    def latent_shape(self) -> tuple[int, int, int]:
        c = self.config
        side = c.image_size // 2 ** len(c.widths)
        return c.latent_channels, side, side

    def image_shape(self) -> tuple[int, int, int]:
        c = self.config
        return c.channels, c.image_size, c.image_size

    def encode_dist(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = self.encoder(x * 2 - 1).float().chunk(2, dim=1)
        return mean, log_var.clamp(-20, 10)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> standardised latents (the posterior mean)."""
        return (self.encode_dist(x)[0] - self.latent_mean) / self.latent_var.sqrt()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Standardised latents -> images in [0, 1]."""
        z = z.float() * self.latent_var.sqrt() + self.latent_mean
        return torch.sigmoid(self.decoder(z).float())

    def loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        x = batch["x"]
        mean, log_var = self.encode_dist(x)
        z = mean + (0.5 * log_var).exp() * torch.randn_like(mean)
        recon = torch.sigmoid(self.decoder(z).float())
        mse = (recon - x).pow(2).mean()
        kl = 0.5 * (mean.pow(2) + log_var.exp() - 1 - log_var).mean()
        if self.training:
            with torch.no_grad():
                rate = max(1.0 / float(self.moment_updates + 1), self.config.moment_rate)
                m = mean.mean()
                self.latent_mean.lerp_(m, rate)
                self.latent_var.lerp_((mean - m).pow(2).mean(), rate)
                self.moment_updates += 1
        return {"loss": mse + self.config.kl_weight * kl, "mse": mse.detach(), "kl": kl.detach()}


# ================================================================================================
# The conditional U-Net (stage 3)
# ================================================================================================

class TransformerBlock2d(nn.Module):
    """Stable Diffusion's spatial transformer, small: self-attention over the grid's positions,
    cross-attention from them to the prompt's token states (padding masked out), a feed-forward
    layer; each pre-normed and residual, the whole block's output projection zero-initialised."""

    def __init__(self, channels: int, context_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm_in = nn.GroupNorm(_groups(channels), channels)
        self.ln1 = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.self_out = nn.Linear(channels, channels)
        self.ln2 = nn.LayerNorm(channels)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.cross_out = nn.Linear(channels, channels)
        self.ln3 = nn.LayerNorm(channels)
        self.ff = nn.Sequential(nn.Linear(channels, 2 * channels), nn.GELU(),
                                nn.Linear(2 * channels, channels))
        self.proj_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        B, T, C = t.shape
        return t.view(B, T, self.heads, C // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.norm_in(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        q, k, v = self.qkv(self.ln1(h)).chunk(3, dim=-1)
        a = F.scaled_dot_product_attention(self._heads(q), self._heads(k), self._heads(v))
        h = h + self.self_out(a.transpose(1, 2).reshape(B, H * W, C))
        k, v = self.kv(context.to(h.dtype)).chunk(2, dim=-1)
        a = F.scaled_dot_product_attention(self._heads(self.q(self.ln2(h))), self._heads(k),
                                           self._heads(v), attn_mask=mask[:, None, None, :])
        h = h + self.cross_out(a.transpose(1, 2).reshape(B, H * W, C))
        h = h + self.ff(self.ln3(h))
        return x + self.proj_out(h).transpose(1, 2).reshape(B, C, H, W)


def sinusoidal_embedding(noise_variances: torch.Tensor, dim: int, max_frequency: float = 1000.0
                         ) -> torch.Tensor:
    """The chapter-8 embedding of the noise variance: sin and cos at dim/2 frequencies spaced
    geometrically from 1 to `max_frequency`."""
    freqs = torch.exp(torch.linspace(0.0, math.log(max_frequency), dim // 2,
                                     device=noise_variances.device))
    angles = 2.0 * math.pi * freqs * noise_variances.float()[:, None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


@dataclass
class UNetConfig:
    latent_channels: int = 4  # from the autoencoder
    latent_size: int = 8  # from the autoencoder
    context_dim: int = 64  # from CLIP: its text tower's width
    widths: tuple[int, ...] = (64, 128)  # one level per width; 2x down between levels
    block_depth: int = 1  # residual + transformer blocks per level
    heads: int = 4
    embedding_dim: int = 32  # sinusoidal noise-variance embedding (chapter 8)
    timesteps: int = 1000
    min_signal_rate: float = 0.02  # the book's offset cosine schedule
    max_signal_rate: float = 0.95
    caption_dropout: float = 0.1  # share of training captions replaced by "" (for guidance)

    def __post_init__(self) -> None:
        _check_image_size(self.latent_size, len(self.widths) - 1)
        if not self.widths or min(self.widths) < 1 or self.block_depth < 1:
            raise ValueError("widths and block_depth must be >= 1")
        if any(w % self.heads for w in self.widths):
            raise ValueError(f"every width must be divisible by heads {self.heads}")
        if not 0 <= self.caption_dropout < 1:
            raise ValueError(f"caption_dropout must be in [0, 1), got {self.caption_dropout}")
        if self.embedding_dim < 2 or self.embedding_dim % 2:
            raise ValueError(f"embedding_dim must be even and >= 2, got {self.embedding_dim}")
        if not 0 < self.min_signal_rate < self.max_signal_rate <= 1:
            raise ValueError("need 0 < min_signal_rate < max_signal_rate <= 1")


class CondUNet(nn.Module):
    """(noisy latents, noise variances, prompt states, prompt mask) -> predicted noise."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        tdim = 4 * cfg.widths[0]
        self.time = nn.Sequential(nn.Linear(cfg.embedding_dim, tdim), nn.SiLU(),
                                  nn.Linear(tdim, tdim))
        self.stem = nn.Conv2d(cfg.latent_channels, cfg.widths[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips, w = [], cfg.widths[0]
        for i, width in enumerate(cfg.widths):
            level = nn.ModuleList()
            for _ in range(cfg.block_depth):
                level.append(nn.ModuleList([ResBlock(w, width, tdim),
                                            TransformerBlock2d(width, cfg.context_dim, cfg.heads)]))
                w = width
                skips.append(w)
            self.down.append(level)
            self.downsample.append(nn.Conv2d(w, w, 3, stride=2, padding=1)
                                   if i < len(cfg.widths) - 1 else nn.Identity())
        self.mid1 = ResBlock(w, w, tdim)
        self.mid_attn = TransformerBlock2d(w, cfg.context_dim, cfg.heads)
        self.mid2 = ResBlock(w, w, tdim)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, width in reversed(list(enumerate(cfg.widths))):
            level = nn.ModuleList()
            for _ in range(cfg.block_depth):
                level.append(nn.ModuleList([ResBlock(w + skips.pop(), width, tdim),
                                            TransformerBlock2d(width, cfg.context_dim, cfg.heads)]))
                w = width
            self.up.append(level)
            self.upsample.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                               nn.Conv2d(w, w, 3, padding=1))
                                 if i > 0 else nn.Identity())
        self.out_norm = nn.GroupNorm(_groups(w), w)
        self.head = nn.Conv2d(w, cfg.latent_channels, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor, noise_variances: torch.Tensor, context: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        t = self.time(sinusoidal_embedding(noise_variances, self.cfg.embedding_dim).to(x.dtype))
        h = self.stem(x)
        skips = []
        for level, down in zip(self.down, self.downsample):
            for res, attn in level:
                h = attn(res(h, t), context, mask)
                skips.append(h)
            h = down(h)
        h = self.mid2(self.mid_attn(self.mid1(h, t), context, mask), t)
        for level, up in zip(self.up, self.upsample):
            for res, attn in level:
                h = attn(res(torch.cat([h, skips.pop()], 1), t), context, mask)
            h = up(h)
        return self.head(F.silu(self.out_norm(h)))


def offset_cosine(t: torch.Tensor, min_signal_rate: float, max_signal_rate: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The book's schedule: (noise_rates, signal_rates) at t in [0, 1], the angle running from
    acos(max_signal_rate) to acos(min_signal_rate)."""
    start, end = math.acos(max_signal_rate), math.acos(min_signal_rate)
    angle = start + t.double() * (end - start)
    return torch.sin(angle), torch.cos(angle)


class LatentUNet(Model):
    """The denoiser over standardised latents, conditioned on CLIP's prompt states; reads the
    frozen CLIP as ``self.upstream["clip"]`` to encode its captions while it trains."""

    Config = UNetConfig
    modality = "image"
    likelihood_unit = None

    def __init__(self, config: UNetConfig):
        super().__init__(config)
        self.network = CondUNet(config)
        self._noise_rates, self._signal_rates = offset_cosine(
            torch.arange(config.timesteps + 1, dtype=torch.float64) / config.timesteps,
            config.min_signal_rate, config.max_signal_rate)

    @property
    def schedule_length(self) -> int:
        return self.config.timesteps

    def rates(self, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(noise_rates, signal_rates) at integer levels (B,), shaped (B, 1, 1, 1)."""
        i = i.cpu()
        p = self.network.stem.weight
        return tuple(r[i].view(-1, 1, 1, 1).to(p.device, p.dtype) for r in
                     (self._noise_rates, self._signal_rates))

    def forward(self, noisy: torch.Tensor, noise_rates: torch.Tensor, context: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        return self.network(noisy, noise_rates.flatten() ** 2, context, mask)

    def drop_captions(self, texts: list[str]) -> list[str]:
        """Each caption replaced by "" with probability ``caption_dropout`` (the CPU's global
        generator: resumable like the rest of the step's randomness)."""
        drop = torch.rand(len(texts)) < self.config.caption_dropout
        return ["" if d else t for t, d in zip(texts, drop.tolist())]

    def loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        clip = self.upstream["clip"]
        z0 = batch["x"]
        captions = batch["captions"]
        pick = torch.randint(len(captions[0]), (len(captions),)).tolist()
        texts = [alts[k] for alts, k in zip(captions, pick)]
        if self.training:
            texts = self.drop_captions(texts)
        with torch.no_grad():
            context, mask = clip.text_states(clip.tokenize(texts))
        noise = torch.randn_like(z0)
        levels = torch.randint(1, self.config.timesteps + 1, (len(z0),))
        n, s = self.rates(levels)
        pred = self(s * z0 + n * noise, n, context, mask).float()
        mse = (pred - noise).pow(2).mean()
        return {"loss": mse, "mse": mse.detach()}


class LatentData:
    """The diffusion stage's data: standardised latents of the images (computed once by the
    frozen autoencoder), with their captions and labels."""

    modality = "image"

    def __init__(self, z: torch.Tensor, captions: list, y: Any, name: str):
        self.x, self.captions, self.y, self.name = z, captions, y, name

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def batch(self, index: Any) -> dict[str, Any]:
        rows = index.tolist() if isinstance(index, torch.Tensor) else list(index)
        return {"x": self.x[index], "captions": [self.captions[i] for i in rows]}

    def to_device(self, batch: dict[str, Any], device: Any) -> dict[str, Any]:
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def to(self, device: Any) -> "LatentData":
        self.x = self.x.to(device)
        return self


# ================================================================================================
# The pipeline and its sampler
# ================================================================================================

class LatentDiffusion(Pipeline):
    """clip -> autoencoder -> unet (see the module docstring). Samplers get ``model.clip``,
    ``model.autoencoder``, ``model.unet``."""

    modality = "image"
    stages = (Stage("clip", CLIP, summary="image and text towers, symmetric InfoNCE"),
              Stage("autoencoder", KLAutoencoder, summary="images <-> latent grids"),
              Stage("unet", LatentUNet, summary="latent denoiser with cross-attention"))

    @classmethod
    def component_config(cls, name: str, data: Any, upstream: dict[str, Model]) -> dict[str, Any]:
        if name == "unet":
            ae, clip = upstream.get("autoencoder"), upstream.get("clip")
            out: dict[str, Any] = {}
            if ae is not None:
                c, side, _ = ae.latent_shape()
                out.update(latent_channels=c, latent_size=side)
            if clip is not None:
                out["context_dim"] = clip.config.width
            return out
        return super().component_config(name, data, upstream)

    @classmethod
    def stage_data(cls, name: str, data: Any, upstream: dict[str, Model]) -> Any:
        if name != "unet":
            return data
        if not getattr(data, "captions", None):
            raise DataError("latent diffusion needs captioned images")
        ae = upstream["autoencoder"]
        with torch.no_grad():
            z = torch.cat([ae.encode(b["x"]).float().cpu()
                           for b in batches(data, 256, ae.latent_mean.device)])
        return LatentData(z, list(data.captions), getattr(data, "y", None),
                          getattr(data, "name", ""))

    def image_shape(self) -> tuple[int, int, int]:
        return self.autoencoder.image_shape()

    def figures(self, data: Any) -> dict[str, Any]:
        """CLIP's zero-shot and retrieval figures, and the CLIP score (100 x the cosine of a
        generated image and its prompt, floored at 0) of 8 samples per class prompt at
        guidance 3."""
        out = {f"clip/{k}": v for k, v in clip_figures(self.clip, data).items()}
        prompts = self.clip.class_prompts
        if prompts:
            g = torch.Generator().manual_seed(0)
            texts = [p for p in prompts for _ in range(8)]
            images = generate(self, texts, g, guidance=3.0, steps=20)
            out["clip_score@w3"] = clip_score(self.clip, images, texts)
        return out


@torch.no_grad()
def clip_score(clip: CLIP, images: torch.Tensor, texts: list[str]) -> float:
    """Hessel et al. 2021's CLIP score with our CLIP: 100 * max(cos(image, text), 0), averaged."""
    img = clip.encode_image(images.to(clip.device))
    txt = clip.encode_text(clip.tokenize(texts))
    return float(100 * (img * txt).sum(1).clamp_min(0).mean())


def guided_noise(unet: LatentUNet, x: torch.Tensor, n: torch.Tensor, cond: tuple, uncond: tuple,
                 guidance: float, batched: bool = True) -> torch.Tensor:
    """eps_u + w (eps_c - eps_u), the conditional and unconditional predictions computed in one
    batch of 2B (`batched`) or in two passes. w = 0 and w = 1 skip the pass they do not need."""
    if guidance == 1.0:
        return unet(x, n, *cond)
    if guidance == 0.0:
        return unet(x, n, *uncond)
    if batched:
        both = unet(torch.cat([x, x]), torch.cat([n, n]), torch.cat([cond[0], uncond[0]]),
                    torch.cat([cond[1], uncond[1]]))
        eps_c, eps_u = both.chunk(2)
    else:
        eps_c, eps_u = unet(x, n, *cond), unet(x, n, *uncond)
    return eps_u + guidance * (eps_c - eps_u)


@torch.no_grad()
def generate(model: LatentDiffusion, texts: list[str], generator: torch.Generator,
             guidance: float = 3.0, steps: int = 20, eta: float = 0.0,
             batched: bool = True) -> torch.Tensor:
    """Images in [0, 1] for the prompts `texts` (one per image; "" is unconditional) by DDIM
    over the latents with classifier-free guidance, then the autoencoder's decoder."""
    clip, ae, unet = model.clip, model.autoencoder, model.unet
    k = len(texts)
    x = gaussian(generator, (k, *ae.latent_shape()), unet.device)
    cond = clip.text_states(clip.tokenize(texts))
    uncond = clip.text_states(clip.tokenize([""] * k))
    T = unet.schedule_length
    levels = [round(T * (1 - i / steps)) for i in range(steps + 1)]
    pred = x
    for i in range(steps):
        n, s = unet.rates(torch.full((k,), levels[i], dtype=torch.long))
        eps = guided_noise(unet, x, n, cond, uncond, guidance, batched).to(x.dtype)
        pred = (x - n * eps) / s
        if i == steps - 1:
            break
        n2, s2 = unet.rates(torch.full((k,), levels[i + 1], dtype=torch.long))
        sigma = eta * (n2 / n) * (1 - (s / s2) ** 2).clamp_min(0).sqrt()
        x = s2 * pred + (n2 ** 2 - sigma ** 2).clamp_min(0).sqrt() * eps
        if eta > 0:
            x = x + sigma * gaussian(generator, x.shape, x.device, x.dtype)
    return ae.decode(pred).clamp(0, 1)


@dataclass
class GuidedOptions:
    steps: int = 20  # DDIM steps
    guidance: float = 3.0  # w: 0 unconditional, 1 conditional, > 1 guided
    eta: float = 0.0  # 0: deterministic DDIM
    batched: bool = True  # conditional and unconditional passes in one batch

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not (math.isfinite(self.guidance) and self.guidance >= 0):
            raise ValueError(f"guidance must be a number >= 0 (0: unconditional, 1: "
                             f"conditional, 3: guided), got {self.guidance}")
        if not (math.isfinite(self.eta) and self.eta >= 0):
            raise ValueError(f"eta must be a number >= 0, got {self.eta}")


class GuidedDDIMSampler(Sampler):
    """DDIM over the latents with classifier-free guidance, decoded by the autoencoder. Without
    a prompt each sample takes the next class prompt (the training previews); an empty prompt
    samples unconditionally. The prompt goes beside the grid (STEM-prompt.txt)."""

    name = "ddim"
    Options = GuidedOptions
    inputs = {"prompt": "what to draw, in the training captions' words (\"\": unconditional)"}
    preview = {"steps": 10}

    def check(self, model: LatentDiffusion, inputs: dict[str, Any]) -> None:
        if self.options.steps > model.unet.schedule_length:
            raise ConfigError(f"steps={self.options.steps} is more than the schedule's "
                              f"{model.unet.schedule_length} levels")
        prompt = inputs.get("prompt")
        if prompt is not None and prompt.strip():
            model.clip.prompt_tokens(prompt)

    def sample(self, model: LatentDiffusion, n: int, generator: torch.Generator,
               prompt: str | None = None, **_: Any) -> ImageSample:
        o = self.options
        texts, unconditional = _prompts_for(model.clip, n, prompt)
        w = 0.0 if unconditional else o.guidance
        images = generate(model, texts, generator, w, o.steps, o.eta, o.batched)
        k = len(model.clip.class_prompts)
        out = ImageSample(images.cpu(), nrow=k if prompt is None and k and n >= k else None)
        out.extras["prompt"] = _describe(texts, prompt, None if unconditional else w)
        return out
