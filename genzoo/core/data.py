"""Datasets: the ``data`` config section, sources (embedded, torchvision, kaggle, folder), and a
deterministic batch order.

Image datasets load into memory as float tensors in [0, 1], shape (N, C, H, W): the embedded and
book datasets are small, and in-memory tensors make a step's batch a single index op. Large
folders can be capped with ``limit``. Decoded folders are cached under the data root.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from genzoo.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


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
    seq_len: int = 128  # text datasets: characters per training example


def data_root(root: str | os.PathLike | None = None) -> Path:
    if root:
        return Path(root).expanduser()
    env = os.environ.get("GENZOO_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "genzoo" / "data"


@dataclass
class ImageData:
    """Images in [0, 1] plus optional labels and binary attributes, all in memory."""

    x: Any  # float tensor (N, C, H, W)
    y: Any = None  # long tensor (N,) or None
    classes: list[str] = field(default_factory=list)
    attributes: Any = None  # bool tensor (N, A) or None
    attribute_names: list[str] = field(default_factory=list)
    name: str = ""

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def batch(self, index: Any) -> dict[str, Any]:
        out = {"x": self.x[index]}
        if self.y is not None:
            out["y"] = self.y[index]
        if self.attributes is not None:
            out["attributes"] = self.attributes[index]
        return out

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])


@dataclass
class TextData:
    """A character corpus encoded as ids; a batch is ``seq_len + 1`` characters per row."""

    ids: Any  # long tensor (T,)
    vocab: list[str]
    seq_len: int
    name: str = ""

    def __len__(self) -> int:
        return max(1, (int(self.ids.shape[0]) - 1) // self.seq_len)

    def batch(self, index: Any) -> dict[str, Any]:
        import torch
        starts = torch.as_tensor(index).reshape(-1) * self.seq_len
        offsets = torch.arange(self.seq_len + 1)
        return {"x": self.ids[starts[:, None] + offsets[None, :]]}


# -- sources ---------------------------------------------------------------------------------

def load(cfg: DataConfig, split: str = "train", entry: Any | None = None) -> ImageData | TextData:
    """Load the dataset named by `cfg` (a registry entry may be passed to skip the lookup)."""
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; valid: train, test")
    if entry is None:
        from genzoo.core.registry import registry
        entry = registry().get_dataset(cfg.name)
    source = entry.source
    if source == "embedded":
        data = _embedded(entry, cfg, split)
    elif source == "torchvision":
        data = _torchvision(entry, cfg, split)
    elif source == "kaggle":
        from genzoo.core import kaggle
        folder = kaggle.download(entry.location, data_root(cfg.root)) if cfg.download else \
            kaggle.dataset_dir(entry.location, data_root(cfg.root))
        if not folder.exists():
            raise DataError(f"Kaggle dataset {entry.location} is not under {folder} and "
                            "download is off (--set download=true to fetch it)")
        data = _folder(folder, cfg, split, entry.options, cfg.name)
    elif source == "folder":
        if not cfg.path:
            raise DataError("the folder source needs a path: --data folder:PATH")
        data = _folder(Path(cfg.path).expanduser(), cfg, split, entry.options, "folder")
    else:
        raise DataError(f"dataset {entry.name!r} has unknown source {source!r}; valid: "
                        "embedded, torchvision, kaggle, folder")
    if isinstance(data, ImageData):
        data = _transform(data, cfg)
        if cfg.label is not None:
            data = _label_from_attribute(data, cfg.label)
    return data


def _split_index(n: int, split: str, fraction: float) -> Any:
    """A fixed shuffled split (seed 0), independent of the run's seed, so every run of a
    dataset tests on the same examples."""
    import torch
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    n_test = max(1, int(round(n * fraction))) if n > 1 else 0
    return perm[:n_test].sort().values if split == "test" else perm[n_test:].sort().values


def _embedded(entry: Any, cfg: DataConfig, split: str) -> ImageData | TextData:
    import numpy as np
    import torch
    ref = resources.files("genzoo.data").joinpath(entry.location)
    if entry.modality == "text":
        text = ref.read_text(encoding="utf-8")
        vocab = sorted(set(text))
        lookup = {c: i for i, c in enumerate(vocab)}
        ids = torch.tensor([lookup[c] for c in text], dtype=torch.long)
        cut = int(len(ids) * (1 - cfg.test_fraction))
        ids = ids[:cut] if split == "train" else ids[cut:]
        return TextData(ids, vocab, cfg.seq_len, entry.name)
    with ref.open("rb") as f:
        arrays = np.load(io.BytesIO(f.read()), allow_pickle=False)
        images, labels = arrays["images"], arrays["labels"]
        classes = [str(c) for c in arrays[entry.options.get("class_key", "class_names")]] \
            if entry.options.get("class_key", "class_names") in arrays.files else list(entry.classes)
    x = torch.from_numpy(images)
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
    idx = _split_index(len(x), split, cfg.test_fraction)
    x, y = x[idx], torch.from_numpy(labels)[idx]
    attrs = None
    if classes:  # categories double as binary attributes ("Smileys & Emotion")
        attrs = torch.nn.functional.one_hot(y, len(classes)).bool()
    return ImageData(x.float() / 255.0, y.long(), classes, attrs, classes, entry.name)


def _torchvision(entry: Any, cfg: DataConfig, split: str) -> ImageData:
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
    return ImageData(x.float() / 255.0, y, list(getattr(ds, "classes", [])), name=entry.name)


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


def _folder(folder: Path, cfg: DataConfig, split: str, options: dict[str, Any],
            name: str) -> ImageData:
    import numpy as np
    import torch
    from PIL import Image
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
    key = hashlib.sha1(f"{folder.resolve()}|{len(files)}|{files[-1].name}|{size}|{mode}".encode())
    cache = data_root(cfg.root) / "cache" / f"{name}-{key.hexdigest()[:16]}.npz"
    if cache.exists():
        arr = np.load(cache, allow_pickle=False)["images"]
    else:
        decoded = []
        for p in files:
            try:
                im = Image.open(p).convert(mode)
            except Exception as e:
                raise DataError(f"cannot read image {p}: {e}") from None
            if size:
                im = _center_crop_resize(im, int(size))
            decoded.append(np.asarray(im))
        if len({a.shape for a in decoded}) > 1:
            raise DataError(f"images in {folder} differ in size; pass --set data.size=N")
        arr = np.stack(decoded)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, images=arr)
        os.replace(tmp, cache)
    x = torch.from_numpy(arr)
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
    attrs, attr_names = None, []
    csv_name = options.get("attributes", "list_attr_celeba.csv")
    found = list(folder.glob(f"**/{csv_name}"))
    if found:
        attr_names, table = read_attribute_csv(found[0])
        rows = [table.get(p.name) for p in files]
        if all(r is not None for r in rows):
            attrs = torch.tensor(rows, dtype=torch.bool)
    idx = _split_index(len(x), split, cfg.test_fraction)
    x = x[idx]
    attrs = attrs[idx] if attrs is not None else None
    return ImageData(x.float() / 255.0, None, [], attrs, attr_names, name)


def _center_crop_resize(im: Any, size: int) -> Any:
    from PIL import Image
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return im.resize((size, size), Image.Resampling.BILINEAR)


def _transform(data: ImageData, cfg: DataConfig) -> ImageData:
    import torch
    import torch.nn.functional as F
    x = data.x
    if cfg.limit and len(x) > cfg.limit:
        x = x[: cfg.limit]
        data.y = data.y[: cfg.limit] if data.y is not None else None
        data.attributes = data.attributes[: cfg.limit] if data.attributes is not None else None
    if cfg.channels is not None and cfg.channels != x.shape[1]:
        if cfg.channels == 1 and x.shape[1] == 3:
            x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        elif cfg.channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1).contiguous()
        else:
            raise DataError(f"cannot convert {x.shape[1]} channels to {cfg.channels}; valid: 1, 3")
    if cfg.size is not None and (x.shape[-1] != cfg.size or x.shape[-2] != cfg.size):
        x = F.interpolate(x, size=(cfg.size, cfg.size), mode="bilinear", antialias=True,
                          align_corners=False).clamp(0, 1)
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
    exactly the order an uninterrupted run would have seen, with no loader state to save."""

    def __init__(self, data: ImageData | TextData, batch_size: int, seed: int,
                 drop_last: bool = True):
        n = len(data)
        if batch_size < 1:
            raise DataError(f"batch size must be >= 1, got {batch_size}")
        self.data, self.seed = data, seed
        self.batch_size = min(batch_size, n)
        self.per_epoch = n // self.batch_size if drop_last else -(-n // self.batch_size)
        self._epoch, self._perm = -1, None

    def __call__(self, step: int) -> dict[str, Any]:
        import torch
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._perm, self._epoch = torch.randperm(len(self.data), generator=g), epoch
        return self.data.batch(self._perm[i * self.batch_size:(i + 1) * self.batch_size])
