"""The ``train.*`` section of a run and what one training step may use: ``TrainConfig`` (checked
by ``validate_train``), the device (``pick_device``), the autocast dtype (``cpu_bf16_matmul``) and
``StepContext``, which a family's ``training_step`` receives.

A leaf of the core: the model interface, the planner and the trainer all read these, and it
reads none of them.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from genzoo.core import distributed as dist
from genzoo.core.env import env_bool
from genzoo.errors import ConfigError

TRAIN_SEED_MAX = 2 ** 32 - 1  # the data order and RNG streams derive 64-bit seeds from it
SAMPLE_SEED_MAX = 2 ** 64 - 1  # torch.Generator.manual_seed's range (a uint64)


def check_seed(seed: object, what: str = "seed", hi: int = SAMPLE_SEED_MAX) -> int:
    """`seed` as an int in [0, hi], or one line naming `what` (``--seed``, ``seed``) and the
    range. A bool, a float (``1.5``, ``1e20``) or a string is not a seed; an integral float
    (``3.0``) would round beyond 2^53, so it is refused too rather than silently changed."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"bad value {_short(seed)} for {what}: expected an integer in [0, {hi}]")
    if not 0 <= seed <= hi:
        raise ConfigError(f"bad value {_short(seed)} for {what}: expected an integer in [0, {hi}]")
    return seed


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass
class TrainConfig:
    steps: int | None = None  # optimizer steps in total; wins over epochs
    epochs: float | None = None
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    lr_floor: float = 0.0  # cosine decays to this fraction of lr (nanoGPT's min_lr = lr / 10)
    grad_clip: float | None = 1.0  # max global grad norm; None turns clipping off
    ema_decay: float | None = None  # e.g. 0.999 keeps an EMA copy (timm ModelEmaV3)
    log_every: int = 25
    sample_every: int | None = None  # None: 4 grids per run; 0: none during training
    checkpoint_every: int | None = None  # None: 4 checkpoints per run, and at the end
    sample_n: int = 64
    amp: Literal["auto", "bf16", "fp16", "none"] = "auto"  # auto: bf16 on cuda and AMX CPUs, else none
    compile: bool = False
    device: str = "auto"
    seed: int = 0


def validate_train(cfg: TrainConfig) -> None:
    """Every training value checked before anything is created, one line each."""
    def bad(key: str, value: Any, want: str) -> None:
        raise ConfigError(f"bad value {value!r} for {key}: {want}")
    if not (math.isfinite(cfg.lr) and cfg.lr > 0):
        bad("lr", cfg.lr, "expected a finite number > 0")
    if cfg.batch_size < 1:
        bad("batch_size", cfg.batch_size, "expected an integer >= 1")
    if not (math.isfinite(cfg.weight_decay) and cfg.weight_decay >= 0):
        bad("weight_decay", cfg.weight_decay, "expected a number >= 0")
    if cfg.grad_clip is not None and not (math.isfinite(cfg.grad_clip) and cfg.grad_clip >= 0):
        bad("grad_clip", cfg.grad_clip, "expected a number >= 0, or none to turn clipping off")
    if cfg.ema_decay is not None and not 0 < cfg.ema_decay < 1:
        bad("ema_decay", cfg.ema_decay, "expected a number in (0, 1), or none")
    if len(cfg.betas) != 2 or not all(0 <= b < 1 for b in cfg.betas):
        bad("betas", cfg.betas, "expected two numbers in [0, 1)")
    for key in ("log_every", "sample_n"):
        if getattr(cfg, key) < 1:
            bad(key, getattr(cfg, key), "expected an integer >= 1")
    for key in ("checkpoint_every", "sample_every"):
        v = getattr(cfg, key)
        if v is not None and v < (1 if key == "checkpoint_every" else 0):
            bad(key, v, "expected an integer >= 1" + (" (0: none)" if key == "sample_every" else ""))
    if not 0 <= cfg.lr_floor <= 1:
        bad("lr_floor", cfg.lr_floor, "expected a fraction of lr in [0, 1]")
    if cfg.warmup_steps < 0:
        bad("warmup_steps", cfg.warmup_steps, "expected an integer >= 0")
    if cfg.steps is not None and cfg.steps < 1:
        bad("steps", cfg.steps, "expected an integer >= 1")
    if cfg.epochs is not None and not (math.isfinite(cfg.epochs) and cfg.epochs > 0):
        bad("epochs", cfg.epochs, "expected a number > 0")
    check_seed(cfg.seed, "seed", TRAIN_SEED_MAX)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
        raise ConfigError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N, mps")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but no CUDA GPU is visible; use --device cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("--device mps asked for, but MPS is not available; use --device cpu")
    return torch.device(name)


def cpu_bf16_matmul() -> bool:
    """True on CPUs with bf16 matrix units (Intel AMX: the ``amx_bf16`` cpuinfo flag), where bf16
    autocast trains faster than fp32; elsewhere bf16 is emulated and slower, so ``amp=auto``
    stays fp32. GENZOO_CPU_BF16=0/1 overrides the detection (anything else is one line)."""
    forced = env_bool("GENZOO_CPU_BF16", None)
    if forced is not None:
        return forced
    global _CPU_BF16
    if _CPU_BF16 is None:
        try:
            with open("/proc/cpuinfo") as f:
                _CPU_BF16 = any(line.startswith("flags") and " amx_bf16" in line for line in f)
        except OSError:  # not Linux: torch names AMX in its capability string where it has it
            _CPU_BF16 = "AMX" in str(torch.backends.cpu.get_cpu_capability()).upper()
    return _CPU_BF16


_CPU_BF16: bool | None = None


class StepContext:
    """What a ``training_step`` may use: the step index, autocast, and one call that does
    zero_grad / backward / clip / step the same way for every family."""

    def __init__(self, device: torch.device, amp: str, grad_clip: float | None):
        self.device, self.grad_clip, self.step = device, grad_clip, 0
        self.dtype = None
        if device.type == "cuda":
            if amp in ("auto", "bf16"):
                self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            elif amp == "fp16":
                self.dtype = torch.float16
        elif device.type == "cpu" and (amp == "bf16" or (amp == "auto" and cpu_bf16_matmul())):
            self.dtype = torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None
        self.grad_norms: dict[str, float] = {}

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def optimize(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                 name: str = "main") -> None:
        optimizer.zero_grad(set_to_none=True)
        params = [p for g in optimizer.param_groups for p in g["params"]]
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            dist.average_gradients(params)  # before unscale_: every rank sees the same inf
            self.scaler.unscale_(optimizer)
        else:
            loss.backward()
            dist.average_gradients(params)  # torchrun: the mean over ranks, as DDP would
        if self.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
            self.grad_norms[name] = float(norm)
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
