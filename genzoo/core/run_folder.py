"""A run folder: one trained model's config, weights, trainer state, metrics and samples, and
the lock (``RunLock``) that lets one process at a time write it.

The file names below are the run folder's format; old runs must keep loading, so they never
change.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from genzoo.core.atomic import DiskFull, atomic_write, is_disk_full, read_json, write_json
from genzoo.errors import CheckpointError

WEIGHTS = "model.safetensors"
EMA_WEIGHTS = "model_ema.safetensors"
TRAINER_TENSORS = "trainer.safetensors"
TRAINER_JSON = "trainer.json"
ARTIFACT_TENSORS = "artifacts.safetensors"
ARTIFACT_JSON = "artifacts.json"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
LOCK = ".lock"


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

    def log(self, record: dict[str, Any]) -> None:
        try:
            with open(self.path / METRICS, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:  # a line cut short by a full disk is skipped when read back
            if is_disk_full(e):
                raise DiskFull(self.path / METRICS, "the metrics log",
                               "; the last checkpoint is intact") from None
            raise

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
