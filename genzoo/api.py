"""The Python API behind ``import genzoo``: create, train, load and sample models by registry name.

A thin facade over ``genzoo.core`` (``factory`` plans and builds, ``runner`` trains, resumes,
loads and samples); core never imports this module.
"""
from __future__ import annotations

from pathlib import Path

import torch

from genzoo.core.factory import (DataShape, Plan, build_model, create_model, plan,  # noqa: F401
                                 split_overrides, versions)
from genzoo.core.runner import (LoadedRun, evaluate_loss, load_run, resume, sample_writer,  # noqa: F401
                                train)
from genzoo.core.sample import ImageSample, Sample, output_stem, write  # noqa: F401


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Images in [0, 1] (n, C, H, W) as one PNG grid, upscaled to >= 512 px wide."""
    stem = output_stem(path)
    write(ImageSample(images, nrow=nrow), stem)
    return Path(f"{stem}.png")
