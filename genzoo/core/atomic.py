"""Files that are whole or absent: every write goes to a temporary file in the same folder and is
renamed over the old one, so a kill never leaves half a file. JSON goes through here too."""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from genzoo.errors import CheckpointError


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


FULL = {getattr(errno, n) for n in ("ENOSPC", "EDQUOT") if hasattr(errno, n)}


class DiskFull(CheckpointError):
    """No space left (ENOSPC, or EDQUOT: a quota) while writing `path`; nothing half-written
    was left behind. One line: what ran out, how much is free, what to free."""

    def __init__(self, path: Path, what: str | None = None, after: str = ""):
        self.path = Path(path)
        free = free_space(self.path)
        shown = f", {_size(free)} free" if free is not None else ""
        super().__init__(f"no space left on the device of {self.path} (ENOSPC{shown}) while "
                         f"writing {what or self.path.name}; nothing was left half-written. Free "
                         f"space there (old runs, samples, caches){after}")


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def is_disk_full(e: BaseException) -> bool:
    """Whether `e` says the disk (or a quota) is full: an OSError, or a library's error that
    carries the OS's text (safetensors: "No space left on device (os error 28)")."""
    if isinstance(e, DiskFull):
        return True
    if isinstance(e, OSError) and e.errno in FULL:
        return True
    text = str(e)
    return any(f"(os error {n})" in text for n in FULL) or "No space left on device" in text


def free_space(path: Path) -> int | None:
    """Free bytes on the file system holding `path` (its nearest existing folder)."""
    p = Path(path)
    for q in (p, *p.parents):
        if q.exists():
            try:
                return shutil.disk_usage(q).free
            except OSError:
                return None
    return None


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file over `path`. The file gets the
    permissions ``open()`` would give it (mkstemp's are 0600), i.e. it follows the umask. A full
    disk is ``DiskFull`` (one line), with the temporary file removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        if is_disk_full(e):
            raise DiskFull(path) from None
        raise
    os.close(fd)
    try:
        write(Path(tmp))
        try:
            os.chmod(tmp, 0o666 & ~_umask())
        except OSError:
            pass
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, Exception) and not isinstance(e, DiskFull) and is_disk_full(e):
            raise DiskFull(path) from None
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


def fsync(path: Path) -> None:
    """Flush a file or folder to disk where the OS allows it (a rename is durable after its
    folder's fsync). A full disk found only now (delayed allocation, network file systems)
    is raised: the data is not on disk."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno in FULL or e.errno == errno.EIO:
            raise
        # directories cannot be fsynced everywhere (Windows)
    finally:
        os.close(fd)


class file_lock:
    """An exclusive flock on `path` while held (blocking; a no-op without fcntl): one process
    builds a shared file (a decoded image cache, a cached feature network, a download), the
    others wait and then find it built."""

    def __init__(self, path: Path):
        self.path, self.fd = path, -1

    def __enter__(self) -> "file_lock":
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            import fcntl
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except ImportError:
            pass
        return self

    def __exit__(self, *exc: Any) -> None:
        os.close(self.fd)
