"""Typed samples and the writers that show them the way a person looks at them.

A sampler returns one of these (or, for images, a bare tensor in [0, 1] which ``as_sample``
wraps). Each sample has a ``kind``; a writer for that kind turns it into files: image grids
upscaled to at least 512 px, text as .txt/.jsonl (and printed), points as a scatter over the data,
events as JSON lines. A family registers a writer for its own kind through the
``register_writers`` hook (``register("music", "pkg.mod:write_music")``).

``extras`` carry what a sampler can show besides the samples (``--show-chain``,
``--show-probs``...): another Sample (written beside the main files with a ``-NAME`` suffix) or
text (saved as ``STEM-NAME.txt`` and printed by the CLI).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

MIN_GRID_WIDTH = 512  # px: a 137-px grid of 16x16 images shows nothing


@dataclass
class Sample:
    kind: ClassVar[str] = ""
    extras: dict[str, Any] = field(default_factory=dict, kw_only=True)

    def __len__(self) -> int:
        raise NotImplementedError


@dataclass
class ImageSample(Sample):
    """Floats in [0, 1], (n, C, H, W); `nrow` images per grid row (default: square)."""

    kind: ClassVar[str] = "image"
    images: torch.Tensor
    nrow: int | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass
class TextSample(Sample):
    kind: ClassVar[str] = "text"
    texts: list[str]
    ids: list[list[int]] | None = None
    prompt: str | None = None

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class PointSample(Sample):
    """(n, D) floats in the data's (normalised) coordinates."""

    kind: ClassVar[str] = "points"
    points: torch.Tensor
    title: str = "samples"

    def __len__(self) -> int:
        return int(self.points.shape[0])


@dataclass
class EventSample(Sample):
    """Sequences of events (notes, chords ...): one list of JSON-able records per sample.
    Families with a richer view (MIDI, piano rolls, audio) register a writer for their kind."""

    kind: ClassVar[str] = "events"
    sequences: list[list[Any]]

    def __len__(self) -> int:
        return len(self.sequences)


def as_sample(value: Any, modality: str = "image") -> Sample:
    """What a sampler returned -> a Sample. Bare tensors are read by the model's modality."""
    if isinstance(value, Sample):
        return value
    if isinstance(value, torch.Tensor):
        if modality == "points":
            return PointSample(value.detach().float().cpu())
        return ImageSample(value.detach().float().cpu())
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return TextSample(list(value))
    raise TypeError(f"a sampler returned {type(value).__name__}; expected a genzoo Sample or "
                    "an image tensor")


# -- writers ------------------------------------------------------------------------------------

def grid_padding(factor: int) -> int:
    return max(1, factor // 2)


def upscale_factor(width: int, columns: int, minimum: int = MIN_GRID_WIDTH) -> int:
    """Smallest whole-number nearest-neighbour factor that makes a grid of `columns` images
    `width` px wide (gutters included) at least `minimum` px wide."""
    f = 1
    while columns * (width * f + grid_padding(f)) + grid_padding(f) < minimum and f < 64:
        f += 1
    return f


def image_grid(images: torch.Tensor, nrow: int | None = None) -> torch.Tensor:
    """(n, C, H, W) in [0, 1] -> one (3 or 1, H', W') grid, each image upscaled (nearest) so the
    grid is at least 512 px wide, with 1-px white gutters at that scale."""
    from torchvision.utils import make_grid
    images = images.detach().float().cpu().clamp(0, 1)
    n = images.shape[0]
    nrow = nrow or max(1, int(n ** 0.5 + 0.5))
    f = upscale_factor(images.shape[-1], min(nrow, n))
    if f > 1:
        images = images.repeat_interleave(f, dim=-1).repeat_interleave(f, dim=-2)
    return make_grid(images, nrow=nrow, padding=grid_padding(f), pad_value=1.0)


def write_image(sample: ImageSample, stem: Path, reference: Any = None) -> list[Path]:
    from genzoo.core.atomic import atomic_write
    from torchvision.utils import save_image
    path = Path(f"{stem}.png")
    grid = image_grid(sample.images, sample.nrow)
    atomic_write(path, lambda p: save_image(grid, str(p), format="png"))
    return [path]


def write_text(sample: TextSample, stem: Path, reference: Any = None) -> list[Path]:
    from genzoo.core.atomic import atomic_write
    txt, jsonl = Path(f"{stem}.txt"), Path(f"{stem}.jsonl")
    rule = "\n" + "-" * 72 + "\n"
    atomic_write(txt, lambda p: p.write_text(rule.join(sample.texts) + "\n", encoding="utf-8"))
    rows = [{"i": i, "text": t, **({"prompt": sample.prompt} if sample.prompt else {}),
             **({"ids": sample.ids[i]} if sample.ids else {})} for i, t in enumerate(sample.texts)]
    atomic_write(jsonl, lambda p: p.write_text("".join(json.dumps(r) + "\n" for r in rows),
                                               encoding="utf-8"))
    return [txt, jsonl]


def write_points(sample: PointSample, stem: Path, reference: Any = None) -> list[Path]:
    """Scatter of the samples (orange) over the data (grey) when the data is at hand."""
    from genzoo.core.plots import pyplot, save_figure
    plt = pyplot()
    pts = sample.points.detach().float().cpu()
    if pts.ndim != 2 or pts.shape[1] < 2:
        raise ValueError(f"points must be (n, D >= 2) to plot, got {tuple(pts.shape)}")
    fig, ax = plt.subplots(figsize=(6, 6))
    data = getattr(reference, "x", None)
    if isinstance(data, torch.Tensor) and data.ndim == 2 and data.shape[1] == pts.shape[1]:
        ax.scatter(data[:, 0], data[:, 1], s=4, c="0.7", label="data", alpha=0.6)
    ax.scatter(pts[:, 0], pts[:, 1], s=4, c="tab:orange", label=sample.title, alpha=0.8)
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="upper right", markerscale=3)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return [save_figure(fig, f"{stem}.png")]


def write_events(sample: EventSample, stem: Path, reference: Any = None) -> list[Path]:
    from genzoo.core.atomic import atomic_write
    path = Path(f"{stem}.jsonl")
    atomic_write(path, lambda p: p.write_text(
        "".join(json.dumps({"i": i, "events": s}) + "\n" for i, s in enumerate(sample.sequences))))
    return [path]


BUILTIN_WRITERS: dict[str, Any] = {"image": write_image, "text": write_text,
                                   "points": write_points, "events": write_events}


def writer_for(kind: str) -> Any:
    from genzoo.core.registry import registry, resolve
    # the core's own kinds first: a plugin can add kinds, never replace these (the registry
    # refuses such a writer too, naming both plugins)
    ref = BUILTIN_WRITERS.get(kind) or registry().writers.get(kind)
    if ref is None:
        from genzoo.errors import ConfigError
        valid = sorted({*BUILTIN_WRITERS, *registry().writers})
        raise ConfigError(f"no writer for samples of kind {kind!r}; known kinds: {', '.join(valid)}")
    return resolve(ref, f"writer for {kind!r} samples")


def write(sample: Sample, stem: str | Path, reference: Any = None) -> list[Path]:
    """Write `sample` (and its extras) as files named STEM.*; returns the paths written."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = list(writer_for(sample.kind)(sample, stem, reference=reference))
    for name, extra in sample.extras.items():
        extra_stem = stem.with_name(f"{stem.name}-{name}")
        if isinstance(extra, Sample):
            paths += write(extra, extra_stem, reference)
        else:
            from genzoo.core.atomic import atomic_write
            path = Path(f"{extra_stem}.txt")
            atomic_write(path, lambda p, t=str(extra): p.write_text(t + "\n", encoding="utf-8"))
            paths.append(path)
    return paths


def preview(sample: Sample, limit: int = 3, width: int = 600) -> list[str]:
    """Lines a person reads in the terminal: text samples (cut at `width` chars) and text extras."""
    lines: list[str] = []
    if isinstance(sample, TextSample):
        for i, t in enumerate(sample.texts[:limit]):
            lines.append(f"[{i}] {t[:width]}{' ...' if len(t) > width else ''}")
    for name, extra in sample.extras.items():
        if isinstance(extra, str):
            lines.append(f"--- {name} ---")
            lines += extra.splitlines()
    return lines
