"""Files that are whole or absent: every write goes to a temporary file in the same folder and is
renamed over the old one, so a kill never leaves half a file. JSON goes through here too."""
from __future__ import annotations

import json
import os
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


def fsync(path: Path) -> None:
    """Flush a file or folder to disk where the OS allows it (a rename is durable after its
    folder's fsync)."""
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
