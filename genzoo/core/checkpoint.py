"""Run folders and checkpoints: safetensors for tensors, JSON for everything else, never pickle.

Every write goes to a temporary file in the same folder and is renamed over the old one. A
checkpoint is several files (weights, EMA weights, artifacts, trainer state) that must agree on one
step, so they are written into a staging folder (``.checkpoint.tmp``), committed by one rename
(to ``.checkpoint``) and only then moved into the run: a kill before the commit leaves the previous
checkpoint, a kill after it is rolled forward by the next ``recover``. Every file carries its step
(safetensors metadata ``genzoo_step`` / a JSON ``step``), checked on load. A run has one writer at a
time (``RunLock``).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
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
STAGING = ".checkpoint.tmp"  # a checkpoint being written (deleted by recover: never committed)
COMMITTED = ".checkpoint"  # a complete checkpoint not yet moved into the run (rolled forward)
LOCK = ".lock"
STEP_KEY = "genzoo_step"
# the files of one checkpoint; trainer.json moves last, so its step names a complete set
CHECKPOINT_FILES = (WEIGHTS, EMA_WEIGHTS, ARTIFACT_TENSORS, ARTIFACT_JSON, TRAINER_TENSORS,
                    TRAINER_JSON)


def _umask() -> int:
    """The process' umask, read without changing it where the kernel shows it (set-and-restore
    would briefly give files made by other threads the wrong mode)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fault(point: str, step: int | None = None) -> None:
    """Test hook: ``GENZOO_FAULT=POINT`` or ``POINT@STEP`` SIGKILLs this process at that point
    (the kill tests use it to cut a save between any two files). Unset in normal use."""
    spec = os.environ.get("GENZOO_FAULT")
    if not spec:
        return
    name, _, at = spec.partition("@")
    if name != point:
        return
    if at and step is not None and at.strip() != str(step):
        return
    os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file over `path`. The file gets the
    permissions ``open()`` would give it (mkstemp's are 0600), i.e. it follows the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        try:
            os.chmod(tmp, 0o666 & ~_umask())
        except OSError:
            pass
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
        try:
            if path.exists() and not path.is_dir():
                raise CheckpointError(f"--out {path} is a file; give a folder for the run")
            if (path / CONFIG).exists():
                raise CheckpointError(f"{path} already holds a run; resume it with --resume "
                                      f"{path} or choose another --out")
            created = not path.exists()
        except OSError as e:  # a name too long, a component that is a file...
            raise CheckpointError(f"cannot use {str(path)[:80]}{'...' if len(str(path)) > 80 else ''}"
                                  f" as the run folder: {e.strerror or e}") from None
        try:
            path.mkdir(parents=True, exist_ok=True)
            (path / "samples").mkdir(exist_ok=True)
        except OSError as e:
            raise CheckpointError(f"cannot create the run folder {str(path)[:200]}: "
                                  f"{e.strerror or e}") from None
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
        for name in (CONFIG, METRICS, LOCK):
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


# -- one checkpoint = one step -----------------------------------------------------------------

def file_step(path: Path) -> int | None:
    """The step a checkpoint file was saved at (None: no stamp, e.g. a file from an older
    genzoo); reads only the safetensors header or the JSON."""
    path = Path(path)
    try:
        if path.suffix == ".json":
            obj = read_json(path)
            value = obj.get("step") if isinstance(obj, dict) else None
        else:
            from safetensors import safe_open
            with safe_open(str(path), framework="pt") as f:
                value = (f.metadata() or {}).get(STEP_KEY)
    except CheckpointError:
        raise
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"corrupt or truncated checkpoint {path} ({e}); re-train, or "
                              "resume from a copy of the run") from None
    if value is None:
        return None
    try:
        step = int(value)
    except (TypeError, ValueError):
        raise CheckpointError(f"{path} has a damaged step stamp {value!r}") from None
    if step < 0:
        raise CheckpointError(f"{path} has a damaged step stamp {value!r}")
    return step


def commit(folder: Path, step: int, write: Any) -> None:
    """Write a checkpoint as a whole: ``write(staging_folder)`` puts every file there, one rename
    commits the set, then the files move into `folder` (trainer.json last)."""
    folder = Path(folder)
    staging, done = folder / STAGING, folder / COMMITTED
    shutil.rmtree(staging, ignore_errors=True)
    if done.exists():  # a committed set not yet moved in: finish it first
        _roll_forward(folder)
    staging.mkdir()
    write(staging)
    fault("save:staged", step)
    for f in staging.iterdir():  # on disk before the commit: a power cut keeps a whole set too
        _fsync(f)
    os.replace(staging, done)  # the commit point
    _fsync(folder)
    fault("save:committed", step)
    _roll_forward(folder, step)


def _roll_forward(folder: Path, step: int | None = None) -> None:
    done = folder / COMMITTED
    names = sorted((p.name for p in done.iterdir() if not p.name.endswith(".tmp")),
                   key=lambda n: (n == TRAINER_JSON, n))
    for i, name in enumerate(names):
        os.replace(done / name, folder / name)
        if i == 0:
            fault("save:moving", step)
    shutil.rmtree(done, ignore_errors=True)
    _fsync(folder)
    fault("save:done", step)


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # directories cannot be fsynced everywhere (Windows)
    finally:
        os.close(fd)


def recover(folder: Path) -> None:
    """After a kill: roll a committed checkpoint forward, drop an uncommitted one and the
    temporary files of interrupted writes. Call with the run's lock held."""
    folder = Path(folder)
    if (folder / COMMITTED).is_dir():
        _roll_forward(folder)
    shutil.rmtree(folder / STAGING, ignore_errors=True)
    for tmp in folder.glob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)


def verify(folder: Path) -> int:
    """The step of the run's checkpoint, after checking every file of it holds that step."""
    folder = Path(folder)
    state = read_json(folder / TRAINER_JSON)
    step = state.get("step") if isinstance(state, dict) else None
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"{folder / TRAINER_JSON} is damaged: step {step!r} is not a "
                              "step count")
    for name in CHECKPOINT_FILES[:-1]:
        path = folder / name
        if path.exists():
            other = file_step(path)
            if other is not None and other != step:
                raise CheckpointError(
                    f"inconsistent checkpoint in {folder}: {TRAINER_JSON} says step {step} but "
                    f"{name} holds step {other} (edited, or files mixed from different "
                    "checkpoints); restore the run from a copy or re-train")
    return step


def stamp(step: int) -> dict[str, str]:
    return {STEP_KEY: str(step)}


# -- one writer per run ------------------------------------------------------------------------

class RunLock:
    """RUN/.lock: the pid and host of the process training the run. Held with ``flock``, which
    the kernel drops when that process dies, so a lock left behind by a killed run is stale and
    simply taken over; a live owner makes a second writer refuse in one line."""

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / LOCK
        self.fd: int | None = None
        self._pid_only = False

    def owner(self) -> str:
        try:
            info = json.loads(self.path.read_text() or "{}")
            return f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"
        except (OSError, ValueError, AttributeError):
            return "another process"

    def acquire(self) -> "RunLock":
        if self.fd is not None:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise CheckpointError(f"cannot lock the run {self.path.parent}: {e.strerror}") from None
        try:
            import fcntl
        except ImportError:  # no flock (Windows): an exclusive pid file, stale when its pid is gone
            os.close(fd)
            fd = self._pid_file()
        else:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise CheckpointError(f"{self.path.parent} is in use by another zoo process "
                                      f"({self.owner()}); wait for it to finish or stop it") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode())
        self.fd = fd
        return self

    def _pid_file(self) -> int:
        self._pid_only = True
        if self._stale():
            self.path.unlink(missing_ok=True)
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            raise CheckpointError(f"{self.path.parent} is in use by another zoo process "
                                  f"({self.owner()}); wait for it to finish or stop it") from None

    def _stale(self) -> bool:
        try:
            info = json.loads(self.path.read_text() or "{}")
            pid = int(info["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return True
        if info.get("host") != socket.gethostname():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None
        if self._pid_only:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
