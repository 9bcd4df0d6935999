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
from genzoo.core.sample import ImageSample, Sample, write  # noqa: F401


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Images in [0, 1] (n, C, H, W) as one PNG grid, upscaled to >= 512 px wide."""
    path = Path(path)
    write(ImageSample(images, nrow=nrow), path.with_suffix(""))
    return path.with_suffix(".png")
