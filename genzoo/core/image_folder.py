"""Image folders as datasets: every image decoded once into a uint8 ``.npy`` cache under the data
root (worker processes for big sets, under a lock so processes sharing the root decode once),
then loaded, or memory-mapped when it is bigger than RAM should hold."""
from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any

from genzoo.core.data_config import DataConfig, data_root
from genzoo.core.datasets import ImageData, split_index
from genzoo.core.progress import count_bar
from genzoo.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
MMAP_BYTES = int(os.environ.get("GENZOO_MMAP_BYTES", 1 << 30))  # decoded sets above this are mapped


def load_image_folder(folder: Path, cfg: DataConfig, split: str, options: dict[str, Any],
                      name: str, attributes: tuple[list[str], dict[str, list[bool]]] | None = None
                      ) -> ImageData:
    """Decode the folder once into a uint8 cache (N, C, H, W) ``.npy`` under the data root, the
    training split first and the test split after it, so each split is one slice of the file.
    Sets bigger than ``MMAP_BYTES`` (or ``data.mmap=true``) are memory-mapped, not loaded: a batch
    reads only its rows. The key hashes every file's name, size and mtime (changed pixels are
    decoded again); writes are atomic and one process decodes while others wait (a shared root).

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
    key = hashlib.sha1(f"{folder.resolve()}|{size}|{mode}|{cfg.test_fraction}|v2".encode())
    for p in files:
        st = p.stat()
        key.update(f"{p.relative_to(folder)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    cache = data_root(cfg.root) / "cache" / f"{name}-{key.hexdigest()[:16]}.npy"
    if not cache.exists():
        _decode_to_cache([files[i] for i in order], cache, size, mode, folder)
    n_train = len(train_idx)
    lo, hi = (0, n_train) if split == "train" else (n_train, len(files))
    mapped = cfg.mmap if cfg.mmap is not None else cache.stat().st_size > MMAP_BYTES
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


def _decode_one(path: Path, size: Any, mode: str) -> Any:
    import numpy as np
    from PIL import Image
    try:
        im = Image.open(path).convert(mode)
    except Exception as e:
        raise DataError(f"cannot read image {path}: {e}") from None
    if size:
        im = _center_crop_resize(im, int(size))
    a = np.asarray(im)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _decode_chunk(paths: list[Path], size: Any, mode: str) -> Any:
    import numpy as np
    return np.stack([_decode_one(p, size, mode) for p in paths])


def _decode_to_cache(files: list[Path], cache: Path, size: Any, mode: str, folder: Path) -> None:
    """Decode `files` in order into `cache` (.npy, uint8 N x C x H x W): worker processes for big
    sets, written through a memory map (never all in RAM), renamed into place when complete,
    under a lock so processes sharing the data root decode once."""
    import numpy as np
    cache.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(cache.with_name(cache.name + ".lock")):
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
                if len(files) >= 2000 and workers > 1:
                    import multiprocessing
                    from concurrent.futures import ProcessPoolExecutor
                    ctx = multiprocessing.get_context("spawn")  # no fork of a threaded torch
                    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                        jobs = [(s, pool.submit(_decode_chunk, files[s:s + chunk], size, mode))
                                for s in starts]
                        for s, job in jobs:
                            put(s, job.result())
                else:
                    for s in starts:
                        put(s, _decode_chunk(files[s:s + chunk], size, mode))
            out.flush()
            del out
            os.replace(tmp, cache)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _decode_progress(total: int, folder: Path) -> Any:
    import sys
    return count_bar(f"decoding {folder.name}", total >= 2000 and sys.stderr.isatty())


class _file_lock:
    """An exclusive flock held while one process builds a shared file (no-op without fcntl)."""

    def __init__(self, path: Path):
        self.path, self.fd = path, None

    def __enter__(self) -> "_file_lock":
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            import fcntl
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except ImportError:
            pass
        return self

    def __exit__(self, *exc: Any) -> None:
        os.close(self.fd)


def _center_crop_resize(im: Any, size: int) -> Any:
    from PIL import Image
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return im.resize((size, size), Image.Resampling.BILINEAR)
