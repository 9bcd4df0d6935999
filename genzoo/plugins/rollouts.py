"""The ``rollouts`` data source: episodes of a gymnasium image env played by an exploration policy
(random or brownian), collected once into a memory-mapped cache under the data root.

registry.yaml names it as a dataset's ``loader: genzoo.plugins.rollouts:load``, with options
``env`` (a gymnasium id), ``policy`` (random | brownian), ``episodes``, ``max_steps``, ``seed``
and ``envs`` (worker processes of the vector env); ``data.limit`` lowers the episode budget.

The cache, ``DATA_ROOT/rollouts/ENV-POLICY-seedS-tMAXSTEPS-64px/``:

    ep_000000/frames.npy   (T, 3, 64, 64) uint8     memory-mapped when read
    ep_000000/actions.npy  (T, A) float32           the action taken at each frame
    ep_000000/rewards.npy  (T,) float32
    ep_000000/dones.npy    (T,) bool                True on the episode's last step
    index.json             env, policy, seed, max_steps, and each complete episode's length

Episode i is played on the track ``reset(seed=S * 100_003 + i)`` with policy noise from the same
number, so it depends on (env, policy, seed, max_steps, i) alone, never on how many workers ran
or on the budget: a larger budget extends the same cache, a smaller one reads its first
episodes. Each episode is written to a temporary folder and renamed into place, then the index
is rewritten: a collection killed at any point keeps every episode it finished, and the next
run collects only the missing ones. Episodes are split into train and test ones
(``data.test_fraction``), never frames of one episode into both.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genzoo.errors import ConfigError, DataError
from genzoo.family import DataConfig, Dataset, atomic_write, data_root, split_index
from genzoo.nn.world import (FRAME, MAX_ENVS, MAX_STEPS, EnvInfo, env_info, policy_for,
                             run_episodes)

MAX_EPISODES = 100_000
FILES = ("frames", "actions", "rewards", "dones")
INDEX = "index.json"
OPEN_EPISODES = 256  # memory maps held open at once (file descriptors)


def episode_seed(seed: int, i: int) -> int:
    return seed * 100_003 + i


def cache_dir(root: Path, env: str, policy: str, seed: int, max_steps: int) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in env)
    return root / "rollouts" / f"{safe}-{policy}-seed{seed}-t{max_steps}-{FRAME}px"


def _int_option(options: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"rollouts option {key} must be an integer from {lo} to {hi}, "
                          f"got {value!r}")
    return value


class Collection:
    """One cache folder: what is there, and collecting what is missing."""

    def __init__(self, folder: Path, info: EnvInfo, policy: str, seed: int, max_steps: int):
        self.folder, self.info, self.policy = folder, info, policy
        self.seed, self.max_steps = seed, max_steps

    def episode_dir(self, i: int) -> Path:
        return self.folder / f"ep_{i:06d}"

    def complete(self) -> dict[int, int]:
        """Episode -> length, for every episode folder that holds all its files (the index
        may lag one wave behind a kill; the folders are the truth)."""
        found = {}
        if not self.folder.is_dir():
            return found
        for d in self.folder.glob("ep_*"):
            if not d.is_dir() or not d.name[3:].isdigit():
                continue
            if all((d / f"{f}.npy").is_file() for f in FILES):
                try:
                    shape = np.load(d / "rewards.npy", mmap_mode="r").shape
                except (OSError, ValueError):
                    continue  # damaged: collected again
                found[int(d.name[3:])] = int(shape[0])
        return found

    def write_index(self, lengths: dict[int, int]) -> None:
        atomic_write(self.folder / INDEX, lambda p: p.write_text(json.dumps({
            "env": self.info.env_id, "policy": self.policy, "seed": self.seed,
            "max_steps": self.max_steps, "frame": FRAME, "action_low": self.info.action_low,
            "action_high": self.info.action_high,
            "episodes": {str(k): v for k, v in sorted(lengths.items())}}, indent=1)))

    def save(self, i: int, frames: torch.Tensor, actions: np.ndarray, rewards: np.ndarray,
             dones: np.ndarray) -> None:
        """Episode i into a temporary folder, renamed into place whole."""
        final = self.episode_dir(i)
        tmp = self.folder / f".ep_{i:06d}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            for name, arr in zip(FILES, (frames.numpy(), actions, rewards, dones)):
                np.save(tmp / f"{name}.npy", arr)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def collect(self, episodes: int, envs: int, progress: bool = True) -> dict[int, int]:
        """Make sure episodes 0 .. episodes-1 are in the cache; returns their lengths."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob(".ep_*.tmp"):  # a kill mid-write
            shutil.rmtree(stale, ignore_errors=True)
        have = self.complete()
        missing = [i for i in range(episodes) if i not in have]
        if not missing:
            if not (self.folder / INDEX).is_file():
                self.write_index(have)
            return {i: have[i] for i in range(episodes)}
        need = len(missing) * self.max_steps * (3 * FRAME * FRAME + 4 * self.info.action_dim + 6)
        free = shutil.disk_usage(self.folder).free
        if need > free:
            raise DataError(f"collecting {len(missing)} episodes of up to {self.max_steps} "
                            f"steps needs up to {need / 2**30:.1f} GiB in {self.folder}, which "
                            f"has {free / 2**30:.1f} GiB free; lower data.limit or the "
                            "episode length")
        t0 = time.time()
        wave = max(1, min(envs, MAX_ENVS))
        for w in range(0, len(missing), wave):
            ids = missing[w:w + wave]
            policies: list[Any] = []

            def start(seeds: list[int], ids: list[int] = ids) -> None:
                policies[:] = [policy_for(self.policy, self.info, episode_seed(self.seed, i))
                               for i in ids]

            def act(frames: torch.Tensor, live: np.ndarray, t: int) -> np.ndarray:
                return np.stack([p(t) for p in policies])

            got = run_episodes(self.info.env_id, [episode_seed(self.seed, i) for i in ids], act,
                               self.max_steps, envs=envs if len(ids) > 1 else 1,
                               record="model", start=start)
            for j, i in enumerate(ids):
                self.save(i, got.frames[j], got.actions[j], got.rewards[j], got.dones[j])
                have[i] = int(got.lengths[j])
            self.write_index(have)
            if progress:
                done = w + len(ids)
                print(f"rollouts: {done}/{len(missing)} episodes collected into {self.folder} "
                      f"({time.time() - t0:.0f} s)", flush=True)
        return {i: have[i] for i in range(episodes)}


class RolloutData(Dataset):
    """Frames of a set of cached episodes, memory-mapped: ``batch(index)`` gives frames as
    ``x`` (uint8, (B, 3, 64, 64)); ``episode(k)`` gives the k-th episode's arrays whole (the
    world model's MDN-RNN stage reads sequences)."""

    modality = "video"

    def __init__(self, folder: Path, episodes: list[int], lengths: list[int], info: EnvInfo,
                 name: str = "", policy: str = ""):
        self.folder, self.episode_ids, self.lengths = folder, episodes, lengths
        self.info, self.name, self.policy = info, name, policy
        self.env_id = info.env_id
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self._maps: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def shape(self) -> tuple[int, ...]:
        return (3, FRAME, FRAME)

    @property
    def action_dim(self) -> int:
        return self.info.action_dim

    def num_episodes(self) -> int:
        return len(self.episode_ids)

    def _array(self, k: int, what: str) -> np.ndarray:
        key = (k, what)
        arr = self._maps.get(key)
        if arr is None:
            arr = np.load(self.folder / f"ep_{self.episode_ids[k]:06d}" / f"{what}.npy",
                          mmap_mode="r")
            self._maps[key] = arr
            if len(self._maps) > OPEN_EPISODES:
                self._maps.popitem(last=False)
        else:
            self._maps.move_to_end(key)
        return arr

    def episode(self, k: int) -> dict[str, torch.Tensor]:
        """The k-th episode of this split: frames (T, 3, 64, 64) uint8, actions (T, A),
        rewards (T,), dones (T,)."""
        return {f: torch.from_numpy(np.array(self._array(k, f))) for f in FILES}

    def batch(self, index: Any) -> dict[str, Any]:
        idx = torch.as_tensor(index).long().reshape(-1).numpy()
        ep = np.searchsorted(self.offsets, idx, side="right") - 1
        out = np.empty((len(idx), 3, FRAME, FRAME), np.uint8)
        for k in np.unique(ep):
            rows = np.flatnonzero(ep == k)
            out[rows] = self._array(int(k), "frames")[idx[rows] - self.offsets[k]]
        return {"x": torch.from_numpy(out)}

    def to_device(self, batch: dict[str, Any], device: Any) -> dict[str, Any]:
        x = batch["x"].to(device, non_blocking=True)
        return {"x": x.float().div_(255.0)}

    def images(self, index: Any = None) -> torch.Tensor:
        """Frames as floats in [0, 1] on the CPU."""
        index = torch.arange(len(self)) if index is None else index
        return self.batch(index)["x"].float().div_(255.0)


def load(entry: Any, cfg: DataConfig, split: str, progress: bool = True) -> RolloutData:
    """The registry's loader: collect what the cache lacks, then this split's episodes."""
    options = dict(getattr(entry, "options", None) or {})
    env = options.get("env", "CarRacing-v3")
    policy = str(options.get("policy", "brownian"))
    if policy not in ("random", "brownian"):
        raise ConfigError(f"unknown rollout policy {policy!r}; valid: random, brownian")
    episodes = _int_option(options, "episodes", 100, 2, MAX_EPISODES)
    if cfg.limit is not None:
        if not 2 <= cfg.limit <= MAX_EPISODES:
            raise ConfigError(f"data.limit (episodes to collect) must be from 2 to "
                              f"{MAX_EPISODES}, got {cfg.limit}")
        episodes = cfg.limit
    max_steps = _int_option(options, "max_steps", 1000, 1, MAX_STEPS)
    seed = _int_option(options, "seed", 0, 0, 2**31 - 1)
    envs = _int_option(options, "envs", 2, 1, MAX_ENVS)
    info = env_info(env)  # unknown id, not an image, no gymnasium: one line each
    folder = cache_dir(data_root(cfg.root), env, policy, seed, max_steps)
    lengths = Collection(folder, info, policy, seed, max_steps).collect(episodes, envs, progress)
    ids = split_index(episodes, split, cfg.test_fraction).tolist()
    return RolloutData(folder, ids, [lengths[i] for i in ids], info,
                       name=getattr(entry, "name", "rollouts"), policy=policy)
