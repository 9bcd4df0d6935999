"""World models (Ha & Schmidhuber 2018; Foster ch. 12): V, M and C trained in turn on CarRacing.

A car-racing agent that learns its world from pixels, in three components trained as a
``Pipeline`` (``genzoo.family``) on episodes of a random (brownian) driver (the ``rollouts`` data
source, ``genzoo.plugins.rollouts``):

1. **V**, ``ConvVAE``: the paper's convolutional VAE squeezes each 64x64 frame into z (32 numbers):
   four 4x4 stride-2 convolutions (32, 64, 128, 256 filters), then four transposed convolutions
   back. Its loss is the chapter-3 VAE's, a beta-weighted mean squared error plus the KL term,
   with the paper's free bits: the KL is not pushed below ``kl_tolerance`` nats per dimension.
   (The chapter-3 class itself lives in another family module, which a family may not import,
   and its 3x3 layers are not the paper's; this is the paper's network with the same loss.)
2. **M**, ``MDNRNN``: an LSTM (256 units) reads (z_t, a_t) and gives, for every dimension of
   z_{t+1}, a mixture of 5 Gaussians (Bishop's mixture density network, one mixture per
   dimension as in the paper). It trains on the frames encoded once by the frozen V (each step's
   z drawn from q(z|x), as the paper does), on random windows of ``seq_len`` steps. Its loss is
   the negative log-likelihood of z_{t+1} in nats per step (summed over the 32 dimensions; a
   density, so it can be negative). Sampling at temperature tau divides the mixture logits by
   tau and scales each standard deviation by sqrt(tau); tau = 0 takes the likeliest component's
   mean: no randomness at all.
3. **C**, ``Controller``: one linear layer [z_t, h_t] -> a_t (867 numbers for CarRacing) trained
   without gradients by CMA-ES (the ``cma`` package; Hansen 2016): each trainer step is one
   generation. ``popsize`` candidates each drive ``rollouts`` real episodes (the same seeded
   tracks for every candidate of a generation), ``envs`` at a time in gymnasium worker
   processes; V encodes and M remembers for all of them in one batch. The logged loss is minus
   the generation's mean return, with ``mean_return``, ``best_return`` and ``sigma`` beside it.
   The CMA-ES state is the returns of every generation so far (an artifact, a tensor): on resume
   the search is replayed from its seed through the same ask/tell calls, which rebuilds the
   covariance, step size and random stream exactly (checked against the saved mean), so a resumed
   search continues the one that was interrupted. cma draws from numpy's global generator; we
   swap in a stream of our own around every call, so nothing else in the process can shift it.

Samplers (they receive the ``WorldModel``: ``model.vae``, ``model.mdnrnn``, ``model.controller``):
``dream`` starts from a real frame and lets M imagine what comes next at temperature tau, V
decoding every imagined z (driven by the controller when trained, else by the actions the real
clip recorded): the part people come for. ``rollout`` drives the real env with V + M + C and
returns its video and return. ``reconstruct`` shows real clips beside V's reconstructions. Clips
come out as ``VideoSample``: an animated GIF and a filmstrip PNG. V keeps 8 short training clips
(frames and actions) as a run artifact, since a sampler never sees the dataset.

Anchors: the paper's code (hardmaru/WorldModelsExperiments, carracing), ctallec/world-models.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genzoo.errors import CheckpointError, ConfigError, DataError
from genzoo.family import (Model, Pipeline, Sampler, SamplerOptions, Stage, TensorData,
                           VideoSample, batches)
from genzoo.nn.world import BrownianPolicy, run_episodes

EXAMPLES = 8  # training clips V keeps for dreams and reconstructions
CLIP = 32  # frames per kept clip
CLIP_START = 60  # CarRacing zooms in for its first ~50 frames: clips start after that
EVAL_SEED = 10**6  # tracks of held-out episodes (training generations use seeds below it)


# -- V: the convolutional VAE -------------------------------------------------------------------

@dataclass
class ConvVAEConfig:
    image_size: int = 64  # the paper's frames; the layer sizes below are made for 64
    channels: int = 3
    filters: tuple[int, ...] = (32, 64, 128, 256)  # the paper's four 4x4 stride-2 convolutions
    latent_dim: int = 32
    beta: float = 12288.0  # weight on the mean per-pixel MSE (64*64*3: the paper's summed MSE)
    kl_tolerance: float = 0.5  # free bits: nats per latent dimension the KL is not pushed below

    def __post_init__(self) -> None:
        if self.image_size != 64:
            raise ValueError(f"the world model's VAE takes 64x64 frames, got image_size "
                             f"{self.image_size}")
        if len(self.filters) != 4 or min(self.filters) < 1:
            raise ValueError(f"filters needs 4 positive widths, got {list(self.filters)}")
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if not self.beta > 0 or not self.kl_tolerance >= 0:
            raise ValueError("beta must be > 0 and kl_tolerance >= 0")


class ConvVAE(Model):
    Config = ConvVAEConfig
    modality = "video"
    likelihood_unit = None

    def __init__(self, config: ConvVAEConfig):
        super().__init__(config)
        c = config
        f = c.filters
        widths = (c.channels, *f)
        self.encoder = nn.Sequential(*[m for a, b in zip(widths, widths[1:])
                                       for m in (nn.Conv2d(a, b, 4, stride=2), nn.ReLU())])
        self.to_z = nn.Linear(f[3] * 2 * 2, 2 * c.latent_dim)
        self.from_z = nn.Linear(c.latent_dim, f[3] * 4)
        # 1 -> 5 -> 13 -> 30 -> 64, the paper's 5, 5, 6, 6 kernels
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(f[3] * 4, f[2], 5, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(f[2], f[1], 5, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(f[1], f[0], 6, stride=2), nn.ReLU(),
            nn.ConvTranspose2d(f[0], c.channels, 6, stride=2))
        self.examples: torch.Tensor | None = None  # (E, T, 3, 64, 64) uint8 training clips
        self.example_actions: torch.Tensor | None = None  # (E, T, A) their actions

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def setup(self, data: Any) -> None:
        """Keep EXAMPLES clips of CLIP frames, from episodes spread over the training set."""
        n = data.num_episodes() if hasattr(data, "num_episodes") else 0
        clips, acts = [], []
        for k in torch.linspace(0, max(n - 1, 0), min(EXAMPLES, n)).round().long().tolist():
            ep = data.episode(k)
            t = ep["frames"].shape[0]
            s = max(0, min(CLIP_START, t - CLIP))
            frames, a = ep["frames"][s:s + CLIP], ep["actions"][s:s + CLIP]
            if frames.shape[0] < CLIP:  # a short episode: hold its last frame
                pad = CLIP - frames.shape[0]
                frames = torch.cat([frames, frames[-1:].expand(pad, -1, -1, -1)])
                a = torch.cat([a, torch.zeros(pad, a.shape[1])])
            clips.append(frames)
            acts.append(a.float())
        if clips:
            self.examples, self.example_actions = torch.stack(clips), torch.stack(acts)

    def artifacts(self) -> dict[str, Any]:
        return {"examples": self.examples, "example_actions": self.example_actions}

    def load_artifacts(self, artifacts: dict[str, Any]) -> None:
        ex, acts = artifacts.get("examples"), artifacts.get("example_actions")
        self.examples = ex if isinstance(ex, torch.Tensor) else None
        self.example_actions = acts if isinstance(acts, torch.Tensor) else None

    def encode_dist(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames in [0, 1], (n, 3, 64, 64) -> q(z|x) as (mean, log-variance), (n, latent_dim)."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.config.channels, 64, 64):
            raise DataError(f"the world model's VAE takes frames (n, {self.config.channels}, 64, "
                            f"64), got {tuple(x.shape)}")
        mu, logvar = self.to_z(self.encoder(x).flatten(1)).float().chunk(2, dim=1)
        return mu, logvar

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_dist(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (n, latent_dim) -> frames in [0, 1]."""
        h = self.from_z(z).view(z.shape[0], -1, 1, 1)
        return torch.sigmoid(self.decoder(h).float())

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["x"]
        mu, logvar = self.encode_dist(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        h = self.from_z(z).view(z.shape[0], -1, 1, 1)
        xhat = torch.sigmoid(self.decoder(h).float())
        mse = (xhat - x).pow(2).flatten(1).mean(1)
        kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(1)
        floor = self.config.kl_tolerance * self.config.latent_dim
        loss = (self.config.beta * mse).mean() + kl.mean().clamp_min(floor)
        return {"loss": loss, "mse": mse.mean().detach(), "kl": kl.mean().detach()}


# -- M: the MDN-RNN -----------------------------------------------------------------------------

@dataclass
class MDNRNNConfig:
    latent_dim: int = 32  # from V
    action_dim: int = 3  # from the data
    hidden: int = 256  # LSTM units (the paper: 256)
    mixtures: int = 5  # Gaussians per dimension of z (the paper: 5)
    seq_len: int = 32  # steps per training window (the paper: whole episodes, 999)

    def __post_init__(self) -> None:
        for key in ("latent_dim", "action_dim", "hidden", "mixtures", "seq_len"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")


LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class MDNRNN(Model):
    Config = MDNRNNConfig
    modality = "video"
    likelihood_unit = None

    def __init__(self, config: MDNRNNConfig):
        super().__init__(config)
        c = config
        self.lstm = nn.LSTM(c.latent_dim + c.action_dim, c.hidden, batch_first=True)
        self.head = nn.Linear(c.hidden, 3 * c.mixtures * c.latent_dim)

    def mixture(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """LSTM outputs (..., hidden) -> (log pi, mean, log sigma), each (..., latent, mixtures);
        log pi normalised over the mixtures."""
        c = self.config
        p = self.head(out).float().view(*out.shape[:-1], c.latent_dim, 3, c.mixtures)
        logpi, mu, logsigma = p.unbind(-2)
        return F.log_softmax(logpi, -1), mu, logsigma.clamp(-7, 5)

    @staticmethod
    def nll(logpi: torch.Tensor, mu: torch.Tensor, logsigma: torch.Tensor,
            z: torch.Tensor) -> torch.Tensor:
        """-log p(z) per step, summed over the dimensions of z: (...,)."""
        z = z.unsqueeze(-1)
        logp = -0.5 * ((z - mu) / logsigma.exp()) ** 2 - logsigma - LOG_SQRT_2PI
        return -torch.logsumexp(logpi + logp, -1).sum(-1)

    def step(self, z: torch.Tensor, a: torch.Tensor, state: Any = None) -> tuple[Any, Any]:
        """One step: (z_t, a_t) (n, latent) and (n, actions) -> the mixture of z_{t+1} and the
        new LSTM state (h, c)."""
        out, state = self.lstm(torch.cat([z, a], -1).unsqueeze(1), state)
        return self.mixture(out[:, 0]), state

    @staticmethod
    def sample_mixture(logpi: torch.Tensor, mu: torch.Tensor, logsigma: torch.Tensor,
                       temperature: float, generator: torch.Generator) -> torch.Tensor:
        """z from the mixtures (n, latent, K) at temperature tau (the paper's: logits / tau,
        sigma * sqrt(tau)); tau = 0: the likeliest component's mean, deterministic."""
        if temperature == 0:
            k = logpi.argmax(-1, keepdim=True)
            return mu.gather(-1, k)[..., 0]
        logits = logpi / temperature
        u = torch.rand(logits.shape[:-1], generator=generator).to(logits.device)
        cdf = logits.softmax(-1).cumsum(-1)
        k = (cdf < u.unsqueeze(-1)).sum(-1, keepdim=True).clamp_max(logits.shape[-1] - 1)
        eps = torch.randn(mu.shape[:-1], generator=generator).to(mu.device)
        return mu.gather(-1, k)[..., 0] + logsigma.gather(-1, k)[..., 0].exp() \
            * math.sqrt(temperature) * eps

    def windows(self, batch: dict[str, torch.Tensor], full: bool,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """Inputs, targets and a mask of one window per episode of the batch: random starts of
        seq_len steps while training; each episode whole (from its start) when `full`."""
        mu, logvar, a, n = batch["mu"], batch["logvar"], batch["actions"], batch["lengths"]
        b, t_max = mu.shape[:2]
        length = t_max - 1 if full else min(self.config.seq_len, t_max - 1)
        if full:
            start = torch.zeros(b, dtype=torch.long, device=mu.device)
        else:
            room = (n - 1 - length).clamp_min(0) + 1
            start = (torch.rand(b, device=mu.device) * room).long().clamp_max(room - 1)
        idx = start[:, None] + torch.arange(length + 1, device=mu.device)[None]
        idx = idx.clamp_max(t_max - 1)

        def take(x: torch.Tensor) -> torch.Tensor:
            return x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))
        if generator is None:
            eps = torch.randn(b, length + 1, mu.shape[-1], device=mu.device)
        else:
            eps = torch.randn(b, length + 1, mu.shape[-1], generator=generator).to(mu.device)
        z = take(mu) + torch.exp(0.5 * take(logvar)) * eps  # the paper samples z ~ q(z|x)
        mask = (idx[:, 1:] < n[:, None]).float()  # the target step exists in the episode
        return torch.cat([z[:, :-1], take(a)[:, :-1]], -1), z[:, 1:], mask

    def _nll(self, inputs: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(inputs)
        nll = self.nll(*self.mixture(out), target)
        return (nll * mask).sum() / mask.sum().clamp_min(1)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        nll = self._nll(*self.windows(batch, full=False))
        return {"loss": nll, "nll_per_step": nll.detach()}

    def evaluation_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Held-out: whole episodes, z drawn with a fixed generator (repeatable)."""
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            nll = self._nll(*self.windows(batch, full=True, generator=g))
        return {"loss": nll, "nll_per_step": nll}


@dataclass
class SequenceData(TensorData):
    """Every episode encoded by V, padded to the longest: mu, logvar (N, T, latent), actions
    (N, T, A) and lengths (N,). The MDN-RNN stage's data."""

    x: torch.Tensor  # mu
    logvar: torch.Tensor = None  # type: ignore[assignment]
    actions: torch.Tensor = None  # type: ignore[assignment]
    lengths: torch.Tensor = None  # type: ignore[assignment]
    name: str = ""
    modality: str = "video"

    def batch(self, index: Any) -> dict[str, Any]:
        return {"mu": self.x[index], "logvar": self.logvar[index],
                "actions": self.actions[index], "lengths": self.lengths[index]}

    def to(self, device: Any) -> "SequenceData":
        for k in ("x", "logvar", "actions", "lengths"):
            setattr(self, k, getattr(self, k).to(device))
        return self


@torch.no_grad()
def encode_episodes(vae: ConvVAE, data: Any, batch_size: int = 256) -> SequenceData:
    """q(z|x) of every frame of every episode, by the frozen V, once."""
    n = data.num_episodes()
    if n < 1:
        raise DataError("the rollouts hold no episodes to encode")
    eps = [data.episode(k) for k in range(n)]
    t_max = max(e["frames"].shape[0] for e in eps)
    a_dim = eps[0]["actions"].shape[1]
    mus = torch.zeros(n, t_max, vae.latent_dim)
    logvars = torch.zeros(n, t_max, vae.latent_dim)
    acts = torch.zeros(n, t_max, a_dim)
    lengths = torch.zeros(n, dtype=torch.long)
    was = vae.training
    vae.eval()
    try:
        for k, e in enumerate(eps):
            frames, t = e["frames"], e["frames"].shape[0]
            for s in range(0, t, batch_size):
                x = frames[s:s + batch_size].to(vae.device).float().div_(255)
                mu, logvar = vae.encode_dist(x)
                mus[k, s:s + len(x)], logvars[k, s:s + len(x)] = mu.cpu(), logvar.cpu()
            acts[k, :t] = e["actions"].float()
            lengths[k] = t
    finally:
        vae.train(was)
    return SequenceData(mus, logvars, acts, lengths, name=f"{getattr(data, 'name', '')} z")


# -- C: the controller, trained by CMA-ES ---------------------------------------------------------

@dataclass
class ControllerConfig:
    latent_dim: int = 32  # from V
    hidden: int = 256  # from M
    action_low: tuple[float, ...] = (-1.0, 0.0, 0.0)  # from the data (the env's action box)
    action_high: tuple[float, ...] = (1.0, 1.0, 1.0)
    # how tanh(W [z, h] + b) becomes each action: "tanh" (scaled to the box), "half" ((tanh+1)/2
    # of the box: 0 -> the middle), "clip" (clip(tanh, 0, 1) of the box: 0 -> off). Empty:
    # "tanh" for symmetric boxes, "half" otherwise. The paper's CarRacing: tanh, half, clip.
    action_map: tuple[str, ...] = ()
    env: str = "CarRacing-v3"  # from the data
    popsize: int = 64  # CMA-ES candidates per generation (the paper: 64)
    sigma0: float = 0.1  # initial step size (the paper: 0.1)
    rollouts: int = 16  # episodes per candidate, averaged (the paper: 16)
    max_steps: int = 1000  # steps per episode (CarRacing's own limit: 1,000)
    envs: int = 8  # env worker processes (1: in this process)
    cma_seed: int = 1  # CMA-ES's own random stream (> 0)
    track_seed: int = 0  # tracks of generation g: track_seed * 10**5 + g * rollouts + e

    def __post_init__(self) -> None:
        if len(self.action_low) != len(self.action_high) or not self.action_low:
            raise ValueError("action_low and action_high need one entry per action")
        if self.action_map and (len(self.action_map) != len(self.action_low) or any(
                m not in ("tanh", "half", "clip") for m in self.action_map)):
            raise ValueError(f"action_map needs one of tanh, half, clip per action, got "
                             f"{list(self.action_map)}")
        if not 2 <= self.popsize <= 1024:
            raise ValueError(f"popsize must be from 2 to 1024, got {self.popsize}")
        if not 1 <= self.rollouts <= 256:
            raise ValueError(f"rollouts must be from 1 to 256, got {self.rollouts}")
        if not 1 <= self.max_steps <= 10_000:
            raise ValueError(f"max_steps must be from 1 to 10000, got {self.max_steps}")
        if not 1 <= self.envs <= 64:
            raise ValueError(f"envs must be from 1 to 64, got {self.envs}")
        if not self.sigma0 > 0 or self.cma_seed < 1 or self.track_seed < 0:
            raise ValueError("sigma0 must be > 0, cma_seed >= 1 and track_seed >= 0")


class GenerationData(TensorData):
    """The controller's 'data': one row; each trainer step is one CMA-ES generation."""

    modality = "video"

    def __init__(self) -> None:
        self.x = torch.zeros(1, 1)
        self.name = "generations"


class Controller(Model):
    Config = ControllerConfig
    modality = "video"
    likelihood_unit = None

    def __init__(self, config: ControllerConfig):
        super().__init__(config)
        c = config
        a = len(c.action_low)
        self.weight = nn.Parameter(torch.zeros(a, c.latent_dim + c.hidden))
        self.bias = nn.Parameter(torch.zeros(a))
        self.returns = torch.zeros(0, c.popsize, dtype=torch.float64)  # per generation
        self.saved_mean: torch.Tensor | None = None
        self.es: Any = None
        self._rng: Any = None  # numpy's RandomState for cma alone

    @property
    def size(self) -> int:
        return self.weight.numel() + self.bias.numel()

    # -- the action: tanh(W [z, h] + b) mapped into the env's box --------------------------------
    def maps(self) -> list[str]:
        c = self.config
        if c.action_map:
            return list(c.action_map)
        return ["tanh" if lo == -hi else "half" for lo, hi in zip(c.action_low, c.action_high)]

    def act(self, z: torch.Tensor, h: torch.Tensor, weight: torch.Tensor | None = None,
            bias: torch.Tensor | None = None) -> torch.Tensor:
        """Actions (n, A) for (n, latent) and (n, hidden); per-row weights (n, A, D) and biases
        (n, A) for a population, else this controller's own."""
        x = torch.cat([z, h], -1).float()
        if weight is None:
            y = torch.tanh(x @ self.weight.T + self.bias)
        else:
            y = torch.tanh(torch.bmm(weight, x.unsqueeze(-1))[..., 0] + bias)
        lo = torch.tensor(self.config.action_low, device=y.device)
        hi = torch.tensor(self.config.action_high, device=y.device)
        cols = []
        for i, m in enumerate(self.maps()):
            u = {"tanh": (y[:, i] + 1) / 2, "half": (y[:, i] + 1) / 2,
                 "clip": y[:, i].clamp(0, 1)}[m]
            if m == "clip":
                cols.append(lo[i].clamp_min(0) + u * (hi[i] - lo[i].clamp_min(0)))
            else:
                cols.append(lo[i] + u * (hi[i] - lo[i]))
        return torch.stack(cols, -1)

    def unflatten(self, x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat CMA-ES solutions (k, size) -> weights (k, A, D), biases (k, A)."""
        t = torch.as_tensor(np.asarray(x), dtype=torch.float32)
        w = self.weight.numel()
        return t[:, :w].view(-1, *self.weight.shape), t[:, w:]

    # -- CMA-ES state ------------------------------------------------------------------------
    def _cma(self, call: Any) -> Any:
        """Run a cma call on cma's own numpy stream (swapped in and out of the global one)."""
        outside = np.random.get_state()
        np.random.set_state(self._rng)
        try:
            return call()
        finally:
            self._rng = np.random.get_state()
            np.random.set_state(outside)

    def search(self) -> Any:
        """The CMA-ES search, built on first use: a fresh one, or the saved one replayed."""
        if self.es is not None:
            return self.es
        try:
            import cma
        except ImportError:
            raise ConfigError("the controller is trained by CMA-ES: pip install genzoo[world]"
                              ) from None
        c = self.config
        self._rng = np.random.RandomState(c.cma_seed).get_state()
        es = self._cma(lambda: cma.CMAEvolutionStrategy(
            np.zeros(self.size), c.sigma0,
            {"popsize": c.popsize, "seed": c.cma_seed, "verbose": -9, "verb_log": 0,
             "verb_disp": 0, "tolfun": 0, "tolfunhist": 0, "tolflatfitness": 10**9,
             "tolstagnation": 10**9}))
        for g in range(self.returns.shape[0]):  # replay: the same asks, the same tells
            xs = self._cma(es.ask)
            fit = (-self.returns[g]).tolist()
            self._cma(lambda: es.tell(xs, fit))
        if self.saved_mean is not None and not np.allclose(es.mean, self.saved_mean.numpy(),
                                                           rtol=1e-9, atol=1e-12):
            raise CheckpointError(
                f"the controller's CMA-ES search could not be rebuilt from its {len(self.returns)} "
                f"saved generations (cma {cma.__version__} replays them differently from the one "
                "that ran); train the controller stage again")
        self.es = es
        return es

    def artifacts(self) -> dict[str, Any]:
        mean = self.saved_mean if self.es is None else torch.as_tensor(np.array(self.es.mean))
        return {"cma_returns": self.returns.clone(),
                "cma_mean": mean.double() if mean is not None else torch.zeros(0, dtype=torch.float64),
                "cma_sigma": torch.tensor([float(self.es.sigma) if self.es is not None
                                           else self.config.sigma0], dtype=torch.float64)}

    def load_artifacts(self, artifacts: dict[str, Any]) -> None:
        r = artifacts.get("cma_returns")
        if isinstance(r, torch.Tensor) and r.ndim == 2 and r.shape[1] == self.config.popsize:
            self.returns = r.double()
        mean = artifacts.get("cma_mean")
        self.saved_mean = mean if isinstance(mean, torch.Tensor) and mean.numel() else None
        self.es = None  # rebuilt (replayed) on next use

    # -- training: one generation per step -----------------------------------------------------
    def configure_optimizers(self, train: Any) -> dict[str, Any]:
        # gradients never train C; the trainer's optimizer slot holds a no-op one
        return {"main": torch.optim.SGD(self.parameters(), lr=train.lr)}

    def training_step(self, batch: dict[str, Any], optimizers: dict[str, Any],
                      ctx: Any) -> dict[str, torch.Tensor]:
        es = self.search()
        c = self.config
        g = self.returns.shape[0]
        xs = self._cma(es.ask)
        seeds = [c.track_seed * 10**5 + g * c.rollouts + e for e in range(c.rollouts)]
        returns = evaluate(self.upstream["vae"], self.upstream["mdnrnn"], self, np.array(xs),
                           seeds, c.max_steps, c.envs)  # (popsize, rollouts)
        mean_per = returns.mean(1)
        fit = (-mean_per).tolist()
        self._cma(lambda: es.tell(xs, fit))
        self.returns = torch.cat([self.returns, torch.as_tensor(mean_per)[None].double()])
        w, b = self.unflatten(np.array(es.mean)[None])
        with torch.no_grad():
            self.weight.copy_(w[0])
            self.bias.copy_(b[0])
        self.saved_mean = torch.as_tensor(np.array(es.mean)).double()
        return {"loss": torch.tensor(-float(mean_per.mean())),
                "mean_return": torch.tensor(float(mean_per.mean())),
                "best_return": torch.tensor(float(mean_per.max())),
                "sigma": torch.tensor(float(es.sigma))}

    def loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        best = float(self.returns.mean(1).max()) if len(self.returns) else float("nan")
        return {"loss": torch.tensor(-best), "best_generation_return": torch.tensor(best)}


class Agent:
    """V + M + C driving a wave of episodes: one batch through V and M per step, each episode
    with its own controller weights (a CMA-ES candidate) or all with the controller's."""

    def __init__(self, vae: ConvVAE, mdnrnn: MDNRNN, controller: Controller,
                 params: list[tuple[torch.Tensor, torch.Tensor]] | None = None):
        self.vae, self.m, self.c, self.params = vae, mdnrnn, controller, params
        self.queue = 0
        self.w: Any = None
        self.b: Any = None
        self.state: Any = None

    def start(self, seeds: list[int]) -> None:
        k = len(seeds)
        dev = self.vae.device
        if self.params is not None:
            ws, bs = zip(*self.params[self.queue:self.queue + k])
            self.w, self.b = torch.stack(ws).to(dev), torch.stack(bs).to(dev)
        self.queue += k
        hid = self.m.config.hidden
        self.state = (torch.zeros(1, k, hid, device=dev), torch.zeros(1, k, hid, device=dev))

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor, live: np.ndarray, t: int) -> np.ndarray:
        x = frames.to(self.vae.device).float().div_(255)
        z = self.vae.encode(x)
        h = self.state[0][0]
        a = self.c.act(z, h, self.w, self.b)
        _, self.state = self.m.step(z, a, self.state)
        return a.cpu().numpy()


@torch.no_grad()
def evaluate(vae: ConvVAE, mdnrnn: MDNRNN, controller: Controller, xs: np.ndarray | None,
             seeds: list[int], max_steps: int, envs: int) -> np.ndarray:
    """Returns (candidates, len(seeds)): every candidate (rows of `xs`; None: the controller's
    own weights, one row) on every seeded track."""
    vae.eval()
    mdnrnn.eval()
    if xs is None:
        params = None
        k = 1
        agent = Agent(vae, mdnrnn, controller)
        agent_seeds = list(seeds)
    else:
        w, b = controller.unflatten(xs)
        k = len(xs)
        params = [(w[i], b[i]) for i in range(k) for _ in seeds]
        agent = Agent(vae, mdnrnn, controller, params)
        agent_seeds = [s for _ in range(k) for s in seeds]
    got = run_episodes(controller.config.env, agent_seeds, agent, max_steps, envs,
                       start=agent.start)
    return np.array(got.returns, dtype=np.float64).reshape(k, len(seeds))


# -- the pipeline -------------------------------------------------------------------------------

class WorldModel(Pipeline):
    modality = "video"
    stages = (Stage("vae", ConvVAE, preview="reconstruct", summary="V: frames -> z (32)"),
              Stage("mdnrnn", MDNRNN, preview="dream",
                    summary="M: LSTM 256 + 5 Gaussians per dimension of z"),
              Stage("controller", Controller, preview="dream",
                    summary="C: [z, h] -> action, by CMA-ES"))

    @classmethod
    def component_config(cls, name: str, data: Any, upstream: dict[str, Model]) -> dict[str, Any]:
        if name == "mdnrnn":
            return {"latent_dim": upstream["vae"].config.latent_dim,
                    "action_dim": int(getattr(data, "action_dim", 3))}
        if name == "controller":
            info = getattr(data, "info", None)
            out: dict[str, Any] = {"latent_dim": upstream["vae"].config.latent_dim,
                                   "hidden": upstream["mdnrnn"].config.hidden}
            if info is not None:
                out.update(action_low=tuple(info.action_low), action_high=tuple(info.action_high),
                           env=info.env_id)
            return out
        return {}

    @classmethod
    def stage_data(cls, name: str, data: Any, upstream: dict[str, Model]) -> Any:
        if name == "mdnrnn":
            if not hasattr(data, "episode"):
                raise DataError("the world model trains on the rollouts data source (episodes "
                                "of frames and actions)")
            return encode_episodes(upstream["vae"], data)
        if name == "controller":
            return GenerationData()
        return data

    @torch.no_grad()
    def figures(self, data: Any, episodes: int = 20) -> dict[str, Any]:
        """Held-out: V's reconstruction MSE per pixel (frames in [0, 1]), M's NLL per step
        (summed over z, nats) and C's mean return over `episodes` unseen tracks."""
        se, n = 0.0, 0
        for batch in batches(data, 256, self.vae.device):
            x = batch["x"]
            se += float((self.vae.reconstruct(x) - x).pow(2).flatten(1).mean(1).sum())
            n += x.shape[0]
        out: dict[str, Any] = {"vae_recon_mse": se / max(n, 1)}
        if "controller" in self.parts and episodes > 0:
            c = self.controller
            r = evaluate(self.vae, self.mdnrnn, c, None,
                         [EVAL_SEED + i for i in range(episodes)], c.config.max_steps,
                         c.config.envs)[0]
            out.update(controller_mean_return=float(r.mean()), controller_std_return=float(r.std()),
                       controller_episodes=episodes, controller_generations=len(c.returns),
                       controller_episodes_trained=int(len(c.returns) * c.config.popsize
                                                       * c.config.rollouts))
        return out


# -- samplers -------------------------------------------------------------------------------------

def _vae(model: Any) -> ConvVAE:
    return model if isinstance(model, ConvVAE) else model.vae


def _part(model: Any, name: str, sampler: str) -> Any:
    parts = getattr(model, "parts", {})
    if name not in parts:
        need = {"mdnrnn": "the trained MDN-RNN (stage mdnrnn)",
                "controller": "the trained controller (stage controller)"}[name]
        raise ConfigError(f"sampler {sampler!r} needs {need}; this model has only "
                          f"{', '.join(parts) or 'its VAE'}")
    return parts[name]


def _clips(vae: ConvVAE, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    if vae.examples is None or not len(vae.examples):
        raise ConfigError("this world model keeps no example clips (its VAE never saw the "
                          "rollouts), so it has no real frame to start from")
    idx = torch.arange(n) % vae.examples.shape[0]
    return (vae.examples[idx].float().div(255).to(vae.device),
            vae.example_actions[idx].float().to(vae.device))


@dataclass
class DreamOptions:
    temperature: float = 1.0  # tau: mixture logits / tau, sigmas * sqrt(tau); 0: no randomness
    steps: int = 48  # imagined frames after the real one
    drive: str = "auto"  # controller | recorded (the clip's real actions) | brownian | auto
    fps: int = 12

    def __post_init__(self) -> None:
        if not 0 <= self.temperature <= 10:
            raise ValueError(f"temperature must be from 0 to 10, got {self.temperature}")
        if not 1 <= self.steps <= 1000:
            raise ValueError(f"steps must be from 1 to 1000, got {self.steps}")
        if self.drive not in ("auto", "controller", "recorded", "brownian"):
            raise ValueError(f"drive must be auto, controller, recorded or brownian, got "
                             f"{self.drive!r}")
        if not 1 <= self.fps <= 60:
            raise ValueError(f"fps must be from 1 to 60, got {self.fps}")


class DreamSampler(Sampler):
    """A real frame, then M's imagination: z_{t+1} drawn from the MDN-RNN at temperature tau
    and decoded by V, step after step, never looking at the env again."""

    name = "dream"
    Options = DreamOptions

    def batch_limit(self, model: Any) -> int | None:
        return 16

    def check(self, model: Any, inputs: dict[str, Any]) -> None:
        _part(model, "mdnrnn", self.name)
        _clips(_vae(model), 1)
        if self.options.drive == "controller":
            _part(model, "controller", self.name)

    @torch.no_grad()
    def sample(self, model: Any, n: int, generator: torch.Generator, **_: Any) -> VideoSample:
        o = self.options
        vae, m = _vae(model), model.mdnrnn
        ctrl = model.parts["controller"] if "controller" in model.parts else None
        drive = o.drive if o.drive != "auto" else ("controller" if ctrl is not None
                                                   else "recorded")
        clips, actions = _clips(vae, n)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        brown = BrownianPolicy(np.array([-1.0, 0.0, 0.0])[:m.config.action_dim] if
                               m.config.action_dim == 3 else -np.ones(m.config.action_dim),
                               np.ones(m.config.action_dim), np.random.default_rng(seed))
        z = vae.encode(clips[:, 0])
        frames = [clips[:, 0]]
        state = None
        for t in range(o.steps):
            h = state[0][0] if state is not None else torch.zeros(n, m.config.hidden,
                                                                  device=z.device)
            if drive == "controller":
                a = ctrl.act(z, h)
            elif drive == "recorded" and t < actions.shape[1]:
                a = actions[:, t]
            else:
                a = torch.as_tensor(np.stack([brown(t) for _ in range(n)]), device=z.device)
            (logpi, mu, logsigma), state = m.step(z, a.float(), state)
            z = m.sample_mixture(logpi, mu, logsigma, o.temperature, generator)
            frames.append(vae.decode(z))
        clip = torch.stack(frames, 1).cpu()
        return VideoSample(clip, fps=o.fps, captions=[
            f"dream {i}: real frame, then {o.steps} imagined at tau={o.temperature:g}, "
            f"driven by {drive}" for i in range(n)])


@dataclass
class RolloutOptions:
    max_steps: int = 1000  # steps per episode (CarRacing: 1,000)
    every: int = 4  # keep every k-th frame in the video
    fps: int = 12

    def __post_init__(self) -> None:
        if not 1 <= self.max_steps <= 10_000:
            raise ValueError(f"max_steps must be from 1 to 10000, got {self.max_steps}")
        if not 1 <= self.every <= 100 or not 1 <= self.fps <= 60:
            raise ValueError("every must be from 1 to 100 and fps from 1 to 60")


class RolloutSampler(Sampler):
    """The real env driven by V + M + C on new tracks: a video of each episode and its return."""

    name = "rollout"
    Options = RolloutOptions

    def batch_limit(self, model: Any) -> int | None:
        return 16

    def check(self, model: Any, inputs: dict[str, Any]) -> None:
        _part(model, "mdnrnn", self.name)
        _part(model, "controller", self.name)

    @torch.no_grad()
    def sample(self, model: Any, n: int, generator: torch.Generator, **_: Any) -> VideoSample:
        o = self.options
        c = model.controller
        seeds = [EVAL_SEED + int(s) for s in torch.randint(0, 10**6, (n,), generator=generator)]
        agent = Agent(model.vae, model.mdnrnn, c)
        got = run_episodes(c.config.env, seeds, agent, o.max_steps, c.config.envs, record="raw",
                           start=agent.start, every=o.every)
        t = max(len(r) for r in got.raw)
        clips = []
        for r in got.raw:  # an episode that ended early holds its last frame
            x = torch.from_numpy(r).permute(0, 3, 1, 2).float().div(255)
            clips.append(torch.cat([x, x[-1:].expand(t - len(x), -1, -1, -1)]))
        text = "\n".join(f"episode {i} (track seed {s}): return {ret:.1f} over {n_} steps"
                         for i, (s, ret, n_) in enumerate(zip(seeds, got.returns, got.lengths)))
        return VideoSample(torch.stack(clips), fps=o.fps,
                           captions=[f"return {r:.1f} over {n_} steps"
                                     for r, n_ in zip(got.returns, got.lengths)],
                           extras={"returns": text})


@dataclass
class ReconstructOptions:
    fps: int = 12

    def __post_init__(self) -> None:
        if not 1 <= self.fps <= 60:
            raise ValueError(f"fps must be from 1 to 60, got {self.fps}")


class ReconstructSampler(Sampler):
    """Real training clips (left) beside V's reconstructions, decode(encode(x)) (right)."""

    name = "reconstruct"
    Options = ReconstructOptions

    def batch_limit(self, model: Any) -> int | None:
        return 16

    def check(self, model: Any, inputs: dict[str, Any]) -> None:
        _clips(_vae(model), 1)

    @torch.no_grad()
    def sample(self, model: Any, n: int, generator: torch.Generator, **_: Any) -> VideoSample:
        vae = _vae(model)
        clips, _ = _clips(vae, n)
        recon = vae.reconstruct(clips.flatten(0, 1)).view_as(clips)
        return VideoSample(torch.cat([clips, recon], -1).cpu(), fps=self.options.fps,
                           captions=[f"clip {i % len(vae.examples)}: real | V's reconstruction"
                                     for i in range(n)])
