"""Dataset loaders that know a dataset by its format, so the core does not have to: scikit-learn's
two moons (generated points) and CelebA's attribute table for image folders.

registry.yaml names each as a dataset's ``loader: genzoo.plugins.datasets:NAME``; a loader is
``load(entry, cfg, split) -> Dataset`` and ``genzoo.core.sources.load`` then applies the settings
every image set shares (limit, channels, size, pad, ``data.label``).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch

from genzoo.errors import DataError
from genzoo.family import (DataConfig, ImageData, PointData, kaggle_folder, load_image_folder,
                           split_index)

CELEBA_ATTRIBUTES = "list_attr_celeba.csv"


def load_two_moons(entry: Any, cfg: DataConfig, split: str) -> PointData:
    """scikit-learn's two moons (``data.points`` points, ``data.noise``), standardised with the
    training split's statistics as the book's Normalization layer does; the same seed (0) every
    time, so every run sees the same points."""
    if cfg.points < 2:
        raise DataError(f"points must be >= 2, got {cfg.points}")
    if not cfg.noise >= 0:
        raise DataError(f"noise must be >= 0, got {cfg.noise}")
    from sklearn.datasets import make_moons
    x, _ = make_moons(cfg.points, noise=cfg.noise, random_state=0)
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


def attribute_table(folder: Path, options: dict[str, Any]) -> tuple[list[str], dict[str, list[bool]]] | None:
    """The folder's CelebA-format attribute CSV (``options["attributes"]``, by default
    list_attr_celeba.csv, anywhere below it), or None when it has none."""
    found = list(folder.glob(f"**/{options.get('attributes', CELEBA_ATTRIBUTES)}"))
    return read_attribute_csv(found[0]) if found else None


def load_celeba(entry: Any, cfg: DataConfig, split: str) -> ImageData:
    """CelebA from Kaggle (``location``: the slug) with its 40 binary attributes."""
    folder = kaggle_folder(entry.location, cfg)
    return load_image_folder(folder, cfg, split, entry.options, cfg.name,
                             attribute_table(folder, entry.options))


def load_attribute_folder(entry: Any, cfg: DataConfig, split: str) -> ImageData:
    """Any folder of images (``--data folder:PATH``); a CelebA-format attribute CSV in it gives
    the images attributes (``zoo attribute``, ``data.label``)."""
    if not cfg.path:
        raise DataError("the folder source needs a path: --data folder:PATH")
    folder = Path(cfg.path).expanduser()
    return load_image_folder(folder, cfg, split, entry.options, "folder",
                             attribute_table(folder, entry.options))
