"""The built-in data sources and the one ``load`` every caller uses.

A dataset is named in the registry (``DatasetSpec``) and built by a *loader*: a function
``load(spec, cfg, split) -> Dataset`` named lazily as ``module:attr``. The built-in sources
(embedded, torchvision, kaggle, folder, text) are such loaders (``SOURCES``); a dataset with its
own ``loader="pkg.mod:load_x"`` (two moons, CelebA's attributes: genzoo.plugins.datasets; music)
needs nothing from the core beyond these helpers.
``load`` then applies the image settings every image source shares (limit, channels, size, pad,
an attribute as the label).
"""
from __future__ import annotations

import io
from importlib import resources
from pathlib import Path
from typing import Any

from genzoo.core.data_config import DataConfig, data_root
from genzoo.core.datasets import ImageData, SourceFrame, split_index
from genzoo.core.image_folder import load_image_folder
from genzoo.errors import DataError

SOURCES: dict[str, str] = {
    "embedded": "genzoo.core.sources:load_embedded",
    "torchvision": "genzoo.core.sources:load_torchvision",
    "kaggle": "genzoo.core.sources:load_kaggle",
    "folder": "genzoo.core.sources:load_folder",
    "text": "genzoo.core.text:load_text",
}


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


def load_embedded(entry: Any, cfg: DataConfig, split: str) -> ImageData:
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


def kaggle_folder(slug: str, cfg: DataConfig) -> Path:
    """A Kaggle dataset's folder under the data root: downloaded once (later calls are offline)
    when ``cfg.download``, else it must already be there."""
    from genzoo.core import kaggle
    folder = kaggle.download(slug, data_root(cfg.root)) if cfg.download else \
        kaggle.dataset_dir(slug, data_root(cfg.root))
    if not folder.exists():
        raise DataError(f"Kaggle dataset {slug} is not under {folder} and "
                        "download is off (--set download=true to fetch it)")
    return folder


def load_kaggle(entry: Any, cfg: DataConfig, split: str) -> ImageData:
    """A Kaggle dataset of images (``location``: the slug), decoded as an image folder."""
    return load_image_folder(kaggle_folder(entry.location, cfg), cfg, split, entry.options, cfg.name)


def load_folder(entry: Any, cfg: DataConfig, split: str) -> ImageData:
    """Any folder of images (``--data folder:PATH``)."""
    if not cfg.path:
        raise DataError("the folder source needs a path: --data folder:PATH")
    return load_image_folder(Path(cfg.path).expanduser(), cfg, split, entry.options, "folder")


def _transform(data: ImageData, cfg: DataConfig) -> ImageData:
    """limit, channels, crop, size, pad; computed in float, stored back as uint8. Records how to
    map an image of the result back to the source's frame (``ImageData.to_source_frame``)."""
    import torch
    import torch.nn.functional as F
    x = data.x
    if cfg.limit is not None and cfg.limit < 1:
        raise DataError(f"limit must be >= 1, got {cfg.limit}")
    if cfg.limit and len(x) > cfg.limit:
        x = x[: cfg.limit]
        data.y = data.y[: cfg.limit] if data.y is not None else None
        data.attributes = data.attributes[: cfg.limit] if data.attributes is not None else None
    source_hw = (int(x.shape[-2]), int(x.shape[-1]))
    change_channels = cfg.channels is not None and cfg.channels != x.shape[1]
    crop = cfg.crop
    if crop is not None:
        if not 1 <= crop <= min(source_hw):
            raise DataError(f"crop must be 1..{min(source_hw)} (the images are "
                            f"{source_hw[0]}x{source_hw[1]}), got {crop}")
        top, left = (source_hw[0] - crop) // 2, (source_hw[1] - crop) // 2
        # the cropped-away ring's mean per channel: what to_source_frame puts back around it
        # (summed a chunk at a time: a float copy of a big mapped set would not fit in memory)
        ring = torch.zeros(x.shape[1], dtype=torch.float64)
        for i in range(0, len(x), 4096):
            part = x[i:i + 4096].to(torch.float64)
            ring += part.sum((0, 2, 3)) - part[..., top:top + crop, left:left + crop].sum((0, 2, 3))
        ring_px = max(1, len(x) * (source_hw[0] * source_hw[1] - crop * crop))
        fill = (ring / ring_px / 255).tolist()
        x = x[..., top:top + crop, left:left + crop]
    resize = cfg.size is not None and (x.shape[-1] != cfg.size or x.shape[-2] != cfg.size)
    if crop is not None and not (change_channels or resize):
        x = x.clone()  # a view of the whole (or mapped) set would keep it alive
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
        if data.mapped and not (change_channels or resize or crop):
            data.pad_px = cfg.pad
        else:
            x = F.pad(x, (cfg.pad,) * 4)  # zeros: black borders, as the book pads 28x28 to 32x32
    data.x = x.contiguous()
    if crop is not None or cfg.pad:
        data.frame = SourceFrame(source_hw, cfg.pad or 0, crop, fill if crop is not None else None)
    if crop is not None and data.mapped:
        data.mapped = False  # cropped into memory: no longer a view of the map
    return data


def _label_from_attribute(data: ImageData, label: str) -> ImageData:
    if data.attributes is None or label not in data.attribute_names:
        valid = ", ".join(data.attribute_names) or "(this dataset has no attributes)"
        raise DataError(f"unknown attribute {label!r}; available: {valid}")
    col = data.attribute_names.index(label)
    data.y = data.attributes[:, col].long()
    data.classes = [f"not {label}", label]
    return data
