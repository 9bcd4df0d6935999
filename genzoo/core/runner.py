"""Train, resume, load and sample runs: the paths the CLI and the Python API share.

One sampling path: ``LoadedRun.sample`` and the trainer's periodic samples both go through
``genzoo.core.sampler.draw`` and ``genzoo.core.sample.write``.
"""
from __future__ import annotations

import os
from typing import Any

import torch

from genzoo.core import config as configlib
from genzoo.core import distributed as dist
from genzoo.core import stages
from genzoo.core.data_config import DataConfig
from genzoo.core.factory import build_from_config, build_model, family_of, plan, run_field
from genzoo.core.pipeline import is_pipeline_run
from genzoo.core.run_folder import TRAINER_JSON, WEIGHTS, Run
# the session's pieces, importable from here as before (genzoo.api re-exports them)
from genzoo.core.session import (LoadedRun, _config_record, _create, _fit, _on_main,  # noqa: F401
                                 _session, _settle, _take, evaluate_loss, sample_writer)
from genzoo.core.sources import load as load_data
from genzoo.core.train_config import TrainConfig, pick_device, validate_train
from genzoo.core.trainer import Trainer
from genzoo.errors import CheckpointError, ConfigError


def train(name: str, preset: str = "quick", overrides: dict[str, Any] | None = None,
          out: str | os.PathLike | None = None, progress: bool = True,
          stop_after: int | tuple[str, int] | None = None, stage: str | None = None,
          source: str | os.PathLike | None = None) -> Run:
    """Train a registry model from scratch; returns the run folder. Everything that can fail on
    the user's input (config, data, model build) happens before the run folder exists. Under
    torchrun every rank trains its share and rank 0 alone writes the run. A pipeline trains its
    stages in turn; `stage` + `source` (``--stage S --from RUN``) train stage S and the ones
    after it over the finished earlier stages of the run `source`."""
    p = plan(name, preset, overrides)
    if p.stages is not None:
        return stages.train(p, overrides, out, progress, stop_after, stage, source)
    if stage is not None or source is not None:
        raise ConfigError(f"--stage/--from apply to pipelines (a model trained in stages, such "
                          f"as vqgan-twemoji); {p.entry.name} is one network")
    with _session(p.train.device):
        data = load_data(p.data, "train")
        torch.manual_seed(p.train.seed)
        try:
            model = build_model(p, data)
        except (RuntimeError, MemoryError, OverflowError) as e:  # sizes that cannot be allocated
            first = (str(e).splitlines() or [type(e).__name__])[0]
            raise ConfigError(f"cannot build {p.entry.name} with this config ({first[:200]}); "
                              "use smaller sizes") from None
        model.setup(data)
        run, lock = _on_main(lambda: _create(p.entry.name, out), fresh=True)
        try:
            if dist.is_main():
                run.write_config(_config_record(p, model, overrides))
            trainer = Trainer(model, data, p.train, run,
                              sample_writer(run, p.family, p.sampler, {}, p.train.seed, data),
                              progress=progress)
        except BaseException:
            if lock is not None:
                lock.release()
                run.discard()
            raise
        return _fit(run, trainer, p.data, lock, stop_after)


def resume(path: str | os.PathLike, steps: int | None = None, progress: bool = True,
           device: str | None = None, stop_after: int | None = None) -> Run:
    """Continue a run from its last checkpoint (optionally to a new total of `steps`). The
    run's config is rewritten only after its checkpoint has loaded; a run being trained by
    another process is refused (RUN/.lock)."""
    if is_pipeline_run(path):
        return stages.resume(path, steps, progress, device, stop_after)
    run = Run.open(path)
    cfg = run.read_config()
    train_cfg = configlib.build(TrainConfig, run_field(cfg, "train", run.config_path, dict),
                                what="train")
    if steps is not None:
        train_cfg.steps, train_cfg.epochs = steps, None
    if device is not None:
        train_cfg.device = device
    validate_train(train_cfg)
    with _session(train_cfg.device):
        lock = _take(run, [run.path])
        try:
            if not (run.path / TRAINER_JSON).exists():
                raise CheckpointError(f"{run.path} has no trainer state to resume from")
            family = family_of(cfg, run.config_path)
            data_cfg = configlib.build(DataConfig, run_field(cfg, "data", run.config_path, dict),
                                       what="data")
            data = load_data(data_cfg, "train")
            model = build_from_config(cfg, run.config_path)  # weights: trainer.restore()
            trainer = Trainer(model, data, train_cfg, run,
                              sample_writer(run, family, cfg.get("sampler"),
                                            cfg.get("sampler_options") or {}, train_cfg.seed, data),
                              progress=progress)
            trainer.restore()
            if steps is not None and dist.is_main():
                cfg["train"]["steps"], cfg["train"]["epochs"] = steps, None
                run.write_config(cfg)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return _fit(run, trainer, data_cfg, lock, stop_after)


def load_run(path: str | os.PathLike, ema: bool = True, device: str = "cpu") -> LoadedRun:
    """Rebuild a trained model from its run folder (config.json + safetensors + artifacts); a
    pipeline run gives the whole pipeline, every component loaded."""
    if is_pipeline_run(path):
        return stages.load(path, ema, device)
    run = Run.open(path)
    cfg = run.read_config()
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{run.config_path} is not a genzoo run config")
    _settle(run)
    family = family_of(cfg, run.config_path)
    weights = run.ema_path if ema and run.ema_path.exists() else run.weights_path
    if not weights.exists():
        raise CheckpointError(f"{run.path} has no weights yet ({WEIGHTS} missing)")
    model = build_from_config(cfg, run.config_path, weights)
    model.to(pick_device(device)).eval()
    return LoadedRun(run, cfg, model, family)


