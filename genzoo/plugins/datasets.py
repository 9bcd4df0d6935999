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
from genzoo.nn.captions import CAPTION_FILE, caption_folder

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


_TRUE, _FALSE = ("1", "true"), ("-1", "0", "false")  # CelebA writes 1 / -1


def read_attribute_csv(path: Path) -> tuple[list[str], dict[str, list[bool]]]:
    """CelebA's ``list_attr_celeba.csv``: ``image_id`` then one column per attribute, 1 / -1
    (0, true, false too). The file must be UTF-8 CSV with one value per attribute in every
    row; anything else is a one-line DataError naming the line."""
    import io
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read attribute file {path}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"attribute file {path} is not UTF-8 text: byte 0x{raw[e.start]:02x} at "
                        f"line {line} (byte offset {e.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        rows = [(reader.line_num, row) for row in reader]
    except csv.Error as e:
        raise DataError(f"attribute file {path} is not valid CSV: {e} at line "
                        f"{reader.line_num}") from None
    if not rows or len(rows[0][1]) < 2:
        raise DataError(f"attribute file {path} is empty or has no attribute columns")
    names = [n.strip() for n in rows[0][1][1:]]
    table = {}
    for line, row in rows[1:]:
        if not row or not any(v.strip() for v in row):
            continue
        if len(row) != len(names) + 1:
            raise DataError(f"attribute file {path}, line {line}: {len(row) - 1} values for "
                            f"{len(names)} attributes")
        values = []
        for name, v in zip(names, row[1:]):
            v = v.strip().lower()
            if v not in _TRUE + _FALSE:
                raise DataError(f"attribute file {path}, line {line}: {name} is {v[:20]!r}; "
                                "valid: 1, -1, 0, true, false")
            values.append(v in _TRUE)
        table[Path(row[0].strip()).name] = values
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
    the images attributes (``zoo attribute``, ``data.label``), a ``captions.jsonl`` captions
    (text-to-image models)."""
    if not cfg.path:
        raise DataError("the folder source needs a path: --data folder:PATH")
    folder = Path(cfg.path).expanduser()
    if (folder / CAPTION_FILE).is_file():  # captioned images (text-to-image models)
        return caption_folder(folder, cfg, split, entry.options, "folder")
    return load_image_folder(folder, cfg, split, entry.options, "folder",
                             attribute_table(folder, entry.options))
