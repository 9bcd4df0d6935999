"""A family's run artifacts beyond weights (``Model.artifacts`` / ``Model.load_artifacts``: a
tokenizer, normalisation statistics): tensors to artifacts.safetensors, everything else to
artifacts.json."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from genzoo.core.atomic import read_json, write_json
from genzoo.core.model import Model
from genzoo.core.run_folder import ARTIFACT_JSON, ARTIFACT_TENSORS
from genzoo.core.tensors import load_tensors, save_tensors
from genzoo.errors import CheckpointError, GenzooError


KEYS = "genzoo_artifacts"  # safetensors metadata: every artifact key the run saved (JSON list)


def save_artifacts(model: Any, folder: Path, metadata: dict[str, str] | None = None) -> None:
    """Tensors to artifacts.safetensors, everything else to artifacts.json; nothing when the
    family keeps no extra state. Each file also lists every key saved (``keys`` in the JSON,
    ``genzoo_artifacts`` in the safetensors metadata), so a key deleted by hand is noticed even
    where the family treats it as optional."""
    items = model.artifacts() if hasattr(model, "artifacts") else {}
    if not items:
        return
    keys = sorted(items)
    tensors = {k: v for k, v in items.items() if isinstance(v, torch.Tensor)}
    rest = {k: v for k, v in items.items() if not isinstance(v, torch.Tensor)}
    if tensors:
        save_tensors(Path(folder) / ARTIFACT_TENSORS, tensors,
                     {**(metadata or {}), KEYS: json.dumps(keys)})
    if rest:
        write_json(Path(folder) / ARTIFACT_JSON, {"step": (metadata or {}).get("genzoo_step"),
                                                  "artifacts": rest, "keys": keys})


def _listed(value: Any, where: Path) -> set[str]:
    """A saved key list (absent in runs of older genzoo: nothing is listed)."""
    if value is None:
        return set()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
        raise CheckpointError(f"{where} is damaged: its list of artifact keys is not a list "
                              "of names")
    return set(value)


def load_artifacts(model: Any, folder: Path) -> None:
    """Restore the run's artifacts into `model`, checked against what the model declares (its
    ``artifacts()`` before loading): every declared key present, a tensor where it declares a
    tensor (of its dtype) and JSON where it declares JSON (None: not known yet, either), every
    key the files list as saved present, and no key the model would not save. A
    mismatch is one CheckpointError naming the file, the key, what was expected and found."""
    folder = Path(folder)
    items: dict[str, Any] = {}
    where: dict[str, Path] = {}
    listed: dict[str, Path] = {}  # key -> a file that lists it as saved
    if (folder / ARTIFACT_TENSORS).exists():
        tensors = load_tensors(folder / ARTIFACT_TENSORS)
        items.update(tensors)
        where.update(dict.fromkeys(tensors, folder / ARTIFACT_TENSORS))
        from safetensors import safe_open  # the header only; load_tensors checked the file
        with safe_open(str(folder / ARTIFACT_TENSORS), framework="pt") as f:
            meta = f.metadata() or {}
        listed.update(dict.fromkeys(_listed(meta.get(KEYS), folder / ARTIFACT_TENSORS),
                                    folder / ARTIFACT_TENSORS))
    if (folder / ARTIFACT_JSON).exists():
        obj = read_json(folder / ARTIFACT_JSON)
        if not isinstance(obj, dict) or not isinstance(obj.get("artifacts"), dict):
            raise CheckpointError(f"{folder / ARTIFACT_JSON} is not a genzoo artifacts file")
        items.update(obj["artifacts"])
        where.update(dict.fromkeys(obj["artifacts"], folder / ARTIFACT_JSON))
        listed.update(dict.fromkeys(_listed(obj.get("keys"), folder / ARTIFACT_JSON),
                                    folder / ARTIFACT_JSON))
    declared = _declared(model)
    if declared is not None:
        _check_declared(declared, items, where, folder)
    lost = sorted(set(listed) - set(items))
    if lost:
        raise CheckpointError(
            f"{folder}: the run saved the artifact {lost[0]!r} (its artifact files list it) but "
            f"neither {ARTIFACT_TENSORS} nor {ARTIFACT_JSON} holds it: the files were edited or "
            "mixed from different runs; restore the run from a copy")
    if items or type(model).load_artifacts is not Model.load_artifacts:
        try:
            model.load_artifacts(items)
        except CheckpointError:
            raise
        except GenzooError as e:  # a family's own check (a corrupt tokenizer): name the files
            raise CheckpointError(f"the run's artifacts in {folder} are damaged: {e}") from None
        except (KeyError, ValueError, TypeError, RuntimeError, AttributeError) as e:
            raise CheckpointError(f"the run's artifacts in {folder} do not fit this model "
                                  f"({type(e).__name__}: {e})") from None
    if declared is not None:
        saved_again = _declared(model) or {}
        unexpected = sorted(set(items) - set(declared) - set(saved_again))
        if unexpected:
            k = unexpected[0]
            raise CheckpointError(
                f"{where[k]} holds {', '.join(repr(u) for u in unexpected[:4])}, which "
                f"{type(model).__name__} does not save (its artifacts: "
                f"{', '.join(sorted(set(declared) | set(saved_again))) or 'none'}): the file is "
                "another model's or was edited")


def _declared(model: Any) -> dict[str, Any] | None:
    """What the model would save now (None when it cannot say: a model that is not a genzoo
    Model, or whose artifacts() needs training first)."""
    if not hasattr(model, "artifacts"):
        return None
    try:
        out = model.artifacts()
    except Exception:  # noqa: BLE001 - an untrained model may not know; then nothing is checked
        return None
    return out if isinstance(out, dict) else None


def _kind(value: Any) -> str:
    return f"a {str(value.dtype).removeprefix('torch.')} tensor" if isinstance(value, torch.Tensor) \
        else f"JSON ({type(value).__name__})"


def _check_declared(declared: dict[str, Any], items: dict[str, Any], where: dict[str, Path],
                    folder: Path) -> None:
    for key, want in declared.items():
        wants_tensor = isinstance(want, torch.Tensor)
        if key not in items:
            file = folder / (ARTIFACT_TENSORS if wants_tensor else ARTIFACT_JSON)
            raise CheckpointError(f"{file} lacks the artifact {key!r} (expected {_kind(want)}): "
                                  "the run is damaged or was edited; restore it from a copy")
        found = items[key]
        if want is None:  # not known until the model sees data (a statistic): any kind
            continue
        if wants_tensor != isinstance(found, torch.Tensor) or \
                (wants_tensor and found.dtype != want.dtype):
            raise CheckpointError(f"{where[key]}: artifact {key!r} is {_kind(found)}, expected "
                                  f"{_kind(want)}")
