"""The Dataset interface and the built-in dataset types a loader returns.

The interface (duck-typed; ``Dataset`` documents it):
- ``len(data)``, ``data.modality`` (image | text | points | events), ``data.shape`` (one example);
- ``data.batch(index) -> dict`` of host tensors (images stay uint8: a quarter of float32's RAM);
- ``data.to_device(batch, device) -> dict``: moves a batch and converts it for the model (images
  become floats in [0, 1] on the device);
- ``data.to(device)``: optionally keep the whole (small) set on the device.

``split_index`` is the one deterministic train/test split every loader uses.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from genzoo.errors import DataError


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
    frame = None  # a SourceFrame: how data.crop and pad changed the source's images (None: not)

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

    def to_source_frame(self, x: Any) -> Any:
        """Images in this set's frame (as a model trained on it sees and makes them) -> floats in
        the source's frame: data.pad stripped, a data.crop put back in the source's frame, so that
        a classifier trained on the source judges what it was trained on. A plain resize is left
        for the classifier's own resize. Identity when the set was neither cropped nor padded."""
        return self.frame.undo(x) if self.frame is not None else to_float(x)


@dataclass(frozen=True)
class SourceFrame:
    """What ``data.crop`` and ``pad`` did to a source of `source_hw` images: the centre `crop`
    square was kept (`fill`: the mean of the cropped-away ring, per channel) and resized to
    data.size, and `pad` black pixels were added on each side."""

    source_hw: tuple[int, int]
    pad: int = 0
    crop: int | None = None
    fill: list[float] | None = None

    def describe(self) -> str:
        done = [f"pad {self.pad}"] if self.pad else []
        if self.crop is not None:
            h, w = self.source_hw
            done.append(f"crop {self.crop} (back in the source's {h}x{w})")
        return " and ".join(done) + " undone"

    def undo(self, x: Any) -> Any:
        import torch
        import torch.nn.functional as F
        x = to_float(x).float()
        if self.pad:
            x = x[..., self.pad:x.shape[-2] - self.pad, self.pad:x.shape[-1] - self.pad]
        if self.crop is None:
            return x
        if tuple(x.shape[-2:]) != (self.crop, self.crop):  # data.size: back to the crop's side
            x = F.interpolate(x, size=(self.crop, self.crop), mode="bilinear", antialias=True,
                              align_corners=False).clamp(0, 1)
        h, w = self.source_hw
        top, left = (h - self.crop) // 2, (w - self.crop) // 2
        fill = torch.tensor(self.fill or [0.0] * x.shape[1], dtype=x.dtype)
        if len(fill) != x.shape[1]:  # a channel count the source did not have: one grey
            fill = fill.mean().expand(x.shape[1])
        out = fill.view(1, -1, 1, 1).expand(x.shape[0], -1, h, w).clone()
        out[..., top:top + self.crop, left:left + self.crop] = x
        return out


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


def split_index(n: int, split: str, fraction: float) -> Any:
    """A fixed shuffled split (seed 0), independent of the run's seed, so every run of a
    dataset tests on the same examples."""
    import torch
    if not 0 < fraction < 1:
        raise DataError(f"test_fraction must be in (0, 1), got {fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    n_test = max(1, int(round(n * fraction))) if n > 1 else 0
    return perm[:n_test].sort().values if split == "test" else perm[n_test:].sort().values
