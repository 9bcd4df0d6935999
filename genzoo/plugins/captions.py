"""Captioned datasets from what genzoo ships, for text-to-image models (Foster ch. 13).

registry.yaml names these as ``loader: genzoo.plugins.captions:NAME``:
- ``load_captioned``: an embedded image set with captions made from its classes (``options:
  {captions: digits | fashion | twemoji}``): "a handwritten seven", "a photo of a sneaker",
  twemoji names with their categories ("red apple, a food & drink emoji"); ``parts`` joins
  several (MNIST digits and Fashion-MNIST, their classes one after the other).
Any folder of images with a ``captions.jsonl`` is captioned data too (``--data folder:PATH``:
genzoo.plugins.datasets' folder loader reads it through ``genzoo.nn.captions.caption_folder``).
"""
from __future__ import annotations

import io
from importlib import resources
from typing import Any

import torch

from genzoo.errors import DataError
from genzoo.family import DataConfig, split_index
from genzoo.nn.captions import CaptionData, digit_captions, emoji_captions, fashion_captions

KINDS = ("digits", "fashion", "twemoji")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]


def _npz(location: str) -> dict[str, Any]:
    import numpy as np
    ref = resources.files("genzoo.data").joinpath(location)
    with ref.open("rb") as f:
        arrays = np.load(io.BytesIO(f.read()), allow_pickle=False)
        return {k: arrays[k] for k in arrays.files}


def _part(kind: str, location: str, cfg: DataConfig, split: str) -> dict[str, Any]:
    if kind not in KINDS:
        raise DataError(f"unknown caption kind {kind!r}; valid: {', '.join(KINDS)}")
    arrays = _npz(location)
    x = torch.from_numpy(arrays["images"])
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
    y = torch.from_numpy(arrays["labels"]).long()
    idx = split_index(len(x), split, cfg.test_fraction)
    x, y = x[idx].contiguous(), y[idx]
    labels = y.tolist()
    if kind == "digits":
        classes = [str(i) for i in range(10)]
        caps, prompts = digit_captions(labels)
    elif kind == "fashion":
        classes = FASHION_CLASSES
        caps, prompts = fashion_captions(labels, classes)
    else:
        classes = [str(c) for c in arrays["category_names"]]
        names = [str(arrays["names"][i]) for i in idx.tolist()]
        caps, prompts = emoji_captions(names, labels, classes)
    return {"x": x, "y": y, "classes": classes, "captions": caps, "prompts": prompts}


def load_captioned(entry: Any, cfg: DataConfig, split: str) -> CaptionData:
    """An embedded set (or several, ``options.parts: [[kind, file], ...]``) with captions."""
    opts = entry.options or {}
    parts = opts.get("parts") or [[opts.get("captions", "digits"), entry.location]]
    loaded = [_part(str(kind), str(loc), cfg, split) for kind, loc in parts]
    if len({tuple(p["x"].shape[1:]) for p in loaded}) > 1:
        raise DataError(f"dataset {entry.name!r} joins images of different shapes")
    widths = {len(p["captions"][0]) for p in loaded}
    width = max(widths)
    xs, ys, caps, classes, prompts, groups = [], [], [], [], [], {}
    for (kind, _), p in zip(parts, loaded):
        offset = len(classes)
        xs.append(p["x"])
        ys.append(p["y"] + offset)
        caps += [tuple(c[i % len(c)] for i in range(width)) for c in p["captions"]]
        groups[str(kind)] = list(range(offset, offset + len(p["classes"])))
        classes += p["classes"]
        prompts += p["prompts"]
    y = torch.cat(ys)
    attrs = torch.nn.functional.one_hot(y, len(classes)).bool()
    data = CaptionData(torch.cat(xs), y, classes, attrs, classes, entry.name, captions=caps,
                       class_prompts=prompts, groups=groups if len(groups) > 1 else {})
    return data.limited(cfg.limit)
