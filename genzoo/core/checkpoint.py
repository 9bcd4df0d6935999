"""Run folders and checkpoints: safetensors for tensors, JSON for everything else, never pickle.

Every write goes to a temporary file in the same folder and is renamed over the old one, so a
kill mid-save leaves the previous good checkpoint in place.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from genzoo.errors import CheckpointError

WEIGHTS = "model.safetensors"
EMA_WEIGHTS = "model_ema.safetensors"
TRAINER_TENSORS = "trainer.safetensors"
TRAINER_JSON = "trainer.json"
ARTIFACT_TENSORS = "artifacts.safetensors"
ARTIFACT_JSON = "artifacts.json"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
PREFIXES = ("_orig_mod.", "module.")  # added by torch.compile and DDP


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n"))


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"missing {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"corrupt JSON in {path}: {e}") from None


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
    """Load into `module`, reporting missing, unexpected and mis-shaped keys in one message."""
    state = clean_state_dict(load_tensors(path))
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if strict and (missing or unexpected or mismatched):
        parts = []
        if missing:
            parts.append(f"missing {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {_few(unexpected)}")
        if mismatched:
            parts.append("shape mismatch " + _few(
                f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched))
        raise CheckpointError(f"{path} does not fit this model: " + "; ".join(parts))
    module.load_state_dict(state, strict=strict)


def _few(items: Iterable[str], n: int = 4) -> str:
    items = list(items)
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


# -- family artifacts (Model.artifacts / Model.load_artifacts) --------------------------------

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
    if items or type(model).load_artifacts is not _base_load_artifacts():
        try:
            model.load_artifacts(items)
        except CheckpointError:
            raise
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            raise CheckpointError(f"the run's artifacts in {folder} do not fit this model "
                                  f"({type(e).__name__}: {e})") from None


def _base_load_artifacts() -> Any:
    from genzoo.core.model import Model
    return Model.load_artifacts


# -- optimizer state without pickle ------------------------------------------------------------

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


# -- run folders -------------------------------------------------------------------------------

class Run:
    """A folder holding one trained model: config, weights, trainer state, metrics, samples."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @classmethod
    def create(cls, name: str, out: str | os.PathLike | None = None) -> "Run":
        if out is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out = Path("runs") / f"{name}-{stamp}"
            i = 1
            while Path(out).exists():
                out = Path("runs") / f"{name}-{stamp}-{i}"
                i += 1
        path = Path(out)
        if path.exists() and not path.is_dir():
            raise CheckpointError(f"--out {path} is a file; give a folder for the run")
        if (path / CONFIG).exists():
            raise CheckpointError(f"{path} already holds a run; resume it with --resume {path} "
                                  "or choose another --out")
        created = not path.exists()
        try:
            path.mkdir(parents=True, exist_ok=True)
            (path / "samples").mkdir(exist_ok=True)
        except OSError as e:
            raise CheckpointError(f"cannot create the run folder {path}: {e.strerror}") from None
        run = cls(path)
        run.created = created
        return run

    created = False

    def discard(self) -> None:
        """Undo ``create`` after a failed start: the folder if we made it, else our files."""
        import shutil
        if self.created:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for name in (CONFIG, METRICS):
            (self.path / name).unlink(missing_ok=True)
        try:
            (self.path / "samples").rmdir()
        except OSError:
            pass

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Run":
        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(f"no run at {path} (expected a folder made by `zoo train`)")
        if not (path / CONFIG).exists():
            raise CheckpointError(f"{path} is not a run: it has no {CONFIG}")
        return cls(path)

    # files
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS

    @property
    def ema_path(self) -> Path:
        return self.path / EMA_WEIGHTS

    @property
    def samples_dir(self) -> Path:
        d = self.path / "samples"
        d.mkdir(exist_ok=True)
        return d

    def read_config(self) -> dict[str, Any]:
        return read_json(self.config_path)

    def write_config(self, cfg: dict[str, Any]) -> None:
        write_json(self.config_path, cfg)

    def has_weights(self) -> bool:
        return self.weights_path.exists()

    def log(self, record: dict[str, Any]) -> None:
        with open(self.path / METRICS, "a") as f:
            f.write(json.dumps(record) + "\n")

    def metrics(self) -> list[dict[str, Any]]:
        path = self.path / METRICS
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut by a kill mid-write
        return out

    def truncate_metrics(self, step: int) -> None:
        """On resume, forget records logged after the checkpoint so the log has no duplicates."""
        kept = [m for m in self.metrics() if m.get("step", 0) <= step]
        atomic_write(self.path / METRICS,
                     lambda p: p.write_text("".join(json.dumps(m) + "\n" for m in kept)))
