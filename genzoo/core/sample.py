"""Typed samples and the writers that show them the way a person looks at them.

A sampler returns one of these (or, for images, a bare tensor in [0, 1] which ``as_sample``
wraps). Each sample has a ``kind``; a writer for that kind turns it into files: image grids
upscaled to at least 512 px, text as .txt/.jsonl (and printed), points as a scatter over the data,
events as JSON lines. A family registers a writer for its own kind through the
``register_writers`` hook (``register("music", "pkg.mod:write_music")``).

``extras`` carry what a sampler can show besides the samples (``--show-chain``,
``--show-probs``...): another Sample (written beside the main files with a ``-NAME`` suffix) or
text (saved as ``STEM-NAME.txt`` and printed by the CLI).

A view shows at most a sample kind's ``view_limit`` samples (64: an 8 x 8 grid, 64 texts). When
there are more, every sample also goes to one compact archive beside the view, written batch by
batch as the sampler draws them (``write_stream``), so memory stays flat in their number:
``STEM.npy`` for images (uint8, (n, H, W, C), as the PNG stores them) and points (float32,
(n, D)); ``STEM.jsonl`` (one line per sample, the rows the writer writes) for every other kind.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from genzoo.core.video import write_video

MIN_GRID_WIDTH = 512  # px: a 137-px grid of 16x16 images shows nothing
VIEW_LIMIT = 64  # samples a view shows (an 8 x 8 grid); all of them go to the archive


@dataclass
class Sample:
    kind: ClassVar[str] = ""
    # fields holding one entry per sample (a list, or a tensor along dim 0): what ``concat``
    # joins and ``head`` cuts; every other field is shared by all samples (a prompt, a bpm)
    per_sample: ClassVar[tuple[str, ...]] = ()
    view_limit: ClassVar[int] = VIEW_LIMIT
    extras: dict[str, Any] = field(default_factory=dict, kw_only=True)

    def __len__(self) -> int:
        raise NotImplementedError

    def records(self, offset: int = 0) -> list[dict[str, Any]]:
        """One JSON-able row per sample for a ``.jsonl`` archive, numbered from `offset`: the
        per-sample fields (tensors as lists) and the shared ones that JSON can hold."""
        fields = _per_sample_fields([self])
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name not in fields and f.name != "extras"
                  and isinstance(getattr(self, f.name), (str, int, float, bool, list, type(None)))}
        rows = []
        for i in range(len(self)):
            row: dict[str, Any] = {"i": offset + i}
            for name in fields:
                value = getattr(self, name)[i]
                row[name] = value.tolist() if isinstance(value, torch.Tensor) else value
            rows.append({**row, **shared})
        return rows


@dataclass
class ImageSample(Sample):
    """Floats in [0, 1], (n, C, H, W); `nrow` images per grid row (default: square)."""

    kind: ClassVar[str] = "image"
    per_sample: ClassVar[tuple[str, ...]] = ("images",)
    images: torch.Tensor
    nrow: int | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass
class TextSample(Sample):
    kind: ClassVar[str] = "text"
    per_sample: ClassVar[tuple[str, ...]] = ("texts", "ids")
    texts: list[str]
    ids: list[list[int]] | None = None
    prompt: str | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def records(self, offset: int = 0) -> list[dict[str, Any]]:
        return [{"i": offset + i, "text": t, **({"prompt": self.prompt} if self.prompt else {}),
                 **({"ids": self.ids[i]} if self.ids else {})} for i, t in enumerate(self.texts)]


@dataclass
class PointSample(Sample):
    """(n, D) floats in the data's (normalised) coordinates."""

    kind: ClassVar[str] = "points"
    per_sample: ClassVar[tuple[str, ...]] = ("points",)
    view_limit: ClassVar[int] = 10_000  # a scatter needs many points to show a density
    points: torch.Tensor
    title: str = "samples"

    def __len__(self) -> int:
        return int(self.points.shape[0])


@dataclass
class EventSample(Sample):
    """Sequences of events (notes, chords ...): one list of JSON-able records per sample.
    Families with a richer view (MIDI, piano rolls, audio) register a writer for their kind."""

    kind: ClassVar[str] = "events"
    per_sample: ClassVar[tuple[str, ...]] = ("sequences",)
    sequences: list[list[Any]]

    def __len__(self) -> int:
        return len(self.sequences)

    def records(self, offset: int = 0) -> list[dict[str, Any]]:
        return [{"i": offset + i, "events": s} for i, s in enumerate(self.sequences)]


@dataclass
class VideoSample(Sample):
    """n clips of T frames, floats in [0, 1] shaped (n, T, C, H, W), played at `fps`; written
    by ``genzoo.core.video.write_video`` as an animated GIF and a filmstrip PNG. `captions`: one
    line per clip (an episode's return), or None."""

    kind: ClassVar[str] = "video"
    per_sample: ClassVar[tuple[str, ...]] = ("frames", "captions")
    view_limit: ClassVar[int] = 16  # clips one GIF tiles
    frames: torch.Tensor
    fps: int = 12
    captions: list[str] | None = None
    strip_frames: int = 8  # columns of the filmstrip

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def records(self, offset: int = 0) -> list[dict[str, Any]]:
        # the archive of a long draw keeps what each clip is, not its pixels (the GIF has those)
        return [{"i": offset + i, "frames": int(self.frames.shape[1]),
                 **({"caption": self.captions[i]} if self.captions else {})}
                for i in range(len(self))]


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


def _per_sample_fields(parts: list[Sample]) -> list[str]:
    """The fields of `parts` (Samples of one class) that hold one entry per sample: those the
    class declares, and, for a class that declares too few (a plugin's), every list or tensor
    as long as its part in each part that is not the same in all of them (a shared list of
    track names stays shared)."""
    first = parts[0]
    names = [f.name for f in dataclasses.fields(first) if f.name != "extras"]
    out = [n for n in names if n in type(first).per_sample and getattr(first, n) is not None]
    for name in names:
        if name in out:
            continue
        values = [getattr(p, name) for p in parts]
        if not all(isinstance(v, (list, tuple, torch.Tensor)) and len(v) == len(p) and len(p) > 0
                   for v, p in zip(values, parts)):
            continue
        same = all(_equal(v, values[0]) for v in values[1:])
        if len(parts) == 1 or not same:
            out.append(name)
    return out


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and \
            a.shape == b.shape and bool(torch.equal(a, b))
    return bool(a == b)


def concat(parts: list[Sample]) -> Sample:
    """Samples drawn in batches -> one Sample: per-sample fields joined in order, shared ones
    and the extras (views of the first samples) from the first batch. One part is returned as
    it is."""
    if len(parts) == 1:
        return parts[0]
    if not parts:
        raise ValueError("no samples to join")
    first = parts[0]
    if any(type(p) is not type(first) for p in parts):
        raise TypeError("cannot join samples of different kinds: "
                        + ", ".join(sorted({type(p).__name__ for p in parts})))
    joined: dict[str, Any] = {}
    for name in _per_sample_fields(parts):
        values = [getattr(p, name) for p in parts]
        if any(v is None for v in values):
            joined[name] = None
        elif isinstance(values[0], torch.Tensor):
            joined[name] = torch.cat(values)
        else:
            joined[name] = type(values[0])(x for v in values for x in v)
    return dataclasses.replace(first, **joined, extras=dict(first.extras))


def head(sample: Sample, k: int) -> Sample:
    """The first `k` samples of `sample` (itself when it has no more), extras kept."""
    if len(sample) <= k:
        return sample
    cut = {name: getattr(sample, name)[:k] for name in _per_sample_fields([sample])}
    return dataclasses.replace(sample, **cut, extras=dict(sample.extras))


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
    rows = sample.records()
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
        "".join(json.dumps(r) + "\n" for r in sample.records())))
    return [path]


BUILTIN_WRITERS: dict[str, Any] = {"image": write_image, "text": write_text,
                                   "points": write_points, "events": write_events,
                                   "video": write_video}


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


# what writers add to a stem: a path given with one of these names its stem (grid.png -> grid);
# any other dot is part of the name (t0.8-grid -> t0.8-grid.png, not t0.png)
OUTPUT_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".svg", ".txt", ".json", ".jsonl",
                             ".wav", ".mid", ".midi", ".mp4", ".npz"})


def output_stem(path: str | Path) -> Path:
    """The stem a user's output path names: its extension dropped only if a writer adds it."""
    path = Path(path)
    return path.with_suffix("") if path.suffix.lower() in OUTPUT_SUFFIXES else path


def write(sample: Sample, stem: str | Path, reference: Any = None) -> list[Path]:
    """Write `sample` (and its extras) as files named STEM.*; returns the paths written. A
    sample longer than its kind's view limit gets a view of the first ones and an archive of
    all (``write_stream``)."""
    return write_stream([sample], stem, len(sample), reference)[0]


def write_view(sample: Sample, stem: str | Path, reference: Any = None) -> list[Path]:
    """The writer of `sample`'s kind on all of it, then its extras beside it."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = list(writer_for(sample.kind)(sample, stem, reference=reference))
    for name, extra in sample.extras.items():
        extra_stem = stem.with_name(f"{stem.name}-{name}")
        if isinstance(extra, Sample):
            paths += write_view(extra, extra_stem, reference)  # a view: whole, no archive
        else:
            from genzoo.core.atomic import atomic_write
            path = Path(f"{extra_stem}.txt")
            atomic_write(path, lambda p, t=str(extra): p.write_text(t + "\n", encoding="utf-8"))
            paths.append(path)
    return paths


def write_stream(parts: Iterable[Sample], stem: str | Path, total: int,
                 reference: Any = None) -> tuple[list[Path], Sample]:
    """Write `total` samples that arrive in batches (``genzoo.core.sampler.draw_chunks``):
    the view of the first ``view_limit`` (as ``write_view``), and, when there are more, an
    archive of all of them filled batch by batch, so no more than a batch and the view are
    held at once. Returns the paths and the viewed samples (for a preview). The archive is
    renamed into place only once whole; a failure leaves no temporary file behind."""
    stem = Path(stem)
    batches = iter(parts)
    first = next(batches)
    limit = max(1, type(first).view_limit)
    shown = [first]
    while sum(map(len, shown)) < min(limit, total):
        shown.append(next(batches))
    view = head(concat(shown), limit)
    if total <= limit:
        return write_view(view, stem, reference), view
    writer = writer_for(first.kind)
    archive = _Archive(first, stem, total, getattr(writer, "records", None))
    try:
        for part in shown:
            archive.add(part)
        for part in batches:
            archive.add(part)
        paths = write_view(view, stem, reference)
        path = archive.commit()
    finally:
        archive.discard()
    return [p for p in paths if p != path] + [path], view


class _Archive:
    """Every sample in one file, added batch by batch: a memory-mapped ``.npy`` (images as the
    uint8 a PNG holds, (n, H, W, C); points as float32) or ``.jsonl`` rows. It is written to a
    temporary file in the same folder and renamed over STEM.npy / STEM.jsonl by ``commit``."""

    def __init__(self, first: Sample, stem: Path, total: int, records: Any = None):
        self.total, self.count, self.records = total, 0, records
        self.array = isinstance(first, (ImageSample, PointSample)) and records is None
        self.path = Path(f"{stem}.{'npy' if self.array else 'jsonl'}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.file: Any = None
        self.mm: Any = None
        if self.array:
            import numpy as np
            row = _as_array(first)[0]
            need = total * row.nbytes + 128
            free = shutil.disk_usage(self.path.parent).free
            if need > free:
                from genzoo.errors import ConfigError
                raise ConfigError(f"the {total} samples need {need / 2**20:,.0f} MiB in "
                                  f"{self.path.parent}, which has {free / 2**20:,.0f} MiB free; "
                                  "lower --n or write elsewhere (--out)")
            try:
                self.mm = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=row.dtype,
                                                    shape=(total, *row.shape))
            except BaseException:
                self.discard()
                raise
        else:
            self.file = open(self.tmp, "w", encoding="utf-8")

    def add(self, part: Sample) -> None:
        k = min(len(part), self.total - self.count)
        if k <= 0:
            return
        part = head(part, k)
        if self.array:
            self.mm[self.count:self.count + k] = _as_array(part)
        else:
            rows = self.records(part, self.count) if self.records else part.records(self.count)
            self.file.write("".join(json.dumps(r) + "\n" for r in rows))
        self.count += k

    def commit(self) -> Path:
        if self.count != self.total:
            raise RuntimeError(f"the sampler gave {self.count} samples of {self.total}")
        if self.array:
            self.mm.flush()
            del self.mm
            self.mm = None
        else:
            self.file.close()
        os.replace(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        """Close and remove the temporary file (nothing after ``commit``)."""
        if self.file is not None and not self.file.closed:
            self.file.close()
        self.mm = None
        self.tmp.unlink(missing_ok=True)


def _as_array(sample: Sample) -> Any:
    """A batch as the archive stores it: images quantised as ``save_image`` does, channels last."""
    if isinstance(sample, ImageSample):
        x = sample.images.detach().float().cpu().clamp(0, 1)
        x = x.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
        return x.permute(0, 2, 3, 1).contiguous().numpy()
    return sample.points.detach().float().cpu().numpy()


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
