"""Matplotlib figures written next to a run (Agg backend: no display needed)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

SKIP = ("step", "epoch", "lr", "samples_per_s", "time", "split", "error")


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files only, no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Write `fig` as a PNG atomically (temp file + rename), then free it."""
    import matplotlib.pyplot as plt
    from genzoo.core.atomic import atomic_write
    path = Path(path)
    atomic_write(path, lambda p: fig.savefig(p, dpi=dpi, format="png"))
    plt.close(fig)
    return path


def loss_curve(run: Any, path: Path | None = None, keys: list[str] | None = None) -> Path:
    """One axis per logged quantity (loss, nll, bits/dim, energies ...), training records as a
    line and held-out records as points, so a small quantity is never a flat line at zero
    beside a large one."""
    plt = pyplot()
    metrics = run.metrics()
    records = [m for m in metrics if "split" not in m]
    held_out = [m for m in metrics if m.get("split") == "test"]
    if keys is None:
        keys = []
        for m in records:
            keys += [k for k, v in m.items() if k not in SKIP and k not in keys
                     and isinstance(v, (int, float))]
    keys = keys or ["loss"]
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, k in zip(axes.flat, keys):
        pts = [(m["step"], m[k]) for m in records if isinstance(m.get(k), (int, float))]
        if pts:
            ax.plot(*zip(*pts), label="train", lw=1.2)
        test = [(m["step"], m[k]) for m in held_out if isinstance(m.get(k), (int, float))]
        if test:
            ax.scatter(*zip(*test), color="tab:red", zorder=3, label="test")
            ax.legend(fontsize=8)
        ax.set_title(k)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.suptitle(str(getattr(run, "path", "")), fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path or run.path / "loss.png")
