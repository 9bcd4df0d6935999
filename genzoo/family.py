"""The public SDK for family authors: everything a family module needs from genzoo, in one import.

    from genzoo.family import Model, Sampler, ImageSample, hookimpl, ConfigError

A family module (built-in or third-party) imports only ``genzoo.family``, ``genzoo.nn``, torch and
third-party libraries; ``tests/test_architecture.py`` enforces it for the built-ins. Names here
are a promise: they keep their meaning across releases, while ``genzoo.core`` may move things.

What a family defines (see ARCHITECTURE.md and the README's plugin example):
- a ``Model`` subclass with a ``Config`` dataclass, ``loss`` (and optionally ``training_step``,
  ``log_prob``, ``features``, ``flops`` ...);
- one or more ``Sampler`` subclasses, each with an ``Options`` dataclass;
- a ``@hookimpl`` ``register_families`` / ``register_models`` in its plugin module.
"""
from __future__ import annotations

from genzoo.core.graphs import StepGraph, run_steps, window_index
from genzoo.core.model import Model, ModelConfig, fused_adam_ok
from genzoo.core.pipeline import Pipeline, Stage
from genzoo.core.plugins import hookimpl
from genzoo.core.plots import pyplot, save_figure
from genzoo.core.sample import (EventSample, ImageSample, PointSample, Sample, TextSample,
                                VideoSample)
from genzoo.core.sampler import (Sampler, SamplerOptions, TokenOptions, apply_temperature_top_k,
                                 categorical, categorical_from_uniform, frozen, gaussian,
                                 uniforms)
from genzoo.core.atomic import atomic_write
from genzoo.core.batching import batches
from genzoo.core.data_config import DataConfig, data_root
from genzoo.core.datasets import Dataset, ImageData, PointData, TensorData, split_index, to_float
from genzoo.core.image_folder import load_image_folder
from genzoo.core.sources import kaggle_folder
from genzoo.core.text import Tokenizer
from genzoo.core.train_config import StepContext, TrainConfig
from genzoo.errors import (CheckpointError, ConfigError, DataError, GenzooError, TrainingDiverged,
                           UnknownNameError)

__all__ = [
    # the network
    "Model", "ModelConfig", "fused_adam_ok", "Pipeline", "Stage",
    # sampling
    "Sampler", "SamplerOptions", "TokenOptions", "apply_temperature_top_k", "categorical",
    "categorical_from_uniform", "uniforms", "gaussian", "frozen", "StepGraph", "run_steps", "window_index",
    # what samplers return
    "Sample", "ImageSample", "TextSample", "PointSample", "EventSample", "VideoSample",
    # data
    "Dataset", "TensorData", "ImageData", "PointData", "DataConfig", "data_root", "split_index",
    "to_float", "batches", "Tokenizer", "load_image_folder", "kaggle_folder",
    # training
    "StepContext", "TrainConfig",
    # files and figures a family writes
    "atomic_write", "pyplot", "save_figure",
    # registration
    "hookimpl",
    # errors a family may raise (each is printed as one line, no traceback)
    "GenzooError", "ConfigError", "DataError", "CheckpointError", "TrainingDiverged",
    "UnknownNameError",
]

# One line per public name: ``help(genzoo.family)`` and the docs test read this table, and a test
# fails when a name in __all__ has no entry here.
DOCS: dict[str, str] = {
    "Model": "Base class of every network: a typed Config, loss(batch) -> {'loss': ...}, optional "
             "training_step / log_prob / features / flops.",
    "Pipeline": "A model of named components trained in declared stages (VQ-GAN's autoencoder, "
                "then its prior): each component a Model in RUN/components/NAME/; override "
                "component_config / stage_data to wire a stage to the ones before it.",
    "Stage": "One stage of a Pipeline: Stage(name, ModelClass, preview=sampler shown while it "
             "trains); earlier components are frozen and reachable as self.upstream[name].",
    "ModelConfig": "Base dataclass of Model.Config: every hyperparameter typed, with a default.",
    "fused_adam_ok": "True where torch's fused Adam/AdamW applies to these parameters, else None.",
    "Sampler": "Base class of a way to draw from a trained network: Options, inputs, shows, "
               "sample(model, n, generator, **inputs).",
    "SamplerOptions": "Base dataclass of Sampler.Options (`zoo sample --set NAME=VALUE`).",
    "TokenOptions": "Options every token sampler shares: max_new_tokens, temperature, top_k.",
    "apply_temperature_top_k": "Logits divided by a temperature, all but the top k masked.",
    "categorical": "One draw per row of logits from a torch.Generator (same on every device).",
    "categorical_from_uniform": "A categorical draw from pre-drawn uniforms (CUDA-graph steps).",
    "uniforms": "U(0,1) numbers from a generator on its own device, moved to `device` at once.",
    "gaussian": "N(0,1) noise from a generator on its own device, moved to `device` at once.",
    "frozen": "Context manager: a module's parameters stop requiring grad, restored after.",
    "StepGraph": "Runs a static sampler step eagerly, or as a captured CUDA graph on CUDA.",
    "run_steps": "Calls a static step n times (through a StepGraph).",
    "window_index": "Index tables that gather a convolution window at a device-held position.",
    "Sample": "Base class of typed samples; writers turn them into files by `kind`.",
    "ImageSample": "Images as floats in [0, 1], (n, C, H, W), written as a grid PNG.",
    "TextSample": "Generated texts (and their token ids), written as .txt.",
    "PointSample": "(n, D) points, written as a scatter plot.",
    "EventSample": "Event sequences (music), written by the writer registered for its kind.",
    "VideoSample": "Clips as floats in [0, 1], (n, T, C, H, W), at fps: written as an animated "
                   "GIF of all clips and a filmstrip PNG (one row per clip), captions as .txt.",
    "Dataset": "The protocol a data loader returns: __len__, shape, batch(index), to_device.",
    "TensorData": "A dataset that is one tensor x of examples; subclass it as a dataclass.",
    "ImageData": "uint8 images (N, C, H, W) with optional labels and attributes.",
    "PointData": "(N, D) standardised points with the mean and std to map samples back.",
    "DataConfig": "The `data.*` settings of a run: name, size, channels, split fraction ...",
    "data_root": "Where downloaded and cached data lives (--data-root, GENZOO_DATA, ~/.cache).",
    "split_index": "The deterministic train/test index of n examples for a split.",
    "to_float": "uint8 tensors as floats in [0, 1]; other tensors unchanged.",
    "batches": "Every example of a dataset once, in order, as batches on a device.",
    "Tokenizer": "genzoo's word tokenizer (a run artifact): encode, decode, to_json.",
    "load_image_folder": "A folder of images as ImageData, decoded once into a (memory-mappable) "
                         "cache; optional per-file binary attributes.",
    "kaggle_folder": "A Kaggle dataset's folder under the data root, downloaded once if allowed.",
    "StepContext": "What a training_step may use: step, autocast(), optimize(loss, optimizer).",
    "TrainConfig": "The `train.*` settings of a run: steps, lr, batch_size, amp ...",
    "atomic_write": "Write a file through a temporary and a rename: a kill never leaves half.",
    "pyplot": "matplotlib.pyplot on the headless Agg backend.",
    "save_figure": "Save a matplotlib figure atomically and close it.",
    "hookimpl": "Marks a plugin module's hook functions (register_families, register_models ...).",
    "GenzooError": "Base of every user-facing error: printed as one line, no traceback.",
    "ConfigError": "A bad hyperparameter, option or input: say what was wrong and what is valid.",
    "DataError": "Data that is missing, malformed or does not fit the model.",
    "CheckpointError": "A run folder or weights file that cannot be read or does not match.",
    "TrainingDiverged": "A non-finite loss: the run keeps its last good checkpoint.",
    "UnknownNameError": "An unknown name, with the close matches among the valid ones.",
}
