"""The Python API behind the CLI: create, train, load and sample models by registry name."""
from __future__ import annotations

import dataclasses
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genzoo.core import checkpoint as ckpt
from genzoo.core import config as configlib
from genzoo.core.data import DataConfig
from genzoo.core.data import load as load_data
from genzoo.core.registry import FamilyEntry, ModelEntry, SECTIONS, registry
from genzoo.core.trainer import TrainConfig, Trainer, pick_device
from genzoo.errors import CheckpointError, ConfigError

SECTION_CLASSES = {"train": TrainConfig, "data": DataConfig}


def split_overrides(overrides: dict[str, Any], model_cls: type) -> dict[str, dict[str, Any]]:
    """Route flat keys (``lr``, ``blocks``) or dotted ones (``train.lr``) to their section; an
    unknown key fails listing every valid one, an ambiguous one asks for the section prefix."""
    fields = {"model": configlib.field_names(model_cls.Config),
              "train": configlib.field_names(TrainConfig),
              "data": configlib.field_names(DataConfig)}
    out: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for key, value in overrides.items():
        if "." in key:
            section, _, short = key.partition(".")
            if section not in fields:
                raise ConfigError(f"unknown config section {section!r} in {key!r}; valid: "
                                  f"{', '.join(fields)}")
            if short not in fields[section]:
                raise ConfigError(f"unknown {section} key {short!r}; valid {section} keys: "
                                  f"{', '.join(fields[section])}")
            out[section][short] = value
            continue
        owners = [s for s, names in fields.items() if key in names]
        if not owners:
            valid = "; ".join(f"{s}: {', '.join(n)}" for s, n in fields.items())
            import difflib
            close = difflib.get_close_matches(key, [n for ns in fields.values() for n in ns], 3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"unknown config key {key!r}{hint}. Valid keys — {valid}")
        if len(owners) > 1:
            raise ConfigError(f"config key {key!r} exists in {' and '.join(owners)}; write "
                              f"{owners[0]}.{key}=... to choose")
        out[owners[0]][key] = value
    return out


@dataclass
class Plan:
    """Everything needed to build and train one model, resolved from the registry."""

    entry: ModelEntry
    family: FamilyEntry
    model_cls: type
    preset: str
    model: dict[str, Any]
    train: TrainConfig
    data: DataConfig
    sampler: str | None


def plan(name: str, preset: str = "quick", overrides: dict[str, Any] | None = None) -> Plan:
    reg = registry()
    entry = reg.get(name)
    family = reg.get_family(entry.family)
    model_cls = family.model_class()
    base = entry.resolved(preset)
    user = split_overrides(dict(overrides or {}), model_cls)
    # validate every layer's keys with the same messages users get for --set
    for section in SECTIONS:
        merged = {**base[section], **user[section]}
        base[section] = merged
    train = configlib.build(TrainConfig, base["train"], what="train")
    data = configlib.build(DataConfig, base["data"], what="data")
    configlib.build(model_cls.Config, base["model"], what=f"{entry.family} model")
    return Plan(entry, family, model_cls, preset, base["model"], train, data,
                entry.sampler or family.default_sampler)


def build_model(p: Plan, data: Any | None) -> Any:
    derived = p.model_cls.config_from_data(data) if data is not None else {}
    cfg = configlib.build(p.model_cls.Config, {**derived, **p.model}, what=f"{p.entry.family} model")
    return p.model_cls(cfg)


def create_model(name: str, preset: str = "quick", **overrides: Any) -> Any:
    """Build an untrained model from a registry name: ``create_model("pixelcnn", blocks=2)``.
    Shapes implied by the dataset come from its registry entry, without loading the data."""
    p = plan(name, preset, overrides)
    torch.manual_seed(p.train.seed)
    return build_model(p, _DataShape.of(p))


class _DataShape:
    """Stands in for a dataset when only its shape is needed (no loading, no download)."""

    def __init__(self, shape: tuple[int, ...], classes: list[str]):
        self.shape, self.classes = shape, classes
        self.attribute_names: list[str] = []
        self.vocab: list[str] = []

    @classmethod
    def of(cls, p: Plan) -> Any:
        ds = registry().get_dataset(p.data.name)
        shape = list(ds.shape or [1, 28, 28])
        if p.data.channels:
            shape[0] = p.data.channels
        if p.data.size:
            shape[1:] = [p.data.size, p.data.size]
        return cls(tuple(shape), list(ds.classes))


def versions() -> dict[str, str]:
    from genzoo import __version__
    return {"genzoo": __version__, "torch": torch.__version__, "python": platform.python_version()}


def sample_writer(run: ckpt.Run, p_or_cfg: Any, sampler_name: str | None, seed: int):
    """A callback for the trainer: writes a grid from a fixed generator, so grids over training
    show the same noise and progress is visible."""
    def write(model: Any, step: int, n: int) -> None:
        family = registry().get_family(run.read_config()["family"])
        sampler = family.sampler_class(sampler_name)(**run.read_config().get("sampler_options", {}))
        g = torch.Generator().manual_seed(seed)
        images = sampler.sample(model, n, g)
        save_grid(images, run.samples_dir / f"step_{step:06d}.png")
    return write


def save_grid(images: torch.Tensor, path: Path, nrow: int | None = None) -> Path:
    from torchvision.utils import save_image
    n = images.shape[0]
    nrow = nrow or max(1, int(n ** 0.5 + 0.5))
    ckpt.atomic_write(Path(path), lambda p: save_image(images.float().cpu().clamp(0, 1), str(p),
                                                       nrow=nrow, padding=1, pad_value=1.0,
                                                       format="png"))
    return Path(path)


def train(name: str, preset: str = "quick", overrides: dict[str, Any] | None = None,
          out: str | os.PathLike | None = None, progress: bool = True,
          stop_after: int | None = None) -> ckpt.Run:
    """Train a registry model from scratch; returns the run folder."""
    p = plan(name, preset, overrides)
    data = load_data(p.data, "train")
    torch.manual_seed(p.train.seed)
    model = build_model(p, data)
    run = ckpt.Run.create(p.entry.name, out)
    run.write_config({
        "name": p.entry.name, "family": p.entry.family, "source": p.entry.source,
        "preset": p.preset, "overrides": {k: str(v) for k, v in (overrides or {}).items()},
        "model": configlib.to_dict(model.config), "train": configlib.to_dict(p.train),
        "data": configlib.to_dict(p.data), "sampler": p.sampler, "sampler_options": {},
        "params": model.num_params(), "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    trainer = Trainer(model, data, p.train, run, sample_writer(run, p, p.sampler, p.train.seed),
                      progress=progress)
    trainer.fit(stop_after=stop_after)
    _finish(run, trainer, p.data)
    return run


def resume(path: str | os.PathLike, steps: int | None = None, progress: bool = True,
           device: str | None = None, stop_after: int | None = None) -> ckpt.Run:
    """Continue a run from its last checkpoint (optionally to a new total of `steps`)."""
    run = ckpt.Run.open(path)
    cfg = run.read_config()
    if not (run.path / ckpt.TRAINER_JSON).exists():
        raise CheckpointError(f"{run.path} has no trainer state to resume from")
    reg = registry()
    family = reg.get_family(cfg["family"])
    model_cls = family.model_class()
    train_cfg = configlib.build(TrainConfig, cfg["train"], what="train")
    if steps is not None:
        train_cfg.steps, train_cfg.epochs = steps, None
    if device is not None:
        train_cfg.device = device
    data_cfg = configlib.build(DataConfig, cfg["data"], what="data")
    data = load_data(data_cfg, "train")
    model = model_cls(configlib.build(model_cls.Config, cfg["model"], what="model"))
    if steps is not None:
        cfg["train"]["steps"], cfg["train"]["epochs"] = steps, None
        run.write_config(cfg)
    trainer = Trainer(model, data, train_cfg, run, sample_writer(run, None, cfg.get("sampler"),
                                                                 train_cfg.seed), progress=progress)
    trainer.restore()
    trainer.fit(stop_after=stop_after)
    _finish(run, trainer, data_cfg)
    return run


def _finish(run: ckpt.Run, trainer: Trainer, data_cfg: DataConfig) -> None:
    if trainer.step < trainer.total:
        return
    model = trainer.sampling_model()
    try:
        test = load_data(data_cfg, "test")
        stats = evaluate_loss(model, test, trainer.device, trainer.cfg.batch_size)
        run.log({"step": trainer.step, "split": "test", **stats})
    except Exception as e:  # evaluation is a bonus; never lose a finished run over it
        run.log({"step": trainer.step, "split": "test", "error": str(e)})
    try:
        from genzoo.core.plots import loss_curve
        loss_curve(run)
    except Exception:
        pass


@torch.no_grad()
def evaluate_loss(model: Any, data: Any, device: torch.device, batch_size: int = 256) -> dict[str, float]:
    model.eval()
    totals: dict[str, float] = {}
    n = 0
    idx = torch.arange(len(data))
    for start in range(0, len(data), batch_size):
        batch = data.batch(idx[start:start + batch_size])
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model.loss(batch)
        b = int(next(iter(batch.values())).shape[0])
        for k, v in out.items():
            if isinstance(v, torch.Tensor) and v.numel() == 1:
                totals[k] = totals.get(k, 0.0) + float(v) * b
        n += b
    model.train()
    return {k: v / max(n, 1) for k, v in totals.items()}


@dataclass
class LoadedRun:
    run: ckpt.Run
    config: dict[str, Any]
    model: Any
    family: FamilyEntry

    @property
    def path(self) -> Path:
        return self.run.path

    def sampler(self, name: str | None = None, **options: Any) -> Any:
        name = name or self.config.get("sampler")
        return self.family.sampler_class(name)(**{**self.config.get("sampler_options", {}), **options})

    def sample(self, n: int = 16, seed: int = 0, sampler: str | None = None,
               inputs: dict[str, Any] | None = None, **options: Any) -> torch.Tensor:
        """`inputs` go to the sampler's ``sample`` (e.g. ``label`` for conditional models);
        `options` are the sampler's declared options (``temperature``...)."""
        inputs = dict(inputs or {})
        if "label" in inputs and not getattr(self.model, "num_classes", 0):
            raise ConfigError(f"--label given, but {self.config['name']} ({self.path}) is an "
                              "unconditional model")
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            return self.sampler(sampler, **options).sample(self.model, n, g, **inputs)


def load_run(path: str | os.PathLike, ema: bool = True, device: str = "cpu") -> LoadedRun:
    """Rebuild a trained model from its run folder (config.json + safetensors, nothing else)."""
    run = ckpt.Run.open(path)
    cfg = run.read_config()
    for key in ("family", "model"):
        if key not in cfg:
            raise CheckpointError(f"{run.config_path} has no {key!r}: not a genzoo run config")
    family = registry().get_family(cfg["family"])
    model_cls = family.model_class()
    model = model_cls(configlib.build(model_cls.Config, cfg["model"], what="model"))
    weights = run.ema_path if ema and run.ema_path.exists() else run.weights_path
    if not weights.exists():
        raise CheckpointError(f"{run.path} has no weights yet ({ckpt.WEIGHTS} missing)")
    ckpt.load_weights(model, weights)
    model.to(pick_device(device)).eval()
    return LoadedRun(run, cfg, model, family)
