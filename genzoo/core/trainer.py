"""One training loop for every family.

The batch for step `s` is a pure function of (seed, s) and the RNG state is checkpointed, so a
resumed run continues bit-for-bit where an uninterrupted one would be. Families change *what* a
step does by overriding ``Model.training_step``; they never get a loop of their own.
"""
from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from genzoo.core import distributed as dist
from genzoo.core import faults, signals
from genzoo.core.artifacts import load_artifacts, save_artifacts
from genzoo.core.atomic import read_json, write_json
from genzoo.core.batching import StepBatches, batch_to_device
from genzoo.core.commit import commit, stamp, verify
from genzoo.core.progress import training_bar
from genzoo.core.run_folder import EMA_WEIGHTS, TRAINER_JSON, TRAINER_TENSORS, WEIGHTS, Run
from genzoo.core.tensors import (load_tensors, load_weights, optimizer_from_tensors,
                                 optimizer_to_tensors, save_tensors, save_weights)
# TrainConfig, StepContext ... live in train_config (a leaf); kept importable from here for code
# written against genzoo.core.trainer (benchmarks/)
from genzoo.core.train_config import (StepContext, TrainConfig,  # noqa: F401
                                      cpu_bf16_matmul, pick_device, validate_train)
from genzoo.errors import CheckpointError, ConfigError, TrainingDiverged


def total_steps(cfg: TrainConfig, per_epoch: int) -> int:
    if cfg.steps is not None:
        if cfg.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {cfg.steps}")
        return cfg.steps
    if cfg.epochs is not None:
        if cfg.epochs <= 0:
            raise ConfigError(f"epochs must be > 0, got {cfg.epochs}")
        return max(1, math.ceil(cfg.epochs * per_epoch))
    raise ConfigError("set the training length: --steps N or --epochs N")


def lr_factor(cfg: TrainConfig, step: int, total: int) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "cosine":
        progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return cfg.lr_floor + (1 - cfg.lr_floor) * cosine
    return 1.0


class Trainer:
    def __init__(self, model: Any, data: Any, cfg: TrainConfig, run: Run,
                 sample_fn: Callable[[Any, int, int], None] | None = None,
                 progress: bool = True):
        self.model, self.data, self.cfg, self.run = model, data, cfg, run
        self.sample_fn = sample_fn  # (model_for_sampling, step, n) -> writes a grid
        self.progress = progress and dist.is_main()
        self.main = dist.is_main()  # rank 0 alone logs, checkpoints and samples
        self.device = pick_device(dist.device_name(cfg.device))
        self.batches = StepBatches(data, cfg.batch_size, cfg.seed, rank=dist.rank(),
                                   world=dist.size())
        self.total = total_steps(cfg, self.batches.per_epoch)
        self.model.to(self.device)
        dist.broadcast_module(self.model)  # every rank starts from rank 0's weights
        if self.device.type != "cpu" and hasattr(data, "to") and not getattr(data, "mapped", False):
            data.to(self.device)  # small in-memory sets: no host->device copy per step
        self.optimizers = model.configure_optimizers(cfg)
        self.base_lrs = {n: [g["lr"] for g in o.param_groups] for n, o in self.optimizers.items()}
        self.ctx = StepContext(self.device, cfg.amp, cfg.grad_clip)
        self.ema = None
        if cfg.ema_decay:
            from timm.utils import ModelEmaV3
            self.ema = ModelEmaV3(model, decay=cfg.ema_decay)
        if cfg.compile:
            model.loss = torch.compile(model.loss)  # keeps state_dict keys free of _orig_mod.
        self.step = 0
        self.last_good = 0
        self.saved: int | None = None  # the step of the checkpoint in the run folder, if any
        if dist.rank() > 0:  # its own noise (z, dropout...) per rank, as separate processes get
            torch.manual_seed(cfg.seed * 1_000_003 + dist.rank())

    # -- state -------------------------------------------------------------------------------
    def _finite(self) -> bool:
        flags = [torch.isfinite(t).all() for t in self.model.state_dict().values()
                 if t.is_floating_point()]
        return bool(torch.stack(flags).all()) if flags else True

    def save(self) -> None:
        """One checkpoint = one step: every file stamped with it, committed as a whole. Weights
        that are no longer finite are never saved over the last good checkpoint."""
        if not self._finite():
            raise TrainingDiverged(
                f"the weights became nan or inf by step {self.step}; not saved. The last good "
                f"checkpoint (step {self.last_good}) is in {self.run.path}; lower the learning "
                "rate (--set lr=...) or set grad_clip")
        meta = stamp(self.step)
        rng = dist.gather_tensor(torch.get_rng_state())  # every rank's stream (all must call)
        rng_cuda = (dist.gather_tensor(torch.cuda.get_rng_state(self.device))
                    if self.device.type == "cuda" else [])
        if not self.main:
            self.last_good = self.saved = self.step
            return
        tensors: dict[str, torch.Tensor] = {"rng.cpu": rng[0]}
        if rng_cuda:
            tensors["rng.cuda"] = rng_cuda[0]
        for r in range(1, len(rng)):
            tensors[f"rng.cpu.rank{r}"] = rng[r]
            if rng_cuda:
                tensors[f"rng.cuda.rank{r}"] = rng_cuda[r]
        optim_meta = {}
        for name, opt in self.optimizers.items():
            t, m = optimizer_to_tensors(name, opt)
            tensors.update(t)
            optim_meta[name] = m
        state = {"step": self.step, "total_steps": self.total, "optimizers": optim_meta,
                 "complete": self.step >= self.total, "batches_per_epoch": self.batches.per_epoch,
                 "world_size": dist.size()}

        def write(folder: Path) -> None:
            save_weights(self.model, folder / WEIGHTS, meta)
            faults.fault("save:weights", self.step)
            if self.ema is not None:
                save_weights(self.ema.module, folder / EMA_WEIGHTS, meta)
            save_artifacts(self.model, folder, meta)
            save_tensors(folder / TRAINER_TENSORS, tensors, meta)
            write_json(folder / TRAINER_JSON, state)

        faults.fault("save:begin", self.step)
        commit(self.run.path, self.step, write)
        self.last_good = self.saved = self.step

    def restore(self) -> None:
        """Load the run's checkpoint after checking that all its files hold one step."""
        where = self.run.path
        step = verify(where)
        state = read_json(where / TRAINER_JSON)
        tensors = load_tensors(where / TRAINER_TENSORS)
        load_weights(self.model, self.run.weights_path)
        load_artifacts(self.model, where)
        if self.ema is not None and self.run.ema_path.exists():
            load_weights(self.ema.module, self.run.ema_path)
        if self.ema is not None:
            load_artifacts(self.ema.module, where)
        try:
            optimizers = state["optimizers"]
            if not isinstance(optimizers, dict):
                raise TypeError("optimizers is not a mapping")
            for name, opt in self.optimizers.items():
                if name not in optimizers:
                    raise CheckpointError(f"trainer state has no optimizer {name!r}")
                optimizer_from_tensors(name, opt, tensors, optimizers[name])
            r = dist.rank()
            same_world = state.get("world_size", 1) == dist.size()
            key = "rng.cpu" if r == 0 else f"rng.cpu.rank{r}"
            if key in tensors and (r == 0 or same_world):
                torch.set_rng_state(tensors[key])
            else:  # another number of processes than saved: a fresh, distinct stream per rank
                torch.manual_seed(self.cfg.seed * 1_000_003 + step * 101 + r)
            ckey = "rng.cuda" if r == 0 else f"rng.cuda.rank{r}"
            if self.device.type == "cuda" and ckey in tensors:
                torch.cuda.set_rng_state(tensors[ckey], self.device)
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as e:
            raise CheckpointError(f"the trainer state in {where} is damaged "
                                       f"({type(e).__name__}: {e}); re-train, or resume from "
                                       "a copy of the run") from None
        if step > self.total:
            raise CheckpointError(f"{where} is at step {step}, past its total of "
                                       f"{self.total}; resume with --steps {step} or more")
        self.step = self.last_good = self.saved = step
        if self.main:
            self.run.truncate_metrics(self.step)

    # -- loop --------------------------------------------------------------------------------
    def _every(self, value: int | None, parts: int) -> int:
        if value is None:
            return max(1, self.total // parts)
        return value

    def fit(self, stop_after: int | None = None) -> Run:
        """Train to ``total`` steps; `stop_after` ends early (as a kill would) for tests.

        SIGINT and SIGTERM stop the loop at the next step boundary: the completed steps are
        saved and ``signals.Interrupted`` is raised (under torchrun every rank stops at the
        same boundary and rank 0 saves). A second signal stops at once, keeping the last
        checkpoint. A half-done step is never saved: it would be run again on resume."""
        request = signals.StopRequest()
        vote = dist.StopVote()
        with request:
            try:
                stopped = self._loop(stop_after, request, vote)
                self.save()
                # a signal during the last save: the run is complete; skip its grid and test
                # (nothing collective comes after this, so a rank may stop on its own signal)
                stopped = stopped or request.signum is not None
            except KeyboardInterrupt as e:  # a second signal, mid-step or mid-save
                raise signals.Interrupted(self.run.path, getattr(e, "signum", signal.SIGINT),
                                          self.saved, _abort_message(e, self)) from None
        if stopped:
            raise signals.Interrupted(self.run.path, request.signum or signal.SIGTERM, self.step)
        if self.step >= self.total and self.sample_fn is not None and self.main:
            self._sample()
        return self.run

    def _loop(self, stop_after: int | None, request: signals.StopRequest,
              vote: dist.StopVote) -> bool:
        """The steps; returns whether a signal stopped them (before ``total``)."""
        cfg = self.cfg
        sample_every = self._every(cfg.sample_every, 4)
        ckpt_every = self._every(cfg.checkpoint_every, 4)
        self.model.train()
        progress = training_bar(self.progress)
        task = progress.add_task("train", total=self.total, completed=self.step, info="")
        window_t, window_n = time.perf_counter(), 0
        sums: dict[str, Any] = {}
        count, bad, checked = 0, None, self.step
        with progress:
            while self.step < self.total:
                if vote(request.signum is not None):
                    if bad is not None and checked < self.step and dist.any_true(bad):
                        raise TrainingDiverged(
                            f"loss became nan or inf between steps {checked} and {self.step}; "
                            f"not saved. The last good checkpoint (step {self.last_good}) is in "
                            f"{self.run.path}")
                    return True
                if stop_after is not None and self.step >= stop_after:
                    break
                batch = batch_to_device(self.data, self.batches(self.step), self.device)
                for name, opt in self.optimizers.items():
                    f = lr_factor(cfg, self.step, self.total)
                    for g, base in zip(opt.param_groups, self.base_lrs[name]):
                        g["lr"] = base * f
                self.ctx.step = self.step
                out = self.model.training_step(batch, self.optimizers, self.ctx)
                loss = out["loss"].detach()
                # Reading a GPU value forces a sync; gather on device and look only when logging
                # or checkpointing, so a NaN can never reach a saved checkpoint.
                bad = ~torch.isfinite(loss) if bad is None else bad | ~torch.isfinite(loss)
                self.step += 1
                faults.fault("step", self.step)  # tests: a kill between checkpoints
                if self.ema is not None:
                    self.ema.update(self.model, step=self.step)
                window_n += int(next(iter(batch.values())).shape[0])
                for k, v in out.items():
                    if isinstance(v, torch.Tensor) and v.numel() == 1:
                        sums[k] = sums.get(k, 0.0) + v.detach().float()
                    elif isinstance(v, (int, float)):
                        sums[k] = sums.get(k, 0.0) + float(v)
                count += 1
                log_now = self.step % cfg.log_every == 0 or self.step == self.total
                save_now = self.step % ckpt_every == 0 and self.step < self.total
                if log_now or save_now or self.step == self.total:
                    if dist.any_true(bad):
                        raise TrainingDiverged(
                            f"loss became nan or inf between steps {checked} and {self.step}; "
                            f"stopped. The last good checkpoint (step {self.last_good}) is in "
                            f"{self.run.path}; lower the learning rate (--set lr=...) or set "
                            "grad_clip")
                    checked = self.step
                if log_now:
                    dt = time.perf_counter() - window_t
                    if dist.active():  # the global batch's figures, as one process logs them
                        keys = sorted(sums)
                        means = dist.mean(torch.stack([torch.as_tensor(sums[k], dtype=torch.float32,
                                                                       device=self.device)
                                                       for k in keys]))
                        sums = dict(zip(keys, means.tolist()))
                        window_n *= dist.size()
                    record = {"step": self.step, "epoch": round(self.step / self.batches.per_epoch, 3),
                              **{k: float(v) / count for k, v in sums.items()},
                              "lr": self.optimizers[next(iter(self.optimizers))].param_groups[0]["lr"],
                              "samples_per_s": window_n / max(dt, 1e-9), "time": time.time()}
                    if self.main:
                        self.run.log(record)
                    progress.update(task, info=f"loss {record['loss']:.4f} · "
                                               f"{record['samples_per_s']:.0f} samples/s")
                    window_t, window_n, sums, count = time.perf_counter(), 0, {}, 0
                progress.update(task, completed=self.step)
                if save_now:
                    self.save()
                if (self.sample_fn is not None and self.main and sample_every
                        and self.step % sample_every == 0 and self.step < self.total):
                    self._sample()
        # a signal during the last step: the run is complete, but stop before its final grid
        return vote.close(request.signum is not None)

    def sampling_model(self) -> Any:
        return self.ema.module if self.ema is not None else self.model

    def _sample(self) -> None:
        # the sampling path sets eval mode and the grad mode its sampler declares
        self.sample_fn(self.sampling_model(), self.step, self.cfg.sample_n)


def _abort_message(e: BaseException, trainer: Trainer) -> str:
    what = str(e) or "stopped at once"
    if trainer.saved is None:
        return (f"{what}, before the first checkpoint; run the same command again to start "
                f"{trainer.run.path} over")
    return (f"{what}; the checkpoint of step {trainer.saved} is kept (continue with: zoo train "
            f"--resume {trainer.run.path})")


Interrupted = signals.Interrupted  # where code written against core v3 found it
