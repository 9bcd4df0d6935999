"""A family's run artifacts beyond weights (``Model.artifacts`` / ``Model.load_artifacts``: a
tokenizer, normalisation statistics): tensors to artifacts.safetensors, everything else to
artifacts.json."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from genzoo.core.atomic import read_json, write_json
from genzoo.core.model import Model
from genzoo.core.run_folder import ARTIFACT_JSON, ARTIFACT_TENSORS
from genzoo.core.tensors import load_tensors, save_tensors
from genzoo.errors import CheckpointError


def save_artifacts(model: Any, folder: Path, metadata: dict[str, str] | None = None) -> None:
    """Tensors to artifacts.safetensors, everything else to artifacts.json; nothing when the
    family keeps no extra state."""
    items = model.artifacts() if hasattr(model, "artifacts") else {}
    if not items:
        return
    tensors = {k: v for k, v in items.items() if isinstance(v, torch.Tensor)}
    rest = {k: v for k, v in items.items() if not isinstance(v, torch.Tensor)}
    if tensors:
        save_tensors(Path(folder) / ARTIFACT_TENSORS, tensors, metadata)
    if rest:
        write_json(Path(folder) / ARTIFACT_JSON, {"step": (metadata or {}).get("genzoo_step"),
                                                  "artifacts": rest})


def load_artifacts(model: Any, folder: Path) -> None:
    folder = Path(folder)
    items: dict[str, Any] = {}
    if (folder / ARTIFACT_TENSORS).exists():
        items.update(load_tensors(folder / ARTIFACT_TENSORS))
    if (folder / ARTIFACT_JSON).exists():
        obj = read_json(folder / ARTIFACT_JSON)
        if not isinstance(obj, dict) or not isinstance(obj.get("artifacts"), dict):
            raise CheckpointError(f"{folder / ARTIFACT_JSON} is not a genzoo artifacts file")
        items.update(obj["artifacts"])
    if items or type(model).load_artifacts is not Model.load_artifacts:
        try:
            model.load_artifacts(items)
        except CheckpointError:
            raise
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            raise CheckpointError(f"the run's artifacts in {folder} do not fit this model "
                                  f"({type(e).__name__}: {e})") from None
