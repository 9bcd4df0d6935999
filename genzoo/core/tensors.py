"""Tensors on disk as safetensors, never pickle: a module's weights (prefixes that torch.compile
and DDP add are dropped; a mismatch is reported key by key in one message) and an optimizer's
state (tensors to safetensors, scalars and param groups to JSON-able metadata)."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from genzoo.core.atomic import atomic_write
from genzoo.errors import CheckpointError

PREFIXES = ("_orig_mod.", "module.")  # added by torch.compile and DDP


def clean_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        for prefix in PREFIXES:
            while k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def save_tensors(path: Path, tensors: dict[str, torch.Tensor],
                 metadata: dict[str, str] | None = None) -> None:
    # safetensors refuses shared or non-contiguous storage; a detached contiguous copy is cheap
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda p: save_file(flat, str(p), metadata=metadata))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"missing checkpoint file {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"corrupt or truncated checkpoint {path} ({reason}); "
                              "re-train, or resume from a copy of the run") from None


def save_weights(module: torch.nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    save_tensors(path, clean_state_dict(module.state_dict()), metadata)


def load_weights(module: torch.nn.Module, path: Path, strict: bool = True) -> None:
    """Load into `module`, checked against what it declares (its state dict): missing,
    unexpected, mis-shaped and mis-typed keys are reported in one message naming the file.
    A dtype is never converted silently: float16 weights in a float32 model lost precision,
    and float64 ones are another program's."""
    state = clean_state_dict(load_tensors(path))
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    mistyped = sorted(k for k in set(own) & set(state)
                      if k not in mismatched and own[k].dtype != state[k].dtype)
    if strict and (missing or unexpected or mismatched or mistyped):
        parts = []
        if missing:
            parts.append(f"missing {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {_few(unexpected)}")
        if mismatched:
            parts.append("shape mismatch " + _few(
                f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched))
        if mistyped:
            parts.append("dtype mismatch " + _few(
                f"{k} {_dtype(state[k])} vs {_dtype(own[k])}" for k in mistyped))
        order = " (the file's vs the model's)" if mismatched or mistyped else ""
        raise CheckpointError(f"{path} does not fit this model: " + "; ".join(parts) + order)
    module.load_state_dict(state, strict=strict)


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _few(items: Iterable[str], n: int = 4) -> str:
    items = list(items)
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def optimizer_to_tensors(name: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{name}.{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_tensors(name: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                           meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    prefix = f"optim.{name}."
    for key, value in tensors.items():
        if key.startswith(prefix):
            pid, _, field = key[len(prefix):].partition(".")
            state.setdefault(int(pid), {})[field] = value
    for pid, values in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(values)
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    try:
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"optimizer state {name!r} does not fit this model: {e}") from None
