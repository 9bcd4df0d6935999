"""Pipelines: one model made of named components, trained in declared stages.

The book's last chapters are pipelines of trained parts: a VQ-GAN autoencoder, then a transformer
over its codes (ch. 10); a world model's VAE, then its MDN-RNN, then its controller (ch. 12); a
text encoder, an autoencoder and a diffusion prior (ch. 13). A family declares its stages once:

    class VQGAN(Pipeline):
        stages = (Stage("autoencoder", VQAutoencoder, preview="reconstruct"),
                  Stage("prior", CodePrior))

Each component is an ordinary ``Model`` (its own Config, loss, optimizers, EMA, artifacts) and is
trained by the ordinary trainer in its own folder, ``RUN/components/NAME/``: the checkpoint
protocol, bit-exact resume and signal handling hold per stage, and one stage's checkpoint never
mixes with another's. While a stage trains, the components of the stages before it are frozen
(no gradients, eval mode) and reachable as ``self.upstream["NAME"]``. The pipeline class wires
the stages together (which config and which data a stage gets from the ones before it) and is
what samplers receive: ``model.autoencoder``, ``model.prior``.

On disk (the anchor is diffusers' ``model_index.json`` with one subfolder per component):

    RUN/config.json                    what was asked: name, family, preset, overrides, data
    RUN/model_index.json               the stages in order and each component's class
    RUN/components/NAME/config.json    the component's full model and train config
    RUN/components/NAME/model.safetensors, model_ema..., trainer.*, artifacts.*, metrics.jsonl
    RUN/components/NAME/reference.json instead of weights: a stage taken from another run
                                       (``--stage S --from RUN``), by path and sha256

This module holds the declaration and the folder format; ``genzoo.core.stages`` trains, resumes
and loads pipelines.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from genzoo.core.atomic import read_json, write_json
from genzoo.core.model import Model
from genzoo.core.run_folder import EMA_WEIGHTS, WEIGHTS
from genzoo.errors import CheckpointError, ConfigError

COMPONENTS = "components"
MODEL_INDEX = "model_index.json"
REFERENCE = "reference.json"
PIPELINE_FORMAT = 1


@dataclass(frozen=True)
class Stage:
    """One stage of a pipeline: it trains the component `name`, a `model` (a ``Model``
    subclass). `preview` names the family sampler that draws the grids shown while this stage
    trains (None: the pipeline's default sampler, which needs every component, so only the last
    stage may leave it unset)."""

    name: str
    model: type
    preview: str | None = None
    summary: str = ""


class Upstream(dict):
    """The components of earlier stages, as a stage's component sees them
    (``self.upstream["autoencoder"]``). Shared, never copied: the trainer's EMA deep-copies the
    component it trains, and must not copy the frozen networks it reads from."""

    def __deepcopy__(self, memo: dict[int, Any]) -> "Upstream":
        return self


class Pipeline(Model):
    """A model of named components trained in stages (see the module docstring). Subclasses set
    ``stages`` and may override the wiring classmethods; samplers receive the pipeline."""

    stages: ClassVar[tuple[Stage, ...]] = ()
    likelihood_unit: ClassVar[str | None] = None

    def __init__(self, components: dict[str, Model]):
        """`components` by stage name; while an early stage trains, the later ones are not
        there yet (its preview sampler must not need them)."""
        nn.Module.__init__(self)
        names = self.stage_names()
        unknown = [n for n in components if n not in names]
        if unknown:
            raise ConfigError(f"{type(self).__name__} has no stage {unknown[0]!r}; its stages: "
                              f"{', '.join(names)}")
        self.config = {n: components[n].config for n in names if n in components}
        self.parts = nn.ModuleDict({n: components[n] for n in names if n in components})

    def __getattr__(self, name: str) -> Any:
        modules = self.__dict__.get("_modules", {})
        parts = modules.get("parts")
        if parts is not None and name in parts._modules:
            return parts._modules[name]
        return super().__getattr__(name)

    # -- the declaration -----------------------------------------------------------------------
    @classmethod
    def stage_names(cls) -> list[str]:
        return [s.name for s in cls.stages]

    @classmethod
    def stage(cls, name: str) -> Stage:
        for s in cls.stages:
            if s.name == name:
                return s
        raise ConfigError(f"{cls.__name__} has no stage {name!r}; its stages, in order: "
                          f"{', '.join(cls.stage_names())}")

    # -- wiring: what a stage gets from the ones before it ---------------------------------------
    @classmethod
    def component_config(cls, name: str, data: Any, upstream: dict[str, Model]) -> dict[str, Any]:
        """Config values of component `name` implied by the data and the earlier components (a
        prior's vocabulary is the autoencoder's codebook). They sit below the preset and the
        user's overrides. `data` may be a shape-only stand-in (``create_model``)."""
        return cls.stage(name).model.config_from_data(data)

    @classmethod
    def stage_data(cls, name: str, data: Any, upstream: dict[str, Model]) -> Any:
        """The training (or test) set of stage `name`, made from the pipeline's data by the
        frozen earlier components (a prior trains on code grids); computed once per stage."""
        return data

    # -- figures ---------------------------------------------------------------------------------
    def figures(self, data: Any) -> dict[str, Any]:
        """Pipeline-level held-out figures for ``zoo eval`` beyond each component's loss
        (reconstruction error, codebook usage...): JSON-able values."""
        return {}

    def evaluation_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        # the pipeline's data is not every component's: each one's loss is reported by
        # evaluate_extra on its own stage's data
        return {}

    def evaluate_extra(self, data: Any, out_dir: Any = None) -> dict[str, Any]:
        """Each component's held-out loss terms on its stage's data (``STAGE/KEY``), then the
        family's ``figures``."""
        from genzoo.core.batching import evaluate_loss
        out: dict[str, Any] = {}
        upstream: dict[str, Model] = {}
        for s in self.stages:
            if s.name not in self.parts:
                break
            component = self.parts[s.name]
            stage_data = type(self).stage_data(s.name, data, upstream)
            losses = evaluate_loss(component, stage_data, self.device)
            out.update({f"{s.name}/{k}": v for k, v in losses.items()})
            upstream[s.name] = component
        out.update(self.figures(data))
        return out

    def num_params(self) -> int:
        return sum(c.num_params() for c in self.parts.values())


def is_pipeline(model_cls: Any) -> bool:
    return isinstance(model_cls, type) and issubclass(model_cls, Pipeline)


def bind(component: Model, upstream: dict[str, Model]) -> None:
    """Give a stage's component the earlier components, frozen: they never receive gradients and
    stay in eval mode (dropout off, batch norm statistics fixed) while it trains."""
    for m in upstream.values():
        m.requires_grad_(False)
        m.zero_grad(set_to_none=True)  # its own last step's gradients: memory, and confusing
        m.eval()
    component.upstream = Upstream(upstream)


# -- the folder format ----------------------------------------------------------------------------
def component_dir(run_path: str | os.PathLike, name: str) -> Path:
    return Path(run_path) / COMPONENTS / name


def write_index(run_path: str | os.PathLike, family: str, cls: type) -> None:
    """RUN/model_index.json (diffusers' name): the stages in order, each component's class."""
    write_json(Path(run_path) / MODEL_INDEX, {
        "_class_name": cls.__name__, "_module": cls.__module__, "format": PIPELINE_FORMAT,
        "family": family, "stages": cls.stage_names(),
        "components": {s.name: [s.model.__module__, s.model.__name__] for s in cls.stages}})


def read_index(run_path: str | os.PathLike) -> dict[str, Any]:
    path = Path(run_path) / MODEL_INDEX
    if not path.is_file():
        raise CheckpointError(f"{run_path} is not a pipeline run: it has no {MODEL_INDEX}")
    index = read_json(path)
    if not isinstance(index, dict) or not isinstance(index.get("stages"), list):
        raise CheckpointError(f"{path} is damaged: no list of stages")
    return index


def is_pipeline_run(run_path: str | os.PathLike) -> bool:
    return (Path(run_path) / MODEL_INDEX).is_file()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weight_hashes(folder: Path) -> dict[str, str]:
    """sha256 of a component's weight files (the raw and, where saved, the EMA weights)."""
    return {n: sha256(folder / n) for n in (WEIGHTS, EMA_WEIGHTS) if (folder / n).is_file()}


def write_reference(folder: Path, source_run: Path, name: str, source: Path, step: int) -> None:
    """Stage `name` of this run is the finished component in `source` (of `source_run`), by path
    and the sha256 of its weights: nothing is copied."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / REFERENCE, {"run": str(Path(source_run).resolve()), "component": name,
                                    "folder": str(Path(source).resolve()), "step": step,
                                    "sha256": weight_hashes(source)})


def resolve(run_path: str | os.PathLike, name: str) -> Path:
    """The folder holding component `name`'s weights: its own, or the one its reference names,
    after checking those weights are the ones that were referenced (sha256). A changed or
    missing referenced component is one line."""
    folder = component_dir(run_path, name)
    ref_path = folder / REFERENCE
    if not ref_path.is_file():
        return folder
    ref = read_json(ref_path)
    if not isinstance(ref, dict) or not isinstance(ref.get("sha256"), dict):
        raise CheckpointError(f"{ref_path} is damaged: no weight hashes")
    source = Path(str(ref.get("folder", "")))
    if not source.is_dir():
        raise CheckpointError(f"component {name!r} of {run_path} comes from {ref.get('run')}, "
                              f"which is gone ({source} missing); train that stage again")
    for file, digest in ref["sha256"].items():
        if not (source / file).is_file() or sha256(source / file) != digest:
            raise CheckpointError(
                f"component {name!r} of {run_path} comes from {ref.get('run')}, whose {file} "
                "changed since (sha256 differs); train this run's later stages again on it "
                f"(zoo train ... --stage STAGE --from {ref.get('run')})")
    return source
