"""Train, resume and load pipelines (``genzoo.core.pipeline``): one stage after another, each
component by the ordinary trainer in its own folder ``RUN/components/NAME/``.

- ``train``: a new run; stages before ``--stage`` may be taken from another run (``--from``) by
  path and weight hash, so a new prior trains on a finished autoencoder without copying it.
- ``resume``: finished stages are loaded, the interrupted one continues from its own checkpoint
  (bit for bit, as a single network does), the later ones train from scratch.
- ``load``: the whole pipeline, every component with its weights (EMA where saved).

A stage starts from ``torch.manual_seed(its train seed)``, so its initial weights and data order do
not depend on how long the stages before it ran, and the run's data is loaded once.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genzoo.core import config as configlib
from genzoo.core import distributed as dist
from genzoo.core import sample as samplelib
from genzoo.core.artifacts import load_artifacts
from genzoo.core.atomic import read_json, write_json
from genzoo.core.commit import verify
from genzoo.core.data_config import DataConfig
from genzoo.core.factory import Plan, family_of, run_field, versions
from genzoo.core.pipeline import (REFERENCE, Upstream, bind, component_dir, read_index,
                                  resolve, write_index, write_reference)
from genzoo.core.registry import FamilyEntry
from genzoo.core.run_folder import CONFIG, EMA_WEIGHTS, TRAINER_JSON, WEIGHTS, Run
from genzoo.core.sampler import draw
from genzoo.core.session import (LoadedRun, _create, _on_main, _session, _settle, _take,
                                 evaluate_loss)
from genzoo.core.sources import load as load_data
from genzoo.core.tensors import load_weights
from genzoo.core.train_config import TrainConfig, pick_device, validate_train
from genzoo.core.trainer import Trainer
from genzoo.errors import CheckpointError, ConfigError


@dataclass
class Spec:
    """What trains a pipeline run, from a plan (a new run) or from its config.json (resume)."""

    name: str
    family: FamilyEntry
    cls: type
    data: DataConfig
    models: dict[str, dict[str, Any]]  # per stage: model overrides (derived values come later)
    trains: dict[str, TrainConfig]  # per stage
    sampler: str | None


def _record(p: Plan, overrides: dict[str, Any] | None, start: str | None,
            source: Path | None) -> dict[str, Any]:
    return {
        "name": p.entry.name, "family": p.entry.family, "source": p.entry.plugin,
        "preset": p.preset, "overrides": {k: str(v) for k, v in (overrides or {}).items()},
        "pipeline": p.model_cls.stage_names(),
        "components": {n: {"model": st["model"], "train": configlib.to_dict(st["train"])}
                       for n, st in p.stages.items()},
        "train": configlib.to_dict(p.train), "data": configlib.to_dict(p.data),
        "sampler": p.sampler, "sampler_options": {}, "modality": p.model_cls.modality,
        "from": None if source is None else {"run": str(source.resolve()), "stage": start},
        "versions": versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _complete(folder: Path) -> tuple[bool, int | None, int | None]:
    """(finished, step, total) of a component folder's checkpoint."""
    path = folder / TRAINER_JSON
    if not path.is_file():
        return False, None, None
    state = read_json(path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is damaged")
    return bool(state.get("complete")), state.get("step"), state.get("total_steps")


def _take_from(p: Plan, start: str | None, source: str | os.PathLike | None) -> dict[str, Path]:
    """Check ``--stage START --from SOURCE`` and return the finished component folders of the
    stages before START, each in one line when it cannot be used."""
    cls = p.model_cls
    if start is None and source is None:
        return {}
    if source is None:
        raise ConfigError(f"--stage {start} needs --from RUN: the run whose earlier stages "
                          f"({', '.join(cls.stage_names())}) it builds on")
    if start is None:
        raise ConfigError(f"--from {source} needs --stage STAGE: the first stage to train anew; "
                          f"stages of {p.entry.name}: {', '.join(cls.stage_names())}")
    cls.stage(start)  # an unknown stage: one line with the valid ones
    names = cls.stage_names()
    earlier = names[:names.index(start)]
    if not earlier:
        raise ConfigError(f"{start} is the first stage of {p.entry.name}: there is nothing to take "
                          f"from {source}; train without --stage/--from")
    src = Run.open(source)
    try:
        index = read_index(src.path)
    except CheckpointError:
        fam = family_of(src.read_config(), src.config_path).name
        raise ConfigError(f"--from {source} is a {fam} run, not a {p.entry.family} pipeline; "
                          f"{p.entry.name} needs a {p.entry.family} run") from None
    if index.get("family") != p.entry.family:
        raise ConfigError(f"--from {source} is a {index.get('family')} run; {p.entry.name} needs "
                          f"a {p.entry.family} run")
    taken = {}
    for name in earlier:
        folder = resolve(src.path, name)
        done, step, total = _complete(folder)
        if not done:
            what = "not trained" if step is None else f"at step {step} of {total}"
            raise ConfigError(f"component {name!r} of {source} is {what}; finish it first "
                              f"(zoo train --resume {source})")
        taken[name] = folder
    return taken


def train(p: Plan, overrides: dict[str, Any] | None = None, out: str | os.PathLike | None = None,
          progress: bool = True, stop_after: int | tuple[str, int] | None = None,
          stage: str | None = None, source: str | os.PathLike | None = None) -> Run:
    """Train a pipeline's stages in one run, or (`stage` + `source`) its stages from `stage` on
    over the finished earlier components of the run `source`. Everything the user can get wrong
    fails before the run folder exists."""
    taken = _take_from(p, stage, source)
    if taken:  # the new stages learn on the data the taken ones were trained on
        src_cfg = Run.open(source).read_config()
        if not any(k in configlib.field_names(DataConfig) or k.startswith("data.")
                   for k in (overrides or {})):
            p.data = configlib.build(DataConfig, run_field(src_cfg, "data", source, dict),
                                     what="data")
    spec = Spec(p.entry.name, p.family, p.model_cls, p.data,
                {n: st["model"] for n, st in p.stages.items()},
                {n: st["train"] for n, st in p.stages.items()}, p.sampler)
    with _session(p.train.device):
        data = load_data(p.data, "train")
        run, lock = _on_main(lambda: _create(p.entry.name, out), fresh=True)
        try:
            if dist.is_main():
                run.write_config(_record(p, overrides, stage, None if source is None
                                         else Path(source)))
                write_index(run.path, p.entry.family, p.model_cls)
                for name, folder in taken.items():
                    _, step, _ = _complete(folder)
                    write_reference(component_dir(run.path, name), Path(source), name, folder,
                                    int(step or 0))
        except BaseException:
            if lock is not None:
                lock.release()
                run.discard()
            raise
        return _stages(run, spec, data, lock, progress, stop_after)


def resume(path: str | os.PathLike, steps: int | None = None, progress: bool = True,
           device: str | None = None, stop_after: int | tuple[str, int] | None = None) -> Run:
    """Continue a pipeline run: its finished stages load, the interrupted one resumes from its
    checkpoint, the rest train. `steps` sets a new total for the stage being resumed."""
    run = Run.open(path)
    cfg = run.read_config()
    spec = _spec_from_config(cfg, run.config_path)
    current = _current_stage(run, spec)
    if current is None and steps is None:
        raise CheckpointError(f"{run.path} is finished: every stage "
                              f"({', '.join(spec.cls.stage_names())}) is trained; resume with "
                              "--steps N to train its last stage further")
    if current is None:
        current = spec.cls.stage_names()[-1]
    if steps is not None:
        spec.trains[current].steps, spec.trains[current].epochs = steps, None
    for name in spec.trains:
        if device is not None:
            spec.trains[name].device = device
        validate_train(spec.trains[name])
    with _session(spec.trains[current].device):
        own = [component_dir(run.path, n) for n in spec.cls.stage_names()]
        lock = _take(run, [f for f in own if f.is_dir() and not (f / REFERENCE).exists()])
        try:
            data = load_data(spec.data, "train")
            if steps is not None and dist.is_main():
                cfg["components"][current]["train"] = configlib.to_dict(spec.trains[current])
                run.write_config(cfg)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return _stages(run, spec, data, lock, progress, stop_after, more_steps=steps)


def _spec_from_config(cfg: Any, where: Path) -> Spec:
    family = family_of(cfg, where)
    cls = family.model_class()
    comps = run_field(cfg, "components", where, dict)
    missing = [n for n in cls.stage_names() if not isinstance(comps.get(n), dict)]
    if missing:
        raise CheckpointError(f"{where} is damaged: no config for component {missing[0]!r}")
    trains = {n: configlib.build(TrainConfig, comps[n].get("train") or {}, what=f"{n} train")
              for n in cls.stage_names()}
    data = configlib.build(DataConfig, run_field(cfg, "data", where, dict), what="data")
    return Spec(str(cfg.get("name", "")), family, cls, data,
                {n: dict(comps[n].get("model") or {}) for n in cls.stage_names()}, trains,
                cfg.get("sampler"))


def _current_stage(run: Run, spec: Spec) -> str | None:
    """The first stage that is not finished (None: all are)."""
    for name in spec.cls.stage_names():
        if not _complete(resolve(run.path, name))[0]:
            return name
    return None


def _stop_for(stop_after: int | tuple[str, int] | None, name: str, first: bool) -> int | None:
    if isinstance(stop_after, tuple):
        return stop_after[1] if stop_after[0] == name else None
    return stop_after if first else None


def _stages(run: Run, spec: Spec, data: Any, lock: Any, progress: bool,
            stop_after: int | tuple[str, int] | None, more_steps: int | None = None) -> Run:
    """Each stage in order: a finished one is loaded, an unfinished one trained (continued from
    its checkpoint where it has one). A stage stopped early (a signal, `stop_after`) ends the
    call: the later stages wait for ``--resume``."""
    cls = spec.cls
    upstream: dict[str, Any] = {}
    trained_any = False
    try:
        for i, stage in enumerate(cls.stages):
            name = stage.name
            folder = resolve(run.path, name)
            done, _, _ = _complete(folder)
            last = i == len(cls.stages) - 1
            if done and not (last and more_steps is not None and not trained_any):
                upstream[name] = _load_component(folder, stage.model, ema=True)
                continue
            if (component_dir(run.path, name) / REFERENCE).exists():
                raise CheckpointError(f"component {name!r} of {run.path} comes from another run "
                                      "and is not finished there")
            cfg = spec.trains[name]
            device = pick_device(dist.device_name(cfg.device))
            for m in upstream.values():
                m.to(device)
            stage_data = cls.stage_data(name, data, upstream)
            comp = Run(folder)
            comp.path.mkdir(parents=True, exist_ok=True)
            fresh = not (folder / TRAINER_JSON).exists()
            if fresh:
                torch.manual_seed(cfg.seed)
                model = _build(spec, name, stage_data, upstream)
                model.setup(stage_data)
                if dist.is_main():
                    write_json(folder / CONFIG, {
                        "component": name, "pipeline": spec.name, "family": spec.family.name,
                        "class": f"{stage.model.__module__}:{stage.model.__name__}",
                        "model": configlib.to_dict(model.config), "train": configlib.to_dict(cfg),
                        "params": model.num_params(), "versions": versions(),
                        "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
            else:
                model = _build_saved(folder, stage.model)
            bind(model, upstream)
            writer = _preview_writer(run, spec, stage, upstream, data, last)
            trainer = Trainer(model, stage_data, cfg, comp, writer, progress=progress)
            if not fresh:
                trainer.restore()
            trainer.fit(stop_after=_stop_for(stop_after, name, not trained_any))
            trained_any = True
            if trainer.step < trainer.total:
                return run  # stopped early: the next call resumes here
            if dist.is_main():
                _finish_stage(run, spec, name, trainer, upstream)
            upstream[name] = trainer.sampling_model().eval()
    finally:
        if lock is not None:
            lock.release()
    return run


def _build(spec: Spec, name: str, data: Any, upstream: dict[str, Any]) -> Any:
    cls = spec.cls.stage(name).model
    derived = spec.cls.component_config(name, data, upstream)
    return cls(configlib.build(cls.Config, {**derived, **spec.models[name]},
                               what=f"{spec.family.name} {name} config"))


def _component_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG
    if not path.is_file():
        raise CheckpointError(f"component {folder.name!r} in {folder.parent.parent} has no "
                              f"{CONFIG}: its stage never started")
    cfg = read_json(path)
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        raise CheckpointError(f"{path} is damaged: no model config")
    return cfg


def _build_saved(folder: Path, model_cls: type) -> Any:
    cfg = _component_config(folder)
    return model_cls(configlib.build(model_cls.Config, cfg["model"],
                                     what=f"{folder.name} config"))


def _load_component(folder: Path, model_cls: type, ema: bool) -> Any:
    model = _build_saved(folder, model_cls)
    weights = folder / EMA_WEIGHTS if ema and (folder / EMA_WEIGHTS).exists() else folder / WEIGHTS
    if not weights.exists():
        raise CheckpointError(f"component {folder.name!r} ({folder}) has no weights yet; train "
                              "its stage first")
    load_weights(model, weights)
    load_artifacts(model, folder)
    return model.eval()


def _preview_writer(run: Run, spec: Spec, stage: Any, upstream: dict[str, Any], data: Any,
                    last: bool) -> Any:
    """The trainer's grid writer for one stage: the stage's preview sampler (the pipeline's
    default for the last stage) over the components so far; the last stage's grids go to
    RUN/samples, as a single network's do, the others' to their component's folder."""
    sampler_name = stage.preview or (spec.sampler if last else None)
    if sampler_name is None:
        return None
    reference = data if spec.cls.modality == "points" else None
    target = run if last else Run(component_dir(run.path, stage.name))

    def write(model: Any, step: int, n: int) -> None:
        was = model.training
        view = spec.cls({**upstream, stage.name: model})
        sampler_cls = spec.family.sampler_class(sampler_name)
        sampler = sampler_cls(**getattr(sampler_cls, "preview", {}))
        g = torch.Generator().manual_seed(spec.trains[stage.name].seed)
        try:
            out = draw(view, sampler, n, g, family=spec.family.name)
            samplelib.write(out, target.samples_dir / f"step_{step:06d}", reference=reference)
        finally:  # sampling set eval mode on everything in the view: give each its own back
            model.train(was)
            for m in upstream.values():
                m.eval()
    return write


def _finish_stage(run: Run, spec: Spec, name: str, trainer: Trainer,
                  upstream: dict[str, Any]) -> None:
    """A finished stage's held-out loss, in its component's log and the run's (keys prefixed
    with the stage), and its loss curve. Evaluation is a bonus: never lose a stage over it."""
    comp = trainer.run
    try:
        test = spec.cls.stage_data(name, load_data(spec.data, "test"), upstream)
        stats = evaluate_loss(trainer.sampling_model(), test, trainer.device,
                              trainer.cfg.batch_size)
        comp.log({"step": trainer.step, "split": "test", **stats})
        run.log({"stage": name, "step": trainer.step, "split": "test",
                 **{f"{name}.{k}": v for k, v in stats.items()}})
    except Exception as e:
        comp.log({"step": trainer.step, "split": "test", "error": str(e)})
    try:
        from genzoo.core.plots import loss_curve
        loss_curve(comp)
    except Exception:
        pass
    # the run's parameter count (the leaderboard's column): the components trained so far
    total = 0
    for other in spec.cls.stage_names():
        folder = resolve(run.path, other)
        if (folder / CONFIG).is_file():
            total += int(read_json(folder / CONFIG).get("params") or 0)
    cfg = run.read_config()
    cfg["params"] = total
    run.write_config(cfg)


def load(path: str | os.PathLike, ema: bool = True, device: str = "cpu") -> LoadedRun:
    """The whole pipeline of a run folder, every component with its weights (a component taken
    from another run is checked against its recorded sha256 first)."""
    run = Run.open(path)
    cfg = run.read_config()
    family = family_of(cfg, run.config_path)
    cls = family.model_class()
    index = read_index(run.path)
    if index.get("stages") != cls.stage_names():
        raise CheckpointError(f"{run.path} was trained with the stages {index.get('stages')}; "
                              f"{family.name} now has {cls.stage_names()}")
    built: dict[str, Any] = {}
    for name in cls.stage_names():
        folder = resolve(run.path, name)
        if folder == component_dir(run.path, name):
            _settle(Run(folder))
        model = _load_component(folder, cls.stage(name).model, ema)
        model.upstream = Upstream(dict(built))
        built[name] = model
    pipeline = cls(built)
    pipeline.to(pick_device(device)).eval()
    return LoadedRun(run, cfg, pipeline, family)


def describe(path: str | os.PathLike) -> list[dict[str, Any]]:
    """One row per component for ``zoo info RUN``: class, parameters, steps, where its weights
    are (this run, or another run by reference) and its last figures."""
    run = Run.open(path)
    index = read_index(run.path)
    rows = []
    for name in index["stages"]:
        own = component_dir(run.path, name)
        row: dict[str, Any] = {"component": name,
                               "class": ".".join(index.get("components", {}).get(name, []))}
        try:
            folder = resolve(run.path, name)
        except CheckpointError as e:
            rows.append({**row, "state": "broken", "error": str(e)})
            continue
        if folder != own:
            row["from"] = str(read_json(own / REFERENCE).get("run"))
        done, step, total = _complete(folder)
        row["state"] = "finished" if done else ("not started" if step is None
                                                else f"step {step} of {total}")
        row["step"], row["total"] = step, total
        if (folder / CONFIG).is_file():
            row["params"] = read_json(folder / CONFIG).get("params")
        metrics = Run(folder).metrics()
        train = [m for m in metrics if m.get("split") is None and "loss" in m]
        test = [m for m in metrics if m.get("split") == "test" and "error" not in m]
        if train:
            row["train_loss"] = train[-1]["loss"]
        if test:
            row["test"] = {k: v for k, v in test[-1].items() if k not in ("step", "split")}
        if done and not (folder / REFERENCE).exists() and folder == own:
            try:
                verify(folder)
            except CheckpointError as e:
                row["state"], row["error"] = "broken", str(e)
        rows.append(row)
    return rows
