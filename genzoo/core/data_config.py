"""The ``data.*`` section of a run (``DataConfig``) and where downloaded and cached data lives
(``data_root``). A leaf of the core: sources, loaders and the planner read it."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from genzoo.core.env import check_folder, env_path


@dataclass
class DataConfig:
    name: str = "fashion-mnist-1k"
    path: str | None = None  # for the folder source: the image folder
    size: int | None = None  # square side after resizing; None keeps the native size
    # images: keep the centre crop x crop square before resizing (None keeps the whole image).
    # MNIST's digits sit in the centre 20x20 of 28x28, so crop 22 spends a 16x16 model's pixels
    # on the digit, not on the always-black border. Cropped as the source gives the images: a
    # folder source that already resizes at decode (data.size) is cropped after that resize
    crop: int | None = None
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
    """`root` (``--data-root``, ``data.root``), else $GENZOO_DATA, else ~/.cache/genzoo/data;
    a file, a path inside a file, or a folder that cannot be made is one line naming it."""
    if root:
        return check_folder(Path(root).expanduser(), f"data root {str(root)!r}")
    return env_path("GENZOO_DATA") or Path.home() / ".cache" / "genzoo" / "data"
