"""Energy-based model (Du & Mordatch 2019; Foster ch. 7).

A network scores an image; its negative is the energy E(x), and the model's density is
p(x) ∝ exp(-E(x)). The normaliser is intractable, so there is no likelihood to report. Training
is contrastive divergence: push the score of real images up and the score of the model's own
samples down. The samples come from Langevin dynamics: start from noise, then repeatedly add a
little Gaussian noise and climb the score's input gradient (clipped, as in the book).

Running Langevin to convergence every step would be too slow, so (as the book and the UvA
tutorial 8 do) negative samples continue from a replay buffer of earlier samples: each batch
takes about 5% fresh uniform noise and 95% buffer images, runs 60 Langevin steps, and writes the
results back. The buffer is part of the run: saved with every checkpoint (``artifacts``) and
restored by ``--resume`` and ``load_run``, together with the generator that drives it, so a
resumed run is bit-exact.

The network sees images in [-1, 1]. Its output is the book's "score" (higher = more real);
genzoo reports energies E = -score, so real data should sit *below* noise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from genzoo.errors import ConfigError
from genzoo.family import ImageSample, Model, Sampler, frozen, gaussian


@dataclass
class EBMConfig:
    image_size: int = 32
    channels: int = 1
    filters: list[int] = field(default_factory=lambda: [16, 32, 64, 64])  # stride-2 convs (book)
    dense: int = 64
    alpha: float = 0.1  # weight of the regulariser alpha * (score_real^2 + score_fake^2) (book: 0.1)
    buffer_size: int = 8192  # replay buffer of negative samples (book: 8,192)
    fresh: float = 0.05  # share of each negative batch restarted from uniform noise (book: 5%)
    # Langevin during training (names apart from train.steps / train.grad_clip / data.noise)
    langevin_steps: int = 60  # per training batch (book: 60)
    step_size: float = 10.0  # gradient step (book: 10)
    langevin_noise: float = 0.005  # std of the noise added before each step (book: 0.005)
    langevin_clip: float = 0.03  # each input-gradient value clipped to +-this (book: 0.03)
    data_noise: float = 0.005  # small noise on real images, so the data is not a set of points
    # the sampler's Langevin steps from noise when it is not given steps (the book's figures
    # run far more than the 60 of a training batch, whose chains continue from the buffer)
    sample_steps: int = 60
    # where the sampler's chains start when it is not told: "noise" (the book's figures) or
    # "buffer" (continue the replay buffer's persistent chains, as Du & Mordatch show their
    # samples: a short run's energy gives speckled digits from noise but readable ones there)
    sample_start: Literal["noise", "buffer"] = "noise"

    def __post_init__(self) -> None:
        if self.image_size < 2 or self.channels < 1:
            raise ValueError("image_size must be >= 2 and channels >= 1")
        if not self.filters or min(self.filters) < 1 or self.dense < 1:
            raise ValueError("filters must be a non-empty list of positive widths, dense >= 1")
        if not self.alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if self.buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {self.buffer_size}")
        if not 0 <= self.fresh <= 1:
            raise ValueError(f"fresh must be in [0, 1], got {self.fresh}")
        check_langevin(self.langevin_steps, self.step_size, self.langevin_noise,
                       self.langevin_clip, ("langevin_steps", "step_size", "langevin_noise",
                                            "langevin_clip"))
        if not self.data_noise >= 0:
            raise ValueError(f"data_noise must be >= 0, got {self.data_noise}")
        if self.sample_steps < 1:
            raise ValueError(f"sample_steps must be >= 1, got {self.sample_steps}")
        if self.sample_start not in ("noise", "buffer"):
            raise ValueError(f"sample_start must be 'noise' or 'buffer', got {self.sample_start!r}")


def check_langevin(steps: int, step_size: float, noise: float, grad_clip: float | None,
                   names: tuple[str, ...] = ("steps", "step_size", "noise", "grad_clip")) -> None:
    if steps < 1:
        raise ValueError(f"{names[0]} must be >= 1, got {steps}")
    if not (math.isfinite(step_size) and step_size > 0):
        raise ValueError(f"{names[1]} must be a finite number > 0, got {step_size}")
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"{names[2]} must be a finite number >= 0, got {noise}")
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"{names[3]} must be > 0 (or none), got {grad_clip}")


def uniform_images(shape: Any, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return (torch.rand(shape, generator=generator, device=generator.device) * 2 - 1).to(device)


def langevin(score: Any, x: torch.Tensor, steps: int, step_size: float, noise: float,
             grad_clip: float | None, generator: torch.Generator,
             record: set[int] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The book's ``generate_samples``: per step, add N(0, noise^2), clip to [-1, 1], climb the
    clipped input gradient of the score by `step_size`, clip again. Returns the final images and
    the states after the steps listed in `record` (0 = the start)."""
    x = x.detach().clone()
    frames = [x.clone()] if record and 0 in record else []
    for t in range(1, steps + 1):
        x = (x + noise * gaussian(generator, x.shape, x.device)).clamp_(-1, 1)
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(score(x).sum(), x)
        if grad_clip is not None:
            grad = grad.clamp(-grad_clip, grad_clip)
        x = (x.detach() + step_size * grad).clamp_(-1, 1)
        if record and t in record:
            frames.append(x.clone())
    return x, frames


class EBM(Model):
    Config = EBMConfig
    modality = "image"
    likelihood_unit = None  # the normaliser is intractable: no likelihood

    def __init__(self, config: EBMConfig):
        super().__init__(config)
        c = config
        layers: list[nn.Module] = []
        cin, size = c.channels, c.image_size
        for i, f in enumerate(c.filters):
            k = 5 if i == 0 else 3  # the book: 5x5 first, then 3x3, all stride 2, "same"
            layers += [nn.Conv2d(cin, f, k, stride=2, padding=k // 2), nn.SiLU()]
            cin, size = f, (size + 1) // 2
        self.net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(cin * size * size, c.dense),
                                 nn.SiLU(), nn.Linear(c.dense, 1))
        # the replay buffer: a ring of the newest `buffer_size` negatives, in [-1, 1]
        self.register_buffer("replay", torch.zeros(c.buffer_size, c.channels, c.image_size,
                                                   c.image_size), persistent=False)
        self.replay_count = 0  # filled entries
        self.replay_head = 0  # next slot to overwrite (the oldest once full)
        self.generator = torch.Generator().manual_seed(0)  # buffer, fresh noise and Langevin noise

    @classmethod
    def config_from_data(cls, data: object) -> dict:
        shape = getattr(data, "shape", None)
        return {"image_size": int(shape[-1]), "channels": int(shape[0])} if shape else {}

    def setup(self, data: Any) -> None:
        # seeded from the run's seed (the trainer seeds torch before building the model)
        self.generator.manual_seed(int(torch.randint(0, 2**62, (1,))))

    # -- network -----------------------------------------------------------------------------
    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (B, C, H, W) -> score (B,) = -energy."""
        return self.net(x).squeeze(-1)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        return -self.score(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.energy(x)

    @staticmethod
    def to_model(x01: torch.Tensor) -> torch.Tensor:
        return x01 * 2 - 1

    def run_langevin(self, x: torch.Tensor, steps: int | None = None,
                     generator: torch.Generator | None = None,
                     record: set[int] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Langevin from `x` with the config's settings, parameters frozen (no grads left)."""
        c = self.config
        # frozen: Langevin builds no graph through the weights and leaves no .grad behind;
        # enable_grad: it needs the input gradient even when called under no_grad (evaluation);
        # autocast off: the chain runs in fp32 whatever precision the training step uses
        with frozen(self), torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
            return langevin(self.score, x, steps or c.langevin_steps, c.step_size,
                            c.langevin_noise, c.langevin_clip, generator or self.generator, record)

    # -- training ----------------------------------------------------------------------------
    def negatives(self, n: int, device: torch.device) -> torch.Tensor:
        """The book's ``Buffer.sample_new_exmps``: ~fresh share uniform noise, the rest drawn
        from the buffer; Langevin on all; the results go back into the buffer."""
        c, g = self.config, self.generator
        shape = (c.channels, c.image_size, c.image_size)
        if self.replay_count == 0:  # start as the book does: one batch of uniform noise
            first = min(n, c.buffer_size)
            self.replay[:first] = uniform_images((first, *shape), g, self.replay.device)
            self.replay_count, self.replay_head = first, first % c.buffer_size
        n_new = int((torch.rand(n, generator=g) < c.fresh).sum())
        pick = torch.randint(0, self.replay_count, (n - n_new,), generator=g)
        start = torch.cat([uniform_images((n_new, *shape), g, device),
                           self.replay[pick.to(self.replay.device)].to(device)])
        x, _ = self.run_langevin(start)
        slots = (self.replay_head + torch.arange(min(n, c.buffer_size))) % c.buffer_size
        self.replay[slots.to(self.replay.device)] = x[-len(slots):].detach().to(self.replay.device)
        self.replay_head = int((self.replay_head + len(slots)) % c.buffer_size)
        self.replay_count = min(self.replay_count + len(slots), c.buffer_size)
        return x

    def contrastive(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        scores = self.score(torch.cat([real, fake])).float()
        s_real, s_fake = scores[:len(real)], scores[len(real):]
        cdiv = s_fake.mean() - s_real.mean()
        reg = self.config.alpha * (s_real.pow(2).mean() + s_fake.pow(2).mean())
        e_real, e_fake = -s_real.mean().detach(), -s_fake.mean().detach()
        return {"loss": cdiv + reg, "cdiv": cdiv.detach(), "reg": reg.detach(),
                "energy_real": e_real, "energy_fake": e_fake, "energy_gap": e_fake - e_real}

    def real_images(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        real = self.to_model(batch["x"])
        noise = self.config.data_noise * gaussian(self.generator, real.shape, real.device)
        return (real + noise).clamp(-1, 1)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        real = self.real_images(batch)
        return self.contrastive(real, self.negatives(len(real), real.device))

    def training_step(self, batch: dict[str, torch.Tensor], optimizers: dict[str, Any],
                      ctx: Any) -> dict[str, torch.Tensor]:
        real = self.real_images(batch)
        fake = self.negatives(len(real), real.device)  # Langevin: input grads only, fp32
        with ctx.autocast():
            out = self.contrastive(real, fake)
        ctx.optimize(out["loss"], optimizers["main"])
        return out

    def evaluation_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Energies of held-out images, of uniform noise, and of Langevin samples run from that
        noise (fixed seed: the same noise every time). The buffer is not touched."""
        real = self.to_model(batch["x"])
        g = torch.Generator().manual_seed(0)
        noise = uniform_images(real.shape, g, real.device)
        fake, _ = self.run_langevin(noise, generator=g)
        with torch.no_grad():
            out = self.contrastive(real, fake)
            e_noise = -self.score(noise).mean()
        out = {k: v.detach() for k, v in out.items()}
        out["energy_noise"] = e_noise
        out["energy_gap_noise"] = e_noise - out["energy_real"]
        return out

    # -- run artifacts: the buffer and the generator behind it -------------------------------
    def artifacts(self) -> dict[str, Any]:
        return {"replay": self.replay[:self.replay_count],
                "replay_state": torch.tensor([self.replay_count, self.replay_head]),
                "replay_rng": self.generator.get_state()}

    def load_artifacts(self, artifacts: dict[str, Any]) -> None:
        if "replay_state" not in artifacts:
            return  # a run saved before training started
        count, head = (int(v) for v in artifacts["replay_state"])
        replay = artifacts["replay"]
        if count > self.config.buffer_size or replay.shape[0] != count \
                or tuple(replay.shape[1:]) != tuple(self.replay.shape[1:]):
            raise ValueError(f"replay buffer of shape {tuple(replay.shape)} does not fit "
                             f"{tuple(self.replay.shape)}")
        self.replay[:count] = replay.to(self.replay.device, self.replay.dtype)
        self.replay_count, self.replay_head = count, head
        self.generator.set_state(artifacts["replay_rng"].to(torch.uint8))


# -- sampler ---------------------------------------------------------------------------------

@dataclass
class LangevinOptions:
    steps: int | None = None  # None: the model's sample_steps (book: 60 per training batch;
    # more, e.g. 1000, for the book's figures)
    step_size: float = 10.0
    noise: float = 0.005
    grad_clip: float | None = 0.03
    # buffer: continue chains from the run's buffer; None: the model's sample_start
    start: Literal["noise", "buffer"] | None = None
    frames: int = 8  # --show-chain: states shown per chain, evenly spaced, start and end included
    chains: int = 8  # --show-chain: how many chains (rows) are shown

    def __post_init__(self) -> None:
        check_langevin(1 if self.steps is None else self.steps, self.step_size, self.noise,
                       self.grad_clip)
        if self.frames < 2:
            raise ValueError(f"frames must be >= 2, got {self.frames}")
        if self.chains < 1:
            raise ValueError(f"chains must be >= 1, got {self.chains}")


class LangevinSampler(Sampler):
    """Langevin dynamics on the trained energy, from uniform noise (or the replay buffer)."""

    name = "langevin"
    Options = LangevinOptions
    needs_grad = True  # core runs it with gradients on and the network's parameters frozen
    shows = {"chain": "the Langevin chains at evenly spaced steps (one row per chain)"}

    def check(self, model: EBM, inputs: dict[str, Any]) -> None:
        if self.options.start == "buffer" and model.replay_count == 0:
            raise ConfigError("start=buffer, but this run's replay buffer is empty (not trained "
                              "yet); use start=noise")

    def sample(self, model: EBM, n: int, generator: torch.Generator,
               show: tuple[str, ...] = (), **_: Any) -> ImageSample:
        o, c = self.options, model.config
        shape = (n, c.channels, c.image_size, c.image_size)
        steps = o.steps or c.sample_steps
        # the model's default start falls back to noise while the buffer is empty (the
        # trainer's preview grid before the first step); an explicit start=buffer was checked
        if (o.start or c.sample_start) == "buffer" and model.replay_count > 0:
            pick = torch.randint(0, model.replay_count, (n,), generator=generator)
            x0 = model.replay[pick.to(model.replay.device)].to(model.device)
        else:
            x0 = uniform_images(shape, generator, model.device)
        at = sorted({round(i * steps / (o.frames - 1)) for i in range(o.frames)})
        record = set(at) if "chain" in show else None
        with torch.autocast(model.device.type, enabled=False):
            x, frames = langevin(model.score, x0, steps, o.step_size, o.noise, o.grad_clip,
                                 generator, record)
        out = ImageSample((x.detach().float().cpu() + 1) / 2)
        if record:
            k = min(o.chains, n)
            grid = torch.stack([f[:k].detach().float().cpu() for f in frames], dim=1)  # (k, T, ...)
            out.extras["chain"] = ImageSample((grid.flatten(0, 1) + 1) / 2, nrow=len(frames))
            out.extras["chain_steps"] = "chain columns show Langevin steps " + ", ".join(map(str, at))
        return out
