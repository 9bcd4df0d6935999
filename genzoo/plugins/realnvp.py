"""RealNVP (Dinh, Sohl-Dickstein & Bengio 2017; Foster ch. 6): a normalising flow on 2-D points.

An invertible map f sends data x to a latent z = f(x) with a standard normal prior, so the
density of x is exact (change of variables):

    log p(x) = log N(f(x); 0, I) + log |det df/dx|

f is a stack of affine *coupling* layers. Each keeps the coordinates its mask marks (x_a) and
moves the others (x_b) by a scale and shift computed from x_a alone:

    z_a = x_a,    z_b = (x_b - t(x_a)) * exp(-s(x_a))

so its Jacobian is triangular, log|det| = -sum(s), and the inverse is closed-form:
x_b = z_b * exp(s(x_a)) + t(x_a). Masks alternate, so every coordinate gets moved.

The book's networks, kept exactly: s and t are separate MLPs of 4 dense ReLU layers of 256 units
that read the masked input (all coordinates, the moved ones zeroed); s ends in tanh, t is linear.
They run *side by side*: each layer's two weight matrices are stacked and applied with one
batched matmul (``TwinLinear``), the same parameters and the same function as two MLPs, with
half the kernel launches. The book's L2 regularisers are declared on its Dense layers but never
reach the loss (its ``train_step`` differentiates ``log_loss`` alone), so there is none here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from genzoo.errors import ConfigError
from genzoo.family import Model, PointSample, Sample, Sampler, gaussian, pyplot, save_figure

REFERENCE_POINTS = 2000  # training points kept with the run, for the data -> latent view


@dataclass
class RealNVPConfig:
    dim: int = 2  # taken from the data
    couplings: int = 2  # book: 2; the Keras example: 6
    hidden: int = 256  # units per dense layer of s and t
    layers: int = 4  # dense ReLU layers in each of s and t before the output layer

    def __post_init__(self) -> None:
        if self.dim < 2:
            raise ValueError(f"dim must be >= 2 (a coupling needs coordinates to keep and to move), got {self.dim}")
        for key in ("couplings", "hidden", "layers"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")


class TwinLinear(nn.Module):
    """Two dense layers, one of the s network and one of the t network, applied as one batched
    matmul: input (2, B, n_in) -> (2, B, n_out); index 0 is s, 1 is t."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        # Keras Dense's initialisation (the book's): Glorot-uniform kernels, zero biases
        bound = math.sqrt(6.0 / (n_in + n_out))
        self.weight = nn.Parameter(torch.empty(2, n_in, n_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(2, 1, n_out))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, h, self.weight)


class Coupling(nn.Module):
    """One affine coupling layer: keeps the coordinates where ``mask`` is 1, scales and shifts
    the rest by s(kept) and t(kept)."""

    def __init__(self, mask: torch.Tensor, hidden: int, layers: int):
        super().__init__()
        dim = mask.numel()
        self.register_buffer("mask", mask.float(), persistent=False)
        sizes = [dim] + [hidden] * layers + [dim]
        self.net = nn.ModuleList(TwinLinear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def scale_shift(self, kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = kept.expand(2, *kept.shape)  # the same masked input to s and t
        for layer in self.net[:-1]:
            h = layer(h).relu_()  # in place: a fresh output, and relu backward needs only it
        s, t = self.net[-1](h).unbind(0)
        free = 1 - self.mask  # only the moved coordinates are scaled and shifted
        return torch.tanh(s) * free, t * free

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data side -> latent side, with log |det| of this step."""
        kept = x * self.mask
        s, t = self.scale_shift(kept)
        return kept + (1 - self.mask) * (x - t) * torch.exp(-s), -s.sum(-1)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        kept = z * self.mask
        s, t = self.scale_shift(kept)
        return kept + (1 - self.mask) * (z * torch.exp(s) + t)


class RealNVP(Model):
    Config = RealNVPConfig
    modality = "points"
    likelihood_unit = "point"

    def __init__(self, config: RealNVPConfig):
        super().__init__(config)
        c = config
        # the book's masks [0, 1], [1, 0], ... : coupling k keeps the coordinates j with j + k odd
        masks = [(torch.arange(c.dim) + k) % 2 for k in range(c.couplings)]
        self.couplings = nn.ModuleList(Coupling(m, c.hidden, c.layers) for m in masks)
        self.reference: torch.Tensor | None = None  # training points, for the latent view

    @classmethod
    def config_from_data(cls, data: Any) -> dict[str, Any]:
        shape = getattr(data, "shape", None)
        return {"dim": int(shape[0])} if shape else {}

    def setup(self, data: Any) -> None:
        self.reference = data.x[:REFERENCE_POINTS].detach().float().cpu().clone()

    def artifacts(self) -> dict[str, Any]:
        return {"reference": self.reference} if self.reference is not None else {}

    def load_artifacts(self, artifacts: dict[str, Any]) -> None:
        if "reference" in artifacts:
            self.reference = artifacts["reference"].float()

    # -- the flow ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x -> (z, log |det dz/dx|). The couplings run last to first, as in the book's
        ``call(x, training=True)``, so sampling runs them first to last."""
        log_det = x.new_zeros(x.shape[0])
        for coupling in reversed(self.couplings):
            x, ld = coupling(x)
            log_det = log_det + ld
        return x, log_det

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """z -> x: the generative direction."""
        for coupling in self.couplings:
            z = coupling.inverse(z)
        return z

    def log_prob(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = batch["x"] if isinstance(batch, dict) else batch
        z, log_det = self(x.to(self.couplings[0].mask.dtype))
        log_prior = -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * math.log(2 * math.pi))
        return log_prior + log_det

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        nll = -self.log_prob(batch).mean()  # nats per point
        return {"loss": nll}

    def configure_optimizers(self, train: Any) -> dict[str, torch.optim.Optimizer]:
        if train.weight_decay:
            return super().configure_optimizers(train)
        # fused Adam: one kernel over every parameter instead of a dozen small ops per tensor
        params = [p for p in self.parameters() if p.requires_grad]
        return {"main": torch.optim.Adam(params, lr=train.lr, betas=tuple(train.betas), fused=True)}

    @torch.no_grad()
    def density_grid(self, grid: int, extent: float, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
        """log p on a grid x grid lattice over [-extent, extent]^2: (axis (G,), log p (G, G)),
        rows along the second coordinate."""
        if self.config.dim != 2:
            raise ConfigError(f"the density view needs 2-D points, this model has dim {self.config.dim}")
        axis = torch.linspace(-extent, extent, grid)
        yy, xx = torch.meshgrid(axis, axis, indexing="ij")
        pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1).to(self.device)
        logp = torch.cat([self.log_prob({"x": pts[i:i + chunk]}) for i in range(0, len(pts), chunk)])
        return axis, logp.float().cpu().reshape(grid, grid)


# -- samples this family shows (written by the writers at the end) ---------------------------

@dataclass
class PointMap(Sample):
    """Points and where the flow sends them, drawn side by side in matching colours (the book's
    data -> latent and latent -> data figures)."""

    kind: ClassVar[str] = "point-map"
    source: torch.Tensor
    target: torch.Tensor
    titles: tuple[str, str] = ("source", "target")

    def __len__(self) -> int:
        return int(self.source.shape[0])


@dataclass
class DensityMap(Sample):
    """A density on a square grid: ``log_density`` (G, G), rows along the second axis."""

    kind: ClassVar[str] = "density"
    axis: torch.Tensor
    log_density: torch.Tensor
    title: str = "p(x)"
    points: torch.Tensor | None = field(default=None)

    def __len__(self) -> int:
        return int(self.log_density.numel())

    def mass(self) -> float:
        """Trapezoid integral of exp(log p) over the box: close to 1 when the box holds the mass."""
        p = self.log_density.double().exp()
        return float(torch.trapezoid(torch.trapezoid(p, self.axis.double(), dim=1), self.axis.double()))


# -- sampling -----------------------------------------------------------------------------------

@dataclass
class InverseOptions:
    temperature: float = 1.0  # z ~ N(0, T^2 I): below 1 draws from the dense middle of each moon
    grid: int = 150  # density view: grid points per side
    extent: float = 3.0  # density view: half-width of the square box, in standardised units

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature}")
        if not 2 <= self.grid <= 2000:
            raise ValueError(f"grid must be in [2, 2000], got {self.grid}")
        if not (math.isfinite(self.extent) and self.extent > 0):
            raise ValueError(f"extent must be a finite number > 0, got {self.extent}")


class InverseSampler(Sampler):
    """z ~ N(0, T^2 I), then x = f^-1(z) through the couplings."""

    name = "inverse"
    Options = InverseOptions
    shows = {"latent": "training data mapped to the latent space, beside the data (data -> latent)",
             "mapping": "the drawn z beside the points they map to (latent -> data)",
             "density": "heat map of the learned density exp(log p(x)) on a grid"}

    def check(self, model: RealNVP, inputs: dict[str, Any]) -> None:
        shows = inputs.get("show", ())
        if "latent" in shows and model.reference is None:
            raise ConfigError("--show latent needs the training points kept with a trained run; "
                              "this model has none (train it with `zoo train`)")
        if "density" in shows and model.config.dim != 2:
            raise ConfigError(f"--show density draws 2-D densities; this model has dim {model.config.dim}")

    @torch.no_grad()
    def sample(self, model: RealNVP, n: int, generator: torch.Generator,
               show: tuple[str, ...] = ()) -> PointSample:
        o = self.options
        # CPU-drawn noise, moved: the same seed gives the same points on every device
        z = gaussian(generator, (n, model.config.dim), model.device) * o.temperature
        x = model.inverse(z)
        title = "samples" if o.temperature == 1 else f"samples (T={o.temperature:g})"
        out = PointSample(x.float().cpu(), title=title)
        if "latent" in show:
            ref = model.reference.to(model.device)
            out.extras["latent"] = PointMap(ref.cpu(), model(ref)[0].float().cpu(),
                                            ("data space X", "latent space f(X)"))
        if "mapping" in show:
            out.extras["mapping"] = PointMap(z.float().cpu(), x.float().cpu(),
                                             ("latent space Z ~ N(0, I)" if o.temperature == 1 else
                                              f"latent space Z ~ N(0, {o.temperature:g}^2 I)", "data space g(Z)"))
        if "density" in show:
            axis, logp = model.density_grid(o.grid, o.extent)
            out.extras["density"] = DensityMap(axis, logp, title="learned density p(x)")
        return out


# -- writers: registry.yaml maps the sample kinds above to these ---------------------------

def _figure(ncols: int) -> Any:
    plt = pyplot()
    fig, axes = plt.subplots(1, ncols, figsize=(5.5 * ncols, 5.5))
    return plt, fig, axes


def _save(plt: Any, fig: Any, stem: Path) -> list[Path]:
    fig.tight_layout()
    return [save_figure(fig, f"{stem}.png")]


def write_point_map(sample: PointMap, stem: Path, reference: Any = None) -> list[Path]:
    """Two scatters; each point has the colour of its source's first coordinate, so one can follow
    where every part of the source lands."""
    plt, fig, axes = _figure(2)
    src, dst = sample.source.float().cpu().numpy(), sample.target.float().cpu().numpy()
    colour = src[:, 0]
    for ax, pts, title, name in zip(axes, (src, dst), sample.titles, ("1", "2")):
        ax.scatter(pts[:, 0], pts[:, 1], s=3, c=colour, cmap="viridis", alpha=0.8)
        ax.set_title(title)
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(alpha=0.3)
    return _save(plt, fig, stem)


def write_density(sample: DensityMap, stem: Path, reference: Any = None) -> list[Path]:
    """Heat map of exp(log p) with a colour bar; the title gives the mass inside the box."""
    plt, fig, ax = _figure(1)
    a = sample.axis.float()
    lo, hi = float(a[0]), float(a[-1])
    im = ax.imshow(sample.log_density.float().exp().numpy(), origin="lower", extent=(lo, hi, lo, hi),
                   cmap="magma", interpolation="bilinear")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="density")
    if sample.points is not None:
        pts = sample.points.float().cpu().numpy()
        ax.scatter(pts[:, 0], pts[:, 1], s=1, c="white", alpha=0.25)
    ax.set_title(f"{sample.title}  (mass in box: {sample.mass():.3f})")
    return _save(plt, fig, stem)
