"""Datasets: the ``data`` config section, the Dataset interface, the built-in loaders, and a
deterministic batch order.

A dataset is named in the registry (``DatasetSpec``) and built by a *loader*: a function
``load(spec, cfg, split) -> Dataset`` named lazily as ``module:attr``. The built-in sources
(embedded, torchvision, kaggle, folder, text, points) are such loaders (``SOURCES``); a plugin adds
a data source by registering a dataset with ``loader="pkg.mod:load_x"``, without touching core.

The Dataset interface (duck-typed; ``Dataset`` below documents it):
- ``len(data)``, ``data.modality`` (image | text | points | events), ``data.shape`` (one example);
- ``data.batch(index) -> dict`` of host tensors (images stay uint8: a quarter of float32's RAM);
- ``data.to_device(batch, device) -> dict``: moves a batch and converts it for the model (images
  become floats in [0, 1] on the device);
- ``data.to(device)``: optionally keep the whole (small) set on the device.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from genzoo.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")

SOURCES: dict[str, str] = {
    "embedded": "genzoo.core.data:load_embedded",
    "torchvision": "genzoo.core.data:load_torchvision",
    "kaggle": "genzoo.core.data:load_kaggle",
    "folder": "genzoo.core.data:load_folder",
    "text": "genzoo.core.text:load_text",
    "points": "genzoo.core.data:load_points",
}


@dataclass
class DataConfig:
    name: str = "fashion-mnist-1k"
    path: str | None = None  # for the folder source: the image folder
    size: int | None = None  # square side after resizing; None keeps the native size
    channels: int | None = None  # 1 = grayscale, 3 = RGB; None keeps the native channels
    limit: int | None = None  # use at most this many examples (folders, big Kaggle sets)
    label: str | None = None  # attribute used as the class label (CelebA-style attribute CSVs)
    root: str | None = None  # data root for downloads; default $GENZOO_DATA or ~/.cache/genzoo
    download: bool = True
    test_fraction: float = 0.1  # held-out share when the source has no official split
    seq_len: int = 128  # text: tokens per training example (the model sees seq_len, predicts the next)
    tokenizer: Literal["word", "char"] | None = None  # text: None = the dataset's default
    vocab_size: int = 10_000  # text, word level: most frequent words kept (book: 10,000)
    points: int = 3000  # generated point sets: how many (book: 3,000 two-moons points)
    noise: float = 0.05  # generated point sets: noise of the generator (book: 0.05)
    pad: int = 0  # images: zero pixels added on each side (the book pads 28x28 to 32x32)
    mmap: bool | None = None  # folder/Kaggle images: memory-map the decoded cache (None: when > 1 GiB)


def data_root(root: str | os.PathLike | None = None) -> Path:
    if root:
        return Path(root).expanduser()
    env = os.environ.get("GENZOO_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "genzoo" / "data"


class Dataset:
    """Documents the interface loaders return; the built-in datasets follow it."""

    modality: str = "image"
    name: str = ""

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def batch(self, index: Any) -> dict[str, Any]:
        raise NotImplementedError

    def to_device(self, batch: dict[str, Any], device: Any) -> dict[str, Any]:
        return {k: v.to(device, non_blocking=True) if hasattr(v, "to") else v
                for k, v in batch.items()}

    def to(self, device: Any) -> "Dataset":
        return self


@dataclass
class ImageData(Dataset):
    """uint8 images (N, C, H, W) plus optional labels and binary attributes, all in memory;
    batches become floats in [0, 1] only on the device (``to_device``)."""

    x: Any  # uint8 tensor (N, C, H, W)
    y: Any = None  # long tensor (N,) or None
    classes: list[str] = field(default_factory=list)
    attributes: Any = None  # bool tensor (N, A) or None
    attribute_names: list[str] = field(default_factory=list)
    name: str = ""
    modality: str = "image"
    mapped = False  # x is a memory map of the decoded cache: read per batch, never moved whole
    pad_px = 0  # mapped sets are padded per batch (padding the whole map would load it)

    def __post_init__(self) -> None:
        import torch
        if self.x.dtype != torch.uint8:  # floats in [0, 1] (tests, generated data)
            self.x = (self.x.float().clamp(0, 1) * 255).round().to(torch.uint8)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def batch(self, index: Any) -> dict[str, Any]:
        out = {"x": self.x[index]}
        if self.pad_px:
            import torch.nn.functional as F
            out["x"] = F.pad(out["x"], (self.pad_px,) * 4)
        if self.y is not None:
            out["y"] = self.y[index]
        if self.attributes is not None:
            out["attributes"] = self.attributes[index]
        return out

    def to_device(self, batch: dict[str, Any], device: Any) -> dict[str, Any]:
        out = super().to_device(batch, device)
        out["x"] = to_float(out["x"])
        return out

    def to(self, device: Any) -> "ImageData":
        if self.mapped:
            return self
        self.x = self.x.to(device)
        if self.y is not None:
            self.y = self.y.to(device)
        return self

    def images(self, index: Any = None) -> Any:
        """Floats in [0, 1] (all, or the rows in `index`), on the CPU."""
        x = self.x if index is None else self.x[index]
        if self.pad_px:
            import torch.nn.functional as F
            x = F.pad(x, (self.pad_px,) * 4)
        return to_float(x).cpu()

    @property
    def shape(self) -> tuple[int, ...]:
        c, h, w = self.x.shape[1:]
        return (c, h + 2 * self.pad_px, w + 2 * self.pad_px)


def batch_to_device(data: Any, batch: dict[str, Any], device: Any) -> dict[str, Any]:
    """A host batch made ready for the model: the dataset's own ``to_device`` (uint8 images ->
    floats on the device), or plain moves for a duck-typed dataset without one."""
    if hasattr(data, "to_device"):
        return data.to_device(batch, device)
    return {k: v.to(device, non_blocking=True) if hasattr(v, "to") else v for k, v in batch.items()}


def to_float(x: Any) -> Any:
    import torch
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


class TensorData(Dataset):
    """A dataset that is one tensor ``x`` of examples (points, piano rolls ...): subclasses are
    dataclasses with an ``x`` field and their own metadata."""

    x: Any

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def batch(self, index: Any) -> dict[str, Any]:
        return {"x": self.x[index]}

    def to(self, device: Any) -> "TensorData":
        self.x = self.x.to(device)
        return self


@dataclass
class PointData(TensorData):
    """(N, D) float points, standardised with the training split's mean and std (the book's
    Normalization layer), which are kept so samples can be mapped back."""

    x: Any
    mean: Any = None
    std: Any = None
    name: str = ""
    modality: str = "points"


# -- sources ---------------------------------------------------------------------------------

def load(cfg: DataConfig, split: str = "train", entry: Any | None = None) -> Any:
    """Load the dataset named by `cfg` through its loader (a registry entry may be passed)."""
    from genzoo.core.registry import registry, resolve
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; valid: train, test")
    if entry is None:
        entry = registry().get_dataset(cfg.name)
    ref = entry.loader or SOURCES.get(entry.source)
    if ref is None:
        raise DataError(f"dataset {entry.name!r} has unknown source {entry.source!r} and no "
                        f"loader; valid sources: {', '.join(SOURCES)}")
    data = resolve(ref, f"loader of dataset {entry.name!r}")(entry, cfg, split)
    if isinstance(data, ImageData):
        data = _transform(data, cfg)
        if cfg.label is not None:
            data = _label_from_attribute(data, cfg.label)
    if len(data) == 0:
        raise DataError(f"dataset {entry.name!r} has no {split} examples")
    return data


def split_index(n: int, split: str, fraction: float) -> Any:
    """A fixed shuffled split (seed 0), independent of the run's seed, so every run of a
    dataset tests on the same examples."""
    import torch
    if not 0 < fraction < 1:
        raise DataError(f"test_fraction must be in (0, 1), got {fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    n_test = max(1, int(round(n * fraction))) if n > 1 else 0
    return perm[:n_test].sort().values if split == "test" else perm[n_test:].sort().values


def load_embedded(entry: Any, cfg: DataConfig, split: str) -> Any:
    import numpy as np
    import torch
    ref = resources.files("genzoo.data").joinpath(entry.location)
    with ref.open("rb") as f:
        arrays = np.load(io.BytesIO(f.read()), allow_pickle=False)
        images, labels = arrays["images"], arrays["labels"]
        classes = [str(c) for c in arrays[entry.options.get("class_key", "class_names")]] \
            if entry.options.get("class_key", "class_names") in arrays.files else list(entry.classes)
    x = torch.from_numpy(images)
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
    idx = split_index(len(x), split, cfg.test_fraction)
    x, y = x[idx].contiguous(), torch.from_numpy(labels)[idx]
    attrs = None
    if classes:  # categories double as binary attributes ("Smileys & Emotion")
        attrs = torch.nn.functional.one_hot(y, len(classes)).bool()
    return ImageData(x, y.long(), classes, attrs, classes, entry.name)


def load_torchvision(entry: Any, cfg: DataConfig, split: str) -> ImageData:
    import numpy as np
    import torch
    import torchvision.datasets as tvd
    cls = getattr(tvd, entry.location)
    root = data_root(cfg.root) / "torchvision"
    try:
        ds = cls(str(root), train=(split == "train"), download=False)
    except RuntimeError:
        if not cfg.download:
            raise DataError(f"{entry.location} is not under {root} and download is off") from None
        try:
            ds = cls(str(root), train=(split == "train"), download=True)
        except Exception as e:
            raise DataError(
                f"could not download {entry.location} into {root} ({type(e).__name__}); are you "
                f"offline? Copy the torchvision files there, set --data-root, or use an embedded "
                f"dataset such as fashion-mnist-1k") from None
    images = np.asarray(ds.data)
    x = torch.from_numpy(images)
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
    if cfg.limit:
        x = x[: cfg.limit]
    y = torch.as_tensor(np.asarray(ds.targets))[: len(x)].long()
    return ImageData(x.contiguous(), y, list(getattr(ds, "classes", [])), name=entry.name)


def load_kaggle(entry: Any, cfg: DataConfig, split: str) -> Any:
    from genzoo.core import kaggle
    folder = kaggle.download(entry.location, data_root(cfg.root)) if cfg.download else \
        kaggle.dataset_dir(entry.location, data_root(cfg.root))
    if not folder.exists():
        raise DataError(f"Kaggle dataset {entry.location} is not under {folder} and "
                        "download is off (--set download=true to fetch it)")
    return _folder(folder, cfg, split, entry.options, cfg.name)


def load_folder(entry: Any, cfg: DataConfig, split: str) -> ImageData:
    if not cfg.path:
        raise DataError("the folder source needs a path: --data folder:PATH")
    return _folder(Path(cfg.path).expanduser(), cfg, split, entry.options, "folder")


def load_points(entry: Any, cfg: DataConfig, split: str) -> PointData:
    """Generated 2-D point sets (``location: moons``), standardised with the training split's
    statistics; the same seed (0) every time, so every run sees the same points."""
    import torch
    if cfg.points < 2:
        raise DataError(f"points must be >= 2, got {cfg.points}")
    if not cfg.noise >= 0:
        raise DataError(f"noise must be >= 0, got {cfg.noise}")
    if entry.location == "moons":
        from sklearn.datasets import make_moons
        x, _ = make_moons(cfg.points, noise=cfg.noise, random_state=0)
    else:
        raise DataError(f"unknown generated point set {entry.location!r}; valid: moons")
    x = torch.from_numpy(x).float()
    train = x[split_index(len(x), "train", cfg.test_fraction)]
    mean, std = train.mean(0), train.std(0)
    chosen = train if split == "train" else x[split_index(len(x), "test", cfg.test_fraction)]
    return PointData((chosen - mean) / std, mean, std, entry.name)


def read_attribute_csv(path: Path) -> tuple[list[str], dict[str, list[bool]]]:
    """CelebA's ``list_attr_celeba.csv``: ``image_id`` then one column per attribute, -1/1."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or len(rows[0]) < 2:
        raise DataError(f"attribute file {path} is empty or has no attribute columns")
    names = [n.strip() for n in rows[0][1:]]
    table = {}
    for row in rows[1:]:
        if row:
            table[Path(row[0].strip()).name] = [v.strip() in ("1", "True", "true") for v in row[1:]]
    return names, table


MMAP_BYTES = int(os.environ.get("GENZOO_MMAP_BYTES", 1 << 30))  # decoded sets above this are mapped


def _folder(folder: Path, cfg: DataConfig, split: str, options: dict[str, Any],
            name: str) -> ImageData:
    """Decode the folder once into a uint8 cache (N, C, H, W) ``.npy`` under the data root, the
    training split first and the test split after it, so each split is one slice of the file.
    Sets bigger than ``MMAP_BYTES`` (or ``data.mmap=true``) are memory-mapped, not loaded: a batch
    reads only its rows. The key hashes every file's name, size and mtime (changed pixels are
    decoded again); writes are atomic and one process decodes while others wait (a shared root)."""
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
    csv_name = options.get("attributes", "list_attr_celeba.csv")
    found = list(folder.glob(f"**/{csv_name}"))
    if found:
        attr_names, table = read_attribute_csv(found[0])
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

    from genzoo.core.progress import count_bar
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


def _transform(data: ImageData, cfg: DataConfig) -> ImageData:
    """limit, channels, size, pad; computed in float, stored back as uint8."""
    import torch
    import torch.nn.functional as F
    x = data.x
    if cfg.limit is not None and cfg.limit < 1:
        raise DataError(f"limit must be >= 1, got {cfg.limit}")
    if cfg.limit and len(x) > cfg.limit:
        x = x[: cfg.limit]
        data.y = data.y[: cfg.limit] if data.y is not None else None
        data.attributes = data.attributes[: cfg.limit] if data.attributes is not None else None
    change_channels = cfg.channels is not None and cfg.channels != x.shape[1]
    resize = cfg.size is not None and (x.shape[-1] != cfg.size or x.shape[-2] != cfg.size)
    if change_channels or resize:
        xf = x.float() / 255.0
        if change_channels:
            if cfg.channels == 1 and xf.shape[1] == 3:
                xf = (xf * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
            elif cfg.channels == 3 and xf.shape[1] == 1:
                xf = xf.expand(-1, 3, -1, -1)
            else:
                raise DataError(f"cannot convert {x.shape[1]} channels to {cfg.channels}; valid: 1, 3")
        if resize:
            if cfg.size < 1:
                raise DataError(f"size must be >= 1, got {cfg.size}")
            xf = F.interpolate(xf, size=(cfg.size, cfg.size), mode="bilinear", antialias=True,
                               align_corners=False)
        x = (xf.clamp(0, 1) * 255).round().to(torch.uint8)
    if cfg.pad:
        if cfg.pad < 0:
            raise DataError(f"pad must be >= 0, got {cfg.pad}")
        if data.mapped and not (change_channels or resize):
            data.pad_px = cfg.pad
        else:
            x = F.pad(x, (cfg.pad,) * 4)  # zeros: black borders, as the book pads 28x28 to 32x32
    data.x = x.contiguous()
    return data


def _label_from_attribute(data: ImageData, label: str) -> ImageData:
    if data.attributes is None or label not in data.attribute_names:
        valid = ", ".join(data.attribute_names) or "(this dataset has no attributes)"
        raise DataError(f"unknown attribute {label!r}; available: {valid}")
    col = data.attribute_names.index(label)
    data.y = data.attributes[:, col].long()
    data.classes = [f"not {label}", label]
    return data


class StepBatches:
    """Batch for global step `s` is a pure function of (seed, s): resuming at step k replays
    exactly the order an uninterrupted run would have seen, with no loader state to save.
    With ``world`` > 1 (distributed training) rank `rank` gets its contiguous share of the same
    global batch, so the ranks together see exactly what one process would."""

    def __init__(self, data: Any, batch_size: int, seed: int,
                 drop_last: bool = True, rank: int = 0, world: int = 1):
        n = len(data)
        if batch_size < 1:
            raise DataError(f"batch size must be >= 1, got {batch_size}")
        if batch_size > n:
            raise DataError(f"batch_size {batch_size} is larger than the {n} training examples; "
                            f"use --batch-size {n} or less (or more data)")
        if batch_size % world:
            raise DataError(f"batch_size {batch_size} does not split evenly over {world} "
                            f"processes; use a multiple of {world}")
        self.data, self.seed = data, seed
        self.batch_size = batch_size
        self.rank, self.world = rank, world
        self.per_epoch = n // self.batch_size if drop_last else -(-n // self.batch_size)
        self._epoch, self._perm = -1, None

    def index(self, step: int) -> Any:
        """The example indices of step `step` (this rank's share of them)."""
        import torch
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._perm, self._epoch = torch.randperm(len(self.data), generator=g), epoch
        rows = self._perm[i * self.batch_size:(i + 1) * self.batch_size]
        if self.world > 1:
            share = self.batch_size // self.world
            rows = rows[self.rank * share:(self.rank + 1) * share]
        return rows

    def __call__(self, step: int) -> dict[str, Any]:
        return self.data.batch(self.index(step))
