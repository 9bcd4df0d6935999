"""Environments for world models (Ha & Schmidhuber 2018; Foster ch. 12): gymnasium made safe to
call, observations as the 64x64 frames the models see, exploration policies, and one episode loop
that the rollout data source, the CMA-ES controller and the rollout sampler all share.

- ``require_gym`` imports gymnasium headless (``SDL_VIDEODRIVER=dummy``); without it, or without
  Box2D, it is one line saying ``pip install genzoo[world]``.
- ``env_info`` checks an env id before anything runs: an unknown id, an env whose observation is
  not an RGB image, or a discrete action space is one line each.
- ``frames64`` turns (n, H, W, 3) uint8 observations into (n, 3, 64, 64) uint8: CarRacing's
  dashboard rows are cut (``crop_bottom``) and the rest resized with antialiasing.
- ``run_episodes`` plays a list of seeded episodes in a gymnasium vector env (``envs`` worker
  processes, or in this process for ``envs <= 1``), asking an agent for the actions of every
  live episode at once, so a world model encodes all of them in one batch. Episode i's track is
  ``reset(seed=seeds[i])``, so its content never depends on how many run side by side.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from genzoo.errors import ConfigError

__all__ = ["EnvInfo", "require_gym", "env_info", "frames64", "BrownianPolicy", "RandomPolicy",
           "policy_for", "Episodes", "run_episodes", "MAX_ENVS", "MAX_STEPS", "FRAME"]

INSTALL = "pip install genzoo[world]"
FRAME = 64  # side of the frames the world model sees
MAX_ENVS = 64  # worker processes one vector env may start
MAX_STEPS = 10_000  # steps one episode may run


def require_gym() -> Any:
    """gymnasium, imported headless; one line naming the extra when it (or Box2D) is missing."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    try:
        import gymnasium
    except ImportError:
        raise ConfigError(f"world models need gymnasium with Box2D: {INSTALL}") from None
    return gymnasium


@dataclass(frozen=True)
class EnvInfo:
    env_id: str
    obs_shape: tuple[int, ...]
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    max_episode_steps: int | None

    @property
    def action_dim(self) -> int:
        return len(self.action_low)


def make_env(env_id: str, **kwargs: Any) -> Any:
    """gym.make(env_id) with its failures as one line each."""
    gym = require_gym()
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.DependencyNotInstalled:
        raise ConfigError(f"{env_id} needs Box2D and pygame: {INSTALL}") from None
    except (gym.error.NameNotFound, gym.error.NamespaceNotFound, gym.error.VersionNotFound,
            gym.error.DeprecatedEnv, gym.error.UnregisteredEnv) as e:
        known = [k for k in gym.registry if "Racing" in k or "Car" in k][:5]
        raise ConfigError(f"unknown gymnasium env id {env_id!r} ({str(e).splitlines()[0]}); "
                          f"image envs: {', '.join(known) or 'CarRacing-v3'}") from None
    except gym.error.Error as e:
        raise ConfigError(f"cannot make gymnasium env {env_id!r}: {e}") from None


def env_info(env_id: str) -> EnvInfo:
    """What a world model needs to know of an env, after checking it fits one: an RGB image
    observation (H, W, 3) of uint8 and a continuous (Box) action space."""
    if not isinstance(env_id, str) or not env_id:
        raise ConfigError(f"env id must be a gymnasium id such as CarRacing-v3, got {env_id!r}")
    gym = require_gym()
    env = make_env(env_id)
    try:
        obs, act = env.observation_space, env.action_space
        image = isinstance(obs, gym.spaces.Box) and obs.dtype == np.uint8 and len(obs.shape) == 3 \
            and obs.shape[-1] == 3
        if not image:
            raise ConfigError(f"env {env_id!r} observes {obs}, not an RGB image (H, W, 3) of "
                              "uint8; a world model learns from pixels (try CarRacing-v3)")
        if not isinstance(act, gym.spaces.Box) or len(act.shape) != 1:
            raise ConfigError(f"env {env_id!r} has actions {act}; the linear controller needs "
                              "a continuous (Box) action vector")
        spec = env.spec
        return EnvInfo(env_id, tuple(int(s) for s in obs.shape),
                       tuple(float(v) for v in act.low), tuple(float(v) for v in act.high),
                       getattr(spec, "max_episode_steps", None))
    finally:
        env.close()


def frames64(obs: np.ndarray, crop_bottom: int = 12, size: int = FRAME) -> torch.Tensor:
    """(n, H, W, 3) uint8 observations -> (n, 3, size, size) uint8: the bottom `crop_bottom` rows
    (CarRacing's dashboard) cut, the rest resized with antialiasing (Ha & Schmidhuber keep the
    top 84 of 96 rows and resize to 64x64)."""
    x = torch.from_numpy(np.ascontiguousarray(obs))
    if x.ndim == 3:
        x = x[None]
    h = x.shape[1]
    if 0 < crop_bottom < h:
        x = x[:, :h - crop_bottom]
    x = x.permute(0, 3, 1, 2).float()
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8)


class RandomPolicy:
    """A uniform random action every step."""

    def __init__(self, low: np.ndarray, high: np.ndarray, rng: np.random.Generator):
        self.low, self.high, self.rng = low, high, rng

    def __call__(self, t: int) -> np.ndarray:
        """The action at step `t`."""
        return self.rng.uniform(self.low, self.high).astype(np.float32)


class BrownianPolicy(RandomPolicy):
    """Brownian motion in action space, clipped to the box (ctallec/world-models'
    ``sample_continuous_policy``): a_{t+1} = clip(a_t + sqrt(dt) N(0, I)). Smooth steering and
    throttle drive a car far further along the road than uniform noise does."""

    def __init__(self, low: np.ndarray, high: np.ndarray, rng: np.random.Generator,
                 dt: float = 1 / 50):
        super().__init__(low, high, rng)
        self.dt = dt
        self.a: np.ndarray | None = None

    def __call__(self, t: int) -> np.ndarray:
        """The action at step `t`."""
        if self.a is None:
            self.a = self.rng.uniform(self.low, self.high)
        else:
            self.a = np.clip(self.a + math.sqrt(self.dt) * self.rng.standard_normal(self.a.shape),
                             self.low, self.high)
        return self.a.astype(np.float32)


POLICIES = {"random": RandomPolicy, "brownian": BrownianPolicy}


def policy_for(name: str, info: EnvInfo, seed: int) -> RandomPolicy:
    """An exploration policy by name for one episode, its noise from `seed` alone."""
    if name not in POLICIES:
        raise ConfigError(f"unknown rollout policy {name!r}; valid: {', '.join(POLICIES)}")
    return POLICIES[name](np.array(info.action_low), np.array(info.action_high),
                          np.random.default_rng(seed))


@dataclass
class Episodes:
    """What ``run_episodes`` returns, one entry per episode in the order of its seeds."""

    returns: list[float]
    lengths: list[int]
    frames: list[torch.Tensor] | None  # (T, 3, 64, 64) uint8 (record="model")
    raw: list[np.ndarray] | None  # (T, H, W, 3) uint8 observations (record="raw")
    actions: list[np.ndarray] | None  # (T, A) float32
    rewards: list[np.ndarray] | None  # (T,) float32
    dones: list[np.ndarray] | None  # (T,) bool: True on an episode's last step


def vector_env(env_id: str, n: int, envs: int) -> Any:
    """A gymnasium vector env of `n` copies: one worker process each when `envs` > 1, else all
    in this process."""
    gym = require_gym()
    fns = [lambda: make_env(env_id) for _ in range(n)]
    if envs <= 1:
        return gym.vector.SyncVectorEnv(fns)
    return gym.vector.AsyncVectorEnv(fns, shared_memory=True)


def run_episodes(env_id: str, seeds: list[int],
                 act: Callable[[torch.Tensor, np.ndarray, int], np.ndarray],
                 max_steps: int, envs: int = 1, record: str | None = None,
                 start: Callable[[list[int]], None] | None = None,
                 crop_bottom: int = 12, every: int = 1) -> Episodes:
    """Play one episode per seed, `envs` at a time (a wave), each for at most `max_steps`
    steps. ``act(frames, live, t)`` gets the (k, 3, 64, 64) uint8 frames of the wave's k
    episodes and a bool mask of those still running, and returns (k, A) actions;
    ``start(seeds)`` is called before each wave (an agent resets its memory). `record`:
    "model" keeps the 64x64 frames with actions, rewards and dones (a data set), "raw" keeps
    every `every`-th observation as the env drew it (a video), None only the returns."""
    if not 1 <= max_steps <= MAX_STEPS:
        raise ConfigError(f"max_steps must be from 1 to {MAX_STEPS}, got {max_steps}")
    envs = max(1, min(int(envs), MAX_ENVS))
    out = Episodes([], [], [] if record == "model" else None, [] if record == "raw" else None,
                   [] if record == "model" else None, [] if record == "model" else None,
                   [] if record == "model" else None)
    env = None
    try:
        for w in range(0, len(seeds), envs):
            wave = [int(s) for s in seeds[w:w + envs]]
            k = len(wave)
            if env is None or env.num_envs != k:
                if env is not None:
                    env.close()
                env = vector_env(env_id, k, envs)
            if start is not None:
                start(wave)
            obs, _ = env.reset(seed=wave)
            live = np.ones(k, bool)
            total = np.zeros(k)
            length = np.zeros(k, int)
            keep: list[list[Any]] = [[] for _ in range(k)]
            acts: list[list[np.ndarray]] = [[] for _ in range(k)]
            rews: list[list[float]] = [[] for _ in range(k)]
            for t in range(max_steps):
                frames = frames64(obs, crop_bottom)
                if record == "raw" and t % every == 0:
                    for i in np.flatnonzero(live):
                        keep[i].append(obs[i].copy())
                a = np.asarray(act(frames, live.copy(), t), dtype=np.float32)
                obs, r, term, trunc, _ = env.step(a)
                for i in np.flatnonzero(live):
                    if record == "model":
                        keep[i].append(frames[i])
                        acts[i].append(a[i])
                        rews[i].append(float(r[i]))
                    total[i] += float(r[i])
                    length[i] += 1
                live &= ~(term | trunc)
                if not live.any():
                    break
            out.returns += total.tolist()
            out.lengths += length.tolist()
            for i in range(k):
                if record == "model":
                    out.frames.append(torch.stack(keep[i]))
                    out.actions.append(np.stack(acts[i]).astype(np.float32))
                    out.rewards.append(np.asarray(rews[i], np.float32))
                    d = np.zeros(len(rews[i]), bool)
                    d[-1] = True
                    out.dones.append(d)
                elif record == "raw":
                    out.raw.append(np.stack(keep[i]))
    except BaseException:
        if env is not None:  # a signal or an error mid-wave: stop the workers, do not wait
            env.close(**({"terminate": True} if envs > 1 else {}))
            env = None
        raise
    finally:
        if env is not None:
            env.close()
    return out
