"""The video writer: clips as an animated GIF a person plays, and a filmstrip PNG to glance at.

A ``VideoSample`` (``genzoo.core.sample``) holds n clips of T frames, floats in [0, 1] shaped
(n, T, C, H, W) (a world model's dreams, an agent's episodes, frames beside their
reconstructions). ``write_video`` writes, next to each other in the samples folder:

- ``STEM.gif``: every clip playing at once, tiled as an image grid is (nearest-neighbour upscaled
  so the animation is at least 512 px wide, 1-px white gutters at that scale), one GIF frame per
  time step at the sample's ``fps``, looping;
- ``STEM.png``: the filmstrip, one row per clip and ``strip_frames`` frames spread evenly over its
  length as columns, at least 512 px wide: what a gallery thumbnail or a report shows;
- ``STEM.txt``: the per-clip captions (an episode's return, a dream's temperature), if any.

GIF stores 256 colours per frame; Pillow merges consecutive identical frames into one longer
frame, so a clip that stands still (an episode that ended) plays for its full length with fewer
stored frames. This module imports nothing from ``genzoo.core.sample`` (which imports it), so it
reads the sample by its fields: ``frames``, ``fps``, ``captions``, ``strip_frames``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from genzoo.core.atomic import atomic_write

MIN_WIDTH = 512  # px: the GIF and the filmstrip are upscaled to at least this width
MAX_GIF_FRAMES = 2000  # time steps one GIF holds (a CarRacing episode is 1,000)


def _gutter(factor: int) -> int:
    return max(1, factor // 2)


def _factor(width: int, columns: int, minimum: int = MIN_WIDTH) -> int:
    """Smallest whole nearest-neighbour factor making `columns` tiles of `width` px (gutters
    included) at least `minimum` px wide."""
    f = 1
    while columns * (width * f + _gutter(f)) + _gutter(f) < minimum and f < 64:
        f += 1
    return f


def tile(images: torch.Tensor, columns: int, factor: int) -> torch.Tensor:
    """(k, C, H, W) in [0, 1] -> one (3, H', W') uint8 picture, `columns` tiles a row, each tile
    upscaled `factor` times, white gutters between them."""
    images = images.detach().float().cpu().clamp(0, 1)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    images = images[:, :3]
    if factor > 1:
        images = images.repeat_interleave(factor, -1).repeat_interleave(factor, -2)
    k, c, h, w = images.shape
    rows = -(-k // columns)
    g = _gutter(factor)
    out = torch.ones(c, rows * (h + g) + g, columns * (w + g) + g)
    for i in range(k):
        r, col = divmod(i, columns)
        out[:, g + r * (h + g): g + r * (h + g) + h, g + col * (w + g): g + col * (w + g) + w] = images[i]
    return out.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


def _pil(picture: torch.Tensor) -> Any:
    from PIL import Image
    return Image.fromarray(picture.permute(1, 2, 0).contiguous().numpy(), "RGB")


def check_frames(frames: Any) -> torch.Tensor:
    if not isinstance(frames, torch.Tensor) or frames.ndim != 5 or frames.shape[2] not in (1, 3) \
            or min(frames.shape) < 1:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"video frames must be a tensor (n, T, C in 1|3, H, W), got {shape}")
    return frames


def animation(frames: torch.Tensor) -> list[Any]:
    """The GIF's frames: at each time step, every clip's frame tiled as a square-ish grid."""
    n, t = frames.shape[:2]
    columns = max(1, int(n ** 0.5 + 0.5))
    columns = min(columns, n)
    f = _factor(frames.shape[-1], columns)
    return [_pil(tile(frames[:, i], columns, f)) for i in range(min(t, MAX_GIF_FRAMES))]


def filmstrip(frames: torch.Tensor, k: int = 8) -> Any:
    """One row per clip, `k` frames spread evenly over its length (first and last included)."""
    n, t = frames.shape[:2]
    k = max(1, min(k, t))
    idx = torch.linspace(0, t - 1, k).round().long()
    picked = frames[:, idx].flatten(0, 1)  # row-major: clip 0's k frames, then clip 1's ...
    return _pil(tile(picked, k, _factor(frames.shape[-1], k)))


def write_video(sample: Any, stem: Path, reference: Any = None) -> list[Path]:
    """STEM.gif (all clips playing, tiled), STEM.png (filmstrip) and STEM.txt (captions)."""
    frames = check_frames(sample.frames)
    fps = max(1, min(int(getattr(sample, "fps", 12) or 12), 100))
    stem = Path(stem)
    gif, png = Path(f"{stem}.gif"), Path(f"{stem}.png")
    pictures = animation(frames)

    def save_gif(p: Path) -> None:
        # format= as the temporary's name does not end in .gif; loop=0: forever
        pictures[0].save(p, format="GIF", save_all=True, append_images=pictures[1:],
                         duration=round(1000 / fps), loop=0, disposal=1)

    atomic_write(gif, save_gif)
    strip = filmstrip(frames, int(getattr(sample, "strip_frames", 8) or 8))
    atomic_write(png, lambda p: strip.save(p, format="PNG"))
    paths = [gif, png]
    captions = getattr(sample, "captions", None)
    if captions:
        txt = Path(f"{stem}.txt")
        text = "".join(f"[{i}] {c}\n" for i, c in enumerate(captions))
        atomic_write(txt, lambda p: p.write_text(text, encoding="utf-8"))
        paths.append(txt)
    return paths
