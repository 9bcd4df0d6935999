"""Image folders as datasets: every image decoded once into a uint8 ``.npy`` cache under the data
root (worker processes for big sets, under a lock so processes sharing the root decode once),
then loaded, or memory-mapped when it is bigger than RAM should hold.

Pixels are read exactly (``to_8bit``): 16-bit images are scaled to 8 bits (not clipped),
transparent pixels are composited on white (as a page shows them), float images must hold
values in [0, 1], and JPEG orientation tags are applied; anything else is a one-line error."""
from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any

from genzoo.core import faults
from genzoo.core.atomic import file_lock
from genzoo.core.data_config import DataConfig, data_root
from genzoo.core.datasets import ImageData, split_index
from genzoo.core.progress import count_bar
from genzoo.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
MMAP_BYTES = 1 << 30  # decoded sets above this are mapped (GENZOO_MMAP_BYTES overrides)


def mmap_bytes() -> int:
    """``GENZOO_MMAP_BYTES`` (a byte count), read when a folder is loaded, so nonsense in it is
    a one-line error then, not a traceback when genzoo is imported."""
    from genzoo.core.env import env_int
    return env_int("GENZOO_MMAP_BYTES", MMAP_BYTES, lo=0, hi=2 ** 62, unit="bytes")


def load_image_folder(folder: Path, cfg: DataConfig, split: str, options: dict[str, Any],
                      name: str, attributes: tuple[list[str], dict[str, list[bool]]] | None = None
                      ) -> ImageData:
    """Decode the folder once into a uint8 cache (N, C, H, W) ``.npy`` under the data root, the
    training split first and the test split after it, so each split is one slice of the file.
    Sets bigger than ``mmap_bytes()`` (or ``data.mmap=true``) are memory-mapped, not loaded: a batch
    reads only its rows. The key hashes every file's name, size, mtime, ctime and inode (a file
    replaced or rewritten gets a new ctime or inode even when its size and mtime are put back,
    so changed pixels are decoded again); writes are atomic and one process decodes while others
    wait (a shared root).

    `options`: ``glob`` (which files), ``size``. `name` names the cache file. `attributes`:
    binary attributes per image, ``(names, {file name: one bool per name})`` as a loader read
    them (CelebA's table: genzoo.plugins.datasets); the split gets them when every image of it
    has a row."""
    import numpy as np
    import torch
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist")
    pattern = options.get("glob", "**/*")
    files = sorted(p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {folder}")
    if cfg.limit:
        files = files[: cfg.limit]
    size = cfg.size or options.get("size")
    mode = "L" if cfg.channels == 1 else "RGB"
    train_idx = split_index(len(files), "train", cfg.test_fraction)
    test_idx = split_index(len(files), "test", cfg.test_fraction)
    order = torch.cat([train_idx, test_idx]).tolist()
    # v3: 16-bit images scaled, alpha composited on white, EXIF orientation applied (v2 clipped)
    key = hashlib.sha1(f"{folder.resolve()}|{size}|{mode}|{cfg.test_fraction}|v3".encode())
    for p in files:
        # surrogateescape: a file name that is not UTF-8 (bytes on Linux) is keyed, not fatal
        key.update(f"{p.relative_to(folder)}|{file_identity(p)}\n".encode("utf-8",
                                                                        "surrogateescape"))
    cache = data_root(cfg.root) / "cache" / f"{name}-{key.hexdigest()[:16]}.npy"
    remove_stale_temporaries(cache.parent)  # what killed decodes left, of any folder
    if not cache.exists():
        _decode_to_cache([files[i] for i in order], cache, size, mode, folder)
    n_train = len(train_idx)
    lo, hi = (0, n_train) if split == "train" else (n_train, len(files))
    mapped = cfg.mmap if cfg.mmap is not None else cache.stat().st_size > mmap_bytes()
    try:
        arr = np.load(cache, mmap_mode="c", allow_pickle=False)  # "c": private, never written back
    except (ValueError, OSError) as e:
        raise DataError(f"the image cache {cache} is damaged ({e}); delete it") from None
    if mapped:  # batches read random rows: no read-ahead of the neighbours (it maps it all in)
        import mmap as mmaplib
        with contextlib.suppress(AttributeError, OSError, ValueError):
            arr._mmap.madvise(mmaplib.MADV_RANDOM)
    part = arr[lo:hi]
    x = torch.from_numpy(part if mapped else np.array(part))
    attrs, attr_names = None, []
    if attributes is not None:
        attr_names, table = attributes
        rows = [table.get(files[i].name) for i in order[lo:hi]]
        if all(r is not None for r in rows):
            attrs = torch.tensor(rows, dtype=torch.bool)
    data = ImageData(x, None, [], attrs, attr_names, name)
    data.mapped = mapped
    return data


def file_identity(path: Path) -> str:
    """What a content change cannot keep: size and mtime can be put back (``os.utime``, ``cp
    -p``, ``rsync -t``), but a rewrite sets the ctime and a replacement brings a new inode."""
    st = path.stat()
    return f"{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"


ALPHA_BACKGROUND = 255  # transparent pixels are composited on white, as a page shows them
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")


def to_8bit(im: Any, mode: str) -> Any:
    """A PIL image of any mode -> an 8-bit PIL image of `mode` ("L" or "RGB"), exactly:

    - 16-bit grey (``I;16*``, and ``I`` as older Pillow opens 16-bit PNGs) is scaled to the
      nearest 8-bit value, round(v * 255 / 65535); ``I`` outside 0..65535 is refused.
      (Pillow itself reduces 16-bit colour PNGs to their high byte, within one level of that.)
    - ``F`` (float) must hold values in [0, 1], scaled to round(v * 255); else refused.
    - alpha (RGBA, LA, PA, and P / L / RGB with a transparent colour) is composited on
      ``ALPHA_BACKGROUND`` (white): round(c * a / 255 + 255 * (1 - a / 255)).
    - 1, L, RGB, P, CMYK, YCbCr, LAB, HSV: Pillow's conversions (CMYK: (1 - c)(1 - k)).
    Pillow's own ``convert`` clips 16-bit values at 255 (almost every 16-bit image turns white)
    and treats floats as 0..255 (images in [0, 1] turn black): neither is used for those."""
    import numpy as np
    from PIL import Image
    src = im.mode
    if src in _SIXTEEN_BIT or src == "I":
        a = np.asarray(im).astype(np.int64)
        if src == "I" and a.size and (int(a.min()) < 0 or int(a.max()) > 65535):
            raise ValueError(f"32-bit integer pixels from {int(a.min())} to {int(a.max())}; "
                             "only 16-bit values (0..65535) have a known 8-bit scale")
        # round(v / 257) in integers: v * 255 / 65535 is never exactly k + 1/2 (65535 is odd)
        grey = Image.fromarray(((a * 255 + 32767) // 65535).astype(np.uint8), "L")
        return grey if mode == "L" else grey.convert(mode)
    if src == "F":
        a = np.asarray(im, dtype=np.float64)
        if a.size and not (np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1):
            raise ValueError(f"float pixels from {a.min():g} to {a.max():g}; float images must "
                             "hold values in [0, 1]")
        grey = Image.fromarray(np.round(a * 255).astype(np.uint8), "L")
        return grey if mode == "L" else grey.convert(mode)
    if src in _ALPHA or (src in ("P", "L", "RGB") and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.uint32)
        alpha = rgba[..., 3:]
        # c * a / 255 + bg * (255 - a) / 255, rounded half up, in integers
        mixed = (rgba[..., :3] * alpha + ALPHA_BACKGROUND * (255 - alpha) + 127) // 255
        rgb = Image.fromarray(mixed.astype(np.uint8), "RGB")
        return rgb if mode == "RGB" else rgb.convert(mode)
    return im if src == mode else im.convert(mode)


def _decode_one(path: Path, size: Any, mode: str) -> Any:
    import numpy as np
    from PIL import Image, ImageOps
    try:
        with Image.open(path) as opened:
            im = to_8bit(ImageOps.exif_transpose(opened), mode)
            if size:
                im = _center_crop_resize(im, int(size))
            a = np.array(im)  # a copy: nothing refers to the file once it is closed
    except Exception as e:  # PIL raises many kinds; one line either way
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"cannot read image {path}: {reason}") from None
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _decode_chunk(paths: list[Path], size: Any, mode: str) -> Any:
    import numpy as np
    return np.stack([_decode_one(p, size, mode) for p in paths])


def _decode_to_cache(files: list[Path], cache: Path, size: Any, mode: str, folder: Path) -> None:
    """Decode `files` in order into `cache` (.npy, uint8 N x C x H x W): worker processes for big
    sets, written through a memory map (never all in RAM), renamed into place when complete,
    under a lock so processes sharing the data root decode once. Workers die with this process
    (even under kill -9), and temporaries that a killed decode left are removed here."""
    import numpy as np
    cache.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(cache.with_name(cache.name + ".lock")):
        remove_stale_temporaries(cache.parent, holding=cache)
        if cache.exists():  # another process decoded it while we waited
            return
        first = _decode_one(files[0], size, mode)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                        shape=(len(files), *first.shape))
        try:
            chunk = 256
            starts = list(range(0, len(files), chunk))
            workers = min(os.cpu_count() or 1, 8)
            progress = _decode_progress(len(files), folder)
            with progress:
                task = progress.add_task("decode", total=len(files))

                def put(start: int, block: Any) -> None:
                    if block.shape[1:] != first.shape:
                        raise DataError(f"images in {folder} differ in size; pass --set "
                                        "data.size=N")
                    out[start:start + len(block)] = block
                    progress.update(task, advance=len(block))
                    faults.fault("decode:chunk", start)  # the kill tests cut a decode here
                if len(files) >= 2000 and workers > 1:
                    import multiprocessing
                    from concurrent.futures import ProcessPoolExecutor
                    ctx = multiprocessing.get_context("spawn")  # no fork of a threaded torch
                    pool = ProcessPoolExecutor(workers, mp_context=ctx,
                                               initializer=_worker_init, initargs=(os.getpid(),))
                    try:
                        jobs = [(s, pool.submit(_decode_chunk, files[s:s + chunk], size, mode))
                                for s in starts]
                        for s, job in jobs:
                            put(s, job.result())
                    finally:  # an error or Ctrl-C: the queued chunks are dropped, not decoded
                        pool.shutdown(wait=True, cancel_futures=True)
                else:
                    for s in starts:
                        put(s, _decode_chunk(files[s:s + chunk], size, mode))
            out.flush()
            del out
            os.replace(tmp, cache)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _worker_init(parent: int) -> None:
    """In each decode worker: die with the parent. On Linux the kernel sends SIGKILL when the
    parent dies (prctl PR_SET_PDEATHSIG), so a kill -9 of a run leaves no worker decoding on for
    minutes; elsewhere a thread watches the parent. Ctrl-C is the parent's to handle: it cancels
    the queued chunks, and a worker ends after its current one."""
    import signal
    import sys
    import threading
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    armed = False
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
    if not armed:
        def watch() -> None:
            import time
            while os.getppid() == parent:
                time.sleep(1.0)
            os._exit(1)
        threading.Thread(target=watch, daemon=True, name="genzoo-parent-watch").start()


def _temporary_owner(path: Path) -> tuple[str, int] | None:
    """``.NAME.npy.PID.tmp`` -> (NAME.npy, PID); None for any other file."""
    name = path.name
    if not (name.startswith(".") and name.endswith(".tmp")):
        return None
    stem, _, pid = name[1:-len(".tmp")].rpartition(".")
    if not stem.endswith(".npy") or not pid.isdigit():
        return None
    return stem, int(pid)


def remove_stale_temporaries(folder: Path, holding: Path | None = None) -> list[Path]:
    """Delete the half-written caches (``.NAME.npy.PID.tmp``) that a killed decode left in
    `folder`. A temporary is stale when nobody holds its cache's lock (only the lock holder
    writes one, so this is right for processes on other hosts sharing the root too); `holding`
    is the cache whose lock this process holds, so every temporary of it is stale. Returns the
    files removed."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for path in entries:
        owner = _temporary_owner(path)
        if owner is None:
            continue
        stem, _pid = owner
        if holding is not None and stem == holding.name:
            stale = True
        else:
            stale = _lock_is_free(path.with_name(stem + ".lock"))
        if stale:
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


def _lock_is_free(lock: Path) -> bool:
    """Whether nobody holds `lock` (a missing lock file: nobody); False when it cannot tell."""
    try:
        import fcntl
    except ImportError:
        return False
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def _decode_progress(total: int, folder: Path) -> Any:
    import sys
    return count_bar(f"decoding {folder.name}", total >= 2000 and sys.stderr.isatty())


def _center_crop_resize(im: Any, size: int) -> Any:
    from PIL import Image
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return im.resize((size, size), Image.Resampling.BILINEAR)
