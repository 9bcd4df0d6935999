"""The latent protocol, and the tools built on it, shared by every latent family: autoencoders,
VAEs, GANs, and diffusion models (whose latent is the initial noise map).

What a model provides for these tools to work on it:

    latent_dim: int                      size of a latent point z
    decode(z) -> images                  z (n, latent_dim) -> floats in [0, 1], (n, C, H, W)
    sample_latent(n, generator) -> z     n draws from the model's prior (a VAE's N(0, I), a GAN's
                                         noise); draw on the CPU generator's device, then move
                                         to the model's device, so a seed means the same z anywhere
  optional:
    encode(x) -> z                       images in [0, 1] -> deterministic latents (a VAE returns
                                         its posterior mean). Without it (GANs) there is nothing to
                                         reconstruct or embed: interpolation uses prior samples and
                                         the encoder-only tools raise a one-line ConfigError.
    prior_mean: tensor (latent_dim,)     the point ``temperature`` scales about (default 0)
    image_shape() -> (C, H, W)           inputs are checked against it (one-line DataError)

A family implements the protocol on its Model and registers ``PriorSampler`` (or a sampler of
its own built on ``sample_latent`` / ``decode``); ``zoo reconstruct / interpolate / latent-plot /
attribute`` then work on its runs.

Everything here runs under ``torch.no_grad`` in eval mode (batch norm uses running statistics)
and returns CPU tensors. Randomness only comes from the ``torch.Generator`` passed in.
"""
from __future__ import annotations

import contextlib
import difflib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from genzoo.errors import ConfigError, DataError
from genzoo.family import Sampler, pyplot, save_figure, to_float

__all__ = [
    # the protocol
    "is_latent_model", "has_encoder", "require_latent", "require_encoder", "check_images",
    "evaluating",
    # encode / decode / the prior
    "encode", "decode", "reconstruct", "sample_latent", "PriorOptions", "PriorSampler",
    # interpolation
    "lerp", "slerp", "interpolate", "endpoints", "interpolation_grid",
    # reconstructions
    "reconstruction_grid", "reconstruction_error",
    # attribute vectors
    "attribute_mask", "attribute_vector", "attribute_grid", "parse_scales",
    # 2-D views
    "project_2d", "latent_scatter",
]

Method = Literal["linear", "spherical"]


# -- protocol checks --------------------------------------------------------------------------

def is_latent_model(model: Any) -> bool:
    """True if `model` offers the protocol's required part: latent_dim, decode, sample_latent."""
    return all(hasattr(model, a) for a in ("latent_dim", "decode", "sample_latent"))


def has_encoder(model: Any) -> bool:
    """True if `model` can map images to latents (autoencoders, VAEs; not a GAN's generator)."""
    return callable(getattr(model, "encode", None))


def require_latent(model: Any, what: str = "this") -> None:
    """A one-line ConfigError naming `what` (a command) unless `model` has a latent space."""
    if not is_latent_model(model):
        raise ConfigError(f"{what} needs a latent-variable model (autoencoder, VAE, GAN); "
                          f"{type(model).__name__} has no latent space")


def require_encoder(model: Any, what: str = "this") -> None:
    """A one-line ConfigError, with what to use instead, unless `model` has an encoder."""
    require_latent(model, what)
    if not has_encoder(model):
        raise ConfigError(f"{what} needs an encoder, and {type(model).__name__} has none (a "
                          "generator only maps z -> image); use an autoencoder or VAE run, or "
                          "`zoo interpolate`, which morphs between prior samples")


def check_images(model: Any, x: torch.Tensor) -> None:
    """A one-line DataError unless `x` is a batch (n, C, H, W) of the model's ``image_shape()``
    (when it declares one): a wrong size names the size the run was trained at."""
    shape = getattr(model, "image_shape", None)
    if x.ndim != 4:
        raise DataError(f"expected a batch of images (n, C, H, W), got shape {tuple(x.shape)}")
    if callable(shape) and tuple(x.shape[1:]) != tuple(shape()):
        want, got = "x".join(map(str, shape())), "x".join(map(str, x.shape[1:]))
        side = "x".join(map(str, shape()[1:]))
        raise DataError(f"this run was trained on {want} images (CxHxW), got {got}; resize them "
                        f"to {side} (data.size={shape()[-1]}, the run's) or train at that size")


@contextlib.contextmanager
def evaluating(model: Any) -> Iterator[None]:
    """no_grad + eval mode, restoring the model's mode afterwards: batch norm must use its
    running statistics, and a decode inside a training loop must not leave the model in eval."""
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if was_training:
            model.train()


def _device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


# -- encode / decode --------------------------------------------------------------------------

def encode(model: Any, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Images in [0, 1] (n, C, H, W) (or uint8 0..255) -> latents (n, latent_dim), batched, on
    the CPU."""
    require_encoder(model, "encoding")
    x = to_float(x)
    check_images(model, x)
    if len(x) == 0:
        return torch.zeros(0, model.latent_dim)
    dev = _device(model)
    with evaluating(model):
        return torch.cat([model.encode(x[i:i + batch_size].to(dev)).float().cpu()
                          for i in range(0, len(x), batch_size)])


def decode(model: Any, z: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Latents (n, latent_dim) -> images in [0, 1], batched, on the CPU."""
    require_latent(model, "decoding")
    if z.ndim != 2 or z.shape[1] != model.latent_dim or len(z) == 0:
        raise DataError(f"expected latents of shape (n >= 1, {model.latent_dim}), "
                        f"got {tuple(z.shape)}")
    dev = _device(model)
    with evaluating(model):
        return torch.cat([model.decode(z[i:i + batch_size].to(dev)).float().cpu().clamp(0, 1)
                          for i in range(0, len(z), batch_size)])


def reconstruct(model: Any, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """decode(encode(x)): what the model keeps of each image."""
    return decode(model, encode(model, x, batch_size), batch_size)


def sample_latent(model: Any, n: int, generator: torch.Generator,
                  temperature: float = 1.0) -> torch.Tensor:
    """n prior draws; temperature < 1 pulls them toward ``prior_mean`` (0 if the model has none)
    for safer, blander images, > 1 pushes them out."""
    require_latent(model, "sampling a latent")
    if temperature <= 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    z = model.sample_latent(n, generator).float()
    if temperature != 1.0:
        centre = getattr(model, "prior_mean", None)
        centre = torch.zeros_like(z) if centre is None else centre.to(z).expand_as(z)
        z = centre + temperature * (z - centre)
    return z


@dataclass
class PriorOptions:
    """Options of the prior samplers (``zoo sample --set temperature=0.7``)."""

    temperature: float = 1.0  # scales z about the prior's centre before decoding

    def __post_init__(self) -> None:
        if not 0 < self.temperature < float("inf"):  # also nan
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature}")


class PriorSampler(Sampler):
    """Decode draws from the model's prior: N(0, I) for a VAE or GAN, a Gaussian fitted to the
    training embeddings for a plain autoencoder."""

    name = "prior"
    Options = PriorOptions

    def sample(self, model: Any, n: int, generator: torch.Generator, **_: Any) -> torch.Tensor:
        z = sample_latent(model, n, generator, self.options.temperature)
        return decode(model, z)


# -- interpolation ----------------------------------------------------------------------------

def lerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Straight line. Midpoints of two N(0, I) draws have a smaller norm than either (about
    1/sqrt(2) in high dimension): they sit where the prior rarely puts points."""
    return (1 - t) * z0 + t * z1


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation (Shoemake 1985; White 2016 for latents): the direction moves
    along the great circle between the two, the norm moves linearly from |z0| to |z1|, so every
    point keeps a norm like the endpoints' (the prior's typical shell, for prior draws). For
    equal norms this is the textbook formula; applied to raw vectors of unequal norms that one
    overshoots as they approach opposite directions (its midpoint is (z0 + z1) / 2cos(omega/2)).
    Falls back to lerp where the directions are (anti)parallel and the circle is undefined."""
    r0, r1 = z0.norm(dim=-1, keepdim=True), z1.norm(dim=-1, keepdim=True)
    n0, n1 = z0 / r0.clamp_min(1e-12), z1 / r1.clamp_min(1e-12)
    omega = torch.arccos((n0 * n1).sum(-1, keepdim=True).clamp(-1, 1))
    sin = torch.sin(omega)
    safe = (sin.abs() > 1e-4) & (r0 > 1e-12) & (r1 > 1e-12)
    s = torch.where(safe, sin, torch.ones_like(sin))
    direction = (torch.sin((1 - t) * omega) * n0 + torch.sin(t * omega) * n1) / s
    out = ((1 - t) * r0 + t * r1) * direction
    return torch.where(safe, out, lerp(z0, z1, t))


def interpolate(z0: torch.Tensor, z1: torch.Tensor, steps: int,
                method: Method = "linear") -> torch.Tensor:
    """Paths between rows of z0 and z1 (each (n, d) or (d,)): (n, steps, d), endpoints included."""
    if steps < 2:
        raise ConfigError(f"steps must be >= 2, got {steps}")
    if method not in ("linear", "spherical"):
        raise ConfigError(f"unknown interpolation {method!r}; valid: linear, spherical")
    z0, z1 = torch.atleast_2d(z0), torch.atleast_2d(z1)
    t = torch.linspace(0, 1, steps, dtype=z0.dtype, device=z0.device).view(1, steps, 1)
    fn = lerp if method == "linear" else slerp
    return fn(z0[:, None], z1[:, None], t)


def endpoints(model: Any, pairs: int, generator: torch.Generator,
              images: torch.Tensor | None = None,
              temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Start and end points for `pairs` interpolations: the encodings of images[:pairs] and
    images[pairs:2 * pairs] when images are given (the model needs an encoder), else prior draws."""
    if images is not None:
        if len(images) < 2 * pairs:
            raise DataError(f"need {2 * pairs} images for {pairs} pairs, got {len(images)}")
        z = encode(model, images[:2 * pairs])
    else:
        z = sample_latent(model, 2 * pairs, generator, temperature).cpu()
    return z[:pairs], z[pairs:]


def interpolation_grid(model: Any, z0: torch.Tensor, z1: torch.Tensor, steps: int = 9,
                       methods: Sequence[Method] = ("linear", "spherical"),
                       ends: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Decoded paths, one grid row per (pair, method), `steps` images per row; with `ends`
    (the input images the endpoints came from) each row starts and ends with those inputs.
    Returns (rows * row_length, C, H, W)."""
    paths = torch.stack([interpolate(z0, z1, steps, m) for m in methods], 1)  # (n, m, steps, d)
    images = decode(model, paths.reshape(-1, paths.shape[-1]))
    images = images.view(len(z0), len(methods), steps, *images.shape[1:])
    if ends is not None:
        first = ends[0].cpu().float()[:, None, None].expand(-1, len(methods), 1, -1, -1, -1)
        last = ends[1].cpu().float()[:, None, None].expand(-1, len(methods), 1, -1, -1, -1)
        images = torch.cat([first, images, last], 2)
    return images.reshape(-1, *images.shape[3:])


# -- reconstructions and a baseline -----------------------------------------------------------

def reconstruction_grid(x: torch.Tensor, x_hat: torch.Tensor, per_row: int = 8) -> torch.Tensor:
    """Rows of `per_row` inputs, each followed by the row of their reconstructions."""
    rows = []
    for i in range(0, len(x), per_row):
        a, b = x[i:i + per_row].cpu(), x_hat[i:i + per_row].cpu()
        pad = per_row - len(a)
        if pad:  # keep the grid rectangular: blank (white) cells
            blank = torch.ones(pad, *a.shape[1:])
            a, b = torch.cat([a, blank]), torch.cat([b, blank])
        rows += [a, b]
    return torch.cat(rows)


def reconstruction_error(model: Any, x: torch.Tensor, reference: torch.Tensor | None = None,
                         batch_size: int = 256) -> dict[str, float]:
    """Per-pixel MSE of decode(encode(x)) against the MSE of always answering the mean image of
    `reference` (default: x itself), the best any model can do without looking at the input."""
    x = to_float(x)
    reference = to_float(reference) if reference is not None else None
    x_hat = reconstruct(model, x, batch_size)
    mean_image = (x if reference is None else reference.float()).mean(0, keepdim=True)
    mse = float(((x_hat - x) ** 2).mean())
    base = float(((mean_image - x) ** 2).mean())
    return {"mse": mse, "mean_image_mse": base, "ratio": base / max(mse, 1e-12)}


# -- attribute vectors ------------------------------------------------------------------------

def attribute_mask(data: Any, name: str) -> torch.Tensor:
    """The boolean column of attribute `name` in a dataset's ``attributes`` (exact name, else a
    unique case-insensitive match); a one-line DataError lists the available ones."""
    names = list(getattr(data, "attribute_names", []) or [])
    attrs = getattr(data, "attributes", None)
    label = getattr(data, "name", "") or "this dataset"
    if attrs is None or not names:
        raise DataError(f"{label} has no attributes; use a dataset that has them (celeba, twemoji, "
                        "or --data folder:PATH with a CelebA-style list_attr_celeba.csv)")
    if name not in names:
        folded = [n for n in names if n.lower() == name.lower()]
        if len(folded) != 1:
            close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise DataError(f"unknown attribute {name!r}{hint}; available: {', '.join(names)}")
        name = folded[0]
    return attrs[:, names.index(name)].bool()


def attribute_vector(z: torch.Tensor, has: torch.Tensor, name: str = "attribute",
                     unit: bool = False) -> torch.Tensor:
    """mean(z | attribute) - mean(z | not attribute): adding it to an encoding adds the
    attribute (Foster ch. 3; White 2016). `unit` scales it to length 1 as the book's code does."""
    has = has.bool().cpu()
    if len(has) != len(z):
        raise DataError(f"{len(z)} latents but {len(has)} attribute values")
    n_pos = int(has.sum())
    if n_pos == 0 or n_pos == len(has):
        which = "none" if n_pos == 0 else "all"
        raise DataError(f"{which} of the {len(has)} images have {name!r}: need examples with and "
                        "without it (use more images: data.limit, or another attribute)")
    z = z.float().cpu()
    v = z[has].mean(0) - z[~has].mean(0)
    return v / v.norm().clamp_min(1e-12) if unit else v


def attribute_grid(model: Any, x: torch.Tensor, vector: torch.Tensor,
                   scales: Sequence[float]) -> torch.Tensor:
    """For each image: the input, then decode(encode(x) + s * vector) for each scale s.
    Returns (len(x) * (1 + len(scales)), C, H, W), one image per row of the grid."""
    z = encode(model, x)
    s = torch.tensor([float(v) for v in scales]).view(1, -1, 1)
    moved = (z[:, None] + s * vector.view(1, 1, -1)).reshape(-1, z.shape[1])
    decoded = decode(model, moved).view(len(x), len(scales), *x.shape[1:])
    return torch.cat([x.cpu()[:, None].float(), decoded], 1).reshape(-1, *x.shape[1:])


# -- 2-D views of the latent space ------------------------------------------------------------

def project_2d(z: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    """Latents (n, d) -> (n, 2): the latents themselves when d <= 2, else their first two
    principal components (exact PCA by SVD: n x d is small here, and unlike pca_lowrank it needs
    no random projection). Returns the share of variance each axis explains."""
    z = z.float().cpu()
    if z.shape[1] == 1:
        return torch.cat([z, torch.zeros_like(z)], 1), [1.0, 0.0]
    if z.shape[1] == 2:
        return z, [float("nan"), float("nan")]
    centred = z - z.mean(0)
    _, s, vt = torch.linalg.svd(centred, full_matrices=False)
    axes = vt[:2]
    # fix each axis's sign (largest loading positive) so the plot doesn't flip between runs
    signs = torch.sign(axes.gather(1, axes.abs().argmax(1, keepdim=True)))
    axes = axes * signs
    var = s ** 2
    return centred @ axes.T, [float(v) for v in var[:2] / var.sum().clamp_min(1e-12)]


def latent_scatter(z: torch.Tensor, path: str | Path, labels: torch.Tensor | None = None,
                   classes: Sequence[str] = (), title: str = "") -> Path:
    """2-D scatter of latents (PCA'd when d > 2), coloured by label, as a PNG."""
    plt = pyplot()
    xy, explained = project_2d(z)
    pca = z.shape[1] > 2
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=6, alpha=0.6, c="black")
    else:
        labels = labels.cpu().long()
        cmap = plt.get_cmap("tab10" if len(labels) == 0 or int(labels.max()) < 10 else "tab20")
        for k in labels.unique().tolist():
            m = labels == k
            name = classes[k] if k < len(classes) else str(k)
            ax.scatter(xy[m, 0], xy[m, 1], s=6, alpha=0.7, color=cmap(k % cmap.N), label=name)
        ax.legend(markerscale=3, fontsize=7, loc="best", framealpha=0.8)
    if pca:
        ax.set_xlabel(f"PC 1 ({explained[0]:.0%} of variance)")
        ax.set_ylabel(f"PC 2 ({explained[1]:.0%} of variance)")
    else:
        ax.set_xlabel("z[0]")
        ax.set_ylabel("z[1]" if z.shape[1] > 1 else "")
    ax.set_title(title or (f"latent space ({z.shape[1]}-d, PCA)" if pca else "latent space"))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)  # atomic: an interrupted plot never leaves half a PNG


def parse_scales(text: str) -> list[float]:
    """"-3,-1,0,1,3" -> [-3.0, -1.0, 0.0, 1.0, 3.0]."""
    bad = ConfigError(f"bad scales {text!r}: expected numbers separated by commas, e.g. -3,-1,0,1,3")
    try:
        scales = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise bad from None
    if not scales or not all(math.isfinite(s) for s in scales):
        raise bad
    return scales
