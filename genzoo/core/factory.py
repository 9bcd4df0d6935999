"""Plan and build: registry name + preset + overrides -> typed configs -> a model.

``plan`` resolves a registry entry into validated config sections without touching data or
torch state; ``build_model`` makes the network, with shapes taken from the data (or from the
dataset's registry entry when only the shape is needed). ``build_from_config`` rebuilds the
network a run's config.json describes (optionally with its weights and artifacts): the one path
``load_run``, ``resume`` and ``zoo bench --run`` share.
"""
from __future__ import annotations

import difflib
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genzoo.core import config as configlib
from genzoo.core.artifacts import load_artifacts
from genzoo.core.data_config import DataConfig
from genzoo.core.pipeline import is_pipeline
from genzoo.core.registry import FamilyEntry, ModelEntry, SECTIONS, registry
from genzoo.core.tensors import load_weights
from genzoo.core.train_config import TrainConfig, validate_train
from genzoo.errors import CheckpointError, ConfigError

# data keys that only mean something for images: set for text or points data, they fail rather
# than being silently ignored
IMAGE_ONLY_DATA_KEYS = ("size", "channels", "pad", "label")


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
    #: pipelines only: per stage, {"model": overrides, "train": TrainConfig} (the flat ``train``
    #: above is what every stage shares); None for a single network
    stages: dict[str, dict[str, Any]] | None = None


def split_pipeline_overrides(overrides: dict[str, Any], cls: Any) -> dict[str, Any]:
    """``split_overrides`` for a pipeline: ``STAGE.KEY`` goes to that stage's model or train
    config (``prior.layers=4``, ``autoencoder.steps=500``); a flat train or data key applies to
    every stage; a flat model key goes to the one stage whose config has it (else it asks for
    the stage prefix). Returns ``{"model": {stage: {...}}, "train": {..., stage: {...}},
    "data": {...}}``."""
    stage_fields = {s.name: configlib.field_names(s.model.Config) for s in cls.stages}
    train_fields = configlib.field_names(TrainConfig)
    data_fields = configlib.field_names(DataConfig)
    out: dict[str, Any] = {"model": {n: {} for n in stage_fields}, "train": {}, "data": {}}
    for key, value in overrides.items():
        head, dot, short = key.partition(".")
        if dot and head in stage_fields:
            if short in stage_fields[head]:
                out["model"][head][short] = value
            elif short in train_fields:
                out["train"].setdefault(head, {})[short] = value
            else:
                raise ConfigError(f"unknown key {short!r} for stage {head!r}; valid: "
                                  f"{', '.join(stage_fields[head])}; or a train key: "
                                  f"{', '.join(train_fields)}")
            continue
        if dot and head in ("train", "data"):
            key = short
            if short not in (train_fields if head == "train" else data_fields):
                raise ConfigError(f"unknown {head} key {short!r}; valid {head} keys: "
                                  f"{', '.join(train_fields if head == 'train' else data_fields)}")
        elif dot and head == "model":
            key = short
        elif dot:
            raise ConfigError(f"unknown config section or stage {head!r} in {key!r}; valid: "
                              f"{', '.join([*stage_fields, 'train', 'data'])}")
        if key in train_fields:
            out["train"][key] = value
        elif key in data_fields:
            out["data"][key] = value
        else:
            owners = [n for n, names in stage_fields.items() if key in names]
            if len(owners) == 1:
                out["model"][owners[0]][key] = value
            elif owners:
                raise ConfigError(f"config key {key!r} exists in stages {' and '.join(owners)}; "
                                  f"write {owners[0]}.{key}=... to choose")
            else:
                every = sorted({n for names in stage_fields.values() for n in names}
                               | set(train_fields) | set(data_fields))
                close = difflib.get_close_matches(key, every, 3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise ConfigError(f"unknown config key {key!r}{hint}; stages: "
                                  f"{', '.join(stage_fields)} (write STAGE.KEY=...)")
    return out


def _pipeline_sections(name: str, cls: Any, base: dict[str, dict[str, Any]],
                       user: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Merge a pipeline entry's sections with the user's overrides; returns the shared train
    dict and, per stage, its model overrides and its TrainConfig (shared keys, then the
    stage's own). Every key is checked here, before anything is built."""
    names = cls.stage_names()
    for section in ("model", "train"):
        extra = [k for k, v in base[section].items() if isinstance(v, dict) and k not in names]
        if section == "model":
            extra += [k for k in base["model"] if k not in names]
        if extra:
            raise ConfigError(f"{name}: {section} section names {extra[0]!r}, not a stage of "
                              f"{cls.__name__}; its stages: {', '.join(names)}")
    # the entry's shared keys < its per-stage keys < the user's shared keys (--steps 10 sets
    # every stage) < the user's per-stage keys (--set prior.steps=10)
    base_shared = {k: v for k, v in base["train"].items() if k not in names}
    user_shared = {k: v for k, v in user["train"].items() if k not in names}
    shared = {**base_shared, **user_shared}
    stages: dict[str, dict[str, Any]] = {}
    for s in cls.stages:
        model = {**(base["model"].get(s.name) or {}), **user["model"].get(s.name, {})}
        configlib.build(s.model.Config, model, what=f"{s.name} config")
        own = {**base_shared, **(base["train"].get(s.name) or {}), **user_shared,
               **user["train"].get(s.name, {})}
        train = configlib.build(TrainConfig, own, what=f"{s.name} train")
        validate_train(train)
        stages[s.name] = {"model": model, "train": train}
    return shared, stages


def plan(name: str, preset: str = "quick", overrides: dict[str, Any] | None = None) -> Plan:
    reg = registry()
    entry = reg.get(name)
    family = reg.get_family(entry.family)
    model_cls = family.model_class()
    base = entry.resolved(preset)
    stages = None
    if is_pipeline(model_cls):
        user = split_pipeline_overrides(dict(overrides or {}), model_cls)
        base["data"] = {**base["data"], **user["data"]}
        shared, stages = _pipeline_sections(entry.name, model_cls, base, user)
        base["train"] = shared
        base["model"] = {n: st["model"] for n, st in stages.items()}
    else:
        user = split_overrides(dict(overrides or {}), model_cls)
        for section in SECTIONS:
            base[section] = {**base[section], **user[section]}
    train = configlib.build(TrainConfig, base["train"], what="train")
    validate_train(train)
    data = configlib.build(DataConfig, base["data"], what="data")
    if stages is None:
        configlib.build(model_cls.Config, base["model"], what=f"{entry.family} model")
    spec = reg.get_dataset(data.name)
    wants = getattr(model_cls, "modality", "image")
    if spec.modality != wants and spec.source == "folder":
        # --data folder:PATH means the folder dataset of this model's modality (music files for
        # a music model), where a plugin registered one
        spec = next((d for d in reg.datasets.values()
                     if d.source == "folder" and d.modality == wants), spec)
        data.name = spec.name
    if spec.modality != wants:
        fitting = sorted(d.name for d in reg.datasets.values() if d.modality == wants)
        raise ConfigError(f"{entry.name} ({entry.family}) models {wants} data, but dataset "
                          f"{data.name!r} is {spec.modality}; {wants} datasets: "
                          f"{', '.join(fitting) or 'none registered'}")
    image_only = [k for k in IMAGE_ONLY_DATA_KEYS if base["data"].get(k) not in (None, 0)]
    if image_only and spec.modality != "image":
        raise ConfigError(f"data option {image_only[0]!r} applies to images, but {entry.name} "
                          f"trains on {spec.modality} ({data.name}); drop it")
    return Plan(entry, family, model_cls, preset, base["model"], train, data,
                entry.sampler or family.default_sampler, stages)


def build_component(p: Plan, name: str, data: Any | None, upstream: dict[str, Any]) -> Any:
    """Stage `name`'s component of a pipeline plan: its config derived from the data and the
    earlier components (``Pipeline.component_config``), then the preset's and the user's."""
    cls = p.model_cls.stage(name).model
    derived = p.model_cls.component_config(name, data, upstream) if data is not None else {}
    cfg = configlib.build(cls.Config, {**derived, **p.stages[name]["model"]},
                          what=f"{p.entry.family} {name} config")
    return cls(cfg)


def build_model(p: Plan, data: Any | None) -> Any:
    if p.stages is not None:  # a pipeline, all components untrained (create_model)
        from genzoo.core.pipeline import Upstream
        built: dict[str, Any] = {}
        for s in p.model_cls.stages:
            earlier = dict(built)
            built[s.name] = build_component(p, s.name, data, earlier)
            built[s.name].upstream = Upstream(earlier)
        return p.model_cls(built)
    derived = p.model_cls.config_from_data(data) if data is not None else {}
    cfg = configlib.build(p.model_cls.Config, {**derived, **p.model}, what=f"{p.entry.family} model")
    return p.model_cls(cfg)


def run_field(config: Any, key: str, where: str | os.PathLike, kind: type | None = None) -> Any:
    """``config[key]`` of a run's config.json (`where`, for the message), checked to exist and,
    with `kind`, to be of that type: a damaged file fails in one line, never with a KeyError."""
    if not isinstance(config, dict):
        raise CheckpointError(f"{where} is not a genzoo run config")
    if key not in config:
        raise CheckpointError(f"{where} has no {key!r}: not a genzoo run config")
    if kind is not None and not isinstance(config[key], kind):
        raise CheckpointError(f"{where} is damaged: {key!r} should be a "
                              f"{'mapping' if kind is dict else kind.__name__}, got "
                              f"{type(config[key]).__name__}")
    return config[key]


def family_of(config: Any, where: str | os.PathLike = "config.json") -> FamilyEntry:
    """The registry family a run's config.json names (its model class stays a lazy reference
    until ``model_class()`` is called)."""
    return registry().get_family(run_field(config, "family", where, str))


def build_from_config(config: Any, where: str | os.PathLike = "config.json",
                      weights: str | os.PathLike | None = None) -> Any:
    """The network a run's config.json describes (timm's ``build_model_with_cfg``): its family's
    Model class built from the saved ``model`` section, which holds every field, so nothing is
    derived from data again. With `weights`, that safetensors file is loaded and the run's
    artifacts beside it (a tokenizer, statistics) restored; without, the network is untrained
    (``resume`` restores weights with the trainer state)."""
    model_cls = family_of(config, where).model_class()
    model = model_cls(configlib.build(model_cls.Config, run_field(config, "model", where, dict),
                                      what="model"))
    if weights is not None:
        load_weights(model, Path(weights))
        load_artifacts(model, Path(weights).parent)
    return model


class DataShape:
    """Stands in for a dataset when only its shape is needed (no loading, no download). Knows
    only what the registry states: `shape` is None when the dataset entry gives none."""

    def __init__(self, shape: tuple[int, ...] | None, classes: list[str], modality: str,
                 vocab_size: int | None = None):
        self.shape, self.classes, self.modality = shape, classes, modality
        self.attribute_names: list[str] = []
        self.vocab_size = vocab_size  # text: tokens in the vocabulary, where the registry knows

    @classmethod
    def of(cls, p: Plan) -> "DataShape":
        ds = registry().get_dataset(p.data.name)
        shape = list(ds.shape) if ds.shape else None
        if shape and ds.modality == "image":
            if p.data.channels:
                shape[0] = p.data.channels
            if p.data.size or p.data.crop:
                shape[1:] = [p.data.size or p.data.crop] * 2
            if p.data.pad:
                shape[1:] = [s + 2 * p.data.pad for s in shape[1:]]
        vocab = None
        if ds.modality == "text":  # a char corpus states its alphabet; a word tokenizer keeps
            # the data.vocab_size most frequent words (exact when the corpus has more words)
            level = p.data.tokenizer or ds.options.get("tokenizer", "word")
            vocab = ds.options.get("chars") if level == "char" else p.data.vocab_size
        return cls(tuple(shape) if shape else None, list(ds.classes), ds.modality, vocab)


def create_model(name: str, preset: str = "quick", **overrides: Any) -> Any:
    """Build an untrained model from a registry name: ``create_model("pixelcnn", blocks=2)``.
    Shapes implied by the dataset come from its registry entry, without loading the data."""
    import torch
    p = plan(name, preset, overrides)
    torch.manual_seed(p.train.seed)
    return build_model(p, DataShape.of(p))


def versions() -> dict[str, str]:
    import torch
    from genzoo._version import __version__
    return {"genzoo": __version__, "torch": torch.__version__, "python": platform.python_version()}
